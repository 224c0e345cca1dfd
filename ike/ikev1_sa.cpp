// One ISAKMP SA: its state, sending and dispatching, timers (retransmission,
// DPD, lifetimes, rekeys) and status. Its exchanges: ikev1_sa_phase1.cpp,
// ikev1_sa_quick.cpp, ikev1_sa_informational.cpp.
#include "ike/ikev1_sa.hpp"

#include <algorithm>
#include <cmath>

#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

const char* IsakmpSa::state_name(State s) noexcept {
  static const char* names[] = {"MAIN_MODE", "ESTABLISHED", "DEAD"};
  return names[static_cast<int>(s)];
}

bool IsakmpSa::legal(State from, State to) noexcept {
  switch (from) {
    case State::kMainMode: return to == State::kEstablished || to == State::kDead;
    case State::kEstablished: return to == State::kDead;
    case State::kDead: return false;
  }
  return false;
}

IsakmpSa::IsakmpSa(Manager& m, const ConnectionConfig& c, bool initiator, Endpoint local, Endpoint remote,
                   TimePoint now)
    : mgr_(m), conn_(c), initiator_(initiator), local_(local), remote_(remote), first_seen_(remote), created_(now),
      last_heard_(now) {
  mgr_.half_open_changed(*this, +1);
}

IsakmpSa::~IsakmpSa() {
  if (state_ == State::kMainMode) mgr_.half_open_changed(*this, -1);
}

void IsakmpSa::set_state(State to) {
  if (to == state_) return;
  if (!legal(state_, to)) {
    ++mgr_.host_.counters.state_bugs;
    error(kTag, tag(), ": BUG: illegal state change ", state_name(state_), " -> ", state_name(to));
  } else {
    debug(kTag, tag(), ": ", state_name(state_), " -> ", state_name(to));
  }
  if (state_ == State::kMainMode) mgr_.half_open_changed(*this, -1);
  state_ = to;
}

std::string IsakmpSa::tag() const { return conn_.name + "[" + core::hex64(cky_i_) + "]"; }

void IsakmpSa::remember_peer_mid(std::uint32_t mid) {
  peer_mids_.insert(mid);
  peer_mid_order_.push_back(mid);
  if (peer_mid_order_.size() > kRememberedMids) {
    peer_mids_.erase(peer_mid_order_.front());
    peer_mid_order_.pop_front();
  }
}

void IsakmpSa::send(const Bytes& m) { mgr_.host_.send(local_, remote_, m); }

MainModeConfig IsakmpSa::main_config(bool initial_contact) const {
  MainModeConfig mc;
  mc.proposals = conn_.proposals;
  mc.psk = core::SecureBytes(conn_.psk.span());
  mc.local_id = id_from(conn_.local_id, local_);
  if (!conn_.remote_id.empty()) mc.remote_id = id_from(conn_.remote_id, remote_);
  // The lifetime we propose: the hard limit after the rekey (+10%).
  mc.life_seconds = conn_.rekey_time ? conn_.rekey_time + conn_.rekey_time / 10 : 28800;
  mc.random = mgr_.host_.random;
  mc.local_addr = local_.addr;
  mc.remote_addr = remote_.addr;
  mc.local_port = local_.port;
  mc.remote_port = remote_.port;
  mc.initial_contact = initial_contact;
  mc.aggressive = conn_.aggressive;
  return mc;
}

