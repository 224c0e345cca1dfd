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

DataPlane::DataPlane(std::vector<core::StaticPolicy> policies)
    : static_policies_(std::move(policies)) {
  std::lock_guard lock(mutex_);
  publish();
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
  auto out = std::shared_ptr<OutboundSa>(OutboundSa::create(params, why));
  if (!out) return false;
  if (auto it = sas_.find(params.name); it != sas_.end()) {
    spi_owner_.erase(it->second.in->spi());
    retire(std::move(it->second));
  }
  spi_owner_[key] = params.name;
  sas_[params.name] = Installed{std::move(out), std::move(in), ++installs_, params.standby};
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
  if (it == sas_.end()) return false;
  spi_owner_.erase(it->second.in->spi());
  retire(std::move(it->second));
  sas_.erase(it);
  publish();
  core::log::info("esp", "removed SA ", name);
  return true;
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
  fold_retired();  // bounds superseded_: paths no worker holds any more go
  publish();
  core::log::info("esp", "SA ", name, " now sends to ", path.remote_addr.to_string(),
                  path.encap == core::Encap::kUdp ? " port " + std::to_string(path.remote_port) : std::string(),
                  " from ", path.local_addr.to_string());
  return true;
}

void DataPlane::retire(Installed sa) { retiring_.push_back(std::move(sa)); }

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
  fold_retired();
  return retired_;
}

void DataPlane::set_trap_policies(std::vector<core::Policy> traps) {
  std::lock_guard lock(mutex_);
  traps_ = std::move(traps);
  for (auto& t : traps_) {
    t.trap = true;
    t.action = core::PolicyAction::kProtect;
    t.sa_index = -1;
  }
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
  std::map<std::string, int> index;
  for (const auto& [name, sa] : sas_) {
    index[name] = static_cast<int>(s->outbound.size());
    s->outbound.push_back(sa.out);
    s->inbound[sa.in->spi()] = sa.in;
  }
  for (const auto& sp : static_policies_) {
    core::Policy p = sp.policy;
    if (p.action == core::PolicyAction::kProtect) {
      auto it = index.find(sp.sa_name);
      p.sa_index = it == index.end() ? -1 : it->second;
    }
    s->spd.add(std::move(p));
  }
  // Each SA protects its own selectors, after the explicit policies; where
  // several protect the same traffic the first found sends: the newest not
  // on standby, then those on standby, oldest first (SaParams::standby).
  std::vector<const std::pair<const std::string, Installed>*> order;
  for (const auto& e : sas_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const auto* a, const auto* b) {
    if (a->second.standby != b->second.standby) return !a->second.standby;
    return a->second.standby ? a->second.order < b->second.order : a->second.order > b->second.order;
  });
  for (const auto* e : order) {
    const auto& [name, sa] = *e;
    core::Policy p;
    p.name = name;
    p.sel = sa.out->params().selectors;
    p.action = core::PolicyAction::kProtect;
    p.sa_index = index[name];
    s->spd.add(std::move(p));
  }
  for (const auto& t : traps_) s->spd.add(t);
  // A transport-mode SA narrowed to a protocol or ports (L2TP: udp/1701)
  // protects only that: the rest of the traffic between the two hosts,
  // routed into the TUN device with it, goes on in the clear, as it would
  // with a kernel's transport policy for the same selectors. Last, after
  // every SA's and trap's policy, and never for a fragment: a later
  // fragment has no ports to show it belongs to the protected traffic.
  for (const auto* e : order) {
    const auto& sp = e->second.out->params();
    const auto& sel = sp.selectors;
    if (sp.mode != core::SaMode::kTransport || !sp.clear_outside_selectors ||
        (sel.proto == 0 && sel.local_ports.any() && sel.remote_ports.any()))
      continue;
    core::Policy p;
    p.name = e->first + "/clear";
    p.sel.local = {core::IpRange{sp.local_addr, sp.local_addr}};
    p.sel.remote = {core::IpRange{sp.remote_addr, sp.remote_addr}};
    p.action = core::PolicyAction::kBypass;
    p.whole_packets = true;
    s->spd.add(std::move(p));
  }
  current_.store(std::move(s), std::memory_order_release);
}

OutDecision DataPlane::process_outbound(const Snapshot& s, core::Packet& pkt) noexcept {
  core::PacketInfo info;
  if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) {
    global_.drop(Drop::kMalformed);
    return {OutAction::kDrop, Drop::kMalformed, nullptr};
  }
  pkt.len = info.total_len;
  const core::Policy* pol = s.spd.lookup_outbound(info);
  if (!pol) {
    global_.drop(Drop::kNoPolicy);
    return {OutAction::kDrop, Drop::kNoPolicy, nullptr};
  }
  switch (pol->action) {
    case core::PolicyAction::kBypass: return {OutAction::kBypass, Drop::kNone, nullptr};
    case core::PolicyAction::kDiscard:
      global_.drop(Drop::kDiscardPolicy);
      return {OutAction::kDrop, Drop::kDiscardPolicy, nullptr};
    case core::PolicyAction::kProtect: break;
  }
  if (pol->trap) return {OutAction::kAcquire, Drop::kNone, nullptr, pol};
  if (pol->sa_index < 0 || static_cast<std::size_t>(pol->sa_index) >= s.outbound.size()) {
    global_.drop(Drop::kNoSa);
    return {OutAction::kDrop, Drop::kNoSa, nullptr};
  }
  OutboundSa* sa = s.outbound[static_cast<std::size_t>(pol->sa_index)].get();
  Drop d = sa->encapsulate(pkt);
  if (d != Drop::kNone) {
    log_drop(d, "outbound", sa->spi(), sa->params().remote_addr);
    return {OutAction::kDrop, d, sa};
  }
  return {OutAction::kSend, Drop::kNone, sa};
}

Drop DataPlane::process_inbound(const Snapshot& s, core::Packet& pkt) noexcept {
  std::uint32_t spi = 0;
  if (!peek_spi(pkt.span(), spi) || pkt.len < kEspHeaderLen) {
    global_.drop(Drop::kMalformed);
    log_drop(Drop::kMalformed, "inbound", 0, pkt.peer);
    return Drop::kMalformed;
  }
  auto it = s.inbound.find(spi);
  if (it == s.inbound.end() || it->second->params().protocol != core::IpsecProtocol::kEsp) {
    global_.drop(Drop::kBadSpi);
    log_drop(Drop::kBadSpi, "inbound", spi, pkt.peer);
    return Drop::kBadSpi;
  }
  Drop d = it->second->decapsulate(pkt);
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
  auto it = s.inbound.find(spi);
  if (it == s.inbound.end() || it->second->params().protocol == core::IpsecProtocol::kEsp) {
    global_.drop(Drop::kBadSpi);
    log_drop(Drop::kBadSpi, "inbound AH", spi, pkt.peer);
    return Drop::kBadSpi;
  }
  Drop d = it->second->decapsulate(pkt);
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
