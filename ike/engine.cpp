#include "ike/engine.hpp"
#include "ike/ikev2_sa.hpp"

#include <algorithm>
#include <cmath>

#include "ike/ikev1_manager.hpp"

namespace ipsecgw::ike {

std::string Endpoint::to_string() const {
  return (addr.is_v4() ? addr.to_string() : "[" + addr.to_string() + "]") + ":" + std::to_string(port);
}

Engine::Engine(std::vector<ConnectionConfig> conns, core::SaInstaller& installer, EngineOptions opt)
    : installer_(installer), opt_(opt), cookie_secret_(32), cookie_secret_prev_(32) {
  for (auto& c : conns) conns_.push_back(std::make_unique<ConnectionConfig>(std::move(c)));
  random_bytes(cookie_secret_.mut_span());
  random_bytes(cookie_secret_prev_.mut_span());
  v1_ = std::make_unique<v1::Manager>(v1::Host{
      installer_, opt_, counters_,
      [this](const Endpoint& l, const Endpoint& r, Bytes b) { send(l, r, std::move(b)); },
      [this](core::MutByteSpan out) { random_bytes(out); },
      [this] { return new_child_spi(); },
      [this](const Endpoint& l, const Endpoint& r) { return find_connection_for(l, r, 1); },
      [this](const std::string& key) { acquiring_.erase(key); },
      [this](TimePoint now) { return log_allowed(now); }});
}

const ConnectionConfig* Engine::find_connection(const std::string& name) const {
  for (const auto& x : conns_)
    if (x->name == name) return x.get();
  return nullptr;
}

Engine::~Engine() = default;

void Engine::random_bytes(core::MutByteSpan out) {
  if (opt_.random) opt_.random(out);
  else core::random_bytes(out);
}

std::uint64_t Engine::new_spi() {
  std::uint64_t s = 0;
  while (s == 0 || sas_.count(s)) random_bytes({reinterpret_cast<std::uint8_t*>(&s), sizeof s});
  return s;
}

std::uint32_t Engine::new_child_spi() {
  std::uint32_t s = 0;
  while (s < 256) random_bytes({reinterpret_cast<std::uint8_t*>(&s), sizeof s});
  return s;
}

void Engine::send(const Endpoint& local, const Endpoint& remote, Bytes data) {
  out_.push_back({local, remote, std::move(data)});
}

std::vector<Datagram> Engine::take_output() {
  std::vector<Datagram> o;
  o.swap(out_);
  return o;
}

void Engine::start(TimePoint now) {
  for (const auto& cp : conns_) start_connection(*cp, now);
}

void Engine::start_connection(const ConnectionConfig& c, TimePoint now) {
  // The first child with start_action "start" comes with IKE_AUTH; IKEv2
  // makes the others by CREATE_CHILD_SA once the IKE SA is up. IKEv1 queues
  // a Quick Mode for each on the Main Mode under way.
  IkeSa* sa = nullptr;
  bool first = true;
  for (const auto& ch : c.children) {
    if (ch.start_action != StartAction::kStart) continue;
    if (!first && c.version != 1) {
      if (sa) sa->tasks_.queue_child(ch);
      continue;
    }
    std::string why;
    last_initiated_ = nullptr;
    if (!initiate(c.name, ch.name, now, why)) {
      error(kTag, c.name, ": cannot initiate: ", why);
      return;
    }
    if (first && c.version != 1) sa = last_initiated_;  // the IKE SA just made (owned by sas_; nothing ran since)
    first = false;
  }
}

bool Engine::initiate(const std::string& name, const std::string& child, TimePoint now, std::string& why) {
  const ConnectionConfig* c = find_connection(name);
  if (!c) {
    why = "no connection named '" + name + "'";
    return false;
  }
  if (c->version == 1) return v1_->initiate(*c, child, now, why);
  if (c->local_addrs.empty() || c->remote_addrs.empty()) {
    why = "initiating needs local_addrs and remote_addrs";
    return false;
  }
  if (c->proposals.empty() || c->proposals[0].dh.empty()) {
    why = "no IKE proposal with a DH group";
    return false;
  }
  auto sa = std::make_unique<IkeSa>(*this, *c, true);
  sa->spi_i_ = new_spi();
  sa->local_ = {c->local_addrs[0], c->local_port};
  sa->remote_ = {c->remote_addrs[0], c->remote_port};
  if (c->encap) {
    sa->local_.port = core::kNattPort;
    sa->remote_.port = core::kNattPort;
  }
  sa->created_ = now;
  const ChildConfig* first = nullptr;
  for (const auto& ch : c->children)
    if (child.empty() || ch.name == child) {
      first = &ch;
      break;
    }
  sa->tasks_.queue_ike(first);
  sa->tasks_.initiate(now);
  if (sa->state_ == IkeSa::State::kDead) {
    why = "IKE_SA_INIT could not be built (see the log)";
    return false;
  }
  const auto spi = sa->spi_i_;
  last_initiated_ = sa.get();
  add_sa(std::move(sa), spi);
  return true;
}

const ConnectionConfig* Engine::find_connection_for(const Endpoint& local, const Endpoint& remote,
                                                    int version) const {
  const ConnectionConfig* any = nullptr;
  for (const auto& cp : conns_) {
    const auto& c = *cp;
    if (c.version != 0 && c.version != version) continue;
    const bool local_ok = c.local_addrs.empty() ||
        std::find(c.local_addrs.begin(), c.local_addrs.end(), local.addr) != c.local_addrs.end();
    if (!local_ok) continue;
    if (std::find(c.remote_addrs.begin(), c.remote_addrs.end(), remote.addr) != c.remote_addrs.end())
      return &c;
    if (c.remote_addrs.empty() && !any) any = &c;
  }
  return any;
}


void Engine::receive(const Datagram& d, TimePoint now) {
  now_ = now;
  std::string why;
  auto h = parse_header(d.data, why);
  if (!h) {
    ++counters_.invalid_messages;
    debug(kTag, "datagram from ", d.remote.to_string(), " dropped: ", why);
    return;
  }
  if ((h->version >> 4) == 1) {
    v1_->receive(d, now);
    if (auto t = v1_->next_deadline()) note_v1_deadline(*t);
    return;
  }
  if ((h->version >> 4) != 2) {
    ++counters_.invalid_messages;
    debug(kTag, "IKE version ", h->version >> 4, " message from ", d.remote.to_string(), " dropped");
    return;
  }
  if (h->exchange == Exchange::kSaInit && !h->is_response() && h->spi_r == 0) {
    if (h->message_id != 0) return;
    handle_sa_init_request(d, *h, now);
  } else {
    // The sender's I flag says which SPI is ours.
    const std::uint64_t ours = h->from_initiator() ? h->spi_r : h->spi_i;
    auto it = sas_.find(ours);
    if (it == sas_.end() || (h->from_initiator() && it->second->initiator_) ||
        (!h->from_initiator() && !it->second->initiator_)) {
      ++counters_.dropped_messages;
      debug(kTag, "message for unknown IKE SA ", core::hex64(ours), " from ", d.remote.to_string());
      return;
    }
    it->second->on_message(d, *h, now);
    settle_half_open(*it->second);
    // Only the SA that got the message can have died of it.
    if (it->second->state_ == IkeSa::State::kDead) {
      scheduled_.erase(ours);
      sas_.erase(it);
    } else {
      note_deadline(it->second->deadline(), ours);
    }
  }
}

void Engine::bytes_used(const std::string& sa_name, std::uint64_t bytes, TimePoint now) {
  bytes_used(ByteUsage{{sa_name, bytes}}, now);
}

void Engine::bytes_used(const ByteUsage& usage, TimePoint now) {
  if (usage.empty()) return;
  bool due = v1_->bytes_used(usage, now);
  for (auto& [spi, sa] : sas_) {
    for (auto it = sa->children_.begin(); it != sa->children_.end();) {
      auto u = usage.find(it->name);
      if (u == usage.end()) {
        ++it;
        continue;
      }
      const std::uint64_t bytes = u->second;
      const auto& cc = *it->cfg;
      if (cc.life_bytes && bytes >= cc.life_bytes) {
        warn(kTag, sa->tag(), ": Child SA ", it->name, " reached life_bytes (", bytes, "), removed");
        installer_.remove(it->name);
        it = sa->children_.erase(it);
        continue;
      }
      if (cc.rekey_bytes && bytes >= cc.rekey_bytes && !it->rekeying && it->rekey_at > now) {
        info(kTag, sa->tag(), ": Child SA ", it->name, " reached rekey_bytes (", bytes, ")");
        it->rekey_at = now;  // the next tick rekeys it
        due = true;
      }
      ++it;
    }
  }
  if (due) note_deadline(now);
}

Bytes Engine::cookie_for(const Datagram& d, std::uint64_t spi_i, ByteSpan ni, std::uint8_t version) const {
  // RFC 7296 2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>),
  // here with the initiator's port too (one address, many ports, one SPIi
  // must not share a cookie).
  Bytes in(ni.begin(), ni.end());
  core::ByteAppender a{in};
  a.bytes(d.remote.addr.bytes());
  a.u16(d.remote.port);
  a.u64(spi_i);
  const auto& secret = version == cookie_version_ ? cookie_secret_ : cookie_secret_prev_;
  Bytes c{version};
  Bytes mac = prf(core::PrfAlg::kHmacSha256, secret.span(), in);
  c.insert(c.end(), mac.begin(), mac.end());
  return c;
}

bool Engine::cookie_valid(const Datagram& d, std::uint64_t spi_i, ByteSpan ni, ByteSpan cookie) const {
  if (cookie.size() != 33) return false;
  const std::uint8_t v = cookie[0];
  if (v != cookie_version_ && v != static_cast<std::uint8_t>(cookie_version_ - 1)) return false;
  return core::ct_equal(cookie_for(d, spi_i, ni, v), cookie);
}

void Engine::rotate_cookie_secret(TimePoint now) {
  if (cookie_rotated_ == TimePoint{}) cookie_rotated_ = now;
  if (now - cookie_rotated_ < opt_.cookie_secret_life) return;
  cookie_rotated_ = now;
  std::swap(cookie_secret_, cookie_secret_prev_);
  random_bytes(cookie_secret_.mut_span());
  ++cookie_version_;
  debug(kTag, "COOKIE secret rotated (version ", static_cast<int>(cookie_version_), ")");
}

bool Engine::log_allowed(TimePoint now) {
  if (now - log_window_ >= std::chrono::seconds(1)) {
    log_window_ = now;
    log_budget_ = opt_.log_lines_per_second;
  }
  if (log_budget_ == 0) {
    ++counters_.log_suppressed;
    return false;
  }
  --log_budget_;
  return true;
}

void Engine::settle_half_open(IkeSa& sa) {
  if (!sa.half_open_ || sa.state_ == IkeSa::State::kInitDone) return;
  sa.half_open_ = false;
  half_open_.erase({sa.spi_i_, sa.remote_addr_at_init_, sa.remote_port_at_init_});
  if (auto it = half_open_by_addr_.find(sa.remote_addr_at_init_); it != half_open_by_addr_.end() && --it->second == 0)
    half_open_by_addr_.erase(it);
}

// Admission of a new IKE SA (RFC 7296 1.2, 2.6), before any state or
// Diffie-Hellman work: a connection for the peer, the COOKIE once too many
// SAs are half open, the half-open budgets, then the proposal and KE group.
// Everything refused here is counted; its log lines are rate-limited.
void Engine::handle_sa_init_request(const Datagram& d, const Header& h, TimePoint now) {
  // A retransmitted IKE_SA_INIT is answered from its half-open SA.
  if (auto it = half_open_.find({h.spi_i, d.remote.addr, d.remote.port}); it != half_open_.end()) {
    if (auto sa = sas_.find(it->second); sa != sas_.end()) sa->second->tasks_.resend_response();
    return;
  }
  Parsed p;
  std::vector<Payload> pl;
  std::string why;
  auto reply_plain = [&](std::vector<Payload> payloads) {
    Header r;
    r.spi_i = h.spi_i;
    r.spi_r = 0;
    r.exchange = Exchange::kSaInit;
    r.flags = kFlagResponse;
    send(d.local, d.remote, encode_plain(r, payloads));
  };
  RuleViolation v;
  if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
      !check_payload_rules(Exchange::kSaInit, false, pl, {}, v) || !decode_all(pl, p, why)) {
    if (why.empty()) why = v.detail;
    ++counters_.invalid_messages;
    if (log_allowed(now)) warn(kTag, "bad IKE_SA_INIT from ", d.remote.to_string(), ": ", why);
    return;
  }
  if (!p.sa || !p.ke || p.nonce.empty()) {
    ++counters_.invalid_messages;
    if (log_allowed(now)) warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), " without SA, KE or Nonce");
    return;
  }
  const ConnectionConfig* c = find_connection_for(d.local, d.remote, 2);
  if (!c) {
    if (log_allowed(now)) warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), ": no connection configured for it");
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  // Cookies when too many SAs are half open (RFC 7296 2.6).
  rotate_cookie_secret(now);
  if (half_open_.size() >= opt_.cookie_threshold) {
    const auto* ck = p.find(Notify::kCookie);
    if (!ck || !cookie_valid(d, h.spi_i, p.nonce, ck->data)) {
      if (ck) ++counters_.cookies_rejected;
      ++counters_.cookies_sent;
      reply_plain({notify(Notify::kCookie, cookie_for(d, h.spi_i, p.nonce, cookie_version_))});
      return;
    }
  }
  const auto by_addr = half_open_by_addr_.find(d.remote.addr);
  if (half_open_.size() >= opt_.max_half_open ||
      (by_addr != half_open_by_addr_.end() && by_addr->second >= opt_.max_half_open_per_source)) {
    ++counters_.half_open_refused;
    if (log_allowed(now))
      warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), " dropped: ", half_open_.size(), " SAs half open (",
           by_addr == half_open_by_addr_.end() ? 0 : by_addr->second, " from this address)");
    return;
  }
  auto choice = select_ike(c->proposals, *p.sa);
  if (!choice) {
    if (log_allowed(now)) warn(kTag, c->name, ": no acceptable IKE proposal from ", d.remote.to_string());
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
    Bytes g;
    core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
    if (log_allowed(now))
      info(kTag, c->name, ": KE for group ", p.ke->group, " from ", d.remote.to_string(), ", asking for group ",
           static_cast<int>(choice->t.dh));
    reply_plain({notify(Notify::kInvalidKePayload, g)});
    return;
  }
  auto sa = std::make_unique<IkeSa>(*this, *c, false);
  sa->spi_i_ = h.spi_i;
  sa->spi_r_ = new_spi();
  sa->local_ = d.local;
  sa->remote_ = d.remote;
  sa->created_ = now;
  sa->tasks_.process_request(InMessage{h, p, d.data, now});
  if (sa->state_ == IkeSa::State::kDead) return;
  sa->half_open_ = true;
  sa->remote_addr_at_init_ = d.remote.addr;
  sa->remote_port_at_init_ = d.remote.port;
  half_open_[{h.spi_i, d.remote.addr, d.remote.port}] = sa->spi_r_;
  ++half_open_by_addr_[d.remote.addr];
  const auto spi = sa->spi_r_;
  add_sa(std::move(sa), spi);
}