QuickModeConfig IsakmpSa::quick_config(const ChildConfig& cc) const {
  QuickModeConfig qc;
  qc.esp_proposals = cc.esp_proposals;
  qc.ah_proposals = cc.ah_proposals;
  qc.proto = cc.ts_proto;
  qc.local_port = cc.local_ports.any() ? 0 : cc.local_ports.lo;
  qc.remote_port = cc.remote_ports.any() ? 0 : cc.remote_ports.lo;
  qc.local_ts = cc.local_ts.empty() ? core::IpRange{local_.addr, local_.addr} : cc.local_ts.front();
  qc.remote_ts = cc.remote_ts.empty() ? core::IpRange{remote_.addr, remote_.addr} : cc.remote_ts.front();
  if (cc.mode == core::SaMode::kTransport)
    qc.mode = !nat() ? EncapMode::kTransport : p1_.natt_draft ? EncapMode::kUdpTransportDraft : EncapMode::kUdpTransport;
  else
    qc.mode = !nat() ? EncapMode::kTunnel : p1_.natt_draft ? EncapMode::kUdpTunnelDraft : EncapMode::kUdpTunnel;
  const std::uint32_t life = cc.life_time ? cc.life_time : cc.rekey_time + cc.rekey_time / 10;
  qc.life_seconds = life;
  qc.life_kilobytes = cc.life_bytes / 1024;
  qc.random = mgr_.host_.random;
  return qc;
}
void IsakmpSa::receive(const Datagram& d, const Header& h, TimePoint now) {
  if (h.exchange == Exchange::kMain || h.exchange == Exchange::kAggressive) return on_main_mode(d, h, now);
  if (state_ != State::kEstablished) {
    if (h.exchange == Exchange::kInformational && !h.encrypted()) return on_informational(d, h, now);
    if (h.exchange == Exchange::kInformational && initiator_ && mm_ && mm_flight_.last_out.size() > 19 &&
        (mm_flight_.last_out[19] & kFlagEncrypted) && d.remote.addr == remote_.addr) {
      // An encrypted notification in answer to our message 5 (strongSwan
      // sends one when it cannot read message 5): the keys differ, and with
      // the same DH exchange only the PSK can. Not authenticated, so it is
      // said and counted once, and the exchange runs out its retransmissions.
      ++mgr_.host_.counters.invalid_messages;
      suspect_auth("the peer answered message 5 with an encrypted notification it could not have sent with our keys "
                   "(a different pre-shared key?)",
                   now);
      return;
    }
    ++mgr_.host_.counters.dropped_messages;
    debug(kTag, tag(), ": ", to_string(h.exchange), " before phase 1 is complete, dropped");
    return;
  }
  if (h.exchange == Exchange::kQuick) return on_quick_mode(d, h, now);
  if (h.exchange == Exchange::kInformational) return on_informational(d, h, now);
  ++mgr_.host_.counters.dropped_messages;
  warn(kTag, tag(), ": ", to_string(h.exchange), " exchange not supported, dropped");
}
// ---- Timers ------------------------------------------------------------------------

void IsakmpSa::peer_dead(const std::string& why, TimePoint now) {
  (void)now;
  warn(kTag, tag(), ": ", why, "; peer considered dead");
  restart_wanted_ = state_ == State::kEstablished;
  if (!restart_wanted_ && !failure_counted_) {
    ++mgr_.host_.counters.ike_failed;
    ++mgr_.host_.counters.ikev1_main_mode_failed;
  }
  remove_children();
  set_state(State::kDead);
}

TimePoint IsakmpSa::deadline() const {
  TimePoint t = TimePoint::max();
  if (state_ == State::kDead) return t;
  t = std::min(t, mm_flight_.schedule.next());
  // The half-open limit is the responder's; the initiator's retransmissions end its attempt.
  if (state_ == State::kMainMode) return initiator_ ? t : std::min(t, created_ + kHalfOpenLife);
  for (const auto& [mid, q] : quick_) {
    t = std::min(t, q.flight.schedule.next());
    if (q.done_at != TimePoint::max()) t = std::min(t, q.done_at + kQuickLinger);
  }
  for (const auto& c : children_) t = std::min({t, c.rekeying ? TimePoint::max() : c.rekey_at, c.expire_at});
  t = std::min({t, rekeying_ ? TimePoint::max() : rekey_at_, expire_at_, dpd_next_, delete_at_});
  if (dpd_sent_ != TimePoint::max()) {
    const auto timeout = conn_.dpd_timeout ? conn_.dpd_timeout : 5 * conn_.dpd_delay;
    t = std::min(t, after(dpd_sent_, timeout));
  }
  return t;
}

