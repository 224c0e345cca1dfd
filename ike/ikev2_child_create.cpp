// CREATE_CHILD_SA for a new Child SA (RFC 7296 1.3.1), both roles: proposal,
// traffic selector narrowing (2.9), optional PFS, KEYMAT (2.17) and the
// install into the data plane.
#include "ike/ikev2_sa.hpp"

#include "ike/child_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::child_from_response(const Pending& ctx, const Parsed& p, TimePoint now, const SecureBytes* pfs) {
  if (!p.sa || !p.tsi || !p.tsr) {
    warn(kTag, tag(), ": Child SA response without SA or TS");
    return;
  }
  auto c = select_esp(ctx.child->esp_proposals, *p.sa, pfs != nullptr);
  if (!c || p.sa->proposals.size() != 1) {
    warn(kTag, tag(), ": Child SA response chose a proposal we did not offer");
    return;
  }
  auto lts = narrow(*p.tsi, ctx.child->local_ts);
  auto rts = narrow(*p.tsr, ctx.child->remote_ts);
  if (lts.empty() || rts.empty()) {
    warn(kTag, tag(), ": Child SA response has selectors outside ours");
    return;
  }
  const Bytes& ni = ctx.nonce.empty() ? ni_ : ctx.nonce;
  const Bytes& nr = ctx.nonce.empty() ? nr_ : p.nonce;
  install_child(*ctx.child, c->t, ctx.new_spi_in, c->peer_spi, lts, rts, ni, nr, true, pfs, now);
}

bool IkeSa::install_child(const ChildConfig& cc, const core::EspTransform& t, std::uint32_t spi_in,
                   std::uint32_t spi_out, const std::vector<TrafficSelector>& lts,
                   const std::vector<TrafficSelector>& rts, ByteSpan ni, ByteSpan nr,
                   bool exchange_initiator, const SecureBytes* pfs, TimePoint now) {
  Bytes seed;
  if (pfs) seed.assign(pfs->span().begin(), pfs->span().end());
  seed.insert(seed.end(), ni.begin(), ni.end());
  seed.insert(seed.end(), nr.begin(), nr.end());
  const std::size_t half = t.keymat_len();
  SecureBytes km = prf_plus(t_.prf, keys_.d.span(), seed, 2 * half);
  core::secure_wipe(seed.data(), seed.size());
  std::vector<core::IpRange> lr, rr;
  for (const auto& x : lts) lr.push_back({x.start, x.end});
  for (const auto& x : rts) rr.push_back({x.start, x.end});
  core::SaParams sp = child_sa_params(conn_.name, cc, t, local_, remote_, encap(), lr, rr, spi_in, spi_out,
                                      SecureBytes(km.subspan(exchange_initiator ? half : 0, half)),
                                      SecureBytes(km.subspan(exchange_initiator ? 0 : half, half)));
  std::string why;
  const std::string name = sp.name;
  if (!eng_.installer_.install(std::move(sp), why)) {
    error(kTag, tag(), ": installing Child SA ", name, " failed: ", why);
    return false;
  }
  ChildSa ch;
  ch.cfg = &cc;
  ch.name = name;
  ch.spi_in = spi_in;
  ch.spi_out = spi_out;
  ch.transform = t;
  ch.local_ts = lts;
  ch.remote_ts = rts;
  ch.established = now;
  ch.pfs = pfs != nullptr;
  const auto timers = child_timers(cc, now, 0, [this](core::MutByteSpan out) { eng_.random_bytes(out); });
  ch.rekey_at = timers.rekey_at;
  ch.expire_at = timers.expire_at;
  children_.push_back(ch);
  eng_.acquiring_.erase(conn_.name + "/" + cc.name);
  ++eng_.counters_.child_installed;
  info(kTag, tag(), ": Child SA ", name, " installed: ", t.name(), ", SPIs in ", core::hex32(spi_in),
       " out ", core::hex32(spi_out), ", ", ts_string(lts), " === ", ts_string(rts), pfs ? ", PFS" : "");
  return true;
}

