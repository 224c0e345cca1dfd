// One IKEv2 SA: sending, receiving and dispatching messages, retransmission, timers.
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::set_state(State to) {
  if (to == state_) return;
  if (!legal(state_, to)) {
    ++eng_.counters_.state_bugs;
    error(kTag, tag(), ": BUG: illegal state change ", state_name(state_), " -> ", state_name(to));
  } else {
    debug(kTag, tag(), ": ", state_name(state_), " -> ", state_name(to));
  }
  state_ = to;
}

void IkeSa::send_raw(const std::vector<Bytes>& ms) {
  for (const auto& m : ms) eng_.send(local_, remote_, m);
}

void IkeSa::send_request(Pending p, TimePoint now) {
  p.next_send = now + eng_.opt_.retransmit_base;
  p.tries = 0;
  send_raw(p.message);
  pending_ = std::move(p);
}

std::vector<Bytes> IkeSa::sealed(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& inner) {
  if (peer_frag_ && conn_.fragment_size)
    return out_->seal_fragmented(header(x, response, id), inner, conn_.fragment_size);
  return {out_->seal(header(x, response, id), inner)};
}

void IkeSa::send_response(Exchange x, std::uint32_t id, const std::vector<Payload>& inner) {
  last_response_ = sealed(x, true, id, inner);
  last_response_id_ = id;
  send_raw(last_response_);
}