void Engine::set_budgets(const EngineOptions& o) {
  opt_.cookie_threshold = o.cookie_threshold;
  opt_.max_half_open = o.max_half_open;
  opt_.max_half_open_per_source = o.max_half_open_per_source;
  opt_.max_reassembly_bytes = o.max_reassembly_bytes;
  opt_.max_children_per_ike_sa = o.max_children_per_ike_sa;
  opt_.log_lines_per_second = o.log_lines_per_second;
}

bool same_connection(const ConnectionConfig& a, const ConnectionConfig& b) {
  return a.name == b.name && a.version == b.version && a.local_addrs == b.local_addrs &&
         a.remote_addrs == b.remote_addrs && a.local_id == b.local_id && a.remote_id == b.remote_id &&
         a.proposals == b.proposals && a.encap == b.encap && a.dpd_delay == b.dpd_delay &&
         a.dpd_timeout == b.dpd_timeout && a.rekey_time == b.rekey_time && a.reauth_time == b.reauth_time &&
         a.fragment_size == b.fragment_size && a.aggressive == b.aggressive && a.local_port == b.local_port && a.remote_port == b.remote_port &&
         a.children == b.children && core::ct_equal(a.psk.span(), b.psk.span());
}

ReloadResult Engine::reload(std::vector<ConnectionConfig> next, TimePoint now) {
  ReloadResult r;
  std::vector<std::unique_ptr<ConnectionConfig>> kept;
  std::vector<const ConnectionConfig*> to_start;
  // Tear down the SAs of connections that are gone or changed.
  auto tear_down = [&](const ConnectionConfig* c) {
    v1_->delete_all(c, now);
    for (auto& [spi, sa] : sas_) {
      if (&sa->conn_ != c) continue;
      sa->delete_now(now);  // its configuration goes away with the reload
      sa->set_state(IkeSa::State::kDead);
    }
    remove_dead();
    for (auto it = acquiring_.begin(); it != acquiring_.end();)
      it = it->first.rfind(c->name + "/", 0) == 0 ? acquiring_.erase(it) : std::next(it);
  };
  for (auto& old : conns_) {
    auto it = std::find_if(next.begin(), next.end(), [&](const ConnectionConfig& n) { return n.name == old->name; });
    if (it == next.end()) {
      info(kTag, old->name, ": removed by reload");
      tear_down(old.get());
      r.removed.push_back(old->name);
    } else if (same_connection(*old, *it)) {
      r.unchanged.push_back(old->name);
      kept.push_back(std::move(old));
      next.erase(it);
    } else {
      info(kTag, old->name, ": changed by reload; re-establishing");
      tear_down(old.get());
      r.changed.push_back(old->name);
      kept.push_back(std::make_unique<ConnectionConfig>(std::move(*it)));
      to_start.push_back(kept.back().get());
      next.erase(it);
    }
  }
  for (auto& n : next) {
    info(kTag, n.name, ": added by reload");
    r.added.push_back(n.name);
    kept.push_back(std::make_unique<ConnectionConfig>(std::move(n)));
    to_start.push_back(kept.back().get());
  }
  conns_ = std::move(kept);
  for (const auto* c : to_start) start_connection(*c, now);
  return r;
}

