// IKE_AUTH (RFC 7296 1.2, 2.15) with pre-shared keys, both roles, and the
// first Child SA it carries.
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::send_auth(TimePoint now) {
  if (encap() && local_.port != core::kNattPort) {
    local_.port = core::kNattPort;
    remote_.port = core::kNattPort;
  }
  const IdPayload id = local_id();
  const Bytes id_body = encode_id(id);
  std::vector<Payload> pl;
  pl.push_back(make(PayloadType::kIdi, id_body));
  // INITIAL_CONTACT only when this is our only IKE SA with the peer (RFC
  // 7296 2.4): other connections to the same identity must survive.
  bool only = true;
  for (const auto& [spi, other] : eng_.sas_)
    only = only && (other.get() == this || other->state_ == State::kDead ||
                    !(other->remote_.addr == remote_.addr && other->conn_.remote_id == conn_.remote_id));
  if (eng_.opt_.initial_contact && only) pl.push_back(notify(Notify::kInitialContact));
  if (!conn_.remote_id.empty()) pl.push_back(make(PayloadType::kIdr, encode_id(id_from_string(conn_.remote_id))));
  pl.push_back(make(PayloadType::kAuth, encode_auth({AuthMethod::kPsk,
      psk_auth(t_.prf, conn_.psk.span(), init_i_, nr_, keys_.pi.span(), id_body)})));
  const ChildConfig* child = first_child_;
  if (child) {
    first_child_spi_ = eng_.new_child_spi();
    if (child->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    pl.push_back(notify(Notify::kEspTfcPaddingNotSupported));
    SaPayload sa;
    std::uint8_t n = 1;
    for (const auto& pr : child->esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, first_child_spi_, false));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kTsi, encode_ts(to_ts(child->local_ts))));
    pl.push_back(make(PayloadType::kTsr, encode_ts(to_ts(child->remote_ts))));
  }
  Pending p;
  p.exchange = Exchange::kAuth;
  p.message_id = next_out_id_++;
  p.child = child;
  p.new_spi_in = first_child_spi_;
  p.message = sealed(Exchange::kAuth, false, p.message_id, pl);
  send_request(std::move(p), now);
  set_state(State::kAuthSent);
}

bool IkeSa::verify_peer(const Parsed& p, const IdPayload& id, ByteSpan id_body, ByteSpan first_msg,
                 ByteSpan my_nonce, const SecureBytes& sk_p) {
  if (!conn_.remote_id.empty() && !(id == id_from_string(conn_.remote_id))) {
    warn(kTag, tag(), ": peer identity '", id.to_string(), "' is not the configured '", conn_.remote_id, "'");
    return false;
  }
  if (!p.auth || p.auth->method != AuthMethod::kPsk) {
    warn(kTag, tag(), ": peer did not authenticate with a pre-shared key");
    return false;
  }
  const Bytes want = psk_auth(t_.prf, conn_.psk.span(), first_msg, my_nonce, sk_p.span(), id_body);
  if (!core::ct_equal(want, p.auth->data)) {
    warn(kTag, tag(), ": authentication of '", id.to_string(), "' failed: AUTH payload does not match (wrong pre-shared key?)");
    return false;
  }
  return true;
}

void IkeSa::on_auth_response(const Parsed& p, TimePoint now) {
  const Pending ctx = std::move(*pending_);
  pending_.reset();
  if (const auto* n = p.find(Notify::kAuthenticationFailed)) {
    (void)n;
    ++eng_.counters_.auth_failed;
    fail("peer says AUTHENTICATION_FAILED");
    return;
  }
  if (!p.idr || !p.auth) {
    if (const auto* err = p.first_error()) fail("IKE_AUTH refused: " + notify_name(err->type));
    else fail("IKE_AUTH response without IDr or AUTH");
    return;
  }
  if (!verify_peer(p, *p.idr, p.idr_body, init_r_, ni_, keys_.pr)) {
    ++eng_.counters_.auth_failed;
    fail("authentication of the responder failed");
    return;
  }
  peer_id_ = p.idr->to_string();
  established(now);
  if (ctx.child) {
    if (const auto* err = p.first_error()) {
      warn(kTag, tag(), ": Child SA ", ctx.child->name, " not created: ", notify_name(err->type));
      return;
    }
    child_from_response(ctx, p, now, nullptr);
  }
}

void IkeSa::established(TimePoint now) {
  set_state(State::kEstablished);
  last_heard_ = now;
  ++eng_.counters_.ike_established;
  if (conn_.rekey_time) rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
  info(kTag, tag(), ": IKE SA established with '", peer_id_, "' at ", remote_.to_string(), ", ",
       t_.name(), encap() ? ", UDP-encapsulated" : "");
}

void IkeSa::on_auth_request(const Header& h, const Parsed& p, TimePoint now) {
  if (!p.idi || !p.auth) {
    send_response(Exchange::kAuth, h.message_id, {notify(Notify::kInvalidSyntax)});
    fail("IKE_AUTH request without IDi or AUTH");
    return;
  }
  if (!verify_peer(p, *p.idi, p.idi_body, init_i_, nr_, keys_.pi)) {
    ++eng_.counters_.auth_failed;
    send_response(Exchange::kAuth, h.message_id, {notify(Notify::kAuthenticationFailed)});
    fail("AUTHENTICATION_FAILED for '" + p.idi->to_string() + "' from " + remote_.to_string());
    return;
  }
  peer_id_ = p.idi->to_string();
  if (p.find(Notify::kInitialContact)) {
    // The peer starts afresh (RFC 7296 2.4): its older IKE SAs with us are
    // stale; remove them without sending DELETE.
    for (auto& [spi, other] : eng_.sas_) {
      if (other.get() == this || &other->conn_ != &conn_ || other->peer_id_ != peer_id_ ||
          other->state_ != State::kEstablished)
        continue;
      info(kTag, tag(), ": INITIAL_CONTACT from '", peer_id_, "': removing stale ", other->tag());
      other->remove_children();
      other->set_state(State::kDead);
      eng_.note_deadline(now);
    }
  }
  const IdPayload id = local_id();
  const Bytes id_body = encode_id(id);
  std::vector<Payload> pl;
  pl.push_back(make(PayloadType::kIdr, id_body));
  pl.push_back(make(PayloadType::kAuth, encode_auth({AuthMethod::kPsk,
      psk_auth(t_.prf, conn_.psk.span(), init_r_, ni_, keys_.pr.span(), id_body)})));
  established(now);
  if (p.sa && p.tsi && p.tsr) {
    auto child_pl = respond_child(p, ni_, nr_, nullptr, now);
    pl.insert(pl.end(), child_pl.begin(), child_pl.end());
  }
  send_response(Exchange::kAuth, h.message_id, pl);
}

}  // namespace ipsecgw::ike
