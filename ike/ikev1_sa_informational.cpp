// Informational exchanges of an ISAKMP SA (ikev1_informational): DPD,
// notifies, DELETE of ISAKMP and IPsec SAs in both directions.
#include "ike/ikev1_sa.hpp"

#include <algorithm>
#include <cmath>

#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

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
  remember_peer_mid(h.message_id);
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
        if (q.done_at == TimePoint::max() && q.flight.awaiting() && q.qm->initiator() &&
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
    } else if (del.protocol == kProtoEsp || del.protocol == kProtoAh) {
      for (const auto& spi : del.spis) {
        if (spi.size() != 4) continue;
        const std::uint32_t v = core::load_be32(spi.data());
        bool found = false;
        for (auto& [k, o] : mgr_.sas_)
          if (o->state_ == State::kEstablished && same_peer(*o)) found |= o->remove_by_peer_spi(v, del.protocol);
        if (!found) debug(kTag, tag(), ": DELETE for unknown ", del.protocol == kProtoAh ? "AH" : "ESP", " SPI ", core::hex32(v));
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

bool IsakmpSa::remove_by_peer_spi(std::uint32_t spi_out, std::uint8_t protocol) {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    // A bundle goes with either of its SAs.
    const bool match = (it->spi_out == spi_out && it->suite.protocol_id() == protocol) ||
                       (it->ah && protocol == kProtoAh && it->ah_spi_out == spi_out);
    if (!match) continue;
    info(kTag, tag(), ": IPsec SA ", it->name, " deleted by the peer");
    if (it->replaced)
      mgr_.host_.installer.remove_rekeyed(it->name);
    else
      mgr_.host_.installer.remove(it->name);
    children_.erase(it);
    return true;
  }
  return false;
}

void IsakmpSa::delete_child(std::uint32_t spi_in, const std::string& why, bool rekeyed) {
  for (auto it = children_.begin(); it != children_.end(); ++it) {
    if (it->spi_in != spi_in) continue;
    info(kTag, tag(), ": IPsec SA ", it->name, " deleted (", why, ")");
    if (state_ == State::kEstablished) informational(it->deletes());
    if (rekeyed)
      mgr_.host_.installer.remove_rekeyed(it->name);
    else
      mgr_.host_.installer.remove(it->name);
    children_.erase(it);
    return;
  }
}

void IsakmpSa::delete_all(TimePoint now, const std::string& why) {
  (void)now;
  if (state_ == State::kEstablished) {
    if (!children_.empty()) {
      std::vector<std::uint32_t> esp, ah;
      for (const auto& c : children_) {
        (c.suite.is_ah() ? ah : esp).push_back(c.spi_in);
        if (c.ah) ah.push_back(c.ah_spi_in);
      }
      std::vector<RawPayload> d;
      if (!esp.empty()) d.push_back(delete_esp(esp, kProtoEsp));
      if (!ah.empty()) d.push_back(delete_esp(ah, kProtoAh));
      informational(d);
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

}  // namespace ipsecgw::ike::v1
