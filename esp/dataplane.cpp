#include "esp/dataplane.hpp"

#include <algorithm>
#include <utility>

#include <cstdio>

#include "esp/ah.hpp"

namespace ipsecgw::esp {

using core::Drop;

namespace {
void add_counters(core::TrafficCounters& to, const core::TrafficCounters& from) {
  auto mv = [](std::atomic<std::uint64_t>& a, const std::atomic<std::uint64_t>& b) {
    a.fetch_add(b.load(std::memory_order_relaxed), std::memory_order_relaxed);
  };
  mv(to.out.packets, from.out.packets);
  mv(to.out.bytes, from.out.bytes);
  mv(to.in.packets, from.in.packets);
  mv(to.in.bytes, from.in.bytes);
  for (std::size_t i = 0; i < core::kDropCount; ++i) mv(to.drops[i], from.drops[i]);
}

}  // namespace

InboundSad::InboundSad() {
  static const auto empty = std::make_shared<const Shard>();
  for (auto& sh : shards_) sh = empty;
}

namespace {
std::size_t sad_shard(std::uint32_t spi) noexcept {
  return static_cast<std::size_t>((spi * 2654435761u) >> 24) % InboundSad::kShards;
}
}  // namespace

InboundSa* InboundSad::find(std::uint32_t spi) const noexcept {
  const auto& rows = shards_[sad_shard(spi)]->rows;
  auto it = std::lower_bound(rows.begin(), rows.end(), spi, [](const Row& r, std::uint32_t k) { return r.first < k; });
  return it != rows.end() && it->first == spi ? it->second.get() : nullptr;
}

std::vector<InboundSad::Row>& InboundSad::writable(std::uint32_t spi, std::uint64_t epoch) {
  auto& sh = shards_[sad_shard(spi)];
  if (sh->epoch != epoch) {
    auto copy = std::make_shared<Shard>(*sh);
    copy->epoch = epoch;
    sh = copy;
    return copy->rows;
  }
  return const_cast<Shard&>(*sh).rows;  // made in this epoch: no snapshot holds it
}

void InboundSad::insert(std::uint32_t spi, std::shared_ptr<InboundSa> sa, std::uint64_t epoch) {
  auto& rows = writable(spi, epoch);
  auto it = std::lower_bound(rows.begin(), rows.end(), spi, [](const Row& r, std::uint32_t k) { return r.first < k; });
  if (it != rows.end() && it->first == spi) {
    it->second = std::move(sa);
    return;
  }
  rows.insert(it, Row{spi, std::move(sa)});
  ++size_;
}

void InboundSad::erase(std::uint32_t spi, std::uint64_t epoch) {
  if (!find(spi)) return;
  auto& rows = writable(spi, epoch);
  auto it = std::lower_bound(rows.begin(), rows.end(), spi, [](const Row& r, std::uint32_t k) { return r.first < k; });
  rows.erase(it);
  --size_;
}

const PolicyEntry* Snapshot::lookup(const core::PacketInfo& p) const noexcept {
  for (const PolicyTier* t : {configured.get(), sas.get(), traps.get(), clear.get()})
    if (const PolicyEntry* e = t->lookup(p)) return e;
  return nullptr;
}

DataPlane::DataPlane(std::vector<core::StaticPolicy> policies, unsigned lanes)
    : lanes_(std::max(1u, lanes)), static_policies_(std::move(policies)) {
  readers_ = std::make_unique<Reader[]>(lanes_);
  std::lock_guard lock(mutex_);
  for (const auto& sp : static_policies_)
    if (sp.policy.action == core::PolicyAction::kProtect) configured_sa_names_.insert(sp.sa_name);
  next_.sas = std::make_shared<PolicyTier>();
  next_.traps = std::make_shared<PolicyTier>();
  next_.clear = std::make_shared<PolicyTier>();
  next_.inbound = std::make_shared<InboundSad>();
  rebuild_configured();
  publish();
}

std::string DataPlane::Shadows::key(const PolicyEntry& e) {
  return e.policy.sel.to_string() + (e.policy.whole_packets ? " whole" : "");
}

void DataPlane::Shadows::insert(PolicyTier& t, std::shared_ptr<const PolicyEntry> e, std::uint64_t rank,
                                std::uint64_t epoch) {
  auto& g = groups_[key(*e)];
  if (g.empty() || rank < g.begin()->first) {
    if (!g.empty()) t.erase(g.begin()->second.get(), epoch);
    t.insert(e, rank, epoch);
  }
  g.emplace(rank, std::move(e));
}

void DataPlane::Shadows::erase(PolicyTier& t, const PolicyEntry* e, std::uint64_t rank, std::uint64_t epoch) {
  auto gi = groups_.find(key(*e));
  if (gi == groups_.end()) return;
  auto& g = gi->second;
  auto it = g.find(rank);
  if (it == g.end() || it->second.get() != e) return;
  const bool filed = it == g.begin();
  g.erase(it);
  if (filed) {
    t.erase(e, epoch);
    if (!g.empty()) t.insert(g.begin()->second, g.begin()->first, epoch);
  }
  if (g.empty()) groups_.erase(gi);
}

PolicyTier& DataPlane::sas_tier() {
  if (next_.sas_epoch != epoch_) {
    next_.sas = std::make_shared<PolicyTier>(*next_.sas);
    next_.sas_epoch = epoch_;
  }
  return *next_.sas;
}

PolicyTier& DataPlane::clear_tier() {
  if (next_.clear_epoch != epoch_) {
    next_.clear = std::make_shared<PolicyTier>(*next_.clear);
    next_.clear_epoch = epoch_;
  }
  return *next_.clear;
}

InboundSad& DataPlane::sad() {
  if (next_.inbound_epoch != epoch_) {
    next_.inbound = std::make_shared<InboundSad>(*next_.inbound);
    next_.inbound_epoch = epoch_;
  }
  return *next_.inbound;
}

// The configuration's policies, each protect policy with its (manual) SA:
// rebuilt whole when one of the SAs they name comes, goes or moves.
void DataPlane::rebuild_configured() {
  auto t = std::make_shared<PolicyTier>();
  std::uint64_t rank = 0;
  for (const auto& sp : static_policies_) {
    auto e = std::make_shared<PolicyEntry>();
    e->policy = sp.policy;
    if (sp.policy.action == core::PolicyAction::kProtect)
      if (auto it = sas_.find(sp.sa_name); it != sas_.end()) e->sa = it->second.out;
    t->insert(std::move(e), rank++, epoch_);
  }
  next_.configured = std::move(t);
  dirty_ = true;
}

// An SA's own policy (its selectors, ranked newest first, standby SAs after
// the others, oldest first: SaParams::standby) and, for a transport-mode SA
// narrowed to a protocol or ports (L2TP: udp/1701), a bypass policy for the
// rest of the traffic between the two hosts, routed into the TUN device
// with it, as a kernel's transport policy for the same selectors would
// leave it; never for a fragment, which may lack the ports that decide.
void DataPlane::add_policies(const std::string& name, Installed& sa) {
  constexpr std::uint64_t kMid = std::uint64_t{1} << 62;
  auto e = std::make_shared<PolicyEntry>();
  e->policy.name = name;
  e->policy.sel = sa.out->params().selectors;
  e->policy.action = core::PolicyAction::kProtect;
  e->sa = sa.out;
  sa.rank = sa.standby ? kMid + sa.order : kMid - sa.order;
  sas_shadows_.insert(sas_tier(), e, sa.rank, epoch_);
  sa.policy = std::move(e);
  const auto& sp = sa.out->params();
  const auto& sel = sp.selectors;
  if (sp.mode == core::SaMode::kTransport && sp.clear_outside_selectors &&
      !(sel.proto == 0 && sel.local_ports.any() && sel.remote_ports.any())) {
    auto c = std::make_shared<PolicyEntry>();
    c->policy.name = name + "/clear";
    c->policy.sel.local = {core::IpRange{sp.local_addr, sp.local_addr}};
    c->policy.sel.remote = {core::IpRange{sp.remote_addr, sp.remote_addr}};
    c->policy.action = core::PolicyAction::kBypass;
    c->policy.whole_packets = true;
    clear_shadows_.insert(clear_tier(), c, sa.rank, epoch_);
    sa.clear = std::move(c);
  }
  if (configured_sa_names_.count(name)) rebuild_configured();
  dirty_ = true;
}

void DataPlane::drop_policies(Installed& sa) {
  if (sa.policy) sas_shadows_.erase(sas_tier(), sa.policy.get(), sa.rank, epoch_);
  if (sa.clear) clear_shadows_.erase(clear_tier(), sa.clear.get(), sa.rank, epoch_);
  sa.policy.reset();
  sa.clear.reset();
  dirty_ = true;
}

bool DataPlane::install(core::SaParams params, std::string& why) {
  std::lock_guard lock(mutex_);
  // Inbound packets find an SA by this SPI (a bundle: its AH SA's).
  const std::uint32_t key = params.protocol == core::IpsecProtocol::kAhEsp ? params.ah_in.spi : params.in.spi;
  if (auto o = spi_owner_.find(key); o != spi_owner_.end() && o->second != params.name) {
    why = "inbound SPI " + core::spi_hex(key) + " is already used by " + o->second;
    return false;
  }
  auto in = std::shared_ptr<InboundSa>(InboundSa::create(params, why));
  if (!in) return false;
  auto out = std::shared_ptr<OutboundSa>(OutboundSa::create(params, why, lanes_));
  if (!out) return false;
  // The same name (and so the same inbound SPI) as a rekeyed SA still
  // lingering: that one goes now, before its expiry could take this one's.
  if (auto r = find_rekeyed(params.name); r != rekeyed_.end()) drop_rekeyed(r);
  // Its packets are encrypted by one worker: the one that decrypts its
  // inbound half (ESP in UDP is steered by SPI mod workers; worker 0 reads
  // raw ESP and AH). The TUN device queues a flow's packets for the queue
  // that last wrote that flow's packets back (its flow table, with a
  // symmetric hash), that is for this same worker: a flow with traffic both
  // ways needs no hand-off. (The worker after it, as before, handed every
  // outbound packet over: a copy each, and no faster on two cores.)
  out->set_owner(lanes_ > 1 && params.encap == core::Encap::kUdp ? key % lanes_ : 0);
  if (auto it = sas_.find(params.name); it != sas_.end()) {
    spi_owner_.erase(it->second.in_key);
    sad().erase(it->second.in_key, epoch_);
    drop_policies(it->second);
    retire(std::move(it->second));
    sas_.erase(it);
  }
  spi_owner_[key] = params.name;
  sad().insert(key, in, epoch_);
  auto& sa = sas_[params.name] = Installed{std::move(out), std::move(in), ++installs_, params.standby, key, {}, {}, 0};
  add_policies(params.name, sa);
  publish();
  core::log::info("esp", "installed SA ", params.name, " ", params.transform.name(), " out ",
                  core::spi_hex(params.out.spi), " in ", core::spi_hex(params.in.spi), " ",
                  params.local_addr.to_string(), " <-> ", params.remote_addr.to_string(),
                  params.encap == core::Encap::kUdp ? " (UDP-encapsulated)" : "");
  return true;
}

bool DataPlane::remove(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto it = sas_.find(name);
  if (it == sas_.end()) {
    // A rekeyed SA's inbound half goes at once when asked for by name.
    auto r = find_rekeyed(name);
    if (r == rekeyed_.end()) return false;
    drop_rekeyed(r);
    publish();
    core::log::info("esp", "removed the inbound half of rekeyed SA ", name);
    return true;
  }
  spi_owner_.erase(it->second.in_key);
  sad().erase(it->second.in_key, epoch_);
  drop_policies(it->second);
  retire(std::move(it->second));
  sas_.erase(it);
  if (configured_sa_names_.count(name)) rebuild_configured();
  publish();
  core::log::info("esp", "removed SA ", name);
  return true;
}

bool DataPlane::remove_rekeyed(const std::string& name, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto it = sas_.find(name);
  if (it == sas_.end()) return false;
  // Its policy goes (the new SA sends); its SPI stays in the SAD and in
  // spi_owner_, so no other SA takes it meanwhile. At most kMaxRekeyed wait
  // (a peer rekeying in a loop): beyond that the oldest goes early.
  drop_policies(it->second);
  if (rekeyed_.size() >= kMaxRekeyed) drop_rekeyed(rekeyed_.begin());
  rekeyed_.emplace_back(now + core::kRekeyedInboundDelay, std::move(it->second));
  sas_.erase(it);
  if (configured_sa_names_.count(name)) rebuild_configured();
  publish();
  core::log::info("esp", "removed SA ", name, " (rekeyed: its inbound SPI stays ",
                  core::kRekeyedInboundDelay.count(), " s for packets in flight)");
  return true;
}

std::vector<std::pair<DataPlane::Clock::time_point, DataPlane::Installed>>::iterator DataPlane::find_rekeyed(
    const std::string& name) {
  return std::find_if(rekeyed_.begin(), rekeyed_.end(),
                      [&](const auto& x) { return x.second.out->params().name == name; });
}

// Its SPI leaves the SAD (and spi_owner_, which still names it: install()
// drops a lingering SA of the same name first).
void DataPlane::drop_rekeyed(std::vector<std::pair<Clock::time_point, Installed>>::iterator r) {
  spi_owner_.erase(r->second.in_key);
  sad().erase(r->second.in_key, epoch_);
  core::log::debug("esp", "inbound SPI ", core::spi_hex(r->second.in_key), " of rekeyed SA ",
                   r->second.out->params().name, " removed");
  retire(std::move(r->second));
  rekeyed_.erase(r);
  dirty_ = true;
}

void DataPlane::expire_rekeyed(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  // In the order removed, each waiting the same delay: the oldest first.
  bool any = false;
  while (!rekeyed_.empty() && rekeyed_.front().first <= now) {
    drop_rekeyed(rekeyed_.begin());
    any = true;
  }
  if (any) publish();
}

bool DataPlane::update_path(const std::string& name, const core::SaPath& path) {
  std::lock_guard lock(mutex_);
  auto it = sas_.find(name);
  if (it == sas_.end()) return false;
  const auto& old = it->second.out->params();
  if (old.local_addr == path.local_addr && old.remote_addr == path.remote_addr && old.encap == path.encap &&
      old.remote_port == path.remote_port)
    return true;
  std::shared_ptr<OutboundSa> moved = OutboundSa::moved(*it->second.out, path);
  superseded_.push_back(std::exchange(it->second.out, std::move(moved)));
  drop_policies(it->second);
  add_policies(name, it->second);
  fold_retired();  // bounds superseded_: paths no worker holds any more go
  publish();
  core::log::info("esp", "SA ", name, " now sends to ", path.remote_addr.to_string(),
                  path.encap == core::Encap::kUdp ? " port " + std::to_string(path.remote_port) : std::string(),
                  " from ", path.local_addr.to_string());
  return true;
}

void DataPlane::retire(Installed sa) {
  sa.policy.reset();
  sa.clear.reset();
  retiring_.push_back(std::move(sa));
}

void DataPlane::fold_retired() {
  // Workers drop their snapshot reference after each batch; once only this
  // list holds an SA, its counters are final.
  std::erase_if(superseded_, [](const auto& out) { return out.use_count() == 1; });
  std::erase_if(retiring_, [this](const Installed& sa) {
    if (sa.in.use_count() > 1 || sa.out.use_count() > 1 || !sa.out->sole_holder()) return false;
    add_counters(retired_, sa.in->counters());
    add_counters(retired_, sa.out->counters());
    return true;
  });
}

const core::TrafficCounters& DataPlane::retired() {
  std::lock_guard lock(mutex_);
  reclaim();
  fold_retired();
  // What is not final yet counts as it stands, so that totals never go
  // back while an SA waits to be folded in.
  auto zero = [](std::atomic<std::uint64_t>& a) { a.store(0, std::memory_order_relaxed); };
  zero(retired_view_.out.packets);
  zero(retired_view_.out.bytes);
  zero(retired_view_.in.packets);
  zero(retired_view_.in.bytes);
  for (auto& d : retired_view_.drops) zero(d);
  add_counters(retired_view_, retired_);
  auto add_sa = [&](const Installed& sa) {
    add_counters(retired_view_, sa.in->counters());
    add_counters(retired_view_, sa.out->counters());
  };
  for (const auto& sa : retiring_) add_sa(sa);
  for (const auto& r : rekeyed_) add_sa(r.second);
  return retired_view_;
}

void DataPlane::set_trap_policies(std::vector<core::Policy> traps) {
  std::lock_guard lock(mutex_);
  auto t = std::make_shared<PolicyTier>();
  std::uint64_t rank = 0;
  for (auto& p : traps) {
    auto e = std::make_shared<PolicyEntry>();
    e->policy = std::move(p);
    e->policy.trap = true;
    e->policy.action = core::PolicyAction::kProtect;
    e->policy.sa_index = -1;
    t->insert(std::move(e), rank++, epoch_);
  }
  next_.traps = std::move(t);
  dirty_ = true;
  publish();
}

void DataPlane::begin_batch() {
  std::lock_guard lock(mutex_);
  batching_ = true;
}

void DataPlane::end_batch() {
  std::lock_guard lock(mutex_);
  batching_ = false;
  if (dirty_) publish_now();
}

void DataPlane::publish() {
  if (batching_) {
    dirty_ = true;
    return;
  }
  publish_now();
}

void DataPlane::publish_now() {
  dirty_ = false;
  auto s = std::make_shared<Snapshot>();
  s->configured = next_.configured;
  s->sas = next_.sas;
  s->traps = next_.traps;
  s->clear = next_.clear;
  s->inbound = next_.inbound;
  std::shared_ptr<const Snapshot> old;
  {
    std::lock_guard lock(snap_mutex_);
    old = std::exchange(owned_, s);
  }
  live_.store(s.get(), std::memory_order_seq_cst);
  const std::uint64_t e = pub_epoch_.fetch_add(1, std::memory_order_seq_cst) + 1;
  if (old) replaced_.emplace_back(e, std::move(old));
  reclaim();
  ++epoch_;  // what was just published is copied before its next change
}

void DataPlane::reclaim() {
  // A reader that entered at epoch >= e (or is offline) cannot hold what
  // was replaced at e: it loaded the snapshot pointer after the replacement.
  std::uint64_t oldest = kOffline;
  for (unsigned r = 0; r < lanes_; ++r) oldest = std::min(oldest, readers_[r].seen.load(std::memory_order_seq_cst));
  std::erase_if(replaced_, [oldest](const auto& p) { return p.first <= oldest; });
}

OutDecision DataPlane::process_outbound(const Snapshot& s, core::Packet& pkt, unsigned lane) noexcept {
  const OutDecision d = classify_outbound(s, pkt);
  return d.action == OutAction::kSend ? seal_outbound(d, pkt, lane) : d;
}

OutDecision DataPlane::seal_outbound(const OutDecision& d, core::Packet& pkt, unsigned lane) noexcept {
  OutboundSa* sa = d.sa;
  const Drop r = sa->encapsulate(pkt, lane);
  if (r != Drop::kNone) {
    log_drop(r, "outbound", sa->spi(), sa->params().remote_addr);
    return {OutAction::kDrop, r, sa};
  }
  return {OutAction::kSend, Drop::kNone, sa};
}

OutDecision DataPlane::classify_outbound(const Snapshot& s, core::Packet& pkt) noexcept {
  core::PacketInfo info;
  if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) {
    global_.drop(Drop::kMalformed);
    return {OutAction::kDrop, Drop::kMalformed, nullptr};
  }
  pkt.len = info.total_len;
  const PolicyEntry* entry = s.lookup(info);
  if (!entry) {
    global_.drop(Drop::kNoPolicy);
    return {OutAction::kDrop, Drop::kNoPolicy, nullptr};
  }
  const core::Policy* pol = &entry->policy;
  switch (pol->action) {
    case core::PolicyAction::kBypass: return {OutAction::kBypass, Drop::kNone, nullptr};
    case core::PolicyAction::kDiscard:
      global_.drop(Drop::kDiscardPolicy);
      return {OutAction::kDrop, Drop::kDiscardPolicy, nullptr};
    case core::PolicyAction::kProtect: break;
  }
  if (pol->trap) return {OutAction::kAcquire, Drop::kNone, nullptr, pol};
  OutboundSa* sa = entry->sa.get();
  if (!sa) {
    global_.drop(Drop::kNoSa);
    return {OutAction::kDrop, Drop::kNoSa, nullptr};
  }
  return {OutAction::kSend, Drop::kNone, sa};
}

