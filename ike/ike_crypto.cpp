#include "ike/ike_crypto.hpp"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/dh.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/param_build.h>

#include <cstring>

namespace ipsecgw::ike {

using core::DhGroup;
using core::EncAlg;
using core::PrfAlg;

const char* prf_digest(PrfAlg a) noexcept {
  switch (a) {
    case PrfAlg::kHmacMd5: return "MD5";
    case PrfAlg::kHmacSha1: return "SHA1";
    case PrfAlg::kHmacSha256: return "SHA256";
    case PrfAlg::kHmacSha384: return "SHA384";
    case PrfAlg::kHmacSha512: return "SHA512";
  }
  return "SHA256";
}

std::size_t prf_len(PrfAlg a) noexcept {
  switch (a) {
    case PrfAlg::kHmacMd5: return 16;
    case PrfAlg::kHmacSha1: return 20;
    case PrfAlg::kHmacSha256: return 32;
    case PrfAlg::kHmacSha384: return 48;
    case PrfAlg::kHmacSha512: return 64;
  }
  return 32;
}

Bytes prf(PrfAlg a, ByteSpan key, ByteSpan data) {
  auto h = core::Hmac::create(prf_digest(a), key);
  Bytes out(prf_len(a));
  if (!h || !h->begin() || !h->update(data) || !h->finish(out)) return {};
  return out;
}

SecureBytes prf_plus(PrfAlg a, ByteSpan key, ByteSpan seed, std::size_t len) {
  SecureBytes out(len);
  auto h = core::Hmac::create(prf_digest(a), key);
  if (!h) return SecureBytes();
  Bytes t;
  std::size_t done = 0;
  for (unsigned n = 1; done < len; ++n) {
    if (n > 255) return SecureBytes();  // prf+ is defined for 255 blocks
    const std::uint8_t counter = static_cast<std::uint8_t>(n);
    Bytes next(prf_len(a));
    if (!h->begin() || !h->update(t) || !h->update(seed) || !h->update({&counter, 1}) ||
        !h->finish(next))
      return SecureBytes();
    const std::size_t take = std::min(next.size(), len - done);
    std::memcpy(out.mut_span().data() + done, next.data(), take);
    done += take;
    core::secure_wipe(t.data(), t.size());
    t = std::move(next);
  }
  core::secure_wipe(t.data(), t.size());
  return out;
}

// ---- Diffie-Hellman ---------------------------------------------------------

namespace {

// RFC 2409 6.2, Oakley group 2 (not among OpenSSL 3's named groups).
constexpr const char* kModp1024P =
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E"
    "3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF"
    "5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF";

const char* modp_name(DhGroup g) {
  switch (g) {
    case DhGroup::kModp1536: return "modp_1536";
    case DhGroup::kModp2048: return "modp_2048";
    case DhGroup::kModp3072: return "modp_3072";
    case DhGroup::kModp4096: return "modp_4096";
    case DhGroup::kModp6144: return "modp_6144";
    case DhGroup::kModp8192: return "modp_8192";
    default: return nullptr;
  }
}
const char* ec_name(DhGroup g) {
  switch (g) {
    case DhGroup::kEcp256: return "P-256";
    case DhGroup::kEcp384: return "P-384";
    case DhGroup::kEcp521: return "P-521";
    default: return nullptr;
  }
}
bool is_modp(DhGroup g) { return g == DhGroup::kModp1024 || modp_name(g) != nullptr; }
bool is_xdh(DhGroup g) { return g == DhGroup::kCurve25519 || g == DhGroup::kCurve448; }
const char* xdh_name(DhGroup g) { return g == DhGroup::kCurve25519 ? "X25519" : "X448"; }

struct PkeyCtx {
  EVP_PKEY_CTX* p;
  ~PkeyCtx() { EVP_PKEY_CTX_free(p); }
};
struct ParamBld {
  OSSL_PARAM_BLD* p = OSSL_PARAM_BLD_new();
  ~ParamBld() { OSSL_PARAM_BLD_free(p); }
};
struct Params {
  OSSL_PARAM* p;
  ~Params() { OSSL_PARAM_free(p); }
};
struct Bn {
  BIGNUM* p;
  ~Bn() { BN_free(p); }
};

// Adds the FFC domain parameters of a MODP group to a param builder.
bool add_modp_domain(OSSL_PARAM_BLD* bld, DhGroup g, Bn& p, Bn& gen) {
  if (g == DhGroup::kModp1024) {
    if (!BN_hex2bn(&p.p, kModp1024P)) return false;
    gen.p = BN_new();
    if (!gen.p || !BN_set_word(gen.p, 2)) return false;
    return OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_P, p.p) &&
           OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_G, gen.p);
  }
  return OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, modp_name(g), 0);
}

