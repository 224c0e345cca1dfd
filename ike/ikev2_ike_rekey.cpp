// IKE SA rekey (RFC 7296 1.3.2, 2.18), both roles, and simultaneous rekeys (2.8.2).
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::rekey_ike(TimePoint now) {
  Pending p;
  p.exchange = Exchange::kCreateChildSa;
  p.message_id = next_out_id_++;
  p.new_ike_spi = eng_.new_spi();
  p.nonce.resize(eng_.opt_.nonce_len);
  eng_.random_bytes(p.nonce);
  std::string why;
  p.dh = DhKey::generate(t_.dh, why);
  if (!p.dh) return;
  Bytes spi;
  core::ByteAppender{spi}.u64(p.new_ike_spi);
  SaPayload sa;
  std::uint8_t n = 1;
  // The negotiated suite first, then the configured ones.
  core::Proposal cur;
  cur.enc = {t_.enc};
  if (!t_.aead()) cur.integ = {t_.integ};
  cur.prf = {t_.prf};
  cur.dh = {t_.dh};
  sa.proposals.push_back(ike_offer(cur, n++, spi));
  for (const auto& pr : conn_.proposals) {
    auto offer = ike_offer(pr, n, spi);
    if (offer.transforms == sa.proposals.front().transforms) continue;  // offered already
    sa.proposals.push_back(std::move(offer));
    ++n;
  }
  std::vector<Payload> pl{make(PayloadType::kSa, encode_sa(sa)), make(PayloadType::kNonce, p.nonce),
                          make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(t_.dh), p.dh->public_value()}))};
  p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
  rekey_at_ = TimePoint::max();
  info(kTag, tag(), ": rekeying the IKE SA");
  send_request(std::move(p), now);
}

void IkeSa::on_ike_rekey_response(Pending& ctx, const Parsed& p, TimePoint now) {
  if (const auto* err = p.first_error()) {
    warn(kTag, tag(), ": IKE SA rekey refused: ", notify_name(err->type), "; retrying in 60 s");
    rekey_at_ = now + std::chrono::seconds(60);
    return;
  }
  std::string why;
  if (!p.sa || p.sa->proposals.size() != 1 || p.sa->proposals[0].spi.size() != 8 || !p.ke ||
      p.nonce.empty()) {
    warn(kTag, tag(), ": IKE SA rekey response incomplete");
    return;
  }
  auto choice = select_ike(conn_.proposals, *p.sa);
  std::optional<SecureBytes> shared;
  if (!choice || choice->t.dh != ctx.dh->group() ||
      !(shared = ctx.dh->shared_secret(p.ke->data, why))) {
    warn(kTag, tag(), ": IKE SA rekey response unusable ", why);
    return;
  }
  std::uint64_t peer_spi = 0;
  for (auto b : p.sa->proposals[0].spi) peer_spi = peer_spi << 8 | b;
  auto sa = std::make_unique<IkeSa>(eng_, conn_, true);
  sa->spi_i_ = ctx.new_ike_spi;
  sa->spi_r_ = peer_spi;
  sa->local_ = local_;
  sa->remote_ = remote_;
  sa->t_ = choice->t;
  sa->ni_ = ctx.nonce;
  sa->nr_ = p.nonce;
  sa->nat_local_ = nat_local_;
  sa->nat_remote_ = nat_remote_;
  sa->keys_ = derive_ike_keys(sa->t_, shared->span(), sa->ni_, sa->nr_, sa->spi_i_, sa->spi_r_, &keys_.d);
  if (!sa->make_ciphers()) return;
  sa->peer_id_ = peer_id_;
  sa->created_ = now;
  sa->adopt_established();
  sa->last_heard_ = now;
  if (conn_.rekey_time) sa->rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
  const auto new_spi = sa->spi_i_;
  if (ike_collision_) {
    // Both ends rekeyed (RFC 7296 2.8.2): the new SA of the exchange with
    // the lowest nonce is redundant and its initiator deletes it; the
    // winner's initiator deletes the old SA.
    const Collision c = *ike_collision_;
    ike_collision_.reset();
    auto less = [](const Bytes& a, const Bytes& b) {
      return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
    };
    const Bytes& ours_min = less(ctx.nonce, p.nonce) ? ctx.nonce : p.nonce;
    const Bytes& theirs_min = less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
    auto peer_sa = eng_.sas_.find(ike_collision_spi_);
    if (less(ours_min, theirs_min) && peer_sa != eng_.sas_.end()) {
      info(kTag, tag(), ": IKE SA rekey collision lost: keeping the peer's new SA ", peer_sa->second->tag());
      ++eng_.counters_.rekey_collisions_lost;
      peer_sa->second->children_ = std::move(children_);
      children_.clear();
      peer_sa->second->rekey_at_ = conn_.rekey_time ? now + std::chrono::seconds(conn_.rekey_time) : TimePoint::max();
      eng_.note_deadline(peer_sa->second->deadline());
      IkeSa* mine = sa.get();
      sa->rekey_at_ = TimePoint::max();
      eng_.add_sa(std::move(sa), new_spi);
      mine->send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
      eng_.note_deadline(mine->deadline());
      set_state(State::kRekeyed);  // the peer deletes the old SA
      rekeyed_at_ = now;
      rekey_at_ = TimePoint::max();
      return;
    }
    info(kTag, tag(), ": IKE SA rekey collision won: keeping our new SA");
    ++eng_.counters_.rekey_collisions_won;
    if (peer_sa != eng_.sas_.end()) peer_sa->second->rekey_at_ = TimePoint::max();  // the peer deletes it
  }
  sa->children_ = std::move(children_);
  children_.clear();
  info(kTag, tag(), ": IKE SA rekeyed, now ", sa->tag(), " (", sa->children_.size(), " Child SAs moved)");
  ++eng_.counters_.ike_rekeyed;
  eng_.add_sa(std::move(sa), new_spi);
  send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
  set_state(State::kRekeyed);
  rekeyed_at_ = now;
}

