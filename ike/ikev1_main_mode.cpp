#include "ike/ikev1_main_mode.hpp"

#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

namespace {
// RFC 3947 NAT-T and RFC 3706 DPD: what this side will speak.
const char* kVidNatT = "4a131c81070358455c5728f20e95452f";
// The NAT-T drafts older peers speak (draft-ietf-ipsec-nat-t-ike-02, -02\n, -03):
// NAT-D/NAT-OA as payloads 130/131 and UDP encapsulation modes 61443/61444.
const char* kVidNatTDraft[] = {"7d9419a65310ca6f2c179d9215529d56", "90cb80913ebb696e086381b5ec427b1f",
                               "cd60464335df21f87cfdb2fc68b6a448"};
const char* kVidDpd = "afcad71368a1f1c96b8696fc77570100";

RawPayload raw(Payload t, Bytes b) { return {t, std::move(b)}; }
Bytes hex(const char* h) { return *core::from_hex(h); }

bool same_suite(Phase1Suite a, Phase1Suite b) {
  a.life_seconds = b.life_seconds = 0;
  return a == b;
}
}  // namespace

MainMode::MainMode(bool initiator, MainModeConfig cfg) : initiator_(initiator), cfg_(std::move(cfg)) {}

void MainMode::random(core::MutByteSpan out) {
  if (cfg_.random) cfg_.random(out);
  else core::random_bytes(out);
}

bool MainMode::reject_auth(Notify n, std::string why) {
  auth_suspect_ = true;
  notify_ = n;
  error_ = std::move(why);
  return false;
}

bool MainMode::fail(Notify n, std::string why) {
  failed_ = true;
  notify_ = n;
  error_ = std::move(why);
  return false;
}

Header MainMode::header() const {
  Header h;
  h.cky_i = cky_i_;
  h.cky_r = cky_r_;
  h.exchange = cfg_.aggressive ? Exchange::kAggressive : Exchange::kMain;
  return h;
}

// What the peer speaks, from the vendor IDs of its first message.
void MainMode::note_vendor_ids(const Message& m) {
  for (const auto& v : m.vendor_ids) {
    const auto name = vendor_name(v);
    peer_natt_ |= name == "RFC 3947";
    peer_natt_draft_ |= name == "draft-ietf-ipsec-nat-t-ike-02" || name == "draft-ietf-ipsec-nat-t-ike-02\\n" ||
                        name == "draft-ietf-ipsec-nat-t-ike-03";
    peer_dpd_ |= name == "DPD";
  }
}

std::vector<RawPayload> MainMode::vendor_ids() const {
  std::vector<RawPayload> v{raw(Payload::kVendor, hex(kVidNatT))};
  for (const char* d : kVidNatTDraft) v.push_back(raw(Payload::kVendor, hex(d)));
  v.push_back(raw(Payload::kVendor, hex(kVidDpd)));
  return v;
}

bool MainMode::choose(const Message& m) {
  std::string why;
  auto c = select_phase1(cfg_.proposals, AuthMethod::kPsk, *m.sa, why);
  if (!c) return fail(Notify::kNoProposalChosen, why);
  offer_ = *m.sa;
  offer_.proposals = {{c->proposal_number, 1, {}, {}}};
  sai_b_ = m.sa_body;  // HASH_I/HASH_R cover the SA payload as the initiator sent it
  chosen_ = c->transform;
  suite_ = c->suite;
  return true;
}

bool MainMode::accept_choice(const Message& m) {
  if (!m.sa || m.sa->proposals.size() != 1 || m.sa->proposals[0].transforms.size() != 1)
    return fail(Notify::kBadProposalSyntax, "message 2 must carry one proposal with one transform");
  std::string why;
  auto s = decode_phase1(m.sa->proposals[0].transforms[0], why);
  if (!s) return fail(Notify::kNoProposalChosen, "the responder chose " + why);
  bool offered = false;
  for (const auto& t : offer_.proposals.at(0).transforms)
    if (auto o = decode_phase1(t, why); o && same_suite(*o, *s)) offered = true;
  if (!offered) return fail(Notify::kNoProposalChosen, "the responder chose a suite we did not offer");
  suite_ = *s;
  return true;
}