EVP_PKEY* from_data(const char* alg, OSSL_PARAM* params, int selection) {
  PkeyCtx ctx{EVP_PKEY_CTX_new_from_name(nullptr, alg, nullptr)};
  EVP_PKEY* key = nullptr;
  if (!ctx.p || EVP_PKEY_fromdata_init(ctx.p) <= 0 ||
      EVP_PKEY_fromdata(ctx.p, &key, selection, params) <= 0)
    return nullptr;
  return key;
}

// The peer's public value as an EVP_PKEY of the same group.
EVP_PKEY* peer_key(DhGroup g, ByteSpan v) {
  if (is_xdh(g)) {
    return EVP_PKEY_new_raw_public_key(g == DhGroup::kCurve25519 ? EVP_PKEY_X25519 : EVP_PKEY_X448,
                                       nullptr, v.data(), v.size());
  }
  ParamBld bld;
  Bn p{nullptr}, gen{nullptr}, pub{nullptr};
  Bytes point;
  if (!bld.p) return nullptr;
  if (const char* ec = ec_name(g)) {
    point.push_back(0x04);
    point.insert(point.end(), v.begin(), v.end());
    if (!OSSL_PARAM_BLD_push_utf8_string(bld.p, OSSL_PKEY_PARAM_GROUP_NAME, ec, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld.p, OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                          point.size()))
      return nullptr;
    Params params{OSSL_PARAM_BLD_to_param(bld.p)};
    return params.p ? from_data("EC", params.p, EVP_PKEY_PUBLIC_KEY) : nullptr;
  }
  pub.p = BN_bin2bn(v.data(), static_cast<int>(v.size()), nullptr);
  if (!pub.p || !add_modp_domain(bld.p, g, p, gen) ||
      !OSSL_PARAM_BLD_push_BN(bld.p, OSSL_PKEY_PARAM_PUB_KEY, pub.p))
    return nullptr;
  Params params{OSSL_PARAM_BLD_to_param(bld.p)};
  return params.p ? from_data("DH", params.p, EVP_PKEY_PUBLIC_KEY) : nullptr;
}

}  // namespace

std::size_t dh_public_len(DhGroup g) noexcept {
  switch (g) {
    case DhGroup::kModp1024: return 128;
    case DhGroup::kModp1536: return 192;
    case DhGroup::kModp2048: return 256;
    case DhGroup::kModp3072: return 384;
    case DhGroup::kModp4096: return 512;
    case DhGroup::kModp6144: return 768;
    case DhGroup::kModp8192: return 1024;
    case DhGroup::kEcp256: return 64;
    case DhGroup::kEcp384: return 96;
    case DhGroup::kEcp521: return 132;
    case DhGroup::kCurve25519: return 32;
    case DhGroup::kCurve448: return 56;
  }
  return 0;
}
bool dh_supported(DhGroup g) noexcept { return dh_public_len(g) != 0; }

DhKey::~DhKey() { EVP_PKEY_free(key_); }