void IsakmpSa::tick(TimePoint now) {
  const auto& o = mgr_.host_.opt;
  auto resend = [&](Flight& f, const std::string& what) -> bool {
    switch (f.schedule.poll(now, o)) {
      case RetransmitSchedule::Due::kNotYet: return true;
      case RetransmitSchedule::Due::kGiveUp: return false;
      case RetransmitSchedule::Due::kResend: break;
    }
    ++mgr_.host_.counters.retransmits;
    debug(kTag, tag(), ": retransmitting ", what, " (", f.schedule.tries(), ")");
    send(f.last_out);
    return true;
  };
  if (state_ == State::kMainMode) {
    if (!resend(mm_flight_, "Main Mode")) {
      // Message 5 unanswered is what a peer with a different PSK does: it cannot decrypt it.
      const bool after5 = mm_flight_.last_out.size() > 19 && (mm_flight_.last_out[19] & kFlagEncrypted);
      peer_dead(std::string("no answer to Main Mode after ") + std::to_string(o.retransmit_tries) + " transmissions" +
                    (after5 ? " of message 5 (a different pre-shared key on the peer?)" : ""),
                now);
      return;
    }
    if (now >= created_ + kHalfOpenLife && !initiator_) {
      if (mgr_.log_allowed(now)) warn(kTag, tag(), ": half-open Main Mode from ", remote_.to_string(), " timed out");
      if (!failure_counted_) ++mgr_.host_.counters.ikev1_main_mode_failed;
      set_state(State::kDead);
    }
    return;
  }
  if (state_ != State::kEstablished) return;
  if (now >= delete_at_) {
    // An IPsec SA the peer made here meanwhile goes to the successor too.
    if (auto* next = mgr_.successor(*this)) next->adopt_children(*this);
    delete_all(now, delete_why_);
    return;
  }
  // Main Mode's last message may still need resending until the first Quick Mode shows the peer has it.
  mm_flight_.schedule.stop();
  for (auto it = quick_.begin(); it != quick_.end();) {
    auto& q = it->second;
    if (q.done_at != TimePoint::max()) {
      it = now >= q.done_at + kQuickLinger ? quick_.erase(it) : std::next(it);
      continue;
    }
    if (!resend(q.flight, "Quick Mode " + core::hex32(it->first))) {
      warn(kTag, tag(), ": no answer to Quick Mode for ", q.child->name, " after ", o.retransmit_tries, " transmissions");
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      it = drop_quick(it, now);
      continue;
    }
    ++it;
  }
  if (dpd_sent_ != TimePoint::max()) {
    const auto timeout = conn_.dpd_timeout ? conn_.dpd_timeout : 5 * conn_.dpd_delay;
    if (now >= after(dpd_sent_, timeout)) {
      peer_dead("no R-U-THERE-ACK within " + std::to_string(timeout) + " s (dpd_timeout)", now);
      return;
    }
  }
  if (now >= dpd_next_) {
    // RFC 3706 5.3: a fresh sequence number per R-U-THERE, also for resends.
    if (dpd_seq_ == 0) mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&dpd_seq_), sizeof dpd_seq_});
    dpd_seq_ = (dpd_seq_ & 0x7fffffff) + 1;
    if (dpd_sent_ == TimePoint::max()) dpd_sent_ = now;
    dpd_next_ = after(now, std::max<std::uint32_t>(1, conn_.dpd_delay));
    debug(kTag, tag(), ": R-U-THERE ", dpd_seq_);
    informational({dpd_notify(false, p1_.cky_i, p1_.cky_r, dpd_seq_)});
  }
  for (auto it = children_.begin(); it != children_.end();) {
    if (now >= it->expire_at) {
      warn(kTag, tag(), ": IPsec SA ", it->name, " reached its hard lifetime, removed");
      informational(it->deletes());
      mgr_.host_.installer.remove(it->name);
      it = children_.erase(it);
      continue;
    }
    ++it;
  }
  for (std::size_t i = 0; i < children_.size(); ++i) {
    auto& c = children_[i];
    if (c.rekeying || now < c.rekey_at) continue;
    c.rekeying = true;
    info(kTag, tag(), ": rekeying IPsec SA ", c.name);
    const ChildConfig& cc = *c.cfg;
    const std::uint32_t spi = c.spi_in;
    if (!start_quick(cc, now, spi)) {
      children_[i].rekeying = false;
      children_[i].rekey_at = std::min(children_[i].expire_at, now + kRekeyRetry);
    }
  }
  if (now >= expire_at_) {
    bool successor_under_way = false;
    for (const auto& [k, other] : mgr_.sas_)
      if (other.get() != this && other->replaces_ == p1_.cky_i && other->state_ == State::kMainMode) successor_under_way = true;
    if (!successor_under_way || expiry_extended_ || children_.empty()) {
      delete_all(now, "reached its lifetime");
      return;
    }
    expiry_extended_ = true;
    expire_at_ = now + kExpiryGrace;
    info(kTag, tag(), ": reached its lifetime with its rekey's Main Mode under way: kept up to ",
         std::chrono::duration_cast<std::chrono::seconds>(kExpiryGrace).count(), " s more for its IPsec SAs to move");
  }
  if (!rekeying_ && now >= rekey_at_) {
    rekeying_ = true;
    info(kTag, tag(), ": rekeying the ISAKMP SA (a new Main Mode)");
    std::string why;
    auto* next = mgr_.start_main_mode(conn_, now, false, why);
    if (!next) warn(kTag, tag(), ": phase-1 rekey not started: ", why);
    else next->replaces_ = p1_.cky_i;
  }
}

