// IKE_SA_INIT (RFC 7296 1.2), both roles: proposals, KE, nonces, NAT detection
// (2.23), COOKIE (2.6) and INVALID_KE_PAYLOAD (1.3), SKEYSEED and the SK keys.
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

bool IkeSa::start_init(TimePoint now, std::string& why) {
  if (conn_.proposals.empty() || conn_.proposals[0].dh.empty()) {
    why = "no IKE proposal with a DH group";
    return false;
  }
  if (!dh_) {
    dh_ = DhKey::generate(conn_.proposals[0].dh[0], why);
    if (!dh_) return false;
  }
  if (ni_.empty()) {
    ni_.resize(eng_.opt_.nonce_len);
    eng_.random_bytes(ni_);
  }
  std::vector<Payload> pl;
  if (!cookie_.empty()) pl.push_back(notify(Notify::kCookie, cookie_));
  SaPayload sa;
  std::uint8_t n = 1;
  for (const auto& p : conn_.proposals) sa.proposals.push_back(ike_offer(p, n++));
  pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
  pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(dh_->group()), dh_->public_value()})));
  pl.push_back(make(PayloadType::kNonce, ni_));
  pl.push_back(notify(Notify::kNatDetectionSourceIp, natd_hash(spi_i_, 0, local_.addr, local_.port)));
  pl.push_back(notify(Notify::kNatDetectionDestinationIp, natd_hash(spi_i_, 0, remote_.addr, remote_.port)));
  pl.push_back(notify(Notify::kIkev2FragmentationSupported));
  pl.push_back(notify(Notify::kSignatureHashAlgorithms, {0, 2, 0, 3, 0, 4}));
  Bytes msg = encode_plain(header(Exchange::kSaInit, false, 0), pl);
  init_i_ = msg;
  Pending p;
  p.exchange = Exchange::kSaInit;
  p.message_id = 0;
  p.message = {std::move(msg)};
  send_request(std::move(p), now);
  set_state(State::kInitSent);
  next_out_id_ = 1;
  info(kTag, tag(), ": initiating IKE_SA_INIT to ", remote_.to_string(), " (DH group ",
       static_cast<int>(dh_->group()), ")");
  return true;
}

void IkeSa::on_init_response(ByteSpan msg, const Header& h, const Parsed& p, TimePoint now) {
  if (const auto* ck = p.find(Notify::kCookie)) {
    if (ck->data.empty() || ck->data.size() > 64) return;
    info(kTag, tag(), ": responder asks for a COOKIE, retrying");
    cookie_ = ck->data;
    std::string why;
    start_init(now, why);
    return;
  }
  if (const auto* ike = p.find(Notify::kInvalidKePayload)) {
    if (ike->data.size() != 2 || ++invalid_ke_retries_ > 2) {
      fail("INVALID_KE_PAYLOAD without a usable group");
      return;
    }
    const auto g = static_cast<core::DhGroup>(ike->data[0] << 8 | ike->data[1]);
    bool offered = false;
    for (const auto& pr : conn_.proposals) offered |= std::find(pr.dh.begin(), pr.dh.end(), g) != pr.dh.end();
    if (!offered) {
      fail("peer asks for DH group " + std::to_string(static_cast<int>(g)) + ", which we did not offer");
      return;
    }
    info(kTag, tag(), ": INVALID_KE_PAYLOAD, retrying with DH group ", static_cast<int>(g));
    std::string why;
    dh_ = DhKey::generate(g, why);
    if (!dh_) {
      fail(why);
      return;
    }
    start_init(now, why);
    return;
  }
  if (const auto* err = p.first_error()) {
    fail("IKE_SA_INIT refused: " + notify_name(err->type));
    return;
  }
  if (!p.sa || !p.ke || p.nonce.empty()) {
    fail("IKE_SA_INIT response without SA, KE or Nonce");
    return;
  }
  auto choice = select_ike(conn_.proposals, *p.sa);
  if (!choice || p.sa->proposals.size() != 1) {
    fail("IKE_SA_INIT response chose a proposal we did not offer");
    return;
  }
  t_ = choice->t;
  if (static_cast<core::DhGroup>(p.ke->group) != dh_->group() || t_.dh != dh_->group()) {
    fail("IKE_SA_INIT response KE group does not match");
    return;
  }
  spi_r_ = h.spi_r;
  nr_ = p.nonce;
  init_r_.assign(msg.begin(), msg.end());
  peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
  check_natd(p, spi_i_, spi_r_);
  if (!derive(p.ke->data)) return;
  pending_.reset();
  send_auth(now);
}

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