void Engine::acquire(const std::string& conn, const std::string& child, TimePoint now) {
  const std::string key = conn + "/" + child;
  if (auto it = acquiring_.find(key); it != acquiring_.end() && now - it->second < std::chrono::seconds(10)) return;
  const ChildConfig* cc = nullptr;
  for (const auto& c : conns_)
    if (c->name == conn)
      for (const auto& ch : c->children)
        if (ch.name == child) cc = &ch;
  if (!cc) return;
  acquiring_[key] = now;
  info(kTag, key, ": acquire for a packet matching the trap policy");
  if (const auto* c = find_connection(conn); c && c->version == 1) {
    v1_->acquire(*c, *cc, now);
    if (auto t = v1_->next_deadline()) note_v1_deadline(*t);
    return;
  }
  for (auto& [spi, sa] : sas_) {
    if (sa->conn_.name != conn) continue;
    if (sa->state_ == IkeSa::State::kEstablished) {
      for (const auto& c : sa->children_)
        if (c.cfg == cc) return;  // already up
      sa->tasks_.queue_child(*cc);  // after the exchange under way, if any
      sa->tasks_.initiate(now);
      note_deadline(sa->deadline(), spi);
      return;
    }
    if (sa->state_ == IkeSa::State::kInitSent || sa->state_ == IkeSa::State::kAuthSent) return;
  }
  std::string why;
  if (!initiate(conn, child, now, why)) {
    warn(kTag, key, ": cannot initiate: ", why);
    acquiring_.erase(key);
  }
}

