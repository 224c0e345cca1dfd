#include "ike/ikev1_quick_mode.hpp"

#include <algorithm>

#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

namespace {

RawPayload raw(Payload t, Bytes b) { return {t, std::move(b)}; }

bool same_suite(const Phase2Suite& a, const Phase2Suite& b) {
  return a.proto == b.proto && (a.is_ah() ? a.ah == b.ah : a.esp == b.esp) && a.pfs == b.pfs;
}

bool tunnel_family(EncapMode m) {
  return m == EncapMode::kTunnel || m == EncapMode::kUdpTunnel || m == EncapMode::kUdpTunnelDraft;
}

bool udp_mode(EncapMode m) { return m != EncapMode::kTunnel && m != EncapMode::kTransport; }

bool within(const core::IpRange& inner, const core::IpRange& outer) {
  return inner.family() == outer.family() && outer.lo <= inner.lo && inner.hi <= outer.hi;
}

}  // namespace

QuickMode::QuickMode(bool initiator, Phase1Sa& sa, QuickModeConfig cfg, std::uint32_t message_id,
                     std::uint32_t spi_in, std::uint32_t ah_spi_in)
    : initiator_(initiator), sa_(sa), cfg_(std::move(cfg)), mid_(message_id) {
  result_.spi_in = spi_in;
  result_.ah_spi_in = ah_spi_in;
  result_.local_ts = cfg_.local_ts;
  result_.remote_ts = cfg_.remote_ts;
  result_.proto = cfg_.proto;
  result_.local_port = cfg_.local_port;
  result_.remote_port = cfg_.remote_port;
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

std::vector<Phase2Suite> QuickMode::suites_of(bool ah_part, std::uint32_t life_s, std::uint64_t life_kb,
                                              std::string& why) const {
  std::vector<Phase2Suite> out;
  const bool ah = ah_part || primary_is_ah();
  for (const auto& cp : ah ? cfg_.ah_proposals : cfg_.esp_proposals)
    for (auto& s : ah ? ah_suites(cp, cfg_.mode, life_s, life_kb, why) : phase2_suites(cp, cfg_.mode, life_s, life_kb, why))
      out.push_back(std::move(s));
  return out;
}

std::vector<RawPayload> QuickMode::body(const Bytes& nonce) {
  const std::uint8_t number = initiator_ ? 1 : chosen_prop_number_;
  std::vector<Proposal> props;
  if (bundle()) {
    // AH and ESP under one proposal number: both SAs (RFC 2408 4.2), AH first as in its example.
    Proposal a = esp_proposal(number, result_.ah_spi_in, initiator_ ? offered_ah_ : std::vector<Phase2Suite>{*chosen_ah_});
    if (!initiator_) a.transforms[0].number = chosen_ah_number_;
    props.push_back(std::move(a));
  }
  std::vector<Phase2Suite> suites = initiator_ ? offered_ : std::vector<Phase2Suite>{*chosen_};
  Proposal p = esp_proposal(number, result_.spi_in, suites);
  if (!initiator_) p.transforms[0].number = chosen_number_;
  props.push_back(std::move(p));
  std::vector<RawPayload> out{raw(Payload::kSa, encode_sa({kDoiIpsec, kSitIdentityOnly, props})),
                              raw(Payload::kNonce, nonce)};
  if (dh_) out.push_back(raw(Payload::kKe, dh_->public_value()));
  // IDci is the initiator's client, IDcr the responder's.
  const auto& ci = initiator_ ? result_.local_ts : result_.remote_ts;
  const auto& cr = initiator_ ? result_.remote_ts : result_.local_ts;
  const auto ci_port = initiator_ ? result_.local_port : result_.remote_port;
  const auto cr_port = initiator_ ? result_.remote_port : result_.local_port;
  out.push_back(raw(Payload::kId, encode_id(IdPayload::from_range(ci, result_.proto, ci_port))));
  out.push_back(raw(Payload::kId, encode_id(IdPayload::from_range(cr, result_.proto, cr_port))));
  if (!initiator_ && (resp_life_s_ || resp_life_kb_)) {
    // RFC 2407 4.6.3.1: we hold the SA to shorter lifetimes than offered.
    NotifyPayload n;
    n.protocol = chosen_->protocol_id();
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
    if (!cfg_.ah_proposals.empty() && udp_mode(cfg_.mode)) {
      fail(Notify::kNoProposalChosen, "AH cannot cross the NAT between us (its ICV covers the addresses)");
      return std::nullopt;
    }
    for (auto& s : suites_of(false, cfg_.life_seconds, cfg_.life_kilobytes, why))
      if (offered_.empty() || s.pfs == offered_.front().pfs) offered_.push_back(std::move(s));
    if (bundle() && !offered_.empty())
      for (auto& s : suites_of(true, cfg_.life_seconds, cfg_.life_kilobytes, why))
        if (s.pfs == offered_.front().pfs) offered_ah_.push_back(std::move(s));
    if (offered_.empty() || (bundle() && offered_ah_.empty())) {
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
      // Protocol and ports (RFC 2407 4.6.2): one protocol for both IDs, no
      // port without one, and within ours (the peer may name less, not more).
      const auto& idi = m.ids[0];
      const auto& idr = m.ids[1];
      if (idi.protocol != idr.protocol || (idi.protocol == 0 && (idi.port || idr.port)) ||
          (cfg_.proto && idi.protocol != cfg_.proto) || (cfg_.remote_port && idi.port != cfg_.remote_port) ||
          (cfg_.local_port && idr.port != cfg_.local_port))
        return fail(Notify::kInvalidIdInformation,
                    "client IDs for protocol " + std::to_string(idi.protocol) + " ports " + std::to_string(idi.port) +
                        "/" + std::to_string(idr.port) + " are not within protocol " + std::to_string(cfg_.proto) +
                        " ports " + std::to_string(cfg_.remote_port) + "/" + std::to_string(cfg_.local_port));
      result_.proto = idi.protocol;
      result_.remote_port = idi.port;
      result_.local_port = idr.port;
      result_.remote_ts = *ci;
      result_.local_ts = *cr;
      if (!cfg_.ah_proposals.empty() && udp_mode(cfg_.mode))
        return fail(Notify::kNoProposalChosen, "AH cannot cross the NAT between us (its ICV covers the addresses)");
      const auto ours = suites_of(false, 0, 0, why);
      const auto ours_ah = bundle() ? suites_of(true, 0, 0, why) : std::vector<Phase2Suite>{};
      const std::uint8_t want_proto = primary_is_ah() ? kProtoAh : kProtoEsp;
      // The first transform of `p` (the peer's order) that is one of ours, in our mode.
      auto pick = [&](const Proposal& p, const std::vector<Phase2Suite>& mine, std::optional<Phase2Suite>& c,
                      std::uint8_t& number) {
        for (const auto& t : p.transforms) {
          auto s = decode_phase2(t, why, p.protocol);
          if (!s || tunnel_family(s->mode) != tunnel_family(cfg_.mode)) continue;
          for (const auto& o : mine)
            if (same_suite(*s, o)) {
              c = *s;
              number = t.number;
              return true;
            }
        }
        return false;
      };
      // Proposals with one number are one offer, all of them or nothing
      // (RFC 2408 4.2): the first offer whose protocols are exactly ours.
      std::vector<std::uint8_t> numbers;
      for (const auto& p : m.sa->proposals)
        if (std::find(numbers.begin(), numbers.end(), p.number) == numbers.end()) numbers.push_back(p.number);
      for (const auto n : numbers) {
        const Proposal *prim = nullptr, *ahp = nullptr;
        bool other = false;
        for (const auto& p : m.sa->proposals) {
          if (p.number != n) continue;
          if (p.protocol == want_proto && !prim) prim = &p;
          else if (bundle() && p.protocol == kProtoAh && !ahp) ahp = &p;
          else other = true;
        }
        if (!prim || other || (bundle() && !ahp) || prim->spi.size() != 4 || (ahp && ahp->spi.size() != 4)) continue;
        std::optional<Phase2Suite> c, ca;
        std::uint8_t tn = 1, tna = 1;
        if (!pick(*prim, ours, c, tn)) continue;
        if (ahp && (!pick(*ahp, ours_ah, ca, tna) || ca->pfs != c->pfs)) continue;  // one KE for both
        chosen_ = c;
        chosen_number_ = tn;
        chosen_ah_ = ca;
        chosen_ah_number_ = tna;
        chosen_prop_number_ = n;
        result_.spi_out = core::load_be32(prim->spi.data());
        if (ahp) result_.ah_spi_out = core::load_be32(ahp->spi.data());
        break;
      }
      if (!chosen_)
        return fail(Notify::kNoProposalChosen,
                    std::string("no offer of ") + (bundle() ? "AH and ESP" : primary_is_ah() ? "AH" : "ESP") +
                        (tunnel_family(cfg_.mode) ? " in tunnel mode" : " in transport mode") +
                        " with transforms we have configured");
      // An offer without a lifetime means 28800 s (RFC 2407 4.5).
      const std::uint32_t offered_s = chosen_->life_seconds ? chosen_->life_seconds : 28800;
      // The transform is echoed as offered; the SA itself lives to ours (install takes the shorter).
      if (cfg_.life_seconds && offered_s > cfg_.life_seconds) resp_life_s_ = cfg_.life_seconds;
      if (cfg_.life_kilobytes && (chosen_->life_kilobytes == 0 || chosen_->life_kilobytes > cfg_.life_kilobytes))
        resp_life_kb_ = cfg_.life_kilobytes;
      ni_ = m.nonce;
    } else {
      // The initiator: one proposal per SA (two for a bundle, one number),
      // one transform each, one we offered; the IDs we sent.
      const std::size_t want_n = bundle() ? 2 : 1;
      const Proposal *prim = nullptr, *ahp = nullptr;
      for (const auto& p : m.sa->proposals) {
        if (p.protocol == (primary_is_ah() ? kProtoAh : kProtoEsp) && !prim) prim = &p;
        else if (bundle() && p.protocol == kProtoAh && !ahp) ahp = &p;
      }
      if (m.sa->proposals.size() != want_n || !prim || (bundle() && !ahp) || prim->transforms.size() != 1 ||
          prim->spi.size() != 4 || (ahp && (ahp->transforms.size() != 1 || ahp->spi.size() != 4 ||
                                             ahp->number != prim->number)))
        return fail(Notify::kBadProposalSyntax, bundle() ? "message 2 must carry an AH and an ESP proposal, one transform each"
                                                         : "message 2 must carry one proposal with one transform");
      auto s = decode_phase2(prim->transforms[0], why, prim->protocol);
      bool offered = false;
      for (const auto& o : offered_) offered |= s && same_suite(*s, o);
      std::optional<Phase2Suite> sa_ah;
      if (ahp) {
        sa_ah = decode_phase2(ahp->transforms[0], why, kProtoAh);
        bool ah_offered = false;
        for (const auto& o : offered_ah_) ah_offered |= sa_ah && same_suite(*sa_ah, o);
        offered &= ah_offered;
      }
      if (!offered) return fail(Notify::kNoProposalChosen, "the responder chose a transform we did not offer");
      if (*ci != result_.local_ts || *cr != result_.remote_ts || m.ids[0].protocol != result_.proto ||
          m.ids[1].protocol != result_.proto || m.ids[0].port != result_.local_port ||
          m.ids[1].port != result_.remote_port)
        return fail(Notify::kInvalidIdInformation, "the responder changed the client IDs");
      chosen_ = *s;
      chosen_ah_ = sa_ah;
      for (const auto& n : m.notifies) {
        if (n.type != static_cast<std::uint16_t>(Notify::kResponderLifetime)) continue;
        std::uint32_t secs = 0;
        std::uint64_t kb = 0;
        if (!parse_lifetime_attributes(n.data, secs, kb)) return fail(Notify::kPayloadMalformed, "RESPONDER-LIFETIME unreadable");
        if (secs && (chosen_->life_seconds == 0 || secs < chosen_->life_seconds)) chosen_->life_seconds = secs;
        if (kb && (chosen_->life_kilobytes == 0 || kb < chosen_->life_kilobytes)) chosen_->life_kilobytes = kb;
      }
      if (chosen_ah_) {
        chosen_ah_->life_seconds = chosen_->life_seconds;
        chosen_ah_->life_kilobytes = chosen_->life_kilobytes;
        result_.ah_spi_out = core::load_be32(ahp->spi.data());
      }
      result_.spi_out = core::load_be32(prim->spi.data());
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
  const auto len = s.keymat_len();
  const auto prf = sa_.suite.hash;
  // KEYMAT per SA, keyed by its protocol and the SPI its receiver chose (RFC 2409 5.5).
  result_.keymat_in = keymat(prf, sa_.keys.d.span(), gxy, s.protocol_id(), result_.spi_in, ni_, nr_, len);
  result_.keymat_out = keymat(prf, sa_.keys.d.span(), gxy, s.protocol_id(), result_.spi_out, ni_, nr_, len);
  result_.suite = s;
  if (chosen_ah_) {
    const auto al = chosen_ah_->keymat_len();
    result_.ah_keymat_in = keymat(prf, sa_.keys.d.span(), gxy, kProtoAh, result_.ah_spi_in, ni_, nr_, al);
    result_.ah_keymat_out = keymat(prf, sa_.keys.d.span(), gxy, kProtoAh, result_.ah_spi_out, ni_, nr_, al);
    result_.ah = *chosen_ah_;
    if (result_.ah_keymat_in.size() != al || result_.ah_keymat_out.size() != al) {
      core::secure_wipe(gxy.data(), gxy.size());
      return fail(Notify::kNoProposalChosen, "KEYMAT");
    }
  }
  core::secure_wipe(gxy.data(), gxy.size());
  if (result_.keymat_in.size() != len || result_.keymat_out.size() != len)
    return fail(Notify::kNoProposalChosen, "KEYMAT");
  return true;
}

}  // namespace ipsecgw::ike::v1
