#include "ike/ikev1_manager.hpp"

#include <algorithm>

#include "core/log.hpp"
#include "ike/ikev1_sa.hpp"

namespace ipsecgw::ike::v1 {

Manager::Manager(Host host) : host_(std::move(host)) {}

void Manager::half_open_changed(const IsakmpSa& sa, int delta) {
  half_open_ = static_cast<std::size_t>(static_cast<long>(half_open_) + delta);
  if (sa.initiator_) return;
  auto& n = half_open_by_source_[sa.first_seen_.addr];
  n = static_cast<std::size_t>(static_cast<long>(n) + delta);
  if (n == 0) half_open_by_source_.erase(sa.first_seen_.addr);
}
Manager::~Manager() {
  sas_.clear();  // before the budgets their destructors update
}

IsakmpSa* Manager::find(const Header& h, const Datagram& d) {
  auto [lo, hi] = sas_.equal_range(h.cky_i);
  for (auto it = lo; it != hi; ++it) {
    IsakmpSa& sa = *it->second;
    if (sa.state_ == IsakmpSa::State::kDead) continue;
    if (h.cky_r == 0) {
      // A repeated message 1, or a refusal of our message 1 (the responder
      // chose no cookie: RFC 2408 5.x notifications in the clear).
      if (sa.remote_.addr != d.remote.addr) continue;
      if (!sa.initiator_ || (h.exchange == Exchange::kInformational && sa.cky_r_ == 0)) return &sa;
      continue;
    }
    if (sa.cky_r_ == h.cky_r) return &sa;
    if (sa.initiator_ && sa.cky_r_ == 0) return &sa;  // message 2 names the responder's cookie
  }
  return nullptr;
}

bool Manager::log_allowed(TimePoint now) { return host_.log_allowed(now); }

void Manager::refuse(const Datagram& d, const Header& h, Notify n, const std::string& why, TimePoint now) {
  // Unauthenticated input: counted always, logged within the engine's rate limit.
  if (log_allowed(now)) warn(kTag, to_string(h.exchange), " from ", d.remote.to_string(), " refused: ", why);
  if (n == Notify{}) return;
  Header r;
  r.cky_i = h.cky_i;
  r.cky_r = 0;
  r.exchange = Exchange::kInformational;
  host_.random({reinterpret_cast<std::uint8_t*>(&r.message_id), sizeof r.message_id});
  NotifyPayload np;
  np.type = static_cast<std::uint16_t>(n);
  core::ByteAppender a{np.spi};
  a.u64(h.cky_i);
  a.u64(0);
  host_.send(d.local, d.remote, encode_plain(r, {{Payload::kNotify, encode_notify(np)}}));
}

void Manager::receive(const Datagram& d, TimePoint now) {
  DecodeError err;
  auto h = parse_header(d.data, err);
  if (!h) {
    ++host_.counters.invalid_messages;
    debug(kTag, "datagram from ", d.remote.to_string(), " dropped: ", err.detail);
    return;
  }
  if (auto* sa = find(*h, d)) {
    sa->receive(d, *h, now);
    remove_dead();
    return;
  }
  if (h->cky_r != 0 || h->message_id != 0 || h->encrypted()) {
    ++host_.counters.ikev1_dropped;
    debug(kTag, to_string(h->exchange), " for unknown ISAKMP SA ", core::hex64(h->cky_i), " from ",
          d.remote.to_string(), ", dropped");
    return;
  }
  if (h->exchange != Exchange::kMain && h->exchange != Exchange::kAggressive) {
    ++host_.counters.ikev1_dropped;
    refuse(d, *h, Notify{}, "not a Main Mode message 1", now);
    return;
  }
  const ConnectionConfig* c = host_.find_connection(d.local, d.remote);
  if (!c) {
    ++host_.counters.ikev1_dropped;
    refuse(d, *h, Notify{}, "no IKEv1 connection for this peer", now);
    return;
  }
  if ((h->exchange == Exchange::kAggressive) != c->aggressive) {
    // Aggressive Mode with a PSK hands out a hash of the key, unencrypted,
    // to anyone who asks (ike-scan -A, then psk-crack): only where the
    // connection says "aggressive": true. And no Main Mode where it does.
    ++host_.counters.ikev1_main_mode_failed;
    refuse(d, *h, Notify::kNoProposalChosen,
           h->exchange == Exchange::kAggressive
               ? "Aggressive Mode is not allowed for " + c->name + " (its PSK hash could be cracked offline)"
               : c->name + " is configured for Aggressive Mode",
           now);
    return;
  }
  if (half_open_ >= host_.opt.max_half_open) {
    ++host_.counters.half_open_refused;
    refuse(d, *h, Notify{}, "too many Main Modes under way (" + std::to_string(host_.opt.max_half_open) + ")", now);
    return;
  }
  if (auto it = half_open_by_source_.find(d.remote.addr);
      it != half_open_by_source_.end() && it->second >= host_.opt.max_half_open_per_source) {
    ++host_.counters.half_open_refused;
    refuse(d, *h, Notify{}, "too many Main Modes under way from this address (" +
                                std::to_string(host_.opt.max_half_open_per_source) + ")", now);
    return;
  }
  auto sa = std::make_unique<IsakmpSa>(*this, *c, false, d.local, d.remote, now);
  sa->mm_ = std::make_unique<MainMode>(false, sa->main_config(false));
  sa->cky_i_ = h->cky_i;
  auto* p = sa.get();
  sas_.emplace(h->cky_i, std::move(sa));
  p->receive(d, *h, now);
  remove_dead();
}

IsakmpSa* Manager::start_main_mode(const ConnectionConfig& c, TimePoint now, bool initial_contact, std::string& why) {
  if (c.local_addrs.empty() || c.remote_addrs.empty()) {
    why = "initiating needs local_addrs and remote_addrs";
    return nullptr;
  }
  auto sa = std::make_unique<IsakmpSa>(*this, c, true, Endpoint{c.local_addrs[0], c.local_port},
                                       Endpoint{c.remote_addrs[0], c.remote_port}, now);
  if (!sa->start(now, initial_contact, why)) return nullptr;
  auto* p = sa.get();
  sas_.emplace(p->cky_i_, std::move(sa));
  return p;
}

IsakmpSa* Manager::established_sa(const ConnectionConfig& c) const {
  IsakmpSa* best = nullptr;
  for (const auto& [k, sa] : sas_)
    if (&sa->conn_ == &c && sa->state_ == IsakmpSa::State::kEstablished &&
        (!best || sa->established_at_ > best->established_at_))
      best = sa.get();
  return best;
}

IsakmpSa* Manager::successor(const IsakmpSa& old) const {
  IsakmpSa* best = nullptr;
  for (const auto& [k, sa] : sas_)
    if (sa.get() != &old && &sa->conn_ == &old.conn_ && sa->state_ == IsakmpSa::State::kEstablished &&
        sa->remote_.addr == old.remote_.addr && sa->established_at_ >= old.established_at_ &&
        (!best || sa->established_at_ > best->established_at_))
      best = sa.get();
  return best;
}

bool Manager::initiate(const ConnectionConfig& c, const std::string& child, TimePoint now, std::string& why) {
  const ChildConfig* cc = nullptr;
  for (const auto& ch : c.children)
    if (child.empty() || ch.name == child) {
      cc = &ch;
      break;
    }
  if (!child.empty() && !cc) {
    why = "no child '" + child + "' in '" + c.name + "'";
    return false;
  }
  if (auto* sa = established_sa(c)) {
    if (!cc) return true;
    if (!sa->start_quick(*cc, now)) {
      why = "Quick Mode could not start";
      return false;
    }
    return true;
  }
  for (auto& [k, sa] : sas_)
    if (&sa->conn_ == &c && sa->initiator_ && sa->state_ == IsakmpSa::State::kMainMode) {
      if (cc) sa->queue_child(cc);
      return true;
    }
  auto* sa = start_main_mode(c, now, host_.opt.initial_contact, why);
  if (!sa) return false;
  if (cc) sa->queue_child(cc);
  return true;
}

void Manager::acquire(const ConnectionConfig& c, const ChildConfig& cc, TimePoint now) {
  for (const auto& [k, sa] : sas_) {
    if (&sa->conn_ != &c) continue;
    for (const auto& ch : sa->children_)
      if (ch.cfg == &cc) return;  // already up
    if (sa->state_ == IsakmpSa::State::kMainMode && sa->initiator_) return;
  }
  std::string why;
  if (!initiate(c, cc.name, now, why)) warn(kTag, c.name, "/", cc.name, ": cannot initiate: ", why);
}

void Manager::restart(const ConnectionConfig& c, TimePoint now) {
  for (const auto& ch : c.children)
    if (ch.dpd_action == DpdAction::kRestart) {
      info(kTag, c.name, ": restarting");
      std::string why;
      if (!initiate(c, ch.name, now, why)) warn(kTag, c.name, ": cannot restart: ", why);
      return;
    }
}

void Manager::tick(TimePoint now) {
  std::vector<IsakmpSa*> due;
  for (auto& [k, sa] : sas_)
    if (sa->deadline() <= now) due.push_back(sa.get());
  for (auto* sa : due) sa->tick(now);
  std::vector<const ConnectionConfig*> restarts;
  for (auto& [k, sa] : sas_)
    if (sa->state_ == IsakmpSa::State::kDead && sa->restart_wanted_ && sa->initiator_) restarts.push_back(&sa->conn_);
  remove_dead();
  for (const auto* c : restarts) restart(*c, now);
}

void Manager::remove_dead() {
  for (auto it = sas_.begin(); it != sas_.end();) {
    if (it->second->state_ == IsakmpSa::State::kDead) {
      // A rekey that died leaves the old SA free to try again.
      if (it->second->replaces_)
        for (auto& [k, o] : sas_)
          if (o->cky_i_ == it->second->replaces_) o->rekeying_ = false;
      it = sas_.erase(it);
    } else {
      ++it;
    }
  }
}

bool Manager::bytes_used(const std::unordered_map<std::string, std::uint64_t>& usage, TimePoint now) {
  bool due = false;
  for (auto& [k, sa] : sas_) {
    std::vector<std::uint32_t> expired;
    for (auto& child : sa->children_) {
      auto u = usage.find(child.name);
      if (u == usage.end()) continue;
      const std::uint64_t bytes = u->second;
      const auto& cc = *child.cfg;
      if (cc.life_bytes && bytes >= cc.life_bytes) {
        warn(kTag, sa->tag(), ": IPsec SA ", child.name, " reached life_bytes (", bytes, "), removed");
        expired.push_back(child.spi_in);
      } else if (cc.rekey_bytes && bytes >= cc.rekey_bytes && !child.rekeying && child.rekey_at > now) {
        info(kTag, sa->tag(), ": IPsec SA ", child.name, " reached rekey_bytes (", bytes, ")");
        child.rekey_at = now;
        due = true;
      }
    }
    for (auto spi : expired) sa->delete_child(spi, "life_bytes");
    due = due || !expired.empty();
  }
  return due;
}

void Manager::delete_all(const ConnectionConfig* c, TimePoint now) {
  for (auto& [k, sa] : sas_)
    if (!c || &sa->conn_ == c) sa->delete_all(now, c ? "configuration changed" : "shutdown");
  remove_dead();
}

bool Manager::terminate(const ConnectionConfig& c, const std::string& child, TimePoint now, std::string& why) {
  for (auto& [k, sa] : sas_) {
    if (&sa->conn_ != &c || sa->state_ != IsakmpSa::State::kEstablished) continue;
    if (child.empty()) {
      sa->delete_all(now, "requested");
      remove_dead();
      return true;
    }
    for (const auto& ch : sa->children_)
      if (ch.cfg->name == child) {
        sa->delete_child(ch.spi_in, "requested");
        return true;
      }
  }
  why = child.empty() ? "no established ISAKMP SA for '" + c.name + "'"
                      : "no IPsec SA '" + child + "' of an established ISAKMP SA of '" + c.name + "'";
  return false;
}

std::optional<TimePoint> Manager::next_deadline() const {
  TimePoint t = TimePoint::max();
  for (const auto& [k, sa] : sas_) t = std::min(t, sa->deadline());
  if (t == TimePoint::max()) return std::nullopt;
  return t;
}

std::vector<IkeStatus> Manager::status(TimePoint now) const {
  std::vector<IkeStatus> out;
  for (const auto& [k, sa] : sas_) out.push_back(sa->status(now));
  return out;
}

std::vector<std::string> Manager::describe() const {
  std::vector<std::string> out;
  for (const auto& [k, sa] : sas_) {
    out.push_back(sa->tag() + " IKEv1 " + IsakmpSa::state_name(sa->state_) + " " + sa->local_.to_string() + " <-> " +
                  sa->remote_.to_string() + (sa->state_ == IsakmpSa::State::kEstablished ? " " + sa->p1_.suite.name() : ""));
    for (const auto& c : sa->children_)
      out.push_back("  " + c.name + " " + c.algorithms() + " in " + core::hex32(c.spi_in) + " out " +
                    core::hex32(c.spi_out) + " " + c.local_ts.to_string() + " === " + c.remote_ts.to_string());
  }
  return out;
}

std::size_t Manager::sa_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [k, sa] : sas_) n += sa->state_ == IsakmpSa::State::kEstablished;
  return n;
}

std::size_t Manager::child_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [k, sa] : sas_) n += sa->children_.size();
  return n;
}

bool Manager::established(const std::string& conn) const {
  for (const auto& [k, sa] : sas_)
    if (sa->conn_.name == conn && sa->state_ == IsakmpSa::State::kEstablished) return true;
  return false;
}

}  // namespace ipsecgw::ike::v1