void Engine::add_sa(std::unique_ptr<IkeSa> sa, std::uint64_t our_spi) {
  note_deadline(sa->deadline(), our_spi);
  sas_[our_spi] = std::move(sa);
}

void Engine::note_deadline(TimePoint t, std::uint64_t spi) {
  if (t == TimePoint::max()) return;
  cached_deadline_ = std::min(cached_deadline_, t);
  if (spi == 0) {
    full_pass_at_ = std::min(full_pass_at_, t);
    return;
  }
  auto [it, fresh] = scheduled_.try_emplace(spi, t);
  if (!fresh) {
    if (it->second <= t) return;  // an entry at or before t is there
    it->second = t;
  }
  timers_.push({t, spi});
  // Stale entries pile up where deadlines keep moving earlier: rebuild from
  // each SA's earliest entry.
  if (timers_.size() > 4 * (scheduled_.size() + 256)) {
    std::vector<Timer> v;
    v.reserve(scheduled_.size());
    for (const auto& [k, when] : scheduled_) v.emplace_back(when, k);
    timers_ = decltype(timers_)(std::greater<>(), std::move(v));
  }
}

void Engine::tick(TimePoint now) {
  now_ = now;
  v1_->tick(now);
  // The SAs whose entries are due; all of them now and then, or when asked.
  bool all = now - last_full_tick_ >= kFullTickEvery || full_pass_at_ <= now;
  if (all) full_pass_at_ = TimePoint::max();
  std::vector<std::uint64_t> spis;
  while (!timers_.empty() && timers_.top().first <= now) {
    const auto [when, spi] = timers_.top();
    timers_.pop();
    auto sc = scheduled_.find(spi);
    if (sc == scheduled_.end() || sc->second != when) continue;  // superseded by an earlier entry
    scheduled_.erase(sc);
    spis.push_back(spi);
  }
  if (all) {
    last_full_tick_ = now;
    spis.clear();
    for (const auto& [spi, sa] : sas_) spis.push_back(spi);
  }
  std::vector<std::pair<std::uint64_t, IkeSa*>> due;
  for (auto spi : spis) {
    auto it = sas_.find(spi);
    if (it == sas_.end()) continue;
    if (it->second->state_ == IkeSa::State::kDead) {
      settle_half_open(*it->second);  // died outside a tick (INITIAL_CONTACT): gone now
      sas_.erase(it);
      scheduled_.erase(spi);
    } else if (it->second->deadline() <= now) {
      due.emplace_back(spi, it->second.get());
    } else {
      note_deadline(it->second->deadline(), spi);  // not due yet: filed again
    }
  }
  // A tick may add SAs (an IKE rekey) and mark others dead.
  for (auto& [spi, sa] : due) {
    sa->tick(now);
    settle_half_open(*sa);
  }
  // Restart connections whose peer went away, when configured to.
  std::vector<std::pair<std::string, std::string>> restart;
  for (auto& [spi, sa] : due) {
    if (sa->state_ == IkeSa::State::kDead && sa->restart_wanted_ && sa->initiator_) {
      for (const auto& ch : sa->conn_.children)
        if (ch.dpd_action == DpdAction::kRestart) {
          restart.emplace_back(sa->conn_.name, ch.name);
          break;
        }
    }
  }
  for (auto& [spi, sa] : due) {
    auto it = sas_.find(spi);
    if (it == sas_.end()) continue;
    if (it->second->state_ == IkeSa::State::kDead) {
      sas_.erase(it);
      scheduled_.erase(spi);
      continue;
    }
    note_deadline(it->second->deadline(), spi);
  }
  if (all && !sas_.empty()) full_pass_at_ = std::min(full_pass_at_, now + kFullTickEvery);  // nothing waits longer
  cached_deadline_ = std::min(timers_.empty() ? TimePoint::max() : timers_.top().first, full_pass_at_);
  for (const auto& [c, ch] : restart) {
    std::string why;
    info(kTag, c, ": restarting");
    initiate(c, ch, now, why);
  }
}

