#include "ike/ikev1_quick_mode.hpp"

#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

namespace {

RawPayload raw(Payload t, Bytes b) { return {t, std::move(b)}; }

bool same_esp(const Phase2Suite& a, const Phase2Suite& b) { return a.esp == b.esp && a.pfs == b.pfs; }

bool tunnel_family(EncapMode m) {
  return m == EncapMode::kTunnel || m == EncapMode::kUdpTunnel || m == EncapMode::kUdpTunnelDraft;
}

bool within(const core::IpRange& inner, const core::IpRange& outer) {
  return inner.family() == outer.family() && outer.lo <= inner.lo && inner.hi <= outer.hi;
}

}  // namespace

QuickMode::QuickMode(bool initiator, Phase1Sa& sa, QuickModeConfig cfg, std::uint32_t message_id,
                     std::uint32_t spi_in)
    : initiator_(initiator), sa_(sa), cfg_(std::move(cfg)), mid_(message_id) {
  result_.spi_in = spi_in;
  result_.local_ts = cfg_.local_ts;
  result_.remote_ts = cfg_.remote_ts;
}

void QuickMode::random(core::MutByteSpan out) {
  if (cfg_.random) cfg_.random(out);
  else core::random_bytes(out);
}

bool QuickMode::reject(std::string why) {
  error_ = std::move(why);
  return false;
}

bool QuickMode::fail(Notify n, std::string why) {
  failed_ = true;
  notify_ = n;
  error_ = std::move(why);
  return false;
}

Header QuickMode::header() const {
  Header h;
  h.cky_i = sa_.cky_i;
  h.cky_r = sa_.cky_r;
  h.exchange = Exchange::kQuick;
  h.message_id = mid_;
  return h;
}

std::vector<RawPayload> QuickMode::body(const Bytes& nonce) {
  std::vector<Phase2Suite> suites = initiator_ ? offered_ : std::vector<Phase2Suite>{*chosen_};
  Proposal p = esp_proposal(1, result_.spi_in, suites);
  if (!initiator_) p.transforms[0].number = chosen_number_;
  std::vector<RawPayload> out{raw(Payload::kSa, encode_sa({kDoiIpsec, kSitIdentityOnly, {p}})),
                              raw(Payload::kNonce, nonce)};
  if (dh_) out.push_back(raw(Payload::kKe, dh_->public_value()));
  // IDci is the initiator's client, IDcr the responder's.
  const auto& ci = initiator_ ? result_.local_ts : result_.remote_ts;
  const auto& cr = initiator_ ? result_.remote_ts : result_.local_ts;
  out.push_back(raw(Payload::kId, encode_id(IdPayload::from_range(ci))));
  out.push_back(raw(Payload::kId, encode_id(IdPayload::from_range(cr))));
  if (!initiator_ && (resp_life_s_ || resp_life_kb_)) {
    // RFC 2407 4.6.3.1: we hold the SA to shorter lifetimes than offered.
    NotifyPayload n;
    n.protocol = kProtoEsp;
    n.type = static_cast<std::uint16_t>(Notify::kResponderLifetime);
    core::ByteAppender{n.spi}.u32(result_.spi_in);
    n.data = lifetime_attributes(resp_life_s_, resp_life_kb_);
    out.push_back(raw(Payload::kNotify, encode_notify(n)));
  }
  return out;
}

std::optional<Bytes> QuickMode::build() {
  if (failed_ || (step_ % 2 == 0) != initiator_ || step_ >= 3) return std::nullopt;
  const auto prf = sa_.suite.hash;
  std::vector<RawPayload> pl;
  if (step_ == 0) {
    // (1): every suite our proposals allow that shares the first one's PFS group.
    std::string why;
    for (const auto& cp : cfg_.esp_proposals)
      for (auto& s : phase2_suites(cp, cfg_.mode, cfg_.life_seconds, cfg_.life_kilobytes, why))
        if (offered_.empty() || s.pfs == offered_.front().pfs) offered_.push_back(std::move(s));
    if (offered_.empty()) {
      fail(Notify::kNoProposalChosen, why);
      return std::nullopt;
    }
    if (offered_.front().pfs) {
      dh_ = DhKey::generate(*offered_.front().pfs, why);
      if (!dh_) {
        fail(Notify::kNoProposalChosen, "PFS: " + why);
        return std::nullopt;
      }
    }
    ni_.resize(32);
    random(ni_);
    pl = body(ni_);
    pl.insert(pl.begin(), raw(Payload::kHash, qm_hash1(prf, sa_.keys.a.span(), mid_, encode_chain(pl))));
  } else if (step_ == 1) {
    // (2): the chosen transform with our SPI, Nr, our KE.
    std::string why;
    if (chosen_->pfs) {
      dh_ = DhKey::generate(*chosen_->pfs, why);
      if (!dh_) {
        fail(Notify::kNoProposalChosen, "PFS: " + why);
        return std::nullopt;
      }
    }
    nr_.resize(32);
    random(nr_);
    pl = body(nr_);
    pl.insert(pl.begin(), raw(Payload::kHash, qm_hash2(prf, sa_.keys.a.span(), mid_, ni_, encode_chain(pl))));
  } else {
    // (3): HASH(3) alone; the initiator's keys are ready.
    pl = {raw(Payload::kHash, qm_hash3(prf, sa_.keys.a.span(), mid_, ni_, nr_))};
    if (!finish()) return std::nullopt;
  }
  ++step_;
  return sa_.cipher->seal(header(), pl);
}