IkeStatus IsakmpSa::status(TimePoint now) const {
  auto secs = [&](TimePoint t) -> std::int64_t {
    if (t == TimePoint::max()) return -1;
    return std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(t - now).count());
  };
  IkeStatus st;
  st.connection = conn_.name;
  st.version = 1;
  st.state = state_ == State::kEstablished ? "ESTABLISHED" : state_ == State::kMainMode ? "CONNECTING" : "DEAD";
  st.initiator = initiator_;
  st.spi_i = cky_i_;
  st.spi_r = cky_r_;
  st.local = local_.to_string();
  st.remote = remote_.to_string();
  st.local_id = conn_.local_id.empty() ? local_.addr.to_string() : conn_.local_id;
  st.remote_id = state_ == State::kEstablished ? p1_.peer_id.to_string() : "";
  st.algorithms = state_ == State::kEstablished ? p1_.suite.name() : "";
  st.nat_local = p1_.nat_local;
  st.nat_remote = p1_.nat_remote;
  st.udp_encap = nat();
  st.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - created_).count();
  st.rekey_in_s = secs(rekey_at_);
  for (const auto& c : children_) {
    ChildStatus cs;
    cs.name = c.name;
    cs.child = c.cfg->name;
    cs.spi_in = c.spi_in;
    cs.spi_out = c.spi_out;
    cs.algorithms = c.algorithms();
    cs.protocol = c.ah ? "ah+esp" : c.suite.is_ah() ? "ah" : "esp";
    cs.mode = c.suite.mode == EncapMode::kTransport || c.suite.mode == EncapMode::kUdpTransport ||
                      c.suite.mode == EncapMode::kUdpTransportDraft
                  ? "transport"
                  : "tunnel";
    cs.pfs = c.pfs;
    cs.local_ts = c.local_ts.to_string();
    cs.remote_ts = c.remote_ts.to_string();
    cs.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - c.established).count();
    cs.rekey_in_s = c.rekeying ? 0 : secs(c.rekey_at);
    cs.expire_in_s = secs(c.expire_at);
    st.children.push_back(std::move(cs));
  }
  return st;
}

}  // namespace ipsecgw::ike::v1