void Engine::shutdown(TimePoint now) {
  v1_->delete_all(nullptr, now);
  for (auto& [spi, sa] : sas_) sa->request_delete(now);
  remove_dead();
  note_deadline(now);
}

bool Engine::shutdown_done() const {
  for (const auto& [spi, sa] : sas_)
    if (sa->deleting()) return false;
  return true;
}

void Engine::finish_shutdown() {
  v1_->delete_all(nullptr, TimePoint{});
  for (auto& [spi, sa] : sas_) {
    if (sa->deleting()) info(kTag, sa->tag(), ": no answer to its DELETE before shutdown");
    sa->remove_children();
    sa->set_state(IkeSa::State::kDead);
  }
  remove_dead();
}

void Engine::remove_dead() {
  for (auto it = sas_.begin(); it != sas_.end();) {
    settle_half_open(*it->second);
    if (it->second->state_ == IkeSa::State::kDead) it = sas_.erase(it);
    else ++it;
  }
}

std::optional<TimePoint> Engine::next_deadline() const {
  TimePoint t = cached_deadline_;
  if (auto v = v1_->next_deadline()) t = std::min(t, *v);
  if (t == TimePoint::max()) return std::nullopt;
  return t;
}

std::size_t Engine::ike_sa_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [spi, sa] : sas_) n += sa->state_ == IkeSa::State::kEstablished;
  return n + v1_->sa_count();
}

