// One IKEv2 SA: reading its messages, its state, its timers, and what a dead
// peer means. The exchanges are tasks run by its task manager.
#include "ike/ikev2_sa.hpp"

#include "ike/child_sa.hpp"

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

std::vector<Bytes> IkeSa::sealed(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& inner) {
  if (peer_frag_ && conn_.fragment_size)
    return out_->seal_fragmented(header(x, response, id), inner, conn_.fragment_size);
  return {out_->seal(header(x, response, id), inner)};
}

// ---- keys -----------------------------------------------------------------------------

void IkeSa::check_natd(const Parsed& p, std::uint64_t spi_i, std::uint64_t spi_r) {
  bool have_src = false, have_dst = false, src_match = false, dst_match = false;
  const Bytes src = natd_hash(spi_i, spi_r, remote_.addr, remote_.port);
  const Bytes dst = natd_hash(spi_i, spi_r, local_.addr, local_.port);
  for (const auto& n : p.notifies) {
    if (n.type == static_cast<std::uint16_t>(Notify::kNatDetectionSourceIp)) {
      have_src = true;
      src_match |= n.data == src;
    } else if (n.type == static_cast<std::uint16_t>(Notify::kNatDetectionDestinationIp)) {
      have_dst = true;
      dst_match |= n.data == dst;
    }
  }
  if (have_src && have_dst) {
    nat_remote_ = !src_match;
    nat_local_ = !dst_match;
    if (nat_local_ || nat_remote_)
      info(kTag, tag(), ": NAT detected (", nat_local_ ? "local" : "", nat_local_ && nat_remote_ ? " and " : "",
           nat_remote_ ? "remote" : "", "), using UDP encapsulation");
  }
}

bool IkeSa::derive(const DhKey& dh, ByteSpan peer_ke) {
  std::string why;
  auto shared = dh.shared_secret(peer_ke, why);
  if (!shared) {
    fail("Diffie-Hellman: " + why);
    return false;
  }
  keys_ = derive_ike_keys(t_, shared->span(), ni_, nr_, spi_i_, spi_r_);
  return make_ciphers();
}

bool IkeSa::make_ciphers() {
  if (eng_.opt_.key_logger)
    eng_.opt_.key_logger({spi_i_, spi_r_, t_, keys_.ei.span(), keys_.er.span(), keys_.ai.span(), keys_.ar.span()});
  const auto& e_out = initiator_ ? keys_.ei : keys_.er;
  const auto& a_out = initiator_ ? keys_.ai : keys_.ar;
  const auto& e_in = initiator_ ? keys_.er : keys_.ei;
  const auto& a_in = initiator_ ? keys_.ar : keys_.ai;
  out_ = SkCipher::create(t_, e_out.span(), a_out.span(), core::CipherDir::kEncrypt);
  in_ = SkCipher::create(t_, e_in.span(), a_in.span(), core::CipherDir::kDecrypt);
  if (!out_ || !in_) {
    fail("cannot set up IKE SA ciphers");
    return false;
  }
  return true;
}

void IkeSa::established(TimePoint now) {
  set_state(State::kEstablished);
  last_heard_ = now;
  ++eng_.counters_.ike_established;
  if (conn_.rekey_time) rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
  info(kTag, tag(), ": IKE SA established with '", peer_id_, "' at ", remote_.to_string(), ", ",
       t_.name(), encap() ? ", UDP-encapsulated" : "");
}

// ---- messages -------------------------------------------------------------------------