std::unique_ptr<DhKey> DhKey::generate(DhGroup g, std::string& why) {
  if (!dh_supported(g)) {
    why = "unsupported DH group " + std::to_string(static_cast<int>(g));
    return nullptr;
  }
  std::unique_ptr<DhKey> k(new DhKey());
  k->group_ = g;
  if (is_xdh(g)) {
    k->key_ = EVP_PKEY_Q_keygen(nullptr, nullptr, xdh_name(g));
  } else if (const char* ec = ec_name(g)) {
    k->key_ = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", ec);
  } else {
    ParamBld bld;
    Bn p{nullptr}, gen{nullptr};
    if (!bld.p || !add_modp_domain(bld.p, g, p, gen)) {
      why = "DH parameters";
      return nullptr;
    }
    Params params{OSSL_PARAM_BLD_to_param(bld.p)};
    EVP_PKEY* domain = params.p ? from_data("DH", params.p, EVP_PKEY_KEY_PARAMETERS) : nullptr;
    if (domain) {
      PkeyCtx ctx{EVP_PKEY_CTX_new_from_pkey(nullptr, domain, nullptr)};
      if (ctx.p && EVP_PKEY_keygen_init(ctx.p) > 0) EVP_PKEY_generate(ctx.p, &k->key_);
      EVP_PKEY_free(domain);
    }
  }
  if (!k->key_) {
    why = "key generation failed";
    return nullptr;
  }
  const std::size_t len = dh_public_len(g);
  if (is_xdh(g)) {
    k->pub_.resize(len);
    std::size_t n = len;
    if (EVP_PKEY_get_raw_public_key(k->key_, k->pub_.data(), &n) != 1 || n != len) return nullptr;
  } else if (ec_name(g)) {
    Bytes point(len + 1);
    std::size_t n = 0;
    if (EVP_PKEY_get_octet_string_param(k->key_, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point.data(),
                                        point.size(), &n) != 1 ||
        n != len + 1 || point[0] != 0x04)
      return nullptr;
    k->pub_.assign(point.begin() + 1, point.end());
  } else {
    BIGNUM* pub = nullptr;
    if (EVP_PKEY_get_bn_param(k->key_, OSSL_PKEY_PARAM_PUB_KEY, &pub) != 1) return nullptr;
    k->pub_.resize(len);
    const int ok = BN_bn2binpad(pub, k->pub_.data(), static_cast<int>(len));
    BN_free(pub);
    if (ok != static_cast<int>(len)) return nullptr;
  }
  return k;
}

std::unique_ptr<DhKey> DhKey::from_private(DhGroup g, ByteSpan priv, std::string& why) {
  std::unique_ptr<DhKey> k(new DhKey());
  k->group_ = g;
  if (is_xdh(g)) {
    k->key_ = EVP_PKEY_new_raw_private_key(
        g == DhGroup::kCurve25519 ? EVP_PKEY_X25519 : EVP_PKEY_X448, nullptr, priv.data(),
        priv.size());
    if (k->key_) {
      k->pub_.resize(dh_public_len(g));
      std::size_t n = k->pub_.size();
      EVP_PKEY_get_raw_public_key(k->key_, k->pub_.data(), &n);
    }
  } else if (const char* ec = ec_name(g)) {
    ParamBld bld;
    Bn d{BN_bin2bn(priv.data(), static_cast<int>(priv.size()), nullptr)};
    if (bld.p && d.p && OSSL_PARAM_BLD_push_utf8_string(bld.p, OSSL_PKEY_PARAM_GROUP_NAME, ec, 0) &&
        OSSL_PARAM_BLD_push_BN(bld.p, OSSL_PKEY_PARAM_PRIV_KEY, d.p)) {
      Params params{OSSL_PARAM_BLD_to_param(bld.p)};
      if (params.p) k->key_ = from_data("EC", params.p, EVP_PKEY_KEYPAIR);
    }
  }
  if (!k->key_) {
    why = "cannot load the private key for this group";
    return nullptr;
  }
  return k;
}

