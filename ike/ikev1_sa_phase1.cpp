// Phase 1 of an ISAKMP SA: driving its Main or Aggressive Mode (ikev1_main_mode),
// the float to 4500, failures and what they tell the peer, and what
// establishing the SA sets in motion (INITIAL-CONTACT, a rekey's handover, Quick Modes).
#include "ike/ikev1_sa.hpp"

#include <algorithm>
#include <cmath>

#include "ike/child_sa.hpp"
#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

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
    if (!mm_flight_.last_out.empty() && !mm_flight_.awaiting()) {
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
  mm_flight_.schedule.stop();
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
  for (const auto& c : children_) mgr_.host_.installer.update_path(c.name, child_sa_path(local_, remote_, true));
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
  mm_flight_.schedule.stop();
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
        o->rekeying_ = true;  // it is done: no rekey of its own meanwhile
        o->delete_at_ = std::min(now + kReplacedDeleteDelay, o->expire_at_);  // not past its lifetime
        o->delete_why_ = "rekeyed by " + tag();  // the engine asks every SA's deadline after this
      }
  }
  for (const auto* cc : queued_) start_quick(*cc, now);
  queued_.clear();
}

}  // namespace ipsecgw::ike::v1
