#include "ike/ikev1_sa.hpp"

#include <algorithm>
#include <cmath>

#include "core/log.hpp"
#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

using core::log::debug;
using core::log::error;
using core::log::info;
using core::log::warn;

namespace {
constexpr const char* kTag = "ikev1";
// A finished Quick Mode is kept this long to answer a repeated message 2
// (its message 3 was lost); a half-open Main Mode responder this long.
constexpr auto kQuickLinger = std::chrono::seconds(30);
constexpr auto kHalfOpenLife = std::chrono::seconds(30);
// Quick Modes of one ISAKMP SA under way at once (both roles): beyond it a
// new one from the peer is dropped and counted (each holds a DH key with PFS).
constexpr std::size_t kMaxQuickModes = 32;
// The peer's message IDs remembered against replays (RFC 2408 5: unique).
constexpr std::size_t kRememberedMids = 256;
// After a rekey that did not happen, the next try.
constexpr auto kRekeyRetry = std::chrono::seconds(10);

IdPayload id_from(const std::string& s, const Endpoint& fallback) {
  IdPayload id;
  id.protocol = 17;
  id.port = 500;
  const std::string v = s.empty() ? fallback.addr.to_string() : s;
  if (auto a = core::IpAddress::parse(v)) {
    id.type = a->is_v4() ? IdType::kIpv4 : IdType::kIpv6;
    auto b = a->bytes();
    id.data.assign(b.begin(), b.end());
    return id;
  }
  id.type = v.find('@') != std::string::npos ? IdType::kUserFqdn : IdType::kFqdn;
  id.data.assign(v.begin(), v.end());
  return id;
}

TimePoint after(TimePoint now, std::uint32_t s) { return now + std::chrono::seconds(s); }
}  // namespace

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
  qc.local_ts = cc.local_ts.empty() ? core::IpRange{local_.addr, local_.addr} : cc.local_ts.front();
  qc.remote_ts = cc.remote_ts.empty() ? core::IpRange{remote_.addr, remote_.addr} : cc.remote_ts.front();
  qc.mode = !nat() ? EncapMode::kTunnel : p1_.natt_draft ? EncapMode::kUdpTunnelDraft : EncapMode::kUdpTunnel;
  const std::uint32_t life = cc.life_time ? cc.life_time : cc.rekey_time + cc.rekey_time / 10;
  qc.life_seconds = life;
  qc.life_kilobytes = cc.life_bytes / 1024;
  qc.random = mgr_.host_.random;
  return qc;
}

// ---- Main Mode ---------------------------------------------------------------------

