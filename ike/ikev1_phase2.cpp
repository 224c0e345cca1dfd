#include "ike/ikev1_phase2.hpp"

#include <algorithm>

#include "ike/ikev1_proposals.hpp"

namespace ipsecgw::ike::v1 {

namespace {

// ESP transform IDs (IANA "IPsec ESP Transform Identifiers").
constexpr std::uint8_t kEsp3des = 3;
constexpr std::uint8_t kEspNull = 11;
constexpr std::uint8_t kEspAes = 12;
constexpr std::uint8_t kEspAesCtr = 13;
constexpr std::uint8_t kEspAesGcm16 = 20;

std::optional<std::uint8_t> transform_id(core::EncAlg a) {
  switch (a) {
    case core::EncAlg::kTripleDesCbc: return kEsp3des;
    case core::EncAlg::kNull: return kEspNull;
    case core::EncAlg::kAesCbc: return kEspAes;
    case core::EncAlg::kAesCtr: return kEspAesCtr;
    case core::EncAlg::kAesGcm16: return kEspAesGcm16;
    case core::EncAlg::kChaCha20Poly1305: return std::nullopt;  // no IKEv1 number (RFC 7634 is IKEv2 only)
    case core::EncAlg::kNullAesGmac: return std::nullopt;       // ESP_NULL_AUTH_AES_GMAC (23): not offered yet
  }
  return std::nullopt;
}

// Authentication Algorithm attribute values (RFC 2407 4.5, RFC 4868 for SHA-2).
std::optional<std::uint16_t> auth_number(core::IntegAlg a) {
  switch (a) {
    case core::IntegAlg::kHmacMd5_96: return 1;
    case core::IntegAlg::kHmacSha1_96: return 2;
    case core::IntegAlg::kHmacSha256_128: return 5;
    case core::IntegAlg::kHmacSha384_192: return 6;
    case core::IntegAlg::kHmacSha512_256: return 7;
    case core::IntegAlg::kAesXcbc96: return 9;
    case core::IntegAlg::kAesGmac128:
    case core::IntegAlg::kAesGmac192:
    case core::IntegAlg::kAesGmac256: return std::nullopt;  // 11-13 (RFC 4543 errata 1821): AH only, not yet in Quick Mode
    case core::IntegAlg::kNone: return std::nullopt;
  }
  return std::nullopt;
}
std::optional<core::IntegAlg> auth_from_number(std::uint64_t n) {
  switch (n) {
    case 1: return core::IntegAlg::kHmacMd5_96;
    case 2: return core::IntegAlg::kHmacSha1_96;
    case 5: return core::IntegAlg::kHmacSha256_128;
    case 6: return core::IntegAlg::kHmacSha384_192;
    case 7: return core::IntegAlg::kHmacSha512_256;
    default: return std::nullopt;
  }
}

Attribute basic(P2Attr t, std::uint16_t v) { return {static_cast<std::uint16_t>(t), true, v, {}}; }
Attribute variable(P2Attr t, std::uint64_t v) {
  Attribute a{static_cast<std::uint16_t>(t), false, 0, {}};
  if (v > 0xffffffffu) core::ByteAppender{a.data}.u64(v);
  else core::ByteAppender{a.data}.u32(static_cast<std::uint32_t>(v));
  return a;
}

bool variable_key(core::EncAlg a) {
  return a == core::EncAlg::kAesCbc || a == core::EncAlg::kAesCtr || a == core::EncAlg::kAesGcm16;
}

}  // namespace

namespace {
// AH transform IDs (RFC 2407 4.4.3, RFC 4868, RFC 3566, RFC 4543 errata
// 1821). The authentication algorithm attribute that goes with each is
// ESP's (HMAC-MD5 1, HMAC-SHA 2, SHA2 5-7, XCBC 9; GMAC 11-13): ah_auth_attr.
std::optional<std::uint8_t> ah_transform_id(core::IntegAlg a) {
  switch (a) {
    case core::IntegAlg::kHmacMd5_96: return 2;
    case core::IntegAlg::kHmacSha1_96: return 3;
    case core::IntegAlg::kHmacSha256_128: return 5;
    case core::IntegAlg::kHmacSha384_192: return 6;
    case core::IntegAlg::kHmacSha512_256: return 7;
    case core::IntegAlg::kAesXcbc96: return 9;
    case core::IntegAlg::kAesGmac128: return 11;
    case core::IntegAlg::kAesGmac192: return 12;
    case core::IntegAlg::kAesGmac256: return 13;
    case core::IntegAlg::kNone: return std::nullopt;
  }
  return std::nullopt;
}
std::optional<core::IntegAlg> ah_integ_of(std::uint64_t n) {
  switch (n) {
    case 2: return core::IntegAlg::kHmacMd5_96;
    case 3: return core::IntegAlg::kHmacSha1_96;
    case 5: return core::IntegAlg::kHmacSha256_128;
    case 6: return core::IntegAlg::kHmacSha384_192;
    case 7: return core::IntegAlg::kHmacSha512_256;
    case 9: return core::IntegAlg::kAesXcbc96;
    case 11: return core::IntegAlg::kAesGmac128;
    case 12: return core::IntegAlg::kAesGmac192;
    case 13: return core::IntegAlg::kAesGmac256;
    default: return std::nullopt;
  }
}
std::optional<std::uint16_t> ah_auth_attr(core::IntegAlg a) {
  if (const auto k = core::gmac_key_len(a)) return static_cast<std::uint16_t>(k == 16 ? 11 : k == 24 ? 12 : 13);
  return auth_number(a);
}
}  // namespace

std::string Phase2Suite::name() const {
  std::string s = is_ah() ? "ah-" + ah.name() : esp.name();
  if (pfs) {
    if (const char* g = core::dh_group_name(*pfs)) {
      s += '-';
      s += g;
    }
  }
  return s;
}

namespace {
// A proposal's PFS groups (none: no PFS) and ESN choices (none: off).
std::vector<std::optional<core::DhGroup>> groups_of(const core::Proposal& p) {
  std::vector<std::optional<core::DhGroup>> groups(p.dh.begin(), p.dh.end());
  if (groups.empty()) groups.emplace_back(std::nullopt);
  return groups;
}
std::vector<bool> esns_of(const core::Proposal& p) {
  std::vector<bool> esns(p.esn.begin(), p.esn.end());
  if (esns.empty()) esns.push_back(false);
  return esns;
}
}  // namespace

std::vector<Phase2Suite> phase2_suites(const core::Proposal& p, EncapMode mode, std::uint32_t life_seconds,
                                       std::uint64_t life_kilobytes, std::string& why) {
  std::vector<Phase2Suite> out;
  const auto groups = groups_of(p);
  const auto esns = esns_of(p);
  for (const auto& e : p.enc) {
    if (!transform_id(e.alg)) continue;
    std::vector<core::IntegAlg> integs;
    if (core::is_aead(e.alg)) integs.push_back(core::IntegAlg::kNone);
    else integs.assign(p.integ.begin(), p.integ.end());
    for (auto i : integs)
      for (const auto& g : groups)
        for (bool esn : esns) {
          Phase2Suite s;
          s.esp = {e, i, esn};
          s.pfs = g;
          s.mode = mode;
          s.life_seconds = life_seconds;
          s.life_kilobytes = life_kilobytes;
          if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
        }
  }
  if (out.empty()) why = "IKEv1 ESP needs AES (CBC, CTR, GCM-16), 3DES or NULL, with an integrity algorithm unless AEAD";
  return out;
}

std::vector<Phase2Suite> ah_suites(const core::Proposal& p, EncapMode mode, std::uint32_t life_seconds,
                                   std::uint64_t life_kilobytes, std::string& why) {
  std::vector<Phase2Suite> out;
  const auto groups = groups_of(p);
  const auto esns = esns_of(p);
  for (auto i : p.integ) {
    if (!ah_transform_id(i)) continue;
    for (const auto& g : groups)
      for (bool esn : esns) {
        Phase2Suite s;
        s.proto = core::IpsecProtocol::kAh;
        s.ah = {i, esn};
        s.pfs = g;
        s.mode = mode;
        s.life_seconds = life_seconds;
        s.life_kilobytes = life_kilobytes;
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
      }
  }
  if (out.empty()) why = "IKEv1 AH takes HMAC-MD5/SHA1/SHA2, AES-XCBC or AES-GMAC";
  return out;
}

Transform encode_phase2(const Phase2Suite& s, std::uint8_t number) {
  Transform t;
  t.number = number;
  t.id = s.is_ah() ? *ah_transform_id(s.ah.integ) : *transform_id(s.esp.enc.alg);
  if (s.life_seconds) {
    t.attributes.push_back(basic(P2Attr::kLifeType, kLifeSeconds));
    t.attributes.push_back(variable(P2Attr::kLifeDuration, s.life_seconds));
  }
  if (s.life_kilobytes) {
    t.attributes.push_back(basic(P2Attr::kLifeType, kLifeKilobytes));
    t.attributes.push_back(variable(P2Attr::kLifeDuration, s.life_kilobytes));
  }
  if (s.pfs) t.attributes.push_back(basic(P2Attr::kGroup, static_cast<std::uint16_t>(*s.pfs)));
  t.attributes.push_back(basic(P2Attr::kEncapsulation, static_cast<std::uint16_t>(s.mode)));
  if (s.is_ah()) {
    t.attributes.push_back(basic(P2Attr::kAuthAlgorithm, *ah_auth_attr(s.ah.integ)));
    if (s.ah.esn) t.attributes.push_back(basic(P2Attr::kEsn, 1));
    return t;
  }
  if (auto a = auth_number(s.esp.integ)) t.attributes.push_back(basic(P2Attr::kAuthAlgorithm, *a));
  if (variable_key(s.esp.enc.alg))
    t.attributes.push_back(basic(P2Attr::kKeyLength, static_cast<std::uint16_t>(s.esp.enc.key_bytes * 8)));
  if (s.esp.esn) t.attributes.push_back(basic(P2Attr::kEsn, 1));
  return t;
}

std::optional<Phase2Suite> decode_phase2(const Transform& t, std::string& why, std::uint8_t protocol) {
  Phase2Suite s;
  std::optional<std::uint64_t> ah_auth;
  if (protocol == kProtoAh) {
    auto i = ah_integ_of(t.id);
    if (!i) {
      why = "AH transform ID " + std::to_string(t.id);
      return std::nullopt;
    }
    s.proto = core::IpsecProtocol::kAh;
    s.ah.integ = *i;
  } else switch (t.id) {
    case kEsp3des: s.esp.enc = {core::EncAlg::kTripleDesCbc, 24}; break;
    case kEspNull: s.esp.enc = {core::EncAlg::kNull, 0}; break;
    case kEspAes: s.esp.enc = {core::EncAlg::kAesCbc, 0}; break;
    case kEspAesCtr: s.esp.enc = {core::EncAlg::kAesCtr, 0}; break;
    case kEspAesGcm16: s.esp.enc = {core::EncAlg::kAesGcm16, 0}; break;
    default:
      why = "ESP transform ID " + std::to_string(t.id);
      return std::nullopt;
  }
  std::uint16_t life_type = 0;
  bool have_mode = false, have_keylen = false;
  for (const auto& a : t.attributes) {
    const auto n = a.number();
    if (!n) {
      why = "attribute " + std::to_string(a.type) + " too long";
      return std::nullopt;
    }
    switch (static_cast<P2Attr>(a.type)) {
      case P2Attr::kLifeType: life_type = static_cast<std::uint16_t>(*n); break;
      case P2Attr::kLifeDuration:
        if (life_type == kLifeSeconds) s.life_seconds = static_cast<std::uint32_t>(std::min<std::uint64_t>(*n, 0xffffffffu));
        else if (life_type == kLifeKilobytes) s.life_kilobytes = *n;
        else {
          why = "life duration without a life type";
          return std::nullopt;
        }
        break;
      case P2Attr::kGroup: {
        auto g = core::dh_group_from_number(static_cast<std::uint16_t>(*n));
        if (!g) {
          why = "PFS group " + std::to_string(*n);
          return std::nullopt;
        }
        s.pfs = *g;
        break;
      }
      case P2Attr::kEncapsulation:
        switch (*n) {
          case 1: case 2: case 3: case 4: case 61443: case 61444:
            s.mode = static_cast<EncapMode>(*n);
            have_mode = true;
            break;
          default:
            why = "encapsulation mode " + std::to_string(*n);
            return std::nullopt;
        }
        break;
      case P2Attr::kAuthAlgorithm: {
        if (s.is_ah()) {
          ah_auth = *n;
          break;
        }
        auto i = auth_from_number(*n);
        if (!i) {
          why = "authentication algorithm " + std::to_string(*n);
          return std::nullopt;
        }
        s.esp.integ = *i;
        break;
      }
      case P2Attr::kKeyLength:
        if (*n != 128 && *n != 192 && *n != 256) {
          why = "key length " + std::to_string(*n);
          return std::nullopt;
        }
        s.esp.enc.key_bytes = static_cast<std::size_t>(*n / 8);
        have_keylen = true;
        break;
      case P2Attr::kEsn: (s.is_ah() ? s.ah.esn : s.esp.esn) = *n == 1; break;
      default:
        why = "SA attribute " + std::to_string(a.type);
        return std::nullopt;
    }
  }
  if (!have_mode) {
    why = "no encapsulation mode";
    return std::nullopt;
  }
  if (s.is_ah()) {
    // RFC 2407 4.5: the authentication algorithm MUST be given for AH, as the transform ID says.
    if (!ah_auth || ah_auth_attr(s.ah.integ) != *ah_auth) {
      why = "AH transform without its authentication algorithm";
      return std::nullopt;
    }
    if (have_keylen) {
      why = "a key length for AH";
      return std::nullopt;
    }
    return s;
  }
  if (variable_key(s.esp.enc.alg) && !have_keylen) {
    // RFC 3602 5 leaves AES-CBC's key length optional for ESP: 128 then.
    if (s.esp.enc.alg != core::EncAlg::kAesCbc) {
      why = "no key length";
      return std::nullopt;
    }
    s.esp.enc.key_bytes = 16;
  }
  if (!s.esp.aead() && s.esp.integ == core::IntegAlg::kNone) {
    why = "no authentication algorithm";
    return std::nullopt;
  }
  if (s.esp.aead() && s.esp.integ != core::IntegAlg::kNone) {
    why = "an authentication algorithm with an AEAD cipher";
    return std::nullopt;
  }
  return s;
}

Bytes lifetime_attributes(std::uint32_t seconds, std::uint64_t kilobytes) {
  std::vector<Attribute> a;
  if (seconds) {
    a.push_back(basic(P2Attr::kLifeType, kLifeSeconds));
    a.push_back(variable(P2Attr::kLifeDuration, seconds));
  }
  if (kilobytes) {
    a.push_back(basic(P2Attr::kLifeType, kLifeKilobytes));
    a.push_back(variable(P2Attr::kLifeDuration, kilobytes));
  }
  return encode_attributes(a);
}

bool parse_lifetime_attributes(ByteSpan data, std::uint32_t& seconds, std::uint64_t& kilobytes) {
  DecodeError err;
  auto attrs = decode_attributes(data, err);
  if (!attrs) return false;
  std::optional<std::uint64_t> type;
  for (const auto& a : *attrs) {
    if (a.type == static_cast<std::uint16_t>(P2Attr::kLifeType)) {
      type = a.number();
    } else if (a.type == static_cast<std::uint16_t>(P2Attr::kLifeDuration)) {
      const auto n = a.number();
      if (!n || !type) return false;
      if (*type == kLifeSeconds) seconds = static_cast<std::uint32_t>(std::min<std::uint64_t>(*n, 0xffffffffu));
      else if (*type == kLifeKilobytes) kilobytes = *n;
      else return false;
    }
  }
  return true;
}

Proposal esp_proposal(std::uint8_t number, std::uint32_t spi, const std::vector<Phase2Suite>& suites) {
  Proposal p;
  p.number = number;
  p.protocol = !suites.empty() && suites.front().is_ah() ? kProtoAh : kProtoEsp;
  core::ByteAppender{p.spi}.u32(spi);
  std::uint8_t n = 1;
  for (const auto& s : suites) p.transforms.push_back(encode_phase2(s, n++));
  return p;
}

}  // namespace ipsecgw::ike::v1