Drop DataPlane::process_inbound(const Snapshot& s, core::Packet& pkt, Via via) noexcept {
  std::uint32_t spi = 0;
  if (!peek_spi(pkt.span(), spi) || pkt.len < kEspHeaderLen) {
    global_.drop(Drop::kMalformed);
    log_drop(Drop::kMalformed, "inbound", 0, pkt.peer);
    return Drop::kMalformed;
  }
  InboundSa* sa = s.find_inbound(spi);
  const bool udp = sa && sa->params().encap == core::Encap::kUdp;
  if (!sa || sa->params().protocol != core::IpsecProtocol::kEsp || (via == Via::kUdp && !udp) ||
      (via == Via::kRaw && udp)) {
    global_.drop(Drop::kBadSpi);
    log_drop(Drop::kBadSpi, "inbound", spi, pkt.peer);
    return Drop::kBadSpi;
  }
  Drop d = sa->decapsulate(pkt);
  if (d != Drop::kNone && d != Drop::kDummy) log_drop(d, "inbound", spi, pkt.peer);
  return d;
}

Drop DataPlane::process_inbound_ah(const Snapshot& s, core::Packet& pkt) noexcept {
  std::size_t total = 0, nh_pos = 0;
  const std::size_t ah_off = find_ah(pkt.span(), total, nh_pos);
  if (ah_off == 0 || total < ah_off + kAhHeaderLen) {
    global_.drop(Drop::kMalformed);
    log_drop(Drop::kMalformed, "inbound AH", 0, pkt.peer);
    return Drop::kMalformed;
  }
  const std::uint32_t spi = core::load_be32(pkt.data() + ah_off + 4);
  InboundSa* sa = s.find_inbound(spi);
  if (!sa || sa->params().protocol == core::IpsecProtocol::kEsp) {
    global_.drop(Drop::kBadSpi);
    log_drop(Drop::kBadSpi, "inbound AH", spi, pkt.peer);
    return Drop::kBadSpi;
  }
  Drop d = sa->decapsulate(pkt);
  if (d != Drop::kNone && d != Drop::kDummy) log_drop(d, "inbound AH", spi, pkt.peer);
  return d;
}

void DataPlane::log_drop(Drop d, const char* where, std::uint32_t spi,
                         const core::IpAddress& from) {
  std::uint64_t suppressed = 0;
  if (!drop_log_.allow(suppressed)) return;
  core::log::warn("esp", "dropped ", where, " packet, SPI ", core::spi_hex(spi), " peer ",
                  from.to_string(), ": ", core::to_string(d),
                  suppressed ? " (" + std::to_string(suppressed) + " more drops not logged)" : "");
}

}  // namespace ipsecgw::esp