bool IsakmpSa::start(TimePoint now, bool initial_contact, std::string& why) {
  mm_ = std::make_unique<MainMode>(true, main_config(initial_contact));
  auto m = mm_->build();
  if (!m) {
    why = mm_->error();
    return false;
  }
  cky_i_ = mm_->cky_i();
  info(kTag, tag(), ": initiating ", conn_.aggressive ? "Aggressive" : "Main", " Mode to ", remote_.to_string());
  send(*m);
  mm_flight_.sent(std::move(*m), true, now, mgr_.host_.opt);
  return true;
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

void IsakmpSa::suspect_auth(const std::string& why, TimePoint now) {
  if (auth_suspected_) return;
  auth_suspected_ = true;
  // An authentication failure seen (once per SA); the Main Mode itself is
  // counted as failed only if it ends without an ISAKMP SA.
  ++mgr_.host_.counters.auth_failed;
  if (initiator_ || mgr_.log_allowed(now))
    warn(kTag, tag(), ": ", mm_ && mm_->aggressive() ? "Aggressive" : "Main", " Mode with ", remote_.to_string(), ": ", why);
}

void IsakmpSa::on_main_mode(const Datagram& d, const Header& h, TimePoint now) {
  if (d.data == mm_flight_.last_in) {
    // The peer repeats itself: our answer was lost (RFC 2408 5).
    if (!mm_flight_.last_out.empty() && !mm_flight_.awaiting) {
      ++mgr_.host_.counters.retransmits;
      debug(kTag, tag(), ": repeated Main Mode message, answer resent");
      send(mm_flight_.last_out);
    }
    return;
  }
  if (!mm_ || state_ != State::kMainMode) {
    ++mgr_.host_.counters.dropped_messages;
    return;
  }
  if (!mm_->process(d.data)) {
    if (mm_->failed()) {
      phase1_failed(mm_->error(), mm_->notify(), true, now);
    } else if (mm_->auth_suspect()) {
      // Does not decrypt or verify: not the peer's for certain, so the
      // exchange goes on; said once, and the peer told once (from where the
      // message came: message 5 arrives on 4500).
      ++mgr_.host_.counters.invalid_messages;
      if (!auth_suspected_ && !initiator_) {
        NotifyPayload np;
        np.type = static_cast<std::uint16_t>(mm_->notify());
        core::ByteAppender a{np.spi};
        a.u64(cky_i_);
        a.u64(cky_r_);
        Header hh;
        hh.cky_i = cky_i_;
        hh.cky_r = cky_r_;
        hh.exchange = Exchange::kInformational;
        mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&hh.message_id), sizeof hh.message_id});
        mgr_.host_.send(d.local, d.remote, encode_plain(hh, {{Payload::kNotify, encode_notify(np)}}));
      }
      suspect_auth(mm_->error(), now);
    } else {
      ++mgr_.host_.counters.dropped_messages;
      debug(kTag, tag(), ": Main Mode message ignored: ", mm_->error());
    }
    return;
  }
  mm_flight_.last_in = d.data;
  mm_flight_.awaiting = false;
  mm_flight_.next_send = TimePoint::max();
  last_heard_ = now;
  if (cky_r_ == 0) cky_r_ = mm_->cky_r();
  // Message 5 may come from port 4500 and from a port the NAT chose (RFC 3947
  // 4); only a message that verified (the encrypted ones) moves us there.
  if (!initiator_ && h.encrypted()) update_endpoint(d);
  if (mm_->done()) return established(now);  // the initiator, after message 6
  auto m = mm_->build();
  if (!m) {
    if (mm_->failed()) phase1_failed(mm_->error(), mm_->notify(), true, now);
    return;
  }
  // RFC 3947 4: with a NAT found in messages 3 and 4 the initiator moves to
  // port 4500 for message 5 and everything after.
  if (initiator_ && mm_->nat_detected() && local_.port != core::kNattPort) {
    info(kTag, tag(), ": NAT detected, floating to port ", core::kNattPort);
    local_.port = core::kNattPort;
    remote_.port = core::kNattPort;
  }
  cky_r_ = mm_->cky_r();
  send(*m);
  // Who waits: the initiator for messages 2, 4, 6; in Aggressive Mode also
  // the responder, for message 3 (a lost one is only noticed by it).
  mm_flight_.sent(std::move(*m), !mm_->done() && (initiator_ || mm_->aggressive()), now, mgr_.host_.opt);
  if (mm_->done()) established(now);  // the Main Mode responder after message 6, the Aggressive Mode initiator after 3
}

void IsakmpSa::update_endpoint(const Datagram& d) {
  if (d.remote == remote_ && d.local == local_) return;
  if (state_ == State::kEstablished && !nat()) return;  // RFC 3947 5.2: only across a NAT
  debug(kTag, tag(), ": peer now at ", d.remote.to_string());
  local_ = d.local;
  remote_ = d.remote;
}