std::vector<Payload> IkeSa::respond_child(const Parsed& p, ByteSpan ni, ByteSpan nr, const DhKey* dh_for_ke,
                                   TimePoint now, std::uint32_t rekeyed_out,
                                   std::optional<std::uint32_t>* spi_in_out) {
  const bool transport = p.find(Notify::kUseTransportMode) != nullptr;
  for (const auto& cc : conn_.children) {
    if ((cc.mode == core::SaMode::kTransport) != transport) continue;
    auto lts = narrow(*p.tsr, cc.local_ts);
    auto rts = narrow(*p.tsi, cc.remote_ts);
    if (lts.empty() || rts.empty()) continue;
    auto choice = select_esp(cc.esp_proposals, *p.sa, p.ke.has_value());
    if (!choice) {
      warn(kTag, tag(), ": no acceptable ESP proposal for child ", cc.name);
      return {notify(Notify::kNoProposalChosen)};
    }
    std::unique_ptr<DhKey> dh;
    std::optional<SecureBytes> shared;
    if (p.ke) {
      if (!choice->dh || static_cast<core::DhGroup>(p.ke->group) != *choice->dh) {
        Bytes g;
        core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->dh ? *choice->dh : t_.dh));
        return {notify(Notify::kInvalidKePayload, g)};
      }
      std::string why;
      dh = DhKey::generate(*choice->dh, why);
      if (dh) shared = dh->shared_secret(p.ke->data, why);
      if (!shared) return {notify(Notify::kNoProposalChosen)};
    }
    (void)dh_for_ke;
    const std::uint32_t spi_in = eng_.new_child_spi();
    std::vector<Payload> pl;
    if (transport) pl.push_back(notify(Notify::kUseTransportMode));
    Proposal reply = choice->reply;
    reply.spi = u32_bytes(spi_in);
    SaPayload sa;
    sa.proposals.push_back(reply);
    Bytes my_nonce(nr.begin(), nr.end());
    if (!install_child(cc, choice->t, spi_in, choice->peer_spi, lts, rts, ni, my_nonce, false,
                       shared ? &*shared : nullptr, now))
      return {notify(Notify::kNoProposalChosen)};
    if (spi_in_out) *spi_in_out = spi_in;
    (void)rekeyed_out;
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    if (p.ke) pl.push_back(make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()})));
    pl.push_back(make(PayloadType::kTsi, encode_ts(rts)));
    pl.push_back(make(PayloadType::kTsr, encode_ts(lts)));
    return pl;
  }
  warn(kTag, tag(), ": no child matches the proposed selectors ", ts_string(*p.tsi), " === ",
          ts_string(*p.tsr));
  return {notify(Notify::kTsUnacceptable)};
}

void IkeSa::on_create_child_request(const Header& h, const Parsed& p, TimePoint now) {
  if (!p.sa || p.nonce.empty()) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
    return;
  }
  Bytes nr(eng_.opt_.nonce_len);
  eng_.random_bytes(nr);
  const bool ike_rekey = !p.sa->proposals.empty() && p.sa->proposals[0].protocol == ProtocolId::kIke;
  if (ike_rekey) {
    respond_ike_rekey(h, p, nr, now);
    return;
  }
  if (!p.tsi || !p.tsr) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
    return;
  }
  // A rekey names the SA by the sender's inbound SPI, our outbound one.
  std::uint32_t rekeyed_in = 0;
  bool collision = false;
  if (const auto* rk = p.find(Notify::kRekeySa)) {
    if (rk->spi.size() != 4) {
      send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
      return;
    }
    const std::uint32_t old_out = static_cast<std::uint32_t>(rk->spi[0] << 24 | rk->spi[1] << 16 | rk->spi[2] << 8 | rk->spi[3]);
    auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_out == old_out; });
    if (it == children_.end()) {
      // Already rekeyed and deleted (e.g. we won a collision): RFC 7296 2.25.
      send_response(Exchange::kCreateChildSa, h.message_id,
                    {notify(Notify::kChildSaNotFound, {}, ProtocolId::kEsp, rk->spi)});
      return;
    }
    rekeyed_in = it->spi_in;
    collision = it->rekeying;
    info(kTag, tag(), ": peer rekeys Child SA ", it->name, collision ? " while we rekey it too (collision)" : "");
  }
  std::vector<Payload> pl{make(PayloadType::kNonce, nr)};
  std::optional<std::uint32_t> new_in;
  auto child_pl = respond_child(p, p.nonce, nr, nullptr, now, 0, &new_in);
  if (child_pl.size() == 1 && child_pl[0].type == PayloadType::kNotify) {
    send_response(Exchange::kCreateChildSa, h.message_id, child_pl);
    return;
  }
  if (collision && new_in) collisions_[rekeyed_in] = {p.nonce, nr, *new_in};
  if (rekeyed_in && new_in) ++eng_.counters_.child_rekeyed;
  // SA first, then Nonce, as RFC 7296 1.3 lays the exchange out.
  std::vector<Payload> out;
  for (auto& x : child_pl) {
    out.push_back(x);
    if (x.type == PayloadType::kSa) out.push_back(pl[0]);
  }
  send_response(Exchange::kCreateChildSa, h.message_id, out);
}