bool IkeSa::open(const Datagram& d, const Header& h, TimePoint now, std::vector<Payload>& outer, Bytes& plain,
                 PayloadType& first) {
  const bool response = h.is_response();
  std::string why;
  if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, outer, why) || outer.empty() ||
      (outer.back().type != PayloadType::kSk && outer.back().type != PayloadType::kSkf)) {
    ++eng_.counters_.invalid_messages;
    if (may_log(now)) warn(kTag, tag(), ": bad ", to_string(h.exchange), ": ", why.empty() ? "no encrypted payload" : why);
    return false;
  }
  const bool fragment = outer.back().type == PayloadType::kSkf;
  std::size_t sk_body = d.data.size() - outer.back().body.size();
  std::uint16_t frag_num = 0, frag_total = 0;
  if (fragment) {
    const auto& b = outer.back().body;
    if (b.size() < 4) {
      ++eng_.counters_.invalid_messages;
      return false;
    }
    frag_num = static_cast<std::uint16_t>(b[0] << 8 | b[1]);
    frag_total = static_cast<std::uint16_t>(b[2] << 8 | b[3]);
    if (frag_num == 0 || frag_num > frag_total || frag_total > kMaxFragments) {
      ++eng_.counters_.invalid_messages;
      if (may_log(now)) warn(kTag, tag(), ": bad fragment ", frag_num, "/", frag_total);
      return false;
    }
    sk_body += 4;
  }
  auto opened = in_->open(d.data, sk_body, why);
  if (!opened) {
    ++eng_.counters_.invalid_messages;
    if (may_log(now))
      warn(kTag, tag(), ": ", to_string(h.exchange), " ", response ? "response" : "request", " dropped: ", why);
    return false;
  }
  first = outer.back().inner_first;
  if (!fragment) {
    plain = std::move(*opened);
    return true;
  }
  if (!frags_ || frags_->message_id != h.message_id || frags_->response != response ||
      frags_->parts.size() != frag_total) {
    drop_fragments();
    frags_ = Reassembly{h.message_id, response, PayloadType::kNone, {}, 0, 0};
    frags_->parts.resize(frag_total);
  }
  auto& slot = frags_->parts[frag_num - 1];
  if (!slot) {
    // Before authentication a peer may park one message's worth, and all
    // such peers together max_reassembly_bytes (RFC 7383 leaves it to us).
    const bool authed = authenticated();
    const std::size_t cap = authed ? kMaxMessage * 4 : kMaxMessage;
    if (frags_->bytes + opened->size() > cap) {
      if (may_log(now)) warn(kTag, tag(), ": reassembled message too large, dropped");
      drop_fragments();
      return false;
    }
    if (!authed) {
      if (eng_.reassembly_bytes_ + opened->size() > eng_.opt_.max_reassembly_bytes) {
        ++eng_.counters_.reassembly_refused;
        if (eng_.log_allowed(now))
          warn(kTag, tag(), ": IKE fragment dropped: ", eng_.reassembly_bytes_,
               " bytes of fragments held for peers not yet authenticated");
        return false;
      }
      eng_.reassembly_bytes_ += opened->size();
      held_fragment_bytes_ += opened->size();
    }
    frags_->bytes += opened->size();
    slot = std::move(*opened);
    ++frags_->have;
    if (frag_num == 1) frags_->first = first;
  }
  if (frags_->have < frag_total) return false;  // wait for the rest
  plain.clear();
  for (auto& part : frags_->parts) plain.insert(plain.end(), part->begin(), part->end());
  first = frags_->first;
  drop_fragments();
  debug(kTag, tag(), ": reassembled ", frag_total, " fragments");
  return true;
}

bool IkeSa::authenticated() const {
  return state_ == State::kEstablished || state_ == State::kRekeyed || state_ == State::kDeleting;
}

bool IkeSa::may_log(TimePoint now) { return authenticated() || eng_.log_allowed(now); }

void IkeSa::drop_fragments() {
  eng_.reassembly_bytes_ -= held_fragment_bytes_;
  held_fragment_bytes_ = 0;
  frags_.reset();
}

IkeSa::~IkeSa() { drop_fragments(); }

void IkeSa::on_message(const Datagram& d, const Header& h, TimePoint now) {
  if (state_ == State::kDead) return;  // ended meanwhile (INITIAL_CONTACT); removed next
  const bool response = h.is_response();
  if (h.exchange == Exchange::kSaInit) {
    // Only the response to our IKE_SA_INIT comes here (requests make new SAs).
    if (!response || !tasks_.admit(d, h)) return;
    Parsed p;
    std::vector<Payload> pl;
    std::string why;
    RuleViolation v;
    if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
        !check_payload_rules(h.exchange, true, pl, {}, v) || !decode_all(pl, p, why)) {
      ++eng_.counters_.invalid_messages;
      if (may_log(now)) warn(kTag, tag(), ": bad IKE_SA_INIT response: ", why.empty() ? v.detail : why);
      return;
    }
    tasks_.process_response(InMessage{h, p, d.data, now});
    return;
  }
  if (!keyed() || !tasks_.admit(d, h)) return;
  std::vector<Payload> outer, inner;
  Bytes plain;
  PayloadType first = PayloadType::kNone;
  if (!open(d, h, now, outer, plain, first)) return;
  Parsed p;
  RuleViolation v;
  std::string why;
  // Structure, then the exchange's payload rules, then each payload's own.
  if (!parse_chain(plain, first, inner, why) || !check_payload_rules(h.exchange, response, outer, inner, v) ||
      !decode_all(inner, p, why)) {
    if (why.empty()) why = v.detail;
    ++eng_.counters_.invalid_messages;
    if (may_log(now)) warn(kTag, tag(), ": malformed ", to_string(h.exchange), ": ", why);
    if (!response) {
      tasks_.reject_request(h, Notify::kInvalidSyntax);
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
    if (may_log(now))
      warn(kTag, tag(), ": ", to_string(h.exchange), " request ", h.message_id,
         " before IKE_AUTH completed, dropped; it carried ", payload_list(inner));
    return;
  }
  last_heard_ = now;
  if (d.remote != remote_ || d.local.port != local_.port) follow_peer(d, h);
  const InMessage m{h, p, d.data, now};
  if (response) tasks_.process_response(m);
  else tasks_.process_request(m);
}