void IsakmpSa::phase1_failed(const std::string& why, Notify n, bool tell_peer, TimePoint now) {
  // Unauthenticated input can make these at packet rate: rate-limited (always counted).
  if (initiator_ || mgr_.log_allowed(now))
    warn(kTag, tag(), ": ", mm_ && mm_->aggressive() ? "Aggressive" : "Main", " Mode with ", remote_.to_string(),
         " failed: ", why);
  if (!failure_counted_) {
    ++mgr_.host_.counters.ikev1_main_mode_failed;
    ++mgr_.host_.counters.ike_failed;
    if (n == Notify::kAuthenticationFailed || n == Notify::kInvalidHashInformation) ++mgr_.host_.counters.auth_failed;
  }
  if (tell_peer && (cky_r_ || !initiator_)) {
    // Unprotected: the keys are not agreed on (RFC 2408 5: a notify in the clear).
    Header hh;
    hh.cky_i = cky_i_;
    hh.cky_r = cky_r_;
    hh.exchange = Exchange::kInformational;
    mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&hh.message_id), sizeof hh.message_id});
    NotifyPayload np;
    np.type = static_cast<std::uint16_t>(n);
    core::ByteAppender a{np.spi};
    a.u64(cky_i_);
    a.u64(cky_r_);
    send(encode_plain(hh, {{Payload::kNotify, encode_notify(np)}}));
  }
  set_state(State::kDead);
}

void IsakmpSa::established(TimePoint now) {
  p1_ = mm_->take_sa();
  aggressive_ = mm_->aggressive();
  mm_.reset();  // its DH private key and PSK copy are not needed any more
  mm_flight_.awaiting = false;
  if (mgr_.host_.opt.ikev1_key_logger) {
    const auto key = encryption_key(p1_.suite.hash, p1_.keys.e.span(), p1_.suite.enc.key_bytes);
    mgr_.host_.opt.ikev1_key_logger(p1_.cky_i, key.span());
  }
  set_state(State::kEstablished);
  established_at_ = now;
  ++mgr_.host_.counters.ikev1_main_mode_done;
  ++mgr_.host_.counters.ike_established;
  if (conn_.rekey_time) {
    std::uint32_t r = 0;
    mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&r), sizeof r});
    rekey_at_ = now + std::chrono::seconds(conn_.rekey_time) - std::chrono::milliseconds(r % (conn_.rekey_time * 100 + 1));
    expire_at_ = after(now, conn_.rekey_time + conn_.rekey_time / 10);
  } else {
    expire_at_ = after(now, 28800);
  }
  if (conn_.dpd_delay && p1_.peer_dpd) dpd_next_ = after(now, conn_.dpd_delay);
  info(kTag, tag(), ": ISAKMP SA established with ", remote_.to_string(), " (", p1_.peer_id.to_string(), "), ",
       p1_.suite.name(), nat() ? ", NAT-T" : "", p1_.peer_initial_contact ? ", INITIAL-CONTACT" : "");
  if (!initiator_ && p1_.peer_initial_contact) {
    // RFC 2407 4.6.3.3: the peer has no state with us; what we still hold from it is stale.
    for (auto& [k, o] : mgr_.sas_)
      if (o.get() != this && o->state_ == State::kEstablished && same_peer(*o)) {
        info(kTag, o->tag(), ": replaced after INITIAL-CONTACT from the peer");
        o->remove_children();
        o->set_state(State::kDead);
      }
  }
  // A phase-1 rekey of ours: the old SA's IPsec SAs move here, then it is deleted.
  if (replaces_) {
    for (auto& [k, o] : mgr_.sas_)
      if (o.get() != this && o->cky_i_ == replaces_ && o->state_ == State::kEstablished) {
        adopt_children(*o);
        o->delete_all(now, "rekeyed by " + tag());
      }
  }
  for (const auto* cc : queued_) start_quick(*cc, now);
  queued_.clear();
}

// ---- Quick Mode --------------------------------------------------------------------

bool IsakmpSa::start_quick(const ChildConfig& cc, TimePoint now, std::uint32_t rekeys) {
  std::uint32_t mid = 0;
  while (mid == 0 || quick_.count(mid)) mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&mid), sizeof mid});
  QuickTask t;
  t.child = &cc;
  t.rekeys = rekeys;
  t.qm = std::make_unique<QuickMode>(true, p1_, quick_config(cc), mid, mgr_.host_.new_child_spi());
  auto m = t.qm->build();
  if (!m) {
    warn(kTag, tag(), ": Quick Mode for ", cc.name, " not started: ", t.qm->error());
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    return false;
  }
  debug(kTag, tag(), ": Quick Mode ", core::hex32(mid), " for ", cc.name, rekeys ? " (rekey)" : "");
  send(*m);
  t.flight.sent(std::move(*m), true, now, mgr_.host_.opt);
  quick_.emplace(mid, std::move(t));
  return true;
}