std::optional<Bytes> MainMode::build() {
  if (failed_) return std::nullopt;
  if (cfg_.aggressive) return build_aggressive();
  // Whose turn: the initiator builds after 0, 2, 4 messages; the responder after 1, 3, 5.
  if ((step_ % 2 == 0) != initiator_ || step_ >= 6) return std::nullopt;
  Bytes out;
  switch (step_) {
    case 0: {  // (1) SA with every suite we allow, VIDs
      while (cky_i_ == 0) random({reinterpret_cast<std::uint8_t*>(&cky_i_), sizeof cky_i_});
      Proposal p{1, 1, {}, {}};
      for (const auto& cp : cfg_.proposals) {
        std::string why;
        for (const auto& s : phase1_suites(cp, AuthMethod::kPsk, cfg_.life_seconds, why)) {
          if (p.transforms.size() >= 64) break;
          p.transforms.push_back(encode_phase1(s, static_cast<std::uint8_t>(p.transforms.size() + 1)));
        }
      }
      if (p.transforms.empty()) {
        fail(Notify::kNoProposalChosen, "no IKEv1 phase-1 suite in the configured proposals");
        return std::nullopt;
      }
      offer_ = {kDoiIpsec, kSitIdentityOnly, {p}};
      sai_b_ = encode_sa(offer_);
      std::vector<RawPayload> pl{raw(Payload::kSa, sai_b_)};
      for (auto& v : vendor_ids()) pl.push_back(std::move(v));
      out = encode_plain(header(), pl);
      break;
    }
    case 1: {  // (2) the chosen transform, as offered
      while (cky_r_ == 0) random({reinterpret_cast<std::uint8_t*>(&cky_r_), sizeof cky_r_});
      SaPayload reply{kDoiIpsec, kSitIdentityOnly, {{offer_.proposals.at(0).number, 1, {}, {chosen_}}}};
      std::vector<RawPayload> pl{raw(Payload::kSa, encode_sa(reply))};
      for (auto& v : vendor_ids()) pl.push_back(std::move(v));
      out = encode_plain(header(), pl);
      break;
    }
    case 2: {  // (3) KE, Ni
      std::string why;
      dh_ = DhKey::generate(suite_->group, why);
      if (!dh_) {
        fail(Notify::kNoProposalChosen, "Diffie-Hellman: " + why);
        return std::nullopt;
      }
      gxi_ = dh_->public_value();
      ni_.resize(32);
      random(ni_);
      auto pl = nat_d_payloads();
      pl.insert(pl.begin(), {raw(Payload::kKe, gxi_), raw(Payload::kNonce, ni_)});
      out = encode_plain(header(), pl);
      break;
    }
    case 3: {  // (4) KE, Nr (keys were derived when (3) arrived)
      auto pl = nat_d_payloads();
      pl.insert(pl.begin(), {raw(Payload::kKe, gxr_), raw(Payload::kNonce, nr_)});
      out = encode_plain(header(), pl);
      break;
    }
    case 4:
    case 5: {  // (5) IDii, HASH_I / (6) IDir, HASH_R, encrypted
      my_id_b_ = encode_id(cfg_.local_id);
      std::vector<RawPayload> pl{raw(Payload::kId, my_id_b_), raw(Payload::kHash, my_hash())};
      if (step_ == 4 && cfg_.initial_contact) {
        NotifyPayload n;
        n.type = static_cast<std::uint16_t>(Notify::kInitialContact);
        core::ByteAppender a{n.spi};
        a.u64(cky_i_);
        a.u64(cky_r_);
        pl.push_back(raw(Payload::kNotify, encode_notify(n)));
      }
      out = sa_.cipher->seal(header(), pl);
      break;
    }
    default:
      return std::nullopt;
  }
  ++step_;
  return out;
}

