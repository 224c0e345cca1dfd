#include "ike/proposals.hpp"

#include <algorithm>

namespace ipsecgw::ike {

using core::EncAlg;
using core::IntegAlg;
using core::PrfAlg;

namespace {

Transform encr(const core::EncSpec& e) {
  Transform t{TransformType::kEncr, 0, 0};
  switch (e.alg) {
    case EncAlg::kNull: t.id = 11; break;
    case EncAlg::kAesCbc: t.id = 12; t.key_bits = static_cast<std::uint16_t>(e.key_bytes * 8); break;
    case EncAlg::kAesCtr: t.id = 13; t.key_bits = static_cast<std::uint16_t>(e.key_bytes * 8); break;
    case EncAlg::kTripleDesCbc: t.id = 3; break;
    case EncAlg::kAesGcm16: t.id = 20; t.key_bits = static_cast<std::uint16_t>(e.key_bytes * 8); break;
    case EncAlg::kChaCha20Poly1305: t.id = 28; break;
    case EncAlg::kNullAesGmac: t.id = 21; t.key_bits = static_cast<std::uint16_t>(e.key_bytes * 8); break;
  }
  return t;
}

std::uint16_t integ_id(IntegAlg a) {
  switch (a) {
    case IntegAlg::kNone: return 0;
    case IntegAlg::kHmacMd5_96: return 1;
    case IntegAlg::kHmacSha1_96: return 2;
    case IntegAlg::kHmacSha256_128: return 12;
    case IntegAlg::kHmacSha384_192: return 13;
    case IntegAlg::kHmacSha512_256: return 14;
    case IntegAlg::kAesXcbc96: return 5;
    case IntegAlg::kAesGmac128: return 9;  // RFC 4543 AUTH_AES_*_GMAC
    case IntegAlg::kAesGmac192: return 10;
    case IntegAlg::kAesGmac256: return 11;
  }
  return 0;
}

std::uint16_t prf_id(PrfAlg a) {
  switch (a) {
    case PrfAlg::kHmacMd5: return 1;
    case PrfAlg::kHmacSha1: return 2;
    case PrfAlg::kHmacSha256: return 5;
    case PrfAlg::kHmacSha384: return 6;
    case PrfAlg::kHmacSha512: return 7;
  }
  return 5;
}

bool all_aead(const core::Proposal& p) {
  return std::all_of(p.enc.begin(), p.enc.end(), [](const auto& e) { return core::is_aead(e.alg); });
}

bool has(const Proposal& p, const Transform& t) {
  return std::find(p.transforms.begin(), p.transforms.end(), t) != p.transforms.end();
}
bool has_type(const Proposal& p, TransformType type) {
  return std::any_of(p.transforms.begin(), p.transforms.end(),
                     [&](const Transform& t) { return t.type == type && !(type == TransformType::kInteg && t.id == 0); });
}

}  // namespace

std::vector<PrfAlg> prfs_of(const core::Proposal& p) {
  if (!p.prf.empty()) return p.prf;
  std::vector<PrfAlg> out;
  for (auto i : p.integ) {
    switch (i) {
      case IntegAlg::kHmacMd5_96: out.push_back(PrfAlg::kHmacMd5); break;
      case IntegAlg::kHmacSha1_96: out.push_back(PrfAlg::kHmacSha1); break;
      case IntegAlg::kHmacSha256_128: out.push_back(PrfAlg::kHmacSha256); break;
      case IntegAlg::kHmacSha384_192: out.push_back(PrfAlg::kHmacSha384); break;
      case IntegAlg::kHmacSha512_256: out.push_back(PrfAlg::kHmacSha512); break;
      case IntegAlg::kAesXcbc96:
      case IntegAlg::kAesGmac128:
      case IntegAlg::kAesGmac192:
      case IntegAlg::kAesGmac256:
      case IntegAlg::kNone: break;
    }
  }
  if (out.empty()) out = {PrfAlg::kHmacSha256, PrfAlg::kHmacSha384, PrfAlg::kHmacSha512};
  return out;
}

Proposal ike_offer(const core::Proposal& p, std::uint8_t number, ByteSpan spi) {
  Proposal o;
  o.number = number;
  o.protocol = ProtocolId::kIke;
  o.spi.assign(spi.begin(), spi.end());
  for (const auto& e : p.enc) o.transforms.push_back(encr(e));
  if (!all_aead(p))
    for (auto i : p.integ) o.transforms.push_back({TransformType::kInteg, integ_id(i), 0});
  for (auto f : prfs_of(p)) o.transforms.push_back({TransformType::kPrf, prf_id(f), 0});
  for (auto g : p.dh) o.transforms.push_back({TransformType::kDh, static_cast<std::uint16_t>(g), 0});
  return o;
}

Proposal child_offer(const core::Proposal& p, core::IpsecProtocol proto, std::uint8_t number, std::uint32_t spi,
                     bool with_dh) {
  const bool ah = proto == core::IpsecProtocol::kAh;
  Proposal o;
  o.number = number;
  o.protocol = ah ? ProtocolId::kAh : ProtocolId::kEsp;
  core::ByteAppender a{o.spi};
  a.u32(spi);
  if (!ah)
    for (const auto& e : p.enc) o.transforms.push_back(encr(e));
  if (ah || !all_aead(p))
    for (auto i : p.integ) o.transforms.push_back({TransformType::kInteg, integ_id(i), 0});
  if (with_dh)
    for (auto g : p.dh) o.transforms.push_back({TransformType::kDh, static_cast<std::uint16_t>(g), 0});
  if (p.esn.empty()) {
    o.transforms.push_back({TransformType::kEsn, 0, 0});
  } else {
    for (bool e : p.esn) o.transforms.push_back({TransformType::kEsn, static_cast<std::uint16_t>(e), 0});
  }
  return o;
}

namespace {
// The first of our alternatives (in our order) that the peer's proposal
// offers: recorded as chosen and added to the reply.
template <class T, class ToTransform>
bool pick(const std::vector<T>& mine, const Proposal& theirs, ToTransform to_transform, T& chosen,
          Proposal& reply) {
  for (const auto& m : mine) {
    const Transform t = to_transform(m);
    if (has(theirs, t)) {
      chosen = m;
      reply.transforms.push_back(t);
      return true;
    }
  }
  return false;
}

Transform integ_tf(IntegAlg i) { return {TransformType::kInteg, integ_id(i), 0}; }
Transform prf_tf(PrfAlg f) { return {TransformType::kPrf, prf_id(f), 0}; }
Transform dh_tf(core::DhGroup g) { return {TransformType::kDh, static_cast<std::uint16_t>(g), 0}; }

std::vector<core::DhGroup> supported(const std::vector<core::DhGroup>& groups) {
  std::vector<core::DhGroup> out;
  for (auto g : groups)
    if (dh_supported(g)) out.push_back(g);
  return out;
}
}  // namespace

std::optional<IkeChoice> select_ike(const std::vector<core::Proposal>& ours, const SaPayload& theirs) {
  for (const auto& mine : ours) {
    for (const auto& tp : theirs.proposals) {
      if (tp.protocol != ProtocolId::kIke) continue;
      IkeChoice c;
      c.reply.number = tp.number;
      c.reply.protocol = ProtocolId::kIke;
      if (!pick(mine.enc, tp, encr, c.t.enc, c.reply)) continue;
      // An AEAD proposal carries no (or NONE) integrity.
      if (!core::is_aead(c.t.enc.alg) && !pick(mine.integ, tp, integ_tf, c.t.integ, c.reply)) continue;
      if (!pick(prfs_of(mine), tp, prf_tf, c.t.prf, c.reply)) continue;
      if (!pick(supported(mine.dh), tp, dh_tf, c.t.dh, c.reply)) continue;
      return c;
    }
  }
  return std::nullopt;
}

std::optional<EspChoice> select_child(const std::vector<core::Proposal>& ours, core::IpsecProtocol proto,
                                      const SaPayload& theirs, bool want_dh) {
  const bool ah = proto == core::IpsecProtocol::kAh;
  const ProtocolId pid = ah ? ProtocolId::kAh : ProtocolId::kEsp;
  for (const auto& mine : ours) {
    for (const auto& tp : theirs.proposals) {
      if (tp.protocol != pid || tp.spi.size() != 4) continue;
      EspChoice c;
      c.t.proto = proto;
      c.peer_spi = static_cast<std::uint32_t>(tp.spi[0] << 24 | tp.spi[1] << 16 | tp.spi[2] << 8 | tp.spi[3]);
      c.reply.number = tp.number;
      c.reply.protocol = pid;
      if (ah) {
        // AH: no encryption transform may be in the proposal (RFC 7296 3.3.3).
        if (has_type(tp, TransformType::kEncr)) continue;
        if (!pick(mine.integ, tp, integ_tf, c.t.ah.integ, c.reply)) continue;
      } else {
        if (!pick(mine.enc, tp, encr, c.t.esp.enc, c.reply)) continue;
        if (!core::is_aead(c.t.esp.enc.alg) && !pick(mine.integ, tp, integ_tf, c.t.esp.integ, c.reply)) continue;
      }
      if (want_dh && !mine.dh.empty()) {
        core::DhGroup g{};
        if (!pick(supported(mine.dh), tp, dh_tf, g, c.reply)) continue;
        c.dh = g;
      } else if (want_dh && has_type(tp, TransformType::kDh)) {
        // The peer asks for PFS and we have no group configured: not a match
        // unless it also offers NONE (0).
        if (!has(tp, {TransformType::kDh, 0, 0})) continue;
      }
      // ESN: ours (default: no) must be among theirs; none offered means no.
      const std::vector<bool> esn = mine.esn.empty() ? std::vector<bool>{false} : mine.esn;
      const bool peer_has_esn = has_type(tp, TransformType::kEsn);
      bool ok = false;
      for (bool e : esn) {
        const Transform t{TransformType::kEsn, static_cast<std::uint16_t>(e), 0};
        if ((!peer_has_esn && !e) || has(tp, t)) {
          (ah ? c.t.ah.esn : c.t.esp.esn) = e;
          if (peer_has_esn) c.reply.transforms.push_back(t);
          ok = true;
          break;
        }
      }
      if (!ok) continue;
      return c;
    }
  }
  return std::nullopt;
}

}  // namespace ipsecgw::ike