void IsakmpSa::on_quick_mode(const Datagram& d, const Header& h, TimePoint now) {
  auto it = quick_.find(h.message_id);
  if (it != quick_.end() && d.data == it->second.flight.last_in) {
    if (!it->second.flight.last_out.empty()) {
      ++mgr_.host_.counters.retransmits;
      debug(kTag, tag(), ": repeated Quick Mode message, answer resent");
      send(it->second.flight.last_out);
    }
    return;
  }
  if (it == quick_.end()) {
    if (h.message_id == 0 || peer_mids_.count(h.message_id)) {
      // RFC 2408 5: message IDs are not reused; a repeat after the linger is a replay.
      ++mgr_.host_.counters.dropped_messages;
      debug(kTag, tag(), ": Quick Mode with a used message ID ", core::hex32(h.message_id), " dropped");
      return;
    }
    if (children_.size() >= 2 * conn_.children.size() + 2) {
      // Each child has at most its SA pair and the one replacing it.
      ++mgr_.host_.counters.dropped_messages;
      if (mgr_.log_allowed(now)) warn(kTag, tag(), ": ", children_.size(), " IPsec SAs already; a new Quick Mode is dropped");
      return;
    }
    std::size_t open = 0;
    for (const auto& [mid, q] : quick_) open += q.done_at == TimePoint::max();
    if (open >= kMaxQuickModes) {
      ++mgr_.host_.counters.dropped_messages;
      if (mgr_.log_allowed(now)) warn(kTag, tag(), ": ", open, " Quick Modes under way; a new one is dropped");
      return;
    }
    // A new Quick Mode from the peer: the child whose selectors hold its
    // client IDs. Trying one does not move the IV chain (only a verified
    // message commits it), so each child can be tried in turn.
    const std::uint32_t spi = mgr_.host_.new_child_spi();
    QuickTask best;
    bool ok = false;
    for (const auto& cc : conn_.children) {
      QuickTask t;
      t.child = &cc;
      t.qm = std::make_unique<QuickMode>(false, p1_, quick_config(cc), h.message_id, spi);
      if (t.qm->process(d.data)) {
        best = std::move(t);
        ok = true;
        break;
      }
      if (!t.qm->failed()) {
        // Does not decrypt or verify: not the peer's; nothing is kept.
        ++mgr_.host_.counters.invalid_messages;
        debug(kTag, tag(), ": Quick Mode message dropped: ", t.qm->error());
        return;
      }
      if (!best.qm || t.qm->notify() != Notify::kInvalidIdInformation) best = std::move(t);
      if (best.qm->notify() != Notify::kInvalidIdInformation) break;
    }
    peer_mids_.insert(h.message_id);
    peer_mid_order_.push_back(h.message_id);
    if (peer_mid_order_.size() > kRememberedMids) {
      peer_mids_.erase(peer_mid_order_.front());
      peer_mid_order_.pop_front();
    }
    if (!ok) {
      const auto n = best.qm ? best.qm->notify() : Notify::kNoProposalChosen;
      const std::string why = best.qm ? best.qm->error() : "the connection has no children";
      warn(kTag, tag(), ": Quick Mode from the peer refused: ", why);
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      NotifyPayload np;
      np.protocol = kProtoEsp;
      np.type = static_cast<std::uint16_t>(n);
      informational({{Payload::kNotify, encode_notify(np)}});
      p1_.cipher->end_exchange(h.message_id);
      return;
    }
    last_heard_ = now;
    best.flight.last_in = d.data;
    auto m = best.qm->build();  // message 2
    if (!m) {
      warn(kTag, tag(), ": Quick Mode: ", best.qm->error());
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      return;
    }
    send(*m);
    best.flight.sent(std::move(*m), true, now, mgr_.host_.opt);
    // A peer's rekey of a child we have: the new SA replaces it when the peer deletes the old.
    quick_.emplace(h.message_id, std::move(best));
    return;
  }
  QuickTask& t = it->second;
  if (t.done_at != TimePoint::max() || !t.qm->process(d.data)) {
    if (t.done_at == TimePoint::max() && t.qm->failed()) {
      warn(kTag, tag(), ": Quick Mode for ", t.child->name, " failed: ", t.qm->error());
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      drop_quick(it, now);
    } else {
      // Rejected (does not decrypt or verify): the exchange goes on as it was.
      ++mgr_.host_.counters.invalid_messages;
      debug(kTag, tag(), ": Quick Mode message dropped: ", t.qm->error());
    }
    return;
  }
  last_heard_ = now;
  t.flight.last_in = d.data;
  t.flight.awaiting = false;
  t.flight.next_send = TimePoint::max();
  if (t.qm->done()) return quick_done(t, now);  // the responder, after message 3
  auto m = t.qm->build();                        // the initiator's message 3
  if (!m) {
    warn(kTag, tag(), ": Quick Mode for ", t.child->name, " failed: ", t.qm->error());
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    drop_quick(it, now);
    return;
  }
  send(*m);
  t.flight.sent(std::move(*m), false, now, mgr_.host_.opt);
  quick_done(t, now);
}