bool MainMode::process(ByteSpan datagram) {
  if (failed_) return false;
  if ((step_ % 2 == 1) != initiator_ || step_ >= last_step()) {
    error_ = "not waiting for a message from the peer";
    return false;
  }
  DecodeError err;
  auto h = parse_header(datagram, err);
  if (!h) return fail(err.notify, err.detail);
  if (cfg_.aggressive) return process_aggressive(datagram, *h);
  if (h->exchange != Exchange::kMain || h->cky_i != (step_ == 0 ? h->cky_i : cky_i_))
    return fail(Notify::kInvalidCookie, "not a message of this Main Mode");
  Message m;
  m.header = *h;
  if (h->encrypted()) {
    if (step_ < 4) return fail(Notify::kInvalidFlags, "encrypted message before the keys exist");
    std::string why;
    auto plain = sa_.cipher->open(datagram, why);
    if (!plain || !parse_chain(*plain, h->next, m.raw, err, true) || !decode_payloads(m.raw, m, err))
      // Unreadable after decryption: almost always a different pre-shared key,
      // but not authenticated either: rejected, the exchange goes on.
      return reject_auth(Notify::kAuthenticationFailed,
                  "message " + std::to_string(step_ + 1) + " does not decrypt to payloads (" +
                      (plain ? err.detail : why) + "): a different pre-shared key?");
    if (!check_payload_rules(Exchange::kMain, !initiator_, true, m.raw, err)) return fail(err.notify, err.detail);
  } else {
    if (step_ >= 4) return fail(Notify::kInvalidFlags, "message " + std::to_string(step_ + 1) + " must be encrypted");
    if (!parse_chain(datagram.subspan(kHeaderLen), h->next, m.raw, err) ||
        !check_payload_rules(Exchange::kMain, !initiator_, false, m.raw, err) || !decode_payloads(m.raw, m, err))
      return fail(err.notify, err.detail);
  }
  if (step_ < 2)
    note_vendor_ids(m);
  switch (step_) {
    case 0: {  // (1) at the responder
      if (h->cky_r != 0) return fail(Notify::kInvalidCookie, "message 1 with a responder cookie");
      if (!m.sa) return fail(Notify::kPayloadMalformed, "message 1 without SA");
      if (!choose(m)) return false;
      cky_i_ = h->cky_i;
      break;
    }
    case 1: {  // (2) at the initiator
      if (h->cky_r == 0) return fail(Notify::kInvalidCookie, "message 2 without a responder cookie");
      if (!accept_choice(m)) return false;
      cky_r_ = h->cky_r;
      break;
    }
    case 2:  // (3) at the responder: KE, Ni; our KE, Nr and the keys
    case 3: {  // (4) at the initiator
      if (h->cky_r != cky_r_) return fail(Notify::kInvalidCookie, "wrong responder cookie");
      if (m.ke.empty() || m.nonce.empty()) return fail(Notify::kPayloadMalformed, "KE or nonce missing");
      if (m.ke.size() != dh_public_len(suite_->group))
        return fail(Notify::kInvalidKeyInformation, "KE of " + std::to_string(m.ke.size()) + " bytes");
      if (step_ == 2) {
        gxi_ = m.ke;
        ni_ = m.nonce;
        std::string why;
        dh_ = DhKey::generate(suite_->group, why);
        if (!dh_) return fail(Notify::kNoProposalChosen, "Diffie-Hellman: " + why);
        gxr_ = dh_->public_value();
        nr_.resize(32);
        random(nr_);
      } else {
        gxr_ = m.ke;
        nr_ = m.nonce;
      }
      check_nat_d(m);
      if (!derive_keys()) return false;
      break;
    }
    case 4:  // (5) at the responder, (6) at the initiator
    case 5: {
      if (h->cky_r != cky_r_) return fail(Notify::kInvalidCookie, "wrong responder cookie");
      if (m.ids.size() != 1 || m.hash.empty()) return fail(Notify::kPayloadMalformed, "ID or HASH missing");
      if (!check_hash(m)) return false;
      sa_.cipher->commit(datagram);
      sa_.peer_id = m.ids[0];
      for (const auto& n : m.notifies)
        sa_.peer_initial_contact |= n.type == static_cast<std::uint16_t>(Notify::kInitialContact);
      break;
    }
    default:
      return false;
  }
  ++step_;
  return true;
}