void IkeSa::on_message(const Datagram& d, const Header& h, TimePoint now) {
  // Follow the peer to port 4500 or to a new NAT mapping (RFC 7296 2.23),
  // only for authenticated messages (checked below before use).
  const bool response = h.is_response();
  if (h.exchange == Exchange::kSaInit) {
    if (!response || !pending_ || pending_->exchange != Exchange::kSaInit) return;
    Parsed p;
    std::vector<Payload> pl;
    std::string why;
    RuleViolation v;
    if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
        !check_payload_rules(h.exchange, true, pl, {}, v) || !decode_all(pl, p, why)) {
      ++eng_.counters_.invalid_messages;
      warn(kTag, tag(), ": bad IKE_SA_INIT response: ", why.empty() ? v.detail : why);
      return;
    }
    on_init_response(d.data, h, p, now);
    return;
  }
  if (!in_) return;
  if (response) {
    if (!pending_ || h.message_id != pending_->message_id) {
      ++eng_.counters_.dropped_messages;
      debug(kTag, tag(), ": response with unexpected message ID ", h.message_id);
      return;
    }
  } else {
    if (h.message_id + 1 == next_in_id_ && last_response_id_ == h.message_id && !last_response_.empty()) {
      // For a fragmented request, answer once (on its first fragment).
      if (h.next == PayloadType::kSkf && d.data.size() >= kHeaderLen + 8 &&
          (d.data[kHeaderLen + 4] << 8 | d.data[kHeaderLen + 5]) != 1)
        return;
      debug(kTag, tag(), ": retransmitted request ", h.message_id, ", resending our response");
      send_raw(last_response_);
      return;
    }
    if (h.message_id != next_in_id_) {
      ++eng_.counters_.dropped_messages;
      debug(kTag, tag(), ": request with message ID ", h.message_id, ", expected ", next_in_id_);
      return;
    }
  }
  std::vector<Payload> outer;
  std::string why;
  if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, outer, why) || outer.empty() ||
      (outer.back().type != PayloadType::kSk && outer.back().type != PayloadType::kSkf)) {
    ++eng_.counters_.invalid_messages;
    warn(kTag, tag(), ": bad ", to_string(h.exchange), ": ", why.empty() ? "no encrypted payload" : why);
    return;
  }
  const bool fragment = outer.back().type == PayloadType::kSkf;
  std::size_t sk_body = d.data.size() - outer.back().body.size();
  std::uint16_t frag_num = 0, frag_total = 0;
  if (fragment) {
    const auto& b = outer.back().body;
    if (b.size() < 4) {
      ++eng_.counters_.invalid_messages;
      return;
    }
    frag_num = static_cast<std::uint16_t>(b[0] << 8 | b[1]);
    frag_total = static_cast<std::uint16_t>(b[2] << 8 | b[3]);
    if (frag_num == 0 || frag_num > frag_total || frag_total > kMaxFragments) {
      ++eng_.counters_.invalid_messages;
      warn(kTag, tag(), ": bad fragment ", frag_num, "/", frag_total);
      return;
    }
    sk_body += 4;
  }
  auto plain = in_->open(d.data, sk_body, why);
  if (!plain) {
    ++eng_.counters_.invalid_messages;
    warn(kTag, tag(), ": ", to_string(h.exchange), " ", response ? "response" : "request", " dropped: ", why);
    return;
  }
  PayloadType first = outer.back().inner_first;
  if (fragment) {
    if (!frags_ || frags_->message_id != h.message_id || frags_->response != response ||
        frags_->parts.size() != frag_total) {
      frags_ = Reassembly{h.message_id, response, PayloadType::kNone, {}, 0, 0};
      frags_->parts.resize(frag_total);
    }
    auto& slot = frags_->parts[frag_num - 1];
    if (!slot) {
      frags_->bytes += plain->size();
      if (frags_->bytes > kMaxMessage * 4) {
        warn(kTag, tag(), ": reassembled message too large, dropped");
        frags_.reset();
        return;
      }
      slot = std::move(*plain);
      ++frags_->have;
      if (frag_num == 1) frags_->first = first;
    }
    if (frags_->have < frag_total) return;  // wait for the rest
    Bytes whole;
    for (auto& part : frags_->parts) whole.insert(whole.end(), part->begin(), part->end());
    first = frags_->first;
    frags_.reset();
    plain = std::move(whole);
    debug(kTag, tag(), ": reassembled ", frag_total, " fragments");
  }
  std::vector<Payload> inner;
  Parsed p;
  RuleViolation v;
  // Structure, then the exchange's payload rules, then each payload's own.
  if (!parse_chain(*plain, first, inner, why) || !check_payload_rules(h.exchange, response, outer, inner, v) ||
      !decode_all(inner, p, why)) {
    if (why.empty()) why = v.detail;
    ++eng_.counters_.invalid_messages;
    warn(kTag, tag(), ": malformed ", to_string(h.exchange), ": ", why);
    if (!response) {
      next_in_id_ = h.message_id + 1;
      send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
      // An IKE_AUTH that cannot be read ends the half-open SA now (RFC 7296
      // 2.21.2: the IKE SA is not created), not after its timeout.
      if (state_ == State::kInitDone) fail("malformed IKE_AUTH request: the half-open IKE SA is removed");
    }
    return;
  }
  if (!response && h.exchange != Exchange::kAuth &&
      (state_ == State::kInitDone || state_ == State::kInitSent || state_ == State::kAuthSent)) {
    // RFC 7296 1.4: nothing but IKE_AUTH before the initial exchanges end.
    ++eng_.counters_.dropped_messages;
    warn(kTag, tag(), ": ", to_string(h.exchange), " request ", h.message_id,
         " before IKE_AUTH completed, dropped; it carried ", payload_list(inner));
    return;
  }
  last_heard_ = now;
  if (d.remote != remote_ || d.local.port != local_.port) {
    info(kTag, tag(), ": peer moved from ", remote_.to_string(), " to ", d.remote.to_string());
    remote_ = d.remote;
    local_ = d.local;
  }
  if (response) {
    switch (pending_->exchange) {
      case Exchange::kAuth: on_auth_response(p, now); break;
      case Exchange::kCreateChildSa: on_create_child_response(p, now); break;
      case Exchange::kInformational: on_informational_response(p, now); break;
      default: break;
    }
    send_queued_delete(now);
    return;
  }
  next_in_id_ = h.message_id + 1;
  switch (h.exchange) {
    case Exchange::kAuth:
      if (initiator_ || state_ != State::kInitDone) {
        send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
        return;
      }
      on_auth_request(h, p, now);
      break;
    case Exchange::kCreateChildSa:
      if (state_ != State::kEstablished) {
        send_response(h.exchange, h.message_id, {notify(Notify::kTemporaryFailure)});
        return;
      }
      on_create_child_request(h, p, now);
      break;
    case Exchange::kInformational:
      on_informational_request(h, p, now);
      break;
    default:
      send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
      break;
  }
}