bool IkeSa::create_child(const ChildConfig& cc, TimePoint now) {
  if (pending_ || state_ != State::kEstablished) return false;
  Pending p;
  p.exchange = Exchange::kCreateChildSa;
  p.message_id = next_out_id_++;
  p.child = &cc;
  p.new_spi_in = eng_.new_child_spi();
  p.nonce.resize(eng_.opt_.nonce_len);
  eng_.random_bytes(p.nonce);
  std::vector<Payload> pl;
  if (cc.mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
  SaPayload sa;
  std::uint8_t n = 1;
  const bool pfs = !cc.esp_proposals.empty() && !cc.esp_proposals[0].dh.empty();
  for (const auto& pr : cc.esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, p.new_spi_in, pfs));
  pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
  pl.push_back(make(PayloadType::kNonce, p.nonce));
  if (pfs) {
    std::string why;
    p.dh = DhKey::generate(cc.esp_proposals[0].dh[0], why);
    if (!p.dh) return false;
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(p.dh->group()), p.dh->public_value()})));
  }
  pl.push_back(make(PayloadType::kTsi, encode_ts(to_ts(cc.local_ts))));
  pl.push_back(make(PayloadType::kTsr, encode_ts(to_ts(cc.remote_ts))));
  p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
  info(kTag, tag(), ": creating Child SA ", cc.name);
  send_request(std::move(p), now);
  return true;
}

void IkeSa::on_create_child_response(const Parsed& p, TimePoint now) {
  Pending ctx = std::move(*pending_);
  pending_.reset();
  if (ctx.new_ike_spi) {
    on_ike_rekey_response(ctx, p, now);
    return;
  }
  auto old = std::find_if(children_.begin(), children_.end(),
                          [&](const ChildSa& c) { return c.spi_in == ctx.rekeyed_spi_in; });
  if (old != children_.end()) old->rekeying = false;
  if (const auto* err = p.first_error()) {
    warn(kTag, tag(), ": CREATE_CHILD_SA refused: ", notify_name(err->type));
    return;
  }
  if (p.nonce.empty()) return;
  std::optional<SecureBytes> shared;
  if (ctx.dh) {
    std::string why;
    if (!p.ke || (shared = ctx.dh->shared_secret(p.ke->data, why), !shared)) {
      warn(kTag, tag(), ": CREATE_CHILD_SA response without a usable KE");
      return;
    }
  }
  Parsed q = p;
  const std::size_t before = children_.size();
  child_from_response(ctx, q, now, shared ? &*shared : nullptr);
  if (children_.size() == before) return;
  if (ctx.rekeyed_spi_in) ++eng_.counters_.child_rekeyed;
  if (auto col = collisions_.find(ctx.rekeyed_spi_in); col != collisions_.end()) {
    // Both ends rekeyed this child at once. The SA made by the exchange
    // with the lowest of the four nonces is redundant, and the end that
    // initiated that exchange deletes it; the other end deletes the old SA.
    const Collision c = col->second;
    collisions_.erase(col);
    auto less = [](const Bytes& a, const Bytes& b) {
      return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
    };
    const Bytes& ours_min = less(ctx.nonce, p.nonce) ? ctx.nonce : p.nonce;
    const Bytes& theirs_min = less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
    if (less(ours_min, theirs_min)) {
      info(kTag, tag(), ": rekey collision lost (lowest nonce is ours): deleting our redundant Child SA");
      ++eng_.counters_.rekey_collisions_lost;
      old = std::find_if(children_.begin(), children_.end(),
                         [&](const ChildSa& x) { return x.spi_in == ctx.rekeyed_spi_in; });
      if (old != children_.end()) old->rekey_at = TimePoint::max();  // the peer deletes it
      const std::uint32_t spi = ctx.new_spi_in;
      send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false, {spi});
      return;
    }
    info(kTag, tag(), ": rekey collision won: keeping our new Child SA");
    ++eng_.counters_.rekey_collisions_won;
  }
  // Make-before-break: the new SA is installed; now delete the old one.
  old = std::find_if(children_.begin(), children_.end(),
                     [&](const ChildSa& c) { return c.spi_in == ctx.rekeyed_spi_in; });
  if (old != children_.end()) {
    const std::uint32_t spi = old->spi_in;
    send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false, {spi});
  }
}

}  // namespace ipsecgw::ike