bool MainMode::derive_keys() {
  std::string why;
  auto gxy = dh_->shared_secret(initiator_ ? ByteSpan(gxr_) : ByteSpan(gxi_), why);
  if (!gxy) return fail(Notify::kInvalidKeyInformation, "Diffie-Hellman: " + why);
  const auto& s = *suite_;
  sa_.keys = derive_phase1(s.hash, skeyid_psk(s.hash, cfg_.psk.span(), ni_, nr_), gxy->span(), cky_i_, cky_r_);
  const auto key = encryption_key(s.hash, sa_.keys.e.span(), s.enc.key_bytes);
  const auto iv = phase1_iv(s.hash, gxi_, gxr_, core::block_len(s.enc.alg));
  sa_.cipher = Ikev1Cipher::create(s, key.span(), iv);
  if (!sa_.cipher) return fail(Notify::kNoProposalChosen, "no cipher for " + s.name());
  sa_.cky_i = cky_i_;
  sa_.suite = s;
  return true;
}

Bytes MainMode::my_hash() const {
  const auto& s = *suite_;
  return initiator_ ? hash_i(s.hash, sa_.keys.skeyid.span(), gxi_, gxr_, cky_i_, cky_r_, sai_b_, my_id_b_)
                    : hash_r(s.hash, sa_.keys.skeyid.span(), gxi_, gxr_, cky_i_, cky_r_, sai_b_, my_id_b_);
}

bool MainMode::check_hash(const Message& m) {
  const auto& s = *suite_;
  const ByteSpan peer_id_b = m.id_bodies[0];
  const Bytes want = initiator_ ? hash_r(s.hash, sa_.keys.skeyid.span(), gxi_, gxr_, cky_i_, cky_r_, sai_b_, peer_id_b)
                                : hash_i(s.hash, sa_.keys.skeyid.span(), gxi_, gxr_, cky_i_, cky_r_, sai_b_, peer_id_b);
  if (!core::ct_equal(want, m.hash))
    return reject_auth(Notify::kInvalidHashInformation,
                       std::string(initiator_ ? "HASH_R" : "HASH_I") + " does not verify: a different pre-shared key?");
  if (cfg_.remote_id && !(m.ids[0].type == cfg_.remote_id->type && m.ids[0].data == cfg_.remote_id->data))
    return fail(Notify::kInvalidIdInformation, "the peer is " + m.ids[0].to_string() + ", not " + cfg_.remote_id->to_string());
  return true;
}

// RFC 3947 3.2: the first NAT-D is the receiver's address as the sender
// sees it, the second the sender's own.
std::vector<RawPayload> MainMode::nat_d_payloads() const {
  if (!natt() || !cfg_.local_addr || !cfg_.remote_addr) return {};
  const auto h = suite_->hash;
  // RFC 3947's payload number, or the drafts' when the peer speaks only those.
  const auto t = peer_natt_ ? Payload::kNatD : Payload::kNatDDraft;
  return {raw(t, nat_d(h, cky_i_, cky_r_, *cfg_.remote_addr, cfg_.remote_port)),
          raw(t, nat_d(h, cky_i_, cky_r_, *cfg_.local_addr, cfg_.local_port))};
}

void MainMode::check_nat_d(const Message& m) {
  if (!natt() || !cfg_.local_addr || !cfg_.remote_addr || m.nat_d.size() < 2) return;
  const auto h = suite_->hash;
  sa_.natt = true;
  sa_.natt_draft = !peer_natt_;
  sa_.nat_local = !core::ct_equal(m.nat_d[0], nat_d(h, cky_i_, cky_r_, *cfg_.local_addr, cfg_.local_port));
  const auto peer = nat_d(h, cky_i_, cky_r_, *cfg_.remote_addr, cfg_.remote_port);
  sa_.nat_remote = true;
  for (std::size_t i = 1; i < m.nat_d.size(); ++i) sa_.nat_remote &= !core::ct_equal(m.nat_d[i], peer);
}