bool IsakmpSa::initiator_of(const QuickTask& t) { return t.qm->initiator(); }

std::map<std::uint32_t, IsakmpSa::QuickTask>::iterator IsakmpSa::drop_quick(
    std::map<std::uint32_t, QuickTask>::iterator it, TimePoint now) {
  // A rekey that ended without a new SA leaves the old one to be rekeyed again, later.
  if (const auto old = it->second.rekeys)
    for (auto& c : children_)
      if (c.spi_in == old && c.rekeying) {
        c.rekeying = false;
        c.rekey_at = std::min(c.expire_at, now + kRekeyRetry);
      }
  p1_.cipher->end_exchange(it->first);
  return quick_.erase(it);
}

void IsakmpSa::quick_done(QuickTask& t, TimePoint now) {
  t.done_at = now;
  p1_.cipher->end_exchange(t.qm->message_id());
  if (!install(t, now)) {
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    return;
  }
  ++mgr_.host_.counters.ikev1_quick_mode_done;
  if (!initiator_of(t)) {
    // The peer's rekey: the same child with the same selectors is still up (it deletes the old one).
    const auto& n = children_.back();
    for (std::size_t i = 0; i + 1 < children_.size(); ++i)
      if (children_[i].cfg == n.cfg && children_[i].local_ts == n.local_ts && children_[i].remote_ts == n.remote_ts) {
        ++mgr_.host_.counters.child_rekeyed;
        break;
      }
  }
  if (t.rekeys) {
    // Make-before-break: the new pair is in; the old one goes, with a DELETE.
    ++mgr_.host_.counters.child_rekeyed;
    delete_child(t.rekeys, "rekeyed");
  }
}

