#include "core/algorithms.hpp"

#include <array>

namespace ipsecgw::core {

bool is_aead(EncAlg a) noexcept {
  return a == EncAlg::kAesGcm16 || a == EncAlg::kChaCha20Poly1305 || a == EncAlg::kNullAesGmac;
}

std::size_t gmac_key_len(IntegAlg a) noexcept {
  switch (a) {
    case IntegAlg::kAesGmac128: return 16;
    case IntegAlg::kAesGmac192: return 24;
    case IntegAlg::kAesGmac256: return 32;
    default: return 0;
  }
}

std::size_t salt_len(EncAlg a) noexcept {
  switch (a) {
    case EncAlg::kAesGcm16:
    case EncAlg::kChaCha20Poly1305:
    case EncAlg::kNullAesGmac:
    case EncAlg::kAesCtr: return 4;
    default: return 0;
  }
}

std::size_t iv_len(EncAlg a) noexcept {
  switch (a) {
    case EncAlg::kNull: return 0;
    case EncAlg::kAesCbc: return 16;
    case EncAlg::kTripleDesCbc: return 8;
    case EncAlg::kAesCtr:
    case EncAlg::kAesGcm16:
    case EncAlg::kNullAesGmac:
    case EncAlg::kChaCha20Poly1305: return 8;
  }
  return 0;
}

std::size_t block_len(EncAlg a) noexcept {
  switch (a) {
    case EncAlg::kAesCbc: return 16;
    case EncAlg::kTripleDesCbc: return 8;
    default: return 4;  // stream modes: 4-byte alignment (RFC 4303 2.4)
  }
}

std::size_t icv_len(IntegAlg a) noexcept {
  switch (a) {
    case IntegAlg::kNone: return 0;
    case IntegAlg::kHmacMd5_96:
    case IntegAlg::kHmacSha1_96: return 12;
    case IntegAlg::kHmacSha256_128: return 16;
    case IntegAlg::kHmacSha384_192: return 24;
    case IntegAlg::kHmacSha512_256: return 32;
    case IntegAlg::kAesXcbc96: return 12;
    case IntegAlg::kAesGmac128:
    case IntegAlg::kAesGmac192:
    case IntegAlg::kAesGmac256: return 16;
  }
  return 0;
}

std::size_t integ_key_len(IntegAlg a) noexcept {
  switch (a) {
    case IntegAlg::kNone: return 0;
    case IntegAlg::kHmacMd5_96: return 16;
    case IntegAlg::kHmacSha1_96: return 20;
    case IntegAlg::kHmacSha256_128: return 32;
    case IntegAlg::kHmacSha384_192: return 48;
    case IntegAlg::kHmacSha512_256: return 64;
    case IntegAlg::kAesXcbc96: return 16;
    case IntegAlg::kAesGmac128:
    case IntegAlg::kAesGmac192:
    case IntegAlg::kAesGmac256: return gmac_key_len(a) + 4;
  }
  return 0;
}

const char* digest_name(IntegAlg a) noexcept {
  switch (a) {
    case IntegAlg::kNone: return nullptr;
    case IntegAlg::kHmacMd5_96: return "MD5";
    case IntegAlg::kHmacSha1_96: return "SHA1";
    case IntegAlg::kHmacSha256_128: return "SHA256";
    case IntegAlg::kHmacSha384_192: return "SHA384";
    case IntegAlg::kHmacSha512_256: return "SHA512";
    case IntegAlg::kAesXcbc96: return nullptr;  // not a digest: core::XcbcMac
    case IntegAlg::kAesGmac128:
    case IntegAlg::kAesGmac192:
    case IntegAlg::kAesGmac256: return nullptr;  // core::GmacMac
  }
  return nullptr;
}

std::size_t EspTransform::icv_len() const noexcept {
  return aead() ? 16 : core::icv_len(integ);
}

namespace {

struct EncName {
  std::string_view name;
  EncSpec spec;
};
constexpr std::array<EncName, 19> kEncNames = {{
    {"null", {EncAlg::kNull, 0}},
    {"aes", {EncAlg::kAesCbc, 16}},
    {"aes128", {EncAlg::kAesCbc, 16}},
    {"aes192", {EncAlg::kAesCbc, 24}},
    {"aes256", {EncAlg::kAesCbc, 32}},
    {"aes128ctr", {EncAlg::kAesCtr, 16}},
    {"aes192ctr", {EncAlg::kAesCtr, 24}},
    {"aes256ctr", {EncAlg::kAesCtr, 32}},
    {"3des", {EncAlg::kTripleDesCbc, 24}},
    {"aes128gcm16", {EncAlg::kAesGcm16, 16}},
    {"aes128gcm128", {EncAlg::kAesGcm16, 16}},
    {"aes192gcm16", {EncAlg::kAesGcm16, 24}},
    {"aes256gcm16", {EncAlg::kAesGcm16, 32}},
    {"aes256gcm128", {EncAlg::kAesGcm16, 32}},
    {"chacha20poly1305", {EncAlg::kChaCha20Poly1305, 32}},
    {"aes128gmac", {EncAlg::kNullAesGmac, 16}},
    {"aes192gmac", {EncAlg::kNullAesGmac, 24}},
    {"aes256gmac", {EncAlg::kNullAesGmac, 32}},
    {"aes192gcm128", {EncAlg::kAesGcm16, 24}},
}};

struct IntegName {
  std::string_view name;
  IntegAlg alg;
};
constexpr std::array<IntegName, 9> kIntegNames = {{
    {"md5", IntegAlg::kHmacMd5_96},
    {"sha1", IntegAlg::kHmacSha1_96},
    {"sha", IntegAlg::kHmacSha1_96},
    {"sha256", IntegAlg::kHmacSha256_128},
    {"sha2_256", IntegAlg::kHmacSha256_128},
    {"sha384", IntegAlg::kHmacSha384_192},
    {"sha2_384", IntegAlg::kHmacSha384_192},
    {"sha512", IntegAlg::kHmacSha512_256},
    {"sha2_512", IntegAlg::kHmacSha512_256},
}};

struct PrfName {
  std::string_view name;
  PrfAlg alg;
};
constexpr std::array<PrfName, 5> kPrfNames = {{
    {"prfmd5", PrfAlg::kHmacMd5},
    {"prfsha1", PrfAlg::kHmacSha1},
    {"prfsha256", PrfAlg::kHmacSha256},
    {"prfsha384", PrfAlg::kHmacSha384},
    {"prfsha512", PrfAlg::kHmacSha512},
}};

struct DhName {
  std::string_view name;
  DhGroup group;
};
constexpr std::array<DhName, 14> kDhNames = {{
    {"modp1024", DhGroup::kModp1024},
    {"modp1536", DhGroup::kModp1536},
    {"modp2048", DhGroup::kModp2048},
    {"modp3072", DhGroup::kModp3072},
    {"modp4096", DhGroup::kModp4096},
    {"modp6144", DhGroup::kModp6144},
    {"modp8192", DhGroup::kModp8192},
    {"ecp256", DhGroup::kEcp256},
    {"ecp384", DhGroup::kEcp384},
    {"ecp521", DhGroup::kEcp521},
    {"x25519", DhGroup::kCurve25519},
    {"curve25519", DhGroup::kCurve25519},
    {"x448", DhGroup::kCurve448},
    {"curve448", DhGroup::kCurve448},
}};

}  // namespace

const char* dh_group_name(DhGroup g) noexcept {
  for (const auto& e : kDhNames)
    if (e.group == g) return e.name.data();  // the table's literals end in NUL
  return nullptr;
}

std::optional<DhGroup> dh_group_from_number(std::uint16_t n) noexcept {
  for (const auto& e : kDhNames)
    if (static_cast<std::uint16_t>(e.group) == n) return e.group;
  return std::nullopt;
}

namespace {

template <class Table, class Out>
bool lookup(const Table& table, std::string_view tok, Out& out) {
  for (const auto& e : table) {
    if (e.name == tok) {
      out = e;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string EspTransform::name() const {
  std::string s;
  for (const auto& e : kEncNames) {
    if (e.spec == enc && e.name != "aes" && e.name.find("gcm128") == std::string_view::npos) {
      s = std::string(e.name);
      break;
    }
  }
  if (!aead() && integ != IntegAlg::kNone) {
    for (const auto& e : kIntegNames) {
      if (e.alg == integ && e.name != "sha" && e.name.find('_') == std::string_view::npos) {
        s += "-" + std::string(e.name);
        break;
      }
    }
  }
  if (esn) s += "-esn";
  return s;
}

std::optional<Proposal> parse_proposal(std::string_view text, std::string& bad_token) {
  Proposal p;
  if (text.empty()) {
    bad_token = "";
    return std::nullopt;
  }
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('-', start);
    if (end == std::string_view::npos) end = text.size();
    auto tok = text.substr(start, end - start);
    EncName e{};
    IntegName i{};
    PrfName f{};
    DhName d{};
    if (lookup(kEncNames, tok, e)) {
      p.enc.push_back(e.spec);
    } else if (lookup(kIntegNames, tok, i)) {
      p.integ.push_back(i.alg);
    } else if (lookup(kPrfNames, tok, f)) {
      p.prf.push_back(f.alg);
    } else if (lookup(kDhNames, tok, d)) {
      p.dh.push_back(d.group);
    } else if (tok == "esn") {
      p.esn.push_back(true);
    } else if (tok == "noesn") {
      p.esn.push_back(false);
    } else {
      bad_token = std::string(tok);
      return std::nullopt;
    }
    start = end + 1;
  }
  return p;
}

std::optional<EspTransform> single_esp_transform(std::string_view text, std::string& why) {
  std::string bad;
  auto p = parse_proposal(text, bad);
  if (!p) {
    why = "unknown algorithm keyword '" + bad + "'";
    return std::nullopt;
  }
  if (p->enc.size() != 1) {
    why = "name exactly one encryption algorithm";
    return std::nullopt;
  }
  if (!p->prf.empty()) {
    why = "a PRF has no place in an ESP transform";
    return std::nullopt;
  }
  if (!p->dh.empty()) {
    why = "a DH group has no place in a manually keyed SA";
    return std::nullopt;
  }
  if (p->esn.size() > 1) {
    why = "name esn at most once";
    return std::nullopt;
  }
  EspTransform t;
  t.enc = p->enc[0];
  t.esn = !p->esn.empty() && p->esn[0];
  if (t.aead()) {
    if (!p->integ.empty()) {
      why = "an AEAD algorithm takes no separate integrity algorithm";
      return std::nullopt;
    }
  } else {
    if (p->integ.size() != 1) {
      why = "encryption without exactly one integrity algorithm is refused";
      return std::nullopt;
    }
    t.integ = p->integ[0];
  }
  return t;
}

std::string AhTransform::name() const {
  std::string s = integ == IntegAlg::kAesXcbc96 ? "aesxcbc" : "";
  if (const auto k = gmac_key_len(integ)) s = "aes" + std::to_string(k * 8) + "gmac";
  for (const auto& e : kIntegNames) {
    if (e.alg == integ && e.name != "sha" && e.name.find('_') == std::string_view::npos) {
      s = std::string(e.name);
      break;
    }
  }
  return esn ? s + "-esn" : s;
}

std::optional<Proposal> parse_ah_proposal(std::string_view text, std::string& why) {
  Proposal p;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto end = text.find('-', start);
    if (end == std::string_view::npos) end = text.size();
    const auto tok = text.substr(start, end - start);
    start = end + 1;
    if (tok == "aesxcbc") {
      p.integ.push_back(IntegAlg::kAesXcbc96);
      continue;
    }
    if (tok == "aes128gmac" || tok == "aes192gmac" || tok == "aes256gmac") {  // AUTH_AES_*_GMAC
      p.integ.push_back(tok == "aes128gmac"   ? IntegAlg::kAesGmac128
                        : tok == "aes192gmac" ? IntegAlg::kAesGmac192
                                              : IntegAlg::kAesGmac256);
      continue;
    }
    std::string bad;
    auto one = parse_proposal(tok, bad);
    if (!one) {
      why = "unknown algorithm keyword '" + std::string(tok) + "'";
      return std::nullopt;
    }
    if (!one->enc.empty() || !one->prf.empty()) {
      why = "'" + std::string(tok) + "': AH takes integrity algorithms, DH groups and esn only";
      return std::nullopt;
    }
    p.integ.insert(p.integ.end(), one->integ.begin(), one->integ.end());
    p.dh.insert(p.dh.end(), one->dh.begin(), one->dh.end());
    p.esn.insert(p.esn.end(), one->esn.begin(), one->esn.end());
  }
  if (p.integ.empty()) {
    why = "names no integrity algorithm";
    return std::nullopt;
  }
  return p;
}

std::optional<AhTransform> single_ah_transform(std::string_view text, std::string& why) {
  // AES-XCBC-96 (RFC 3566) and AES-GMAC (RFC 4543) as integrity are AH's
  // only, so they are not among the keywords ESP and IKE proposals take.
  auto p = parse_ah_proposal(text, why);
  if (!p) return std::nullopt;
  if (!p->enc.empty()) {
    why = "AH has no encryption: name one integrity algorithm (sha256, sha384, sha512, sha1, md5, aesxcbc)";
    return std::nullopt;
  }
  if (!p->prf.empty() || !p->dh.empty()) {
    why = "name one integrity algorithm, and esn at most";
    return std::nullopt;
  }
  if (p->integ.size() != 1) {
    why = "name exactly one integrity algorithm";
    return std::nullopt;
  }
  if (p->esn.size() > 1) {
    why = "name esn at most once";
    return std::nullopt;
  }
  AhTransform t;
  t.integ = p->integ[0];
  t.esn = !p->esn.empty() && p->esn[0];
  return t;
}

}  // namespace ipsecgw::core