// ---- Aggressive Mode ---------------------------------------------------------------

std::optional<Bytes> MainMode::build_aggressive() {
  if ((step_ % 2 == 0) != initiator_ || step_ >= 3) return std::nullopt;
  std::string why;
  std::vector<RawPayload> pl;
  switch (step_) {
    case 0: {  // (1) SA (one DH group: the first suite's), KE, Ni, IDii, VIDs
      while (cky_i_ == 0) random({reinterpret_cast<std::uint8_t*>(&cky_i_), sizeof cky_i_});
      Proposal p{1, 1, {}, {}};
      std::optional<core::DhGroup> group;
      for (const auto& cp : cfg_.proposals)
        for (const auto& st : phase1_suites(cp, AuthMethod::kPsk, cfg_.life_seconds, why)) {
          if (!group) group = st.group;
          if (st.group != *group || p.transforms.size() >= 64) continue;
          p.transforms.push_back(encode_phase1(st, static_cast<std::uint8_t>(p.transforms.size() + 1)));
        }
      if (p.transforms.empty()) {
        fail(Notify::kNoProposalChosen, "no IKEv1 phase-1 suite in the configured proposals");
        return std::nullopt;
      }
      offer_ = {kDoiIpsec, kSitIdentityOnly, {p}};
      sai_b_ = encode_sa(offer_);
      dh_ = DhKey::generate(*group, why);
      if (!dh_) {
        fail(Notify::kNoProposalChosen, "Diffie-Hellman: " + why);
        return std::nullopt;
      }
      gxi_ = dh_->public_value();
      ni_.resize(32);
      random(ni_);
      my_id_b_ = encode_id(cfg_.local_id);
      pl = {raw(Payload::kSa, sai_b_), raw(Payload::kKe, gxi_), raw(Payload::kNonce, ni_), raw(Payload::kId, my_id_b_)};
      for (auto& v : vendor_ids()) pl.push_back(std::move(v));
      ++step_;
      return encode_plain(header(), pl);
    }
    case 1: {  // (2) SA, KE, Nr, IDir, HASH_R, VIDs, NAT-D (keys derived when (1) arrived)
      SaPayload reply{kDoiIpsec, kSitIdentityOnly, {{offer_.proposals.at(0).number, 1, {}, {chosen_}}}};
      my_id_b_ = encode_id(cfg_.local_id);
      pl = {raw(Payload::kSa, encode_sa(reply)), raw(Payload::kKe, gxr_), raw(Payload::kNonce, nr_),
            raw(Payload::kId, my_id_b_), raw(Payload::kHash, my_hash())};
      for (auto& v : vendor_ids()) pl.push_back(std::move(v));
      for (auto& n : nat_d_payloads()) pl.push_back(std::move(n));
      ++step_;
      return encode_plain(header(), pl);
    }
    case 2: {  // (3) HASH_I [, NAT-D], encrypted
      pl = {raw(Payload::kHash, my_hash())};
      for (auto& n : nat_d_payloads()) pl.push_back(std::move(n));
      ++step_;
      return sa_.cipher->seal(header(), pl);
    }
    default:
      return std::nullopt;
  }
}