std::size_t Engine::child_sa_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [spi, sa] : sas_) n += sa->children_.size();
  return n + v1_->child_count();
}

bool Engine::established(const std::string& conn) const {
  if (v1_->established(conn)) return true;
  for (const auto& [spi, sa] : sas_)
    if (sa->conn_.name == conn && sa->state_ == IkeSa::State::kEstablished) return true;
  return false;
}

bool Engine::terminate(const std::string& conn, const std::string& child, TimePoint now, std::string& why) {
  if (const auto* c = find_connection(conn); c && c->version == 1) return v1_->terminate(*c, child, now, why);
  for (auto& [spi, sa] : sas_) {
    if (sa->conn_.name != conn || sa->state_ != IkeSa::State::kEstablished) continue;
    if (child.empty()) {
      sa->request_delete(now);  // now, or once the outstanding request is answered
      info(kTag, sa->tag(), ": deleting the IKE SA (requested)");
      note_deadline(now);
      return true;
    }
    for (const auto& c : sa->children_) {
      if (c.cfg->name != child) continue;
      sa->tasks_.queue_child_delete(*c.cfg);  // now, or after the exchange under way
      sa->tasks_.initiate(now);
      info(kTag, sa->tag(), ": deleting Child SA ", c.name, " (requested)");
      note_deadline(sa->deadline(), spi);
      return true;
    }
  }
  why = child.empty() ? "no established IKE SA for '" + conn + "'"
                      : "no Child SA '" + child + "' in an established IKE SA of '" + conn + "'";
  return false;
}