std::optional<SecureBytes> DhKey::shared_secret(ByteSpan peer, std::string& why) const {
  if (peer.size() != dh_public_len(group_)) {
    why = "public value of " + std::to_string(peer.size()) + " bytes, group " +
          std::to_string(static_cast<int>(group_)) + " needs " +
          std::to_string(dh_public_len(group_));
    return std::nullopt;
  }
  EVP_PKEY* pk = peer_key(group_, peer);
  if (!pk) {
    why = "invalid public value";
    return std::nullopt;
  }
  PkeyCtx ctx{EVP_PKEY_CTX_new_from_pkey(nullptr, key_, nullptr)};
  std::size_t len = 0;
  std::optional<SecureBytes> out;
  if (ctx.p && EVP_PKEY_derive_init(ctx.p) > 0 &&
      (!is_modp(group_) || EVP_PKEY_CTX_set_dh_pad(ctx.p, 1) > 0) &&
      EVP_PKEY_derive_set_peer_ex(ctx.p, pk, 1) > 0 && EVP_PKEY_derive(ctx.p, nullptr, &len) > 0) {
    SecureBytes s(len);
    if (EVP_PKEY_derive(ctx.p, s.mut_span().data(), &len) > 0) {
      if (len == s.size()) out = std::move(s);
      else out = SecureBytes(s.first(len));
    }
  }
  EVP_PKEY_free(pk);
  if (!out) why = "key agreement failed (invalid or weak public value)";
  return out;
}

// ---- keys -------------------------------------------------------------------

std::string IkeTransform::name() const {
  core::EspTransform e;
  e.enc = enc;
  e.integ = integ;
  std::string s = e.name();
  static const char* prfs[] = {"prfmd5", "prfsha1", "prfsha256", "prfsha384", "prfsha512"};
  s += std::string("-") + prfs[static_cast<int>(prf)];
  if (const char* g = core::dh_group_name(dh)) {
    s += '-';
    s += g;
  }
  return s;
}

IkeKeys derive_ike_keys(const IkeTransform& t, ByteSpan shared, ByteSpan ni, ByteSpan nr,
                        std::uint64_t spi_i, std::uint64_t spi_r, const SecureBytes* old_sk_d,
                        SecureBytes* skeyseed_out) {
  Bytes nonces(ni.begin(), ni.end());
  nonces.insert(nonces.end(), nr.begin(), nr.end());
  Bytes skeyseed;
  if (old_sk_d) {
    Bytes in(shared.begin(), shared.end());
    in.insert(in.end(), nonces.begin(), nonces.end());
    skeyseed = prf(t.prf, old_sk_d->span(), in);
    core::secure_wipe(in.data(), in.size());
  } else {
    skeyseed = prf(t.prf, nonces, shared);
  }
  Bytes seed = nonces;
  core::ByteAppender a{seed};
  a.u64(spi_i);
  a.u64(spi_r);
  const std::size_t pl = prf_len(t.prf);
  const std::size_t al = core::integ_key_len(t.integ);
  const std::size_t el = t.enc.key_bytes + core::salt_len(t.enc.alg);
  SecureBytes km = prf_plus(t.prf, skeyseed, seed, 3 * pl + 2 * al + 2 * el);
  if (skeyseed_out) *skeyseed_out = SecureBytes(skeyseed);
  core::secure_wipe(skeyseed.data(), skeyseed.size());
  IkeKeys k;
  if (km.size() != 3 * pl + 2 * al + 2 * el) return k;
  std::size_t off = 0;
  auto take = [&](std::size_t n) {
    SecureBytes s(km.subspan(off, n));
    off += n;
    return s;
  };
  k.d = take(pl);
  k.ai = take(al);
  k.ar = take(al);
  k.ei = take(el);
  k.er = take(el);
  k.pi = take(pl);
  k.pr = take(pl);
  return k;
}

// ---- SK payload ---------------------------------------------------------------