// IKE SA rekey as responder (RFC 7296 2.18): a new IKE SA with fresh SPIs
// and keys from the old SK_d; the Child SAs move to it.
void IkeSa::respond_ike_rekey(const Header& h, const Parsed& p, const Bytes& nr, TimePoint now) {
  auto choice = select_ike(conn_.proposals, *p.sa);
  if (!choice || !p.ke || p.sa->proposals[0].spi.size() != 8) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kNoProposalChosen)});
    return;
  }
  if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
    Bytes g;
    core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidKePayload, g)});
    return;
  }
  std::string why;
  auto dh = DhKey::generate(choice->t.dh, why);
  auto shared = dh ? dh->shared_secret(p.ke->data, why) : std::nullopt;
  if (!shared) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kNoProposalChosen)});
    return;
  }
  const auto& tp = p.sa->proposals[0];
  std::uint64_t peer_spi = 0;
  for (auto b : tp.spi) peer_spi = peer_spi << 8 | b;
  auto sa = std::make_unique<IkeSa>(eng_, conn_, false);
  sa->spi_i_ = peer_spi;
  sa->spi_r_ = eng_.new_spi();
  sa->local_ = local_;
  sa->remote_ = remote_;
  sa->t_ = choice->t;
  sa->ni_ = p.nonce;
  sa->nr_ = nr;
  sa->nat_local_ = nat_local_;
  sa->nat_remote_ = nat_remote_;
  sa->keys_ = derive_ike_keys(sa->t_, shared->span(), sa->ni_, sa->nr_, sa->spi_i_, sa->spi_r_, &keys_.d);
  if (!sa->make_ciphers()) return;
  Proposal reply = choice->reply;
  core::ByteAppender{reply.spi}.u64(sa->spi_r_);
  SaPayload out_sa;
  out_sa.proposals.push_back(reply);
  send_response(Exchange::kCreateChildSa, h.message_id,
                {make(PayloadType::kSa, encode_sa(out_sa)), make(PayloadType::kNonce, nr),
                 make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()}))});
  sa->peer_id_ = peer_id_;
  sa->created_ = now;
  sa->adopt_established();
  sa->last_heard_ = now;
  if (conn_.rekey_time) sa->rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
  const auto new_spi = sa->spi_r_;
  if (pending_ && pending_->new_ike_spi) {
    // We are rekeying this IKE SA too (RFC 7296 2.8.2): decide which new SA
    // survives when our own exchange completes; the Child SAs stay here
    // until then.
    ike_collision_ = Collision{p.nonce, nr, 0};
    ike_collision_spi_ = new_spi;
    sa->rekey_at_ = TimePoint::max();
    info(kTag, tag(), ": IKE SA rekey collision: the peer rekeys it while we do");
  } else {
    sa->children_ = std::move(children_);
    children_.clear();
    info(kTag, tag(), ": IKE SA rekeyed by the peer, now ", sa->tag(), " (", sa->children_.size(),
         " Child SAs moved)");
    ++eng_.counters_.ike_rekeyed;
    // The old SA stays until the peer deletes it, no longer established.
    set_state(State::kRekeyed);
    rekeyed_at_ = now;
  }
  eng_.add_sa(std::move(sa), new_spi);
}

}  // namespace ipsecgw::ike