bool QuickMode::process(ByteSpan datagram) {
  if (failed_) return false;
  if ((step_ % 2 == 1) != initiator_ || step_ >= 3) {
    error_ = "not waiting for a message from the peer";
    return false;
  }
  // Until HASH verifies, nothing about a message is the peer's: what does
  // not decrypt, parse or verify is rejected and leaves the exchange (and
  // its IV chain) as it was, so a forged packet cannot end it.
  DecodeError err;
  auto h = parse_header(datagram, err);
  if (!h) return reject(err.detail);
  if (h->exchange != Exchange::kQuick || h->cky_i != sa_.cky_i || h->cky_r != sa_.cky_r || !h->encrypted() ||
      h->message_id == 0 || (step_ > 0 && h->message_id != mid_))
    return reject("not a message of this Quick Mode");
  const std::uint32_t mid = h->message_id;
  std::string why;
  auto plain = sa_.cipher->open(datagram, why);
  Message m;
  m.header = *h;
  if (!plain || !parse_chain(*plain, h->next, m.raw, err, true))
    return reject("message " + std::to_string(step_ + 1) + " does not decrypt: " + (plain ? err.detail : why));
  // HASH first, over exactly the payload bytes after it (RFC 2409 5.5), before any other use.
  if (m.raw.empty() || m.raw[0].type != Payload::kHash) return reject("the first payload is not HASH");
  std::size_t rest_len = 0;
  for (std::size_t i = 1; i < m.raw.size(); ++i) rest_len += 4 + m.raw[i].body.size();
  const ByteSpan rest = ByteSpan(*plain).subspan(4 + m.raw[0].body.size(), rest_len);
  const auto prf = sa_.suite.hash;
  Bytes want;
  if (step_ == 0) want = qm_hash1(prf, sa_.keys.a.span(), mid, rest);
  if (step_ == 1) want = qm_hash2(prf, sa_.keys.a.span(), mid, ni_, rest);
  if (step_ == 2) want = qm_hash3(prf, sa_.keys.a.span(), mid, ni_, nr_);
  if (!core::ct_equal(want, m.raw[0].body)) return reject("HASH(" + std::to_string(step_ + 1) + ") does not verify");
  if (step_ == 0) mid_ = mid;
  // Authenticated from here: a failure now is the peer's, and ends the exchange.
  if (!check_payload_rules(Exchange::kQuick, !initiator_, true, m.raw, err)) return fail(err.notify, err.detail);
  if (!decode_payloads(m.raw, m, err)) return fail(err.notify, err.detail);
  if (step_ == 2 && m.raw.size() != 1) return fail(Notify::kPayloadMalformed, "message 3 carries more than its HASH");

  if (step_ < 2) {
    if (!m.sa || m.nonce.empty()) return fail(Notify::kPayloadMalformed, "SA or nonce missing");
    if (m.ids.size() != 2) return fail(Notify::kInvalidIdInformation, "IDci and IDcr are required");
    auto ci = m.ids[0].range(), cr = m.ids[1].range();
    if (!ci || !cr) return fail(Notify::kInvalidIdInformation, "client IDs must be addresses, subnets or ranges");
    if (step_ == 0) {
      // The responder: the initiator's client is our remote side.
      if (!within(*ci, cfg_.remote_ts) || !within(*cr, cfg_.local_ts))
        return fail(Notify::kInvalidIdInformation,
                    ci->to_string() + " === " + cr->to_string() + " is not within " + cfg_.remote_ts.to_string() +
                        " === " + cfg_.local_ts.to_string());
      result_.remote_ts = *ci;
      result_.local_ts = *cr;
      std::vector<Phase2Suite> ours;
      for (const auto& cp : cfg_.esp_proposals)
        for (auto& s : phase2_suites(cp, cfg_.mode, 0, 0, why)) ours.push_back(std::move(s));
      for (const auto& p : m.sa->proposals) {
        if (p.protocol != kProtoEsp || p.spi.size() != 4 || chosen_) continue;
        for (const auto& t : p.transforms) {
          auto s = decode_phase2(t, why);
          if (!s || tunnel_family(s->mode) != tunnel_family(cfg_.mode)) continue;
          for (const auto& o : ours)
            if (same_esp(*s, o)) {
              chosen_ = *s;
              chosen_number_ = t.number;
              result_.spi_out = core::load_be32(p.spi.data());
              break;
            }
          if (chosen_) break;
        }
      }
      if (!chosen_) return fail(Notify::kNoProposalChosen, "no ESP transform of the offer is configured");
      // An offer without a lifetime means 28800 s (RFC 2407 4.5).
      const std::uint32_t offered_s = chosen_->life_seconds ? chosen_->life_seconds : 28800;
      // The transform is echoed as offered; the SA itself lives to ours (install takes the shorter).
      if (cfg_.life_seconds && offered_s > cfg_.life_seconds) resp_life_s_ = cfg_.life_seconds;
      if (cfg_.life_kilobytes && (chosen_->life_kilobytes == 0 || chosen_->life_kilobytes > cfg_.life_kilobytes))
        resp_life_kb_ = cfg_.life_kilobytes;
      ni_ = m.nonce;
    } else {
      // The initiator: one proposal, one transform, one we offered; the IDs we sent.
      if (m.sa->proposals.size() != 1 || m.sa->proposals[0].transforms.size() != 1 ||
          m.sa->proposals[0].spi.size() != 4)
        return fail(Notify::kBadProposalSyntax, "message 2 must carry one ESP proposal with one transform");
      auto s = decode_phase2(m.sa->proposals[0].transforms[0], why);
      bool offered = false;
      for (const auto& o : offered_) offered |= s && same_esp(*s, o);
      if (!offered) return fail(Notify::kNoProposalChosen, "the responder chose a transform we did not offer");
      if (*ci != result_.local_ts || *cr != result_.remote_ts)
        return fail(Notify::kInvalidIdInformation, "the responder changed the client IDs");
      chosen_ = *s;
      for (const auto& n : m.notifies) {
        if (n.type != static_cast<std::uint16_t>(Notify::kResponderLifetime)) continue;
        std::uint32_t secs = 0;
        std::uint64_t kb = 0;
        if (!parse_lifetime_attributes(n.data, secs, kb)) return fail(Notify::kPayloadMalformed, "RESPONDER-LIFETIME unreadable");
        if (secs && (chosen_->life_seconds == 0 || secs < chosen_->life_seconds)) chosen_->life_seconds = secs;
        if (kb && (chosen_->life_kilobytes == 0 || kb < chosen_->life_kilobytes)) chosen_->life_kilobytes = kb;
      }
      const auto& spi = m.sa->proposals[0].spi;
      result_.spi_out = core::load_be32(spi.data());
      nr_ = m.nonce;
    }
    if (chosen_->pfs) {
      if (m.ke.size() != dh_public_len(*chosen_->pfs)) return fail(Notify::kInvalidKeyInformation, "PFS needs a KE of the group");
      peer_ke_ = m.ke;
    } else if (!m.ke.empty()) {
      return fail(Notify::kInvalidKeyInformation, "a KE without a PFS group");
    }
  }
  sa_.cipher->commit(datagram);
  ++step_;
  if (step_ == 3 && !finish()) return false;
  return true;
}

bool QuickMode::finish() {
  const auto& s = *chosen_;
  Bytes gxy;
  if (s.pfs) {
    std::string why;
    auto shared = dh_->shared_secret(peer_ke_, why);
    if (!shared) return fail(Notify::kInvalidKeyInformation, "PFS: " + why);
    gxy.assign(shared->span().begin(), shared->span().end());
    result_.pfs = true;
  }
  const auto len = s.esp.keymat_len();
  const auto prf = sa_.suite.hash;
  // KEYMAT per SA, keyed by the SPI its receiver chose (RFC 2409 5.5).
  result_.keymat_in = keymat(prf, sa_.keys.d.span(), gxy, kProtoEsp, result_.spi_in, ni_, nr_, len);
  result_.keymat_out = keymat(prf, sa_.keys.d.span(), gxy, kProtoEsp, result_.spi_out, ni_, nr_, len);
  core::secure_wipe(gxy.data(), gxy.size());
  result_.suite = s;
  if (result_.keymat_in.size() != len || result_.keymat_out.size() != len)
    return fail(Notify::kNoProposalChosen, "KEYMAT");
  return true;
}

}  // namespace ipsecgw::ike::v1