bool MainMode::process_aggressive(ByteSpan datagram, const Header& h) {
  if (h.exchange != Exchange::kAggressive || h.cky_i != (step_ == 0 ? h.cky_i : cky_i_))
    return fail(Notify::kInvalidCookie, "not a message of this Aggressive Mode");
  DecodeError err;
  Message m;
  m.header = h;
  if (h.encrypted()) {
    if (step_ != 2) return fail(Notify::kInvalidFlags, "only message 3 of Aggressive Mode is encrypted");
    std::string why;
    auto plain = sa_.cipher->open(datagram, why);
    if (!plain || !parse_chain(*plain, h.next, m.raw, err, true) || !decode_payloads(m.raw, m, err))
      return reject_auth(Notify::kAuthenticationFailed,
                         "message 3 does not decrypt to payloads (" + (plain ? err.detail : why) + "): a different pre-shared key?");
    if (!check_payload_rules(Exchange::kAggressive, !initiator_, true, m.raw, err)) return fail(err.notify, err.detail);
  } else {
    if (step_ == 2) return fail(Notify::kInvalidFlags, "message 3 must be encrypted");
    if (!parse_chain(datagram.subspan(kHeaderLen), h.next, m.raw, err) ||
        !check_payload_rules(Exchange::kAggressive, !initiator_, false, m.raw, err) || !decode_payloads(m.raw, m, err))
      return fail(err.notify, err.detail);
  }
  if (step_ < 2)
    note_vendor_ids(m);
  switch (step_) {
    case 0: {  // (1) at the responder
      if (h.cky_r != 0) return fail(Notify::kInvalidCookie, "message 1 with a responder cookie");
      if (!m.sa || m.ke.empty() || m.nonce.empty() || m.ids.size() != 1)
        return fail(Notify::kPayloadMalformed, "message 1 needs SA, KE, nonce and ID");
      if (!choose(m)) return false;
      cky_i_ = h.cky_i;
      if (m.ke.size() != dh_public_len(suite_->group))
        return fail(Notify::kInvalidKeyInformation, "KE of " + std::to_string(m.ke.size()) + " bytes");
      if (cfg_.remote_id && !(m.ids[0].type == cfg_.remote_id->type && m.ids[0].data == cfg_.remote_id->data))
        return fail(Notify::kInvalidIdInformation, "the peer is " + m.ids[0].to_string() + ", not " + cfg_.remote_id->to_string());
      peer_id_b_ = m.id_bodies[0];
      sa_.peer_id = m.ids[0];
      gxi_ = m.ke;
      ni_ = m.nonce;
      std::string why;
      dh_ = DhKey::generate(suite_->group, why);
      if (!dh_) return fail(Notify::kNoProposalChosen, "Diffie-Hellman: " + why);
      gxr_ = dh_->public_value();
      nr_.resize(32);
      random(nr_);
      while (cky_r_ == 0) random({reinterpret_cast<std::uint8_t*>(&cky_r_), sizeof cky_r_});
      if (!derive_keys()) return false;
      break;
    }
    case 1: {  // (2) at the initiator: HASH_R checked before anything else of it is used
      if (h.cky_r == 0) return fail(Notify::kInvalidCookie, "message 2 without a responder cookie");
      if (!accept_choice(m)) return false;
      if (m.ke.empty() || m.nonce.empty() || m.ids.size() != 1 || m.hash.empty())
        return fail(Notify::kPayloadMalformed, "message 2 needs KE, nonce, ID and HASH");
      if (m.ke.size() != dh_public_len(suite_->group))
        return fail(Notify::kInvalidKeyInformation, "the responder chose another DH group than our KE's");
      cky_r_ = h.cky_r;
      gxr_ = m.ke;
      nr_ = m.nonce;
      if (!derive_keys()) return false;
      if (!check_hash(m)) return false;
      check_nat_d(m);
      sa_.peer_id = m.ids[0];
      break;
    }
    case 2: {  // (3) at the responder
      if (h.cky_r != cky_r_) return fail(Notify::kInvalidCookie, "wrong responder cookie");
      if (m.hash.empty()) return fail(Notify::kPayloadMalformed, "HASH missing");
      Message with_id = m;
      with_id.ids = {sa_.peer_id};
      with_id.id_bodies = {peer_id_b_};
      if (!check_hash(with_id)) return false;
      sa_.cipher->commit(datagram);
      check_nat_d(m);
      break;
    }
    default:
      return false;
  }
  ++step_;
  return true;
}

Phase1Sa MainMode::take_sa() {
  Phase1Sa out = std::move(sa_);
  out.cky_r = cky_r_;
  out.peer_dpd = peer_dpd_;
  return out;
}

}  // namespace ipsecgw::ike::v1