std::unique_ptr<SkCipher> SkCipher::create(const IkeTransform& t, ByteSpan enc_key,
                                           ByteSpan integ_key, core::CipherDir dir) {
  std::unique_ptr<SkCipher> c(new SkCipher());
  c->t_ = t;
  const std::size_t salt = core::salt_len(t.enc.alg);
  if (enc_key.size() != t.enc.key_bytes + salt) return nullptr;
  if (t.aead()) {
    c->aead_ = core::Aead::create(t.enc.alg, enc_key.first(t.enc.key_bytes),
                                  enc_key.subspan(t.enc.key_bytes), dir);
    if (!c->aead_) return nullptr;
  } else {
    if (t.enc.alg != EncAlg::kAesCbc && t.enc.alg != EncAlg::kTripleDesCbc &&
        t.enc.alg != EncAlg::kAesCtr)
      return nullptr;
    c->cipher_ = core::Cipher::create(t.enc.alg, enc_key.first(t.enc.key_bytes),
                                      enc_key.subspan(t.enc.key_bytes), dir);
    c->hmac_ = core::Hmac::create(core::digest_name(t.integ), integ_key);
    if (!c->cipher_ || !c->hmac_) return nullptr;
  }
  core::random_bytes({reinterpret_cast<std::uint8_t*>(&c->iv_counter_), sizeof c->iv_counter_});
  return c;
}

std::size_t SkCipher::overhead() const noexcept {
  const std::size_t iv = t_.aead() || t_.enc.alg == EncAlg::kAesCtr ? 8 : core::block_len(t_.enc.alg);
  const std::size_t icv = t_.aead() ? core::Aead::kTagLen : core::icv_len(t_.integ);
  return kGenericHeaderLen + iv + core::block_len(t_.enc.alg) + icv;
}

Bytes SkCipher::seal(Header h, const std::vector<Payload>& inner) {
  const PayloadType first = inner.empty() ? PayloadType::kNone : inner.front().type;
  return seal_raw(h, PayloadType::kSk, first, {}, encode_chain(inner));
}

std::vector<Bytes> SkCipher::seal_fragmented(Header h, const std::vector<Payload>& inner,
                                             std::size_t max_len) {
  Bytes whole = encode_chain(inner);
  const PayloadType first = inner.empty() ? PayloadType::kNone : inner.front().type;
  const std::size_t room = max_len > kHeaderLen + overhead() + 4 ? max_len - kHeaderLen - overhead() - 4 : 0;
  if (whole.size() + kHeaderLen + overhead() <= max_len || room < 16) return {seal_raw(h, PayloadType::kSk, first, {}, whole)};
  const std::size_t total = (whole.size() + room - 1) / room;
  if (total > 0xffff) return {};
  std::vector<Bytes> out;
  for (std::size_t i = 0; i < total; ++i) {
    const std::size_t off = i * room;
    Bytes chunk(whole.begin() + static_cast<std::ptrdiff_t>(off),
                whole.begin() + static_cast<std::ptrdiff_t>(std::min(whole.size(), off + room)));
    Bytes extra;
    core::ByteAppender a{extra};
    a.u16(static_cast<std::uint16_t>(i + 1));
    a.u16(static_cast<std::uint16_t>(total));
    out.push_back(seal_raw(h, PayloadType::kSkf, i == 0 ? first : PayloadType::kNone, extra, std::move(chunk)));
  }
  core::secure_wipe(whole.data(), whole.size());
  return out;
}