// RFC 7296 2.23: the move to port 4500 happens with IKE_AUTH; after that a
// new address or port is followed only when the peer is behind a NAT and we
// are not (a NAT mapping that changed), and only on an authenticated message
// that is new (replays never get here: message IDs).
void IkeSa::follow_peer(const Datagram& d, const Header& h) {
  if (h.exchange != Exchange::kAuth && !(nat_remote_ && !nat_local_)) {
    if (may_log(eng_.now_))
      info(kTag, tag(), ": authenticated message from ", d.remote.to_string(), ", not ", remote_.to_string(),
           "; not followed (no NAT in front of the peer)");
    return;
  }
  info(kTag, tag(), ": peer moved from ", remote_.to_string(), " to ", d.remote.to_string());
  remote_ = d.remote;
  local_ = d.local;
  // The installed Child SAs follow, keeping their sequence numbers.
  const core::SaPath path = child_sa_path(local_, remote_, encap());
  for (const auto& c : children_)
    if (!eng_.installer_.update_path(c.name, path)) warn(kTag, tag(), ": Child SA ", c.name, " not in the data plane");
}

// ---- timers -------------------------------------------------------------------------

TimePoint IkeSa::deadline() const {
  TimePoint t = tasks_.deadline();
  const bool idle = tasks_.idle();
  if (state_ == State::kEstablished) {
    if (conn_.dpd_delay && idle) t = std::min(t, last_heard_ + std::chrono::seconds(conn_.dpd_delay));
    if (idle) t = std::min(t, rekey_at_);
    for (const auto& c : children_) {
      if (!c.rekeying) t = std::min(t, c.rekey_at);
      t = std::min(t, c.expire_at);
    }
  }
  if (state_ == State::kInitDone) t = std::min(t, created_ + std::chrono::seconds(30));
  if (state_ == State::kRekeyed && idle) t = std::min(t, rekeyed_at_ + kRekeyedLinger);
  return t;
}

void IkeSa::tick(TimePoint now) {
  if (state_ == State::kDead) return;  // removed by the engine next
  tasks_.tick(now);
  if (state_ == State::kDead) return;
  if (state_ == State::kInitDone && now >= created_ + std::chrono::seconds(30)) {
    fail("half-open IKE SA timed out");
    return;
  }
  if (state_ == State::kRekeyed && tasks_.idle() && now >= rekeyed_at_ + kRekeyedLinger) {
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
      if (it->transform.is_ah()) note_removed_ah(spi);
      eng_.installer_.remove(it->name);
      it = children_.erase(it);
      if (tasks_.idle()) tasks_.queue_child_delete({spi}, true);
    } else {
      ++it;
    }
  }
  if (tasks_.idle()) {
    if (now >= rekey_at_) {
      rekey_at_ = TimePoint::max();
      tasks_.queue_ike_rekey();
    } else if (auto c = std::find_if(children_.begin(), children_.end(),
                                     [&](const ChildSa& x) { return !x.rekeying && now >= x.rekey_at; });
               c != children_.end()) {
      c->rekeying = true;
      tasks_.queue_child_rekey(c->spi_in);
    } else if (conn_.dpd_delay && now >= last_heard_ + std::chrono::seconds(conn_.dpd_delay)) {
      debug(kTag, tag(), ": liveness check");
      tasks_.queue_dpd();
    }
  }
  tasks_.initiate(now);
}

void IkeSa::peer_gone(const std::string& why, TimePoint now) {
  (void)now;
  if (state_ == State::kRekeyed || state_ == State::kDeleting) {
    // Its DELETE went unanswered: it was on its way out anyway. Neither a
    // failure nor a reason to restart (a rekeyed SA's successor is up).
    info(kTag, tag(), ": ", why, "; ", state_name(state_), " IKE SA removed");
    remove_children();
    set_state(State::kDead);
    return;
  }
  warn(kTag, tag(), ": ", why, "; peer considered dead");
  // An SA that was up is restarted when a child says dpd_action "restart";
  // one that never came up has failed, like one keying try in swanctl.
  restart_wanted_ = state_ == State::kEstablished;
  if (!restart_wanted_) ++eng_.counters_.ike_failed;
  remove_children();
  set_state(State::kDead);
}

void IkeSa::remove_children() {
  for (const auto& c : children_) eng_.installer_.remove(c.name);
  children_.clear();
}

void IkeSa::fail(const std::string& why) {
  if (may_log(eng_.now_)) warn(kTag, tag(), ": ", why);
  ++eng_.counters_.ike_failed;
  remove_children();
  set_state(State::kDead);
}

void IkeSa::request_delete(TimePoint now) {
  if (state_ != State::kEstablished || !keyed()) {
    remove_children();
    set_state(State::kDead);
    return;
  }
  if (auto x = tasks_.outstanding()) debug(kTag, tag(), ": DELETE waits for the outstanding ", to_string(*x));
  tasks_.queue_ike_delete();
  tasks_.initiate(now);
}

void IkeSa::delete_now(TimePoint now) {
  (void)now;
  if (state_ == State::kEstablished && keyed()) {
    if (auto x = tasks_.outstanding()) {
      info(kTag, tag(), ": DELETE not sent, a ", to_string(*x),
           " request is outstanding (RFC 7296 2.3); the peer finds out by its liveness checks");
    } else if (tasks_.send_unanswered(Exchange::kInformational,
                                      {make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))})) {
      info(kTag, tag(), ": IKE SA deleted (DELETE sent)");
    }
  }
  remove_children();
  set_state(State::kDead);
  tasks_.flush();
}

}  // namespace ipsecgw::ike