bool IsakmpSa::install(const QuickTask& t, TimePoint now) {
  const auto& r = t.qm->result();
  const ChildConfig& cc = *t.child;
  core::SaParams sp;
  sp.name = conn_.name + "/" + cc.name + "/" + core::hex32(r.spi_in);
  sp.protocol = core::IpsecProtocol::kEsp;
  sp.mode = cc.mode;
  sp.transform = r.suite.esp;
  sp.local_addr = local_.addr;
  sp.remote_addr = remote_.addr;
  const bool udp = nat() || r.suite.mode == EncapMode::kUdpTunnel || r.suite.mode == EncapMode::kUdpTunnelDraft;
  sp.encap = udp ? core::Encap::kUdp : core::Encap::kNone;
  sp.remote_port = udp ? remote_.port : core::kNattPort;
  sp.selectors.local.push_back({r.local_ts.lo, r.local_ts.hi});
  sp.selectors.remote.push_back({r.remote_ts.lo, r.remote_ts.hi});
  sp.replay_window = cc.replay_window;
  sp.in.spi = r.spi_in;
  sp.out.spi = r.spi_out;
  sp.in.keymat = core::SecureBytes(r.keymat_in.span());
  sp.out.keymat = core::SecureBytes(r.keymat_out.span());
  const std::string name = sp.name;
  std::string why;
  if (!mgr_.host_.installer.install(std::move(sp), why)) {
    error(kTag, tag(), ": installing ", name, " failed: ", why);
    return false;
  }
  Child ch;
  ch.cfg = &cc;
  ch.name = name;
  ch.spi_in = r.spi_in;
  ch.spi_out = r.spi_out;
  ch.suite = r.suite;
  ch.local_ts = r.local_ts;
  ch.remote_ts = r.remote_ts;
  ch.established = now;
  ch.pfs = r.pfs;
  // Our lifetime, or the shorter one the peer's transform carried.
  std::uint32_t life = cc.life_time ? cc.life_time : cc.rekey_time + cc.rekey_time / 10;
  if (r.suite.life_seconds && (life == 0 || r.suite.life_seconds < life)) life = r.suite.life_seconds;
  std::uint32_t rekey = cc.rekey_time;
  if (life && rekey >= life) rekey = life - std::max<std::uint32_t>(1, life / 10);
  if (rekey) {
    std::uint32_t rnd = 0;
    mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&rnd), sizeof rnd});
    ch.rekey_at = now + std::chrono::seconds(rekey) - std::chrono::milliseconds(rnd % (rekey * 100 + 1));
  }
  if (life) ch.expire_at = after(now, life);
  children_.push_back(ch);
  ++mgr_.host_.counters.child_installed;
  mgr_.host_.child_up(conn_.name + "/" + cc.name);
  info(kTag, tag(), ": IPsec SA ", name, " installed: ", r.suite.esp.name(), ", SPIs in ", core::hex32(r.spi_in),
       " out ", core::hex32(r.spi_out), ", ", r.local_ts.to_string(), " === ", r.remote_ts.to_string(),
       r.pfs ? ", PFS" : "", udp ? ", UDP-encapsulated" : "");
  return true;
}

// ---- Informational -----------------------------------------------------------------

void IsakmpSa::informational(const std::vector<RawPayload>& payloads) {
  std::uint32_t mid = 0;
  while (mid == 0 || quick_.count(mid)) mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&mid), sizeof mid});
  send(seal_informational(p1_, mid, payloads));
}