bool IkeSa::derive(ByteSpan peer_ke) {
  std::string why;
  auto shared = dh_->shared_secret(peer_ke, why);
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

void IkeSa::respond_init(ByteSpan msg, const Parsed& p, const IkeChoice& choice, TimePoint now) {
  t_ = choice.t;
  ni_ = p.nonce;
  init_i_.assign(msg.begin(), msg.end());
  peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
  std::string why;
  dh_ = DhKey::generate(t_.dh, why);
  if (!dh_) {
    fail(why);
    return;
  }
  nr_.resize(eng_.opt_.nonce_len);
  eng_.random_bytes(nr_);
  check_natd(p, spi_i_, 0);
  std::vector<Payload> pl;
  SaPayload sa;
  sa.proposals.push_back(choice.reply);
  pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
  pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(t_.dh), dh_->public_value()})));
  pl.push_back(make(PayloadType::kNonce, nr_));
  pl.push_back(notify(Notify::kNatDetectionSourceIp, natd_hash(spi_i_, spi_r_, local_.addr, local_.port)));
  pl.push_back(notify(Notify::kNatDetectionDestinationIp, natd_hash(spi_i_, spi_r_, remote_.addr, remote_.port)));
  pl.push_back(notify(Notify::kIkev2FragmentationSupported));
  pl.push_back(notify(Notify::kSignatureHashAlgorithms, {0, 2, 0, 3, 0, 4}));
  Bytes out = encode_plain(header(Exchange::kSaInit, true, 0), pl);
  init_r_ = out;
  last_response_ = {out};
  last_response_id_ = 0;
  next_in_id_ = 1;
  set_state(State::kInitDone);
  created_ = now;
  send_raw(out);
  if (!derive(p.ke->data)) return;
  info(kTag, tag(), ": IKE_SA_INIT from ", remote_.to_string(), " answered, ", t_.name());
}

Bytes Engine::cookie_for(const Datagram& d, std::uint64_t spi_i, ByteSpan ni) const {
  // RFC 7296 2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)
  Bytes in(ni.begin(), ni.end());
  core::ByteAppender a{in};
  a.bytes(d.remote.addr.bytes());
  a.u64(spi_i);
  Bytes c{0};
  Bytes mac = prf(core::PrfAlg::kHmacSha256, cookie_secret_.span(), in);
  c.insert(c.end(), mac.begin(), mac.end());
  return c;
}

void Engine::handle_sa_init_request(const Datagram& d, const Header& h, TimePoint now) {
  // Half-open SAs, pruned of those that moved on; a retransmitted
  // IKE_SA_INIT is answered from its half-open SA.
  for (auto it = half_open_.begin(); it != half_open_.end();) {
    auto sa = sas_.find(it->second);
    if (sa == sas_.end() || sa->second->state_ != IkeSa::State::kInitDone) it = half_open_.erase(it);
    else ++it;
  }
  if (auto it = half_open_.find(h.spi_i); it != half_open_.end()) {
    const auto& sa = sas_.at(it->second);
    if (sa->remote_ == d.remote) {
      send(d.local, d.remote, sa->init_r_);
      return;
    }
  }
  Parsed p;
  std::vector<Payload> pl;
  std::string why;
  auto reply_plain = [&](std::vector<Payload> payloads) {
    Header r;
    r.spi_i = h.spi_i;
    r.spi_r = 0;
    r.exchange = Exchange::kSaInit;
    r.flags = kFlagResponse;
    send(d.local, d.remote, encode_plain(r, payloads));
  };
  RuleViolation v;
  if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
      !check_payload_rules(Exchange::kSaInit, false, pl, {}, v) || !decode_all(pl, p, why)) {
    if (why.empty()) why = v.detail;
    ++counters_.invalid_messages;
    warn(kTag, "bad IKE_SA_INIT from ", d.remote.to_string(), ": ", why);
    return;
  }
  if (!p.sa || !p.ke || p.nonce.empty()) {
    ++counters_.invalid_messages;
    warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), " without SA, KE or Nonce");
    return;
  }
  const ConnectionConfig* c = find_connection_for(d.local, d.remote, 2);
  if (!c) {
    warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), ": no connection configured for it");
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  // Cookies when too many SAs are half open (RFC 7296 2.6).
  if (half_open_.size() >= opt_.cookie_threshold) {
    const Bytes want = cookie_for(d, h.spi_i, p.nonce);
    const auto* ck = p.find(Notify::kCookie);
    if (!ck || !core::ct_equal(ck->data, want)) {
      ++counters_.cookies_sent;
      reply_plain({notify(Notify::kCookie, want)});
      return;
    }
  }
  auto choice = select_ike(c->proposals, *p.sa);
  if (!choice) {
    warn(kTag, c->name, ": no acceptable IKE proposal from ", d.remote.to_string());
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
    Bytes g;
    core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
    info(kTag, c->name, ": KE for group ", p.ke->group, " from ", d.remote.to_string(),
         ", asking for group ", static_cast<int>(choice->t.dh));
    reply_plain({notify(Notify::kInvalidKePayload, g)});
    return;
  }
  auto sa = std::make_unique<IkeSa>(*this, *c, false);
  sa->spi_i_ = h.spi_i;
  sa->spi_r_ = new_spi();
  sa->local_ = d.local;
  sa->remote_ = d.remote;
  sa->respond_init(d.data, p, *choice, now);
  if (sa->state_ != IkeSa::State::kDead) {
    half_open_[sa->spi_i_] = sa->spi_r_;
    const auto spi = sa->spi_r_;
    add_sa(std::move(sa), spi);
  }
}

}  // namespace ipsecgw::ike
