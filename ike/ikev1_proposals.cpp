#include "ike/ikev1_proposals.hpp"

#include <algorithm>

namespace ipsecgw::ike::v1 {

namespace {

// Encryption Algorithm values (RFC 2409 appendix A, RFC 3602 for AES).
constexpr std::uint16_t kEncDes = 1;
constexpr std::uint16_t kEnc3des = 5;
constexpr std::uint16_t kEncAes = 7;

std::optional<std::uint16_t> hash_number(core::PrfAlg h) {
  switch (h) {
    case core::PrfAlg::kHmacMd5: return 1;
    case core::PrfAlg::kHmacSha1: return 2;
    case core::PrfAlg::kHmacSha256: return 4;
    case core::PrfAlg::kHmacSha384: return 5;
    case core::PrfAlg::kHmacSha512: return 6;
  }
  return std::nullopt;
}

std::optional<core::PrfAlg> hash_from_number(std::uint64_t n) {
  switch (n) {
    case 1: return core::PrfAlg::kHmacMd5;
    case 2: return core::PrfAlg::kHmacSha1;
    case 4: return core::PrfAlg::kHmacSha256;
    case 5: return core::PrfAlg::kHmacSha384;
    case 6: return core::PrfAlg::kHmacSha512;
    default: return std::nullopt;
  }
}

// The hash a configured integrity keyword names ("sha256" -> SHA2-256).
std::optional<core::PrfAlg> hash_of(core::IntegAlg a) {
  switch (a) {
    case core::IntegAlg::kHmacMd5_96: return core::PrfAlg::kHmacMd5;
    case core::IntegAlg::kHmacSha1_96: return core::PrfAlg::kHmacSha1;
    case core::IntegAlg::kHmacSha256_128: return core::PrfAlg::kHmacSha256;
    case core::IntegAlg::kHmacSha384_192: return core::PrfAlg::kHmacSha384;
    case core::IntegAlg::kHmacSha512_256: return core::PrfAlg::kHmacSha512;
    case core::IntegAlg::kAesXcbc96:
    case core::IntegAlg::kAesGmac128:
    case core::IntegAlg::kAesGmac192:
    case core::IntegAlg::kAesGmac256:
    case core::IntegAlg::kNone: return std::nullopt;
  }
  return std::nullopt;
}

Attribute basic(P1Attr t, std::uint16_t v) { return {static_cast<std::uint16_t>(t), true, v, {}}; }

std::uint64_t value_of(const Transform& t, P1Attr a, bool& present, bool& bad) {
  const auto* x = t.find(static_cast<std::uint16_t>(a));
  present = x != nullptr;
  if (!x) return 0;
  auto n = x->number();
  if (!n) bad = true;
  return n.value_or(0);
}

}  // namespace

std::string Phase1Suite::name() const {
  std::string s = enc.alg == core::EncAlg::kTripleDesCbc ? "3des" : "aes" + std::to_string(enc.key_bytes * 8);
  static const char* hashes[] = {"md5", "sha1", "sha256", "sha384", "sha512"};
  s += '-';
  s += hashes[static_cast<int>(hash)];
  if (const char* g = core::dh_group_name(group)) {
    s += '-';
    s += g;
  }
  return s;
}

std::vector<Phase1Suite> phase1_suites(const core::Proposal& p, AuthMethod auth, std::uint32_t life_seconds,
                                       std::string& why) {
  std::vector<Phase1Suite> out;
  // A hash named as a prf ("prfsha256") counts too; otherwise the integrity keyword's.
  std::vector<core::PrfAlg> hashes(p.prf.begin(), p.prf.end());
  for (auto i : p.integ)
    if (auto h = hash_of(i)) hashes.push_back(*h);
  for (const auto& e : p.enc) {
    if (e.alg != core::EncAlg::kAesCbc && e.alg != core::EncAlg::kTripleDesCbc) continue;
    for (auto h : hashes)
      for (auto g : p.dh) {
        Phase1Suite s{e, h, g, auth, life_seconds};
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
      }
  }
  if (out.empty())
    why = "IKEv1 phase 1 needs AES-CBC or 3DES, a hash (md5, sha1, sha256, sha384, sha512) and a DH group";
  return out;
}

Transform encode_phase1(const Phase1Suite& s, std::uint8_t number) {
  Transform t;
  t.number = number;
  t.id = kKeyIke;
  const bool aes = s.enc.alg == core::EncAlg::kAesCbc;
  t.attributes.push_back(basic(P1Attr::kEncryption, aes ? kEncAes : kEnc3des));
  if (aes) t.attributes.push_back(basic(P1Attr::kKeyLength, static_cast<std::uint16_t>(s.enc.key_bytes * 8)));
  t.attributes.push_back(basic(P1Attr::kHash, *hash_number(s.hash)));
  t.attributes.push_back(basic(P1Attr::kAuthMethod, static_cast<std::uint16_t>(s.auth)));
  t.attributes.push_back(basic(P1Attr::kGroup, static_cast<std::uint16_t>(s.group)));
  if (s.life_seconds) {
    t.attributes.push_back(basic(P1Attr::kLifeType, kLifeSeconds));
    // A 4-byte variable attribute, as most implementations send it.
    Attribute d{static_cast<std::uint16_t>(P1Attr::kLifeDuration), false, 0, {}};
    core::ByteAppender{d.data}.u32(s.life_seconds);
    t.attributes.push_back(std::move(d));
  }
  return t;
}

std::optional<Phase1Suite> decode_phase1(const Transform& t, std::string& why) {
  if (t.id != kKeyIke) {
    why = "transform ID " + std::to_string(t.id) + " is not KEY_IKE";
    return std::nullopt;
  }
  bool has = false, bad = false;
  Phase1Suite s;
  const auto enc = value_of(t, P1Attr::kEncryption, has, bad);
  if (!has || bad) {
    why = "no encryption algorithm";
    return std::nullopt;
  }
  const auto keylen = value_of(t, P1Attr::kKeyLength, has, bad);
  if (enc == kEnc3des) {
    s.enc = {core::EncAlg::kTripleDesCbc, 24};
  } else if (enc == kEncAes) {
    // RFC 3602 5: the key length attribute is required for AES.
    if (!has || (keylen != 128 && keylen != 192 && keylen != 256)) {
      why = "AES without a key length of 128, 192 or 256";
      return std::nullopt;
    }
    s.enc = {core::EncAlg::kAesCbc, static_cast<std::size_t>(keylen / 8)};
  } else {
    why = enc == kEncDes ? "DES (refused: a 56-bit key)" : "encryption algorithm " + std::to_string(enc);
    return std::nullopt;
  }
  const auto hash = value_of(t, P1Attr::kHash, has, bad);
  auto h = has ? hash_from_number(hash) : std::nullopt;
  if (!h) {
    why = "hash algorithm " + std::to_string(hash);
    return std::nullopt;
  }
  s.hash = *h;
  const auto auth = value_of(t, P1Attr::kAuthMethod, has, bad);
  if (!has) {
    why = "no authentication method";
    return std::nullopt;
  }
  s.auth = static_cast<AuthMethod>(auth);
  const auto group = value_of(t, P1Attr::kGroup, has, bad);
  auto g = has ? core::dh_group_from_number(static_cast<std::uint16_t>(group)) : std::nullopt;
  if (!g) {
    why = "Diffie-Hellman group " + std::to_string(group);
    return std::nullopt;
  }
  s.group = *g;
  // Life type and duration come in pairs (RFC 2409 appendix A); seconds are kept.
  std::uint16_t life_type = 0;
  for (const auto& a : t.attributes) {
    if (a.type == static_cast<std::uint16_t>(P1Attr::kLifeType)) life_type = a.value;
    if (a.type == static_cast<std::uint16_t>(P1Attr::kLifeDuration) && life_type == kLifeSeconds) {
      auto n = a.number();
      if (!n || *n > 0xffffffffu) {
        why = "life duration";
        return std::nullopt;
      }
      s.life_seconds = static_cast<std::uint32_t>(*n);
    }
  }
  if (bad) {
    why = "an attribute too long for its value";
    return std::nullopt;
  }
  return s;
}

std::optional<Phase1Choice> select_phase1(const std::vector<core::Proposal>& ours, AuthMethod auth,
                                          const SaPayload& offered, std::string& why) {
  std::vector<Phase1Suite> allowed;
  for (const auto& p : ours) {
    std::string ignored;
    for (auto& s : phase1_suites(p, auth, 0, ignored)) allowed.push_back(s);
  }
  std::string last;
  for (const auto& p : offered.proposals) {
    if (p.protocol != 1) continue;  // PROTO_ISAKMP
    for (const auto& t : p.transforms) {
      std::string w;
      auto s = decode_phase1(t, w);
      if (!s) {
        last = "transform " + std::to_string(t.number) + ": " + w;
        continue;
      }
      Phase1Suite cmp = *s;
      cmp.life_seconds = 0;
      if (std::find(allowed.begin(), allowed.end(), cmp) != allowed.end()) return Phase1Choice{*s, p.number, t};
      last = "transform " + std::to_string(t.number) + " (" + s->name() + ") is not configured";
    }
  }
  why = last.empty() ? "no ISAKMP proposal" : "no acceptable transform; last: " + last;
  return std::nullopt;
}

}  // namespace ipsecgw::ike::v1