void IsakmpSa::on_informational(const Datagram& d, const Header& h, TimePoint now) {
  if (!h.encrypted()) {
    // Only in phase 1, before there are keys: a refusal in the clear. It
    // cannot be authenticated, so it ends nothing but a Main Mode of ours
    // that is still waiting (the cookies make a blind forgery unlikely).
    DecodeError err;
    auto m = decode_plain(d.data, err);
    if (m && !check_payload_rules(Exchange::kInformational, true, false, m->raw, err)) m.reset();
    if (!m || state_ != State::kMainMode) {
      ++mgr_.host_.counters.invalid_messages;
      return;
    }
    for (const auto& n : m->notifies) {
      if (n.type >= 16384) continue;
      if (initiator_ && cky_r_ == 0) {
        // A refusal of our message 1 (no proposal, Aggressive Mode not allowed): nothing to lose yet.
        warn(kTag, tag(), ": the peer refused ", mm_ && mm_->aggressive() ? "Aggressive" : "Main", " Mode: ",
             notify_name(n.type));
        phase1_failed("refused by the peer with " + notify_name(n.type), static_cast<Notify>(n.type), false, now);
        return;
      }
      // Later, a notification in the clear could be anybody's who saw the
      // cookies: said and counted once, and the exchange runs its course.
      ++mgr_.host_.counters.invalid_messages;
      suspect_auth("the peer says " + notify_name(n.type) + " (unauthenticated; a different pre-shared key?)", now);
      return;
    }
    return;
  }
  if (quick_.count(h.message_id) || peer_mids_.count(h.message_id)) {
    // A Quick Mode's message ID (its IV chain is not the Informational's to
    // end) or one the peer used before: a replay (RFC 2408 5).
    ++mgr_.host_.counters.dropped_messages;
    debug(kTag, tag(), ": Informational with a used message ID ", core::hex32(h.message_id), " dropped");
    return;
  }
  DecodeError err;
  auto m = open_informational(p1_, d.data, err);
  if (!m) {
    ++mgr_.host_.counters.invalid_messages;
    debug(kTag, tag(), ": Informational message dropped: ", err.detail);
    return;
  }
  peer_mids_.insert(h.message_id);
  peer_mid_order_.push_back(h.message_id);
  if (peer_mid_order_.size() > kRememberedMids) {
    peer_mids_.erase(peer_mid_order_.front());
    peer_mid_order_.pop_front();
  }
  last_heard_ = now;
  for (const auto& n : m->notifies) {
    if (n.type == static_cast<std::uint16_t>(Notify::kRUThere)) {
      if (auto seq = dpd_sequence(n, p1_.cky_i, p1_.cky_r)) {
        debug(kTag, tag(), ": R-U-THERE ", *seq, ", answering");
        informational({dpd_notify(true, p1_.cky_i, p1_.cky_r, *seq)});
      }
    } else if (n.type == static_cast<std::uint16_t>(Notify::kRUThereAck)) {
      // Any R-U-THERE of ours since the last acknowledged one (a round trip
      // may be longer than dpd_delay).
      if (auto seq = dpd_sequence(n, p1_.cky_i, p1_.cky_r); seq && *seq > dpd_acked_ && *seq <= dpd_seq_) {
        dpd_acked_ = *seq;
        dpd_sent_ = TimePoint::max();
        if (conn_.dpd_delay) dpd_next_ = after(now, conn_.dpd_delay);
      }
    } else if (n.type == static_cast<std::uint16_t>(Notify::kInitialContact)) {
      debug(kTag, tag(), ": INITIAL-CONTACT");
    } else if (n.type < 16384) {
      // An error about one of our Quick Modes (NO-PROPOSAL-CHOSEN, INVALID-ID-INFORMATION, ...).
      warn(kTag, tag(), ": the peer says ", notify_name(n.type));
      // It names the proposal's SPI where it can (RFC 2408 3.14): only that
      // Quick Mode ends; without one, every one of ours still waiting.
      const std::optional<std::uint32_t> about =
          n.spi.size() == 4 ? std::optional<std::uint32_t>(core::load_be32(n.spi.data())) : std::nullopt;
      for (auto it = quick_.begin(); it != quick_.end();) {
        const auto& q = it->second;
        if (q.done_at == TimePoint::max() && q.flight.awaiting && q.qm->initiator() &&
            (!about || *about == q.qm->result().spi_in)) {
          warn(kTag, tag(), ": Quick Mode for ", q.child->name, " refused by the peer: ", notify_name(n.type));
          ++mgr_.host_.counters.ikev1_quick_mode_failed;
          it = drop_quick(it, now);
        } else {
          ++it;
        }
      }
    } else {
      debug(kTag, tag(), ": notify ", notify_name(n.type), " ignored");
    }
  }
  for (const auto& del : m->deletes) {
    if (del.protocol == 1) {
      for (const auto& spi : del.spis) {
        if (spi.size() != 16 || core::load_be64(spi.data()) != p1_.cky_i || core::load_be64(spi.data() + 8) != p1_.cky_r)
          continue;
        info(kTag, tag(), ": ISAKMP SA deleted by the peer");
        if (auto* next = mgr_.successor(*this)) next->adopt_children(*this);
        remove_children();
        set_state(State::kDead);
        return;
      }
    } else if (del.protocol == kProtoEsp) {
      for (const auto& spi : del.spis) {
        if (spi.size() != 4) continue;
        const std::uint32_t v = core::load_be32(spi.data());
        bool found = false;
        for (auto& [k, o] : mgr_.sas_)
          if (o->state_ == State::kEstablished && same_peer(*o)) found |= o->remove_by_peer_spi(v);
        if (!found) debug(kTag, tag(), ": DELETE for unknown ESP SPI ", core::hex32(v));
      }
    }
  }
}