TimePoint IkeSa::deadline() const {
  TimePoint t = TimePoint::max();
  if (pending_) t = std::min({t, pending_->next_send, pending_->give_up});
  if (state_ == State::kEstablished) {
    if (conn_.dpd_delay && !pending_) t = std::min(t, last_heard_ + std::chrono::seconds(conn_.dpd_delay));
    if (!pending_) t = std::min(t, rekey_at_);
    for (const auto& c : children_) {
      if (!c.rekeying) t = std::min(t, c.rekey_at);
      t = std::min(t, c.expire_at);
    }
  }
  if (state_ == State::kInitDone) t = std::min(t, created_ + std::chrono::seconds(30));
  if (state_ == State::kRekeyed && !pending_) t = std::min(t, rekeyed_at_ + kRekeyedLinger);
  return t;
}

void IkeSa::tick(TimePoint now) {
  if (pending_ && now >= pending_->give_up) {
    pending_.reset();
    peer_gone("no answer to the liveness check within dpd_timeout " +
                  std::to_string(conn_.dpd_timeout) + " s",
              now);
    return;
  }
  if (pending_ && now >= pending_->next_send) {
    if (pending_->tries + 1 >= eng_.opt_.retransmit_tries) {
      const auto x = pending_->exchange;
      pending_.reset();
      peer_gone(std::string("no response to ") + to_string(x) + " after " +
                    std::to_string(eng_.opt_.retransmit_tries) + " transmissions",
                now);
      return;
    }
    ++pending_->tries;
    ++eng_.counters_.retransmits;
    const double f = std::pow(eng_.opt_.retransmit_factor, pending_->tries);
    pending_->next_send = now + std::chrono::duration_cast<Clock::duration>(eng_.opt_.retransmit_base * f);
    debug(kTag, tag(), ": retransmitting ", to_string(pending_->exchange), " (", pending_->tries, ")");
    send_raw(pending_->message);
  }
  if (state_ == State::kInitDone && now >= created_ + std::chrono::seconds(30)) {
    fail("half-open IKE SA timed out");
    return;
  }
  if (state_ == State::kRekeyed && !pending_ && now >= rekeyed_at_ + kRekeyedLinger) {
    info(kTag, tag(), ": the peer did not delete the rekeyed IKE SA; removed");
    remove_children();
    set_state(State::kDead);
    return;
  }
  if (state_ != State::kEstablished) return;
  for (auto it = children_.begin(); it != children_.end();) {
    if (now >= it->expire_at) {
      // RFC 7296 2.8: an SA past its lifetime is gone; tell the peer with a
      // DELETE when the window is free (else its own lifetime ends it).
      warn(kTag, tag(), ": Child SA ", it->name, " reached its hard lifetime, removed");
      const std::uint32_t spi = it->spi_in;
      eng_.installer_.remove(it->name);
      it = children_.erase(it);
      if (!pending_)
        send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false);
    } else {
      ++it;
    }
  }
  if (pending_) return;
  if (now >= rekey_at_) {
    rekey_ike(now);
    return;
  }
  for (auto& c : children_) {
    if (!c.rekeying && now >= c.rekey_at) {
      rekey_child(c, now);
      return;
    }
  }
  if (conn_.dpd_delay && now >= last_heard_ + std::chrono::seconds(conn_.dpd_delay)) {
    debug(kTag, tag(), ": liveness check");
    send_informational({}, now, true, false);
  }
}

void IkeSa::remove_children() {
  for (const auto& c : children_) eng_.installer_.remove(c.name);
  children_.clear();
}

void IkeSa::fail(const std::string& why) {
  warn(kTag, tag(), ": ", why);
  ++eng_.counters_.ike_failed;
  remove_children();
  set_state(State::kDead);
}

}  // namespace ipsecgw::ike