std::vector<IkeStatus> Engine::status(TimePoint now) const {
  static const char* states[] = {"CONNECTING", "AUTHENTICATING", "HALF_OPEN", "ESTABLISHED", "DELETING", "REKEYED", "DEAD"};
  auto secs = [&](TimePoint t) -> std::int64_t {
    if (t == TimePoint::max()) return -1;
    return std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(t - now).count());
  };
  std::vector<IkeStatus> out;
  for (const auto& [spi, sa] : sas_) {
    IkeStatus st;
    st.connection = sa->conn_.name;
    st.state = states[static_cast<int>(sa->state_)];
    st.initiator = sa->initiator_;
    st.spi_i = sa->spi_i_;
    st.spi_r = sa->spi_r_;
    st.local = sa->local_.to_string();
    st.remote = sa->remote_.to_string();
    st.local_id = sa->local_id().to_string();
    st.remote_id = sa->peer_id_;
    st.algorithms = sa->out_ ? sa->t_.name() : "";
    st.nat_local = sa->nat_local_;
    st.nat_remote = sa->nat_remote_;
    st.udp_encap = sa->encap();
    st.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - sa->created_).count();
    st.rekey_in_s = secs(sa->rekey_at_);
    for (const auto& c : sa->children_) {
      ChildStatus cs;
      cs.name = c.name;
      cs.child = c.cfg->name;
      cs.spi_in = c.spi_in;
      cs.spi_out = c.spi_out;
      cs.algorithms = c.transform.name();
      cs.protocol = c.transform.is_ah() ? "ah" : "esp";
      cs.mode = c.mode == core::SaMode::kTransport ? "transport" : "tunnel";
      cs.pfs = c.pfs;
      cs.local_ts = ts_string(c.local_ts);
      cs.remote_ts = ts_string(c.remote_ts);
      cs.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - c.established).count();
      cs.rekey_in_s = c.rekeying ? 0 : secs(c.rekey_at);
      cs.expire_in_s = secs(c.expire_at);
      st.children.push_back(std::move(cs));
    }
    out.push_back(std::move(st));
  }
  for (auto& st : v1_->status(now)) out.push_back(std::move(st));
  return out;
}

std::vector<std::string> Engine::describe() const {
  std::vector<std::string> out;
  for (const auto& [spi, sa] : sas_) {
    out.push_back(sa->tag() + " " + IkeSa::state_name(sa->state_) + " " + sa->local_.to_string() +
                  " <-> " + sa->remote_.to_string() + " " + sa->t_.name());
    for (const auto& c : sa->children_) {
      out.push_back("  " + c.name + " " + c.transform.name() + " in " + core::hex32(c.spi_in) + " out " +
                    core::hex32(c.spi_out) + " " + ts_string(c.local_ts) + " === " + ts_string(c.remote_ts));
    }
  }
  for (auto& l : v1_->describe()) out.push_back(std::move(l));
  return out;
}

}  // namespace ipsecgw::ike