bool IsakmpSa::same_peer(const IsakmpSa& o) const {
  // The same connection, address and authenticated identity: on a
  // connection that answers anyone, two clients behind one NAT are not.
  return &o.conn_ == &conn_ && o.remote_.addr == remote_.addr && o.p1_.peer_id.type == p1_.peer_id.type &&
         o.p1_.peer_id.data == p1_.peer_id.data;
}

bool IsakmpSa::remove_by_peer_spi(std::uint32_t spi_out) {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->spi_out != spi_out) continue;
    info(kTag, tag(), ": IPsec SA ", it->name, " deleted by the peer");
    mgr_.host_.installer.remove(it->name);
    children_.erase(it);
    return true;
  }
  return false;
}

void IsakmpSa::delete_child(std::uint32_t spi_in, const std::string& why) {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->spi_in != spi_in) continue;
    info(kTag, tag(), ": IPsec SA ", it->name, " deleted (", why, ")");
    if (state_ == State::kEstablished) informational({delete_esp({spi_in})});
    mgr_.host_.installer.remove(it->name);
    children_.erase(it);
    return;
  }
}

void IsakmpSa::delete_all(TimePoint now, const std::string& why) {
  (void)now;
  if (state_ == State::kEstablished) {
    if (!children_.empty()) {
      std::vector<std::uint32_t> spis;
      for (const auto& c : children_) spis.push_back(c.spi_in);
      informational({delete_esp(spis)});
    }
    informational({delete_isakmp(p1_.cky_i, p1_.cky_r)});
    info(kTag, tag(), ": ISAKMP SA deleted (", why, ")");
  }
  remove_children();
  set_state(State::kDead);
}

void IsakmpSa::adopt_children(IsakmpSa& from) {
  for (auto& c : from.children_) {
    debug(kTag, tag(), ": takes over IPsec SA ", c.name, " from ", from.tag());
    c.rekeying = false;
    children_.push_back(std::move(c));
  }
  from.children_.clear();
}

void IsakmpSa::remove_children() {
  for (const auto& c : children_) mgr_.host_.installer.remove(c.name);
  children_.clear();
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
  t = std::min(t, mm_flight_.next_send);
  // The half-open limit is the responder's; the initiator's retransmissions end its attempt.
  if (state_ == State::kMainMode) return initiator_ ? t : std::min(t, created_ + kHalfOpenLife);
  for (const auto& [mid, q] : quick_) {
    t = std::min(t, q.flight.next_send);
    if (q.done_at != TimePoint::max()) t = std::min(t, q.done_at + kQuickLinger);
  }
  for (const auto& c : children_) t = std::min({t, c.rekeying ? TimePoint::max() : c.rekey_at, c.expire_at});
  t = std::min({t, rekeying_ ? TimePoint::max() : rekey_at_, expire_at_, dpd_next_});
  if (dpd_sent_ != TimePoint::max()) {
    const auto timeout = conn_.dpd_timeout ? conn_.dpd_timeout : 5 * conn_.dpd_delay;
    t = std::min(t, after(dpd_sent_, timeout));
  }
  return t;
}

void IsakmpSa::tick(TimePoint now) {
  const auto& o = mgr_.host_.opt;
  auto resend = [&](Flight& f, const std::string& what) -> bool {
    if (!f.awaiting || now < f.next_send) return true;
    if (f.tries + 1 >= o.retransmit_tries) {
      f.awaiting = false;
      f.next_send = TimePoint::max();
      (void)what;
      return false;
    }
    ++f.tries;
    ++mgr_.host_.counters.retransmits;
    const double k = std::pow(o.retransmit_factor, f.tries);
    f.next_send = now + std::chrono::duration_cast<Clock::duration>(o.retransmit_base * k);
    debug(kTag, tag(), ": retransmitting ", what, " (", f.tries, ")");
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
  // Main Mode's last message may still need resending until the first Quick Mode shows the peer has it.
  mm_flight_.awaiting = false;
  mm_flight_.next_send = TimePoint::max();
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
      informational({delete_esp({it->spi_in})});
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
    delete_all(now, "reached its lifetime");
    return;
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
    cs.algorithms = c.suite.name();
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