Bytes SkCipher::seal_raw(Header h, PayloadType sk_type, PayloadType first, ByteSpan extra, Bytes plain) {
  const bool aead = t_.aead();
  const bool ctr = t_.enc.alg == EncAlg::kAesCtr;
  const std::size_t iv_len = aead || ctr ? 8 : core::block_len(t_.enc.alg);
  const std::size_t blk = aead || ctr ? 1 : core::block_len(t_.enc.alg);
  const std::size_t icv = aead ? core::Aead::kTagLen : core::icv_len(t_.integ);
  // Padding: the pad length byte comes last (3.14); pad to the block size.
  const std::size_t pad = (blk - (plain.size() + 1) % blk) % blk;
  plain.insert(plain.end(), pad, 0);
  plain.push_back(static_cast<std::uint8_t>(pad));

  const std::size_t sk_len = kGenericHeaderLen + extra.size() + iv_len + plain.size() + icv;
  h.next = sk_type;
  h.length = static_cast<std::uint32_t>(kHeaderLen + sk_len);
  Bytes msg;
  msg.reserve(h.length);
  write_header(msg, h);
  core::ByteAppender a{msg};
  a.u8(static_cast<std::uint8_t>(first));
  a.u8(0);
  a.u16(static_cast<std::uint16_t>(sk_len));
  a.bytes(extra);  // SKF: Fragment Number, Total Fragments (RFC 7383 2.5)
  const std::size_t aad_len = msg.size();
  Bytes iv(iv_len);
  if (aead || ctr) {
    ++iv_counter_;
    for (int i = 0; i < 8; ++i) iv[i] = static_cast<std::uint8_t>(iv_counter_ >> (56 - 8 * i));
  } else {
    core::random_bytes(iv);
  }
  a.bytes(iv);
  const std::size_t data_off = msg.size();
  a.bytes(plain);
  msg.resize(msg.size() + icv);
  core::MutByteSpan data(msg.data() + data_off, plain.size());
  core::MutByteSpan tag(msg.data() + data_off + plain.size(), icv);
  core::secure_wipe(plain.data(), plain.size());
  if (aead) {
    if (!aead_->seal(iv, ByteSpan(msg.data(), aad_len), data, tag)) return {};
  } else {
    if (!cipher_->run(iv, data) || !hmac_->begin() ||
        !hmac_->update(ByteSpan(msg.data(), data_off + plain.size())) || !hmac_->finish(tag))
      return {};
  }
  return msg;
}

std::optional<Bytes> SkCipher::open(ByteSpan msg, std::size_t sk_body_offset, std::string& why) {
  const bool aead = t_.aead();
  const bool ctr = t_.enc.alg == EncAlg::kAesCtr;
  const std::size_t iv_len = aead || ctr ? 8 : core::block_len(t_.enc.alg);
  const std::size_t blk = aead || ctr ? 1 : core::block_len(t_.enc.alg);
  const std::size_t icv = aead ? core::Aead::kTagLen : core::icv_len(t_.integ);
  if (sk_body_offset < kHeaderLen + kGenericHeaderLen || sk_body_offset > msg.size() ||
      msg.size() - sk_body_offset < iv_len + icv + 1) {
    why = "encrypted payload too short";
    return std::nullopt;
  }
  const std::size_t data_off = sk_body_offset + iv_len;
  const std::size_t data_len = msg.size() - data_off - icv;
  if (data_len == 0 || data_len % blk != 0) {
    why = "encrypted payload not a multiple of the block size";
    return std::nullopt;
  }
  ByteSpan iv = msg.subspan(sk_body_offset, iv_len);
  ByteSpan tag = msg.subspan(data_off + data_len, icv);
  Bytes data(msg.begin() + static_cast<std::ptrdiff_t>(data_off),
             msg.begin() + static_cast<std::ptrdiff_t>(data_off + data_len));
  if (aead) {
    if (!aead_->open(iv, msg.first(sk_body_offset), data, tag)) {
      why = "integrity check failed (AEAD)";
      return std::nullopt;
    }
  } else {
    Bytes mac(icv);
    if (!hmac_->begin() || !hmac_->update(msg.first(data_off + data_len)) || !hmac_->finish(mac) ||
        !core::ct_equal(mac, tag)) {
      why = "integrity check failed (ICV)";
      return std::nullopt;
    }
    if (!cipher_->run(iv, data)) {
      why = "decryption failed";
      return std::nullopt;
    }
  }
  const std::size_t pad = data.back();
  if (pad + 1 > data.size()) {
    why = "pad length runs past the payload";
    return std::nullopt;
  }
  data.resize(data.size() - pad - 1);
  return data;
}

Bytes natd_hash(std::uint64_t spi_i, std::uint64_t spi_r, const core::IpAddress& ip,
                std::uint16_t port) {
  Bytes in;
  core::ByteAppender a{in};
  a.u64(spi_i);
  a.u64(spi_r);
  a.bytes(ip.bytes());
  a.u16(port);
  Bytes out(20);
  unsigned int n = 0;
  EVP_Digest(in.data(), in.size(), out.data(), &n, EVP_sha1(), nullptr);
  return out;
}

}  // namespace ipsecgw::ike
