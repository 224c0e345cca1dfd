#include "ike/ikev1_crypto.hpp"

#include <openssl/evp.h>

#include <algorithm>

#include "ike/ike_crypto.hpp"

namespace ipsecgw::ike::v1 {

namespace {

// prf over a list of pieces, as the RFC writes "prf(K, a | b | c)".
template <class Parts>
Bytes prf_parts(core::PrfAlg a, ByteSpan key, const Parts& parts) {
  auto h = core::Hmac::create(prf_digest(a), key);
  Bytes out(prf_len(a));
  if (!h || !h->begin()) return {};
  for (auto p : parts)
    if (!h->update(p)) return {};
  if (!h->finish(out)) return {};
  return out;
}
Bytes prf_of(core::PrfAlg a, ByteSpan key, std::initializer_list<ByteSpan> parts) { return prf_parts(a, key, parts); }

// RFC 2409's feedback expansion, for KEYMAT (5.5) and the cipher key
// (appendix B): K1 = prf(key, seed1), Kn = prf(key, Kn-1 | seed), cut to `len`.
SecureBytes expand(core::PrfAlg prf, ByteSpan key, std::initializer_list<ByteSpan> seed1,
                   std::initializer_list<ByteSpan> seed, std::size_t len);

Bytes be64(std::uint64_t v) {
  Bytes b;
  core::ByteAppender{b}.u64(v);
  return b;
}
Bytes be32(std::uint32_t v) {
  Bytes b;
  core::ByteAppender{b}.u32(v);
  return b;
}

Bytes digest(core::PrfAlg hash, std::initializer_list<ByteSpan> parts) {
  const EVP_MD* md = EVP_get_digestbyname(prf_digest(hash));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned n = 0;
  bool ok = md && ctx && EVP_DigestInit_ex(ctx, md, nullptr) == 1;
  for (auto p : parts) ok = ok && EVP_DigestUpdate(ctx, p.data(), p.size()) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, out.data(), &n) == 1;
  EVP_MD_CTX_free(ctx);
  out.resize(ok ? n : 0);
  return out;
}

SecureBytes secure(Bytes b) {
  SecureBytes s(b);
  core::secure_wipe(b.data(), b.size());
  return s;
}

}  // namespace

SecureBytes skeyid_psk(core::PrfAlg prf, ByteSpan psk, ByteSpan ni, ByteSpan nr) {
  return secure(prf_of(prf, psk, {ni, nr}));
}

SecureBytes skeyid_sig(core::PrfAlg prf, ByteSpan ni, ByteSpan nr, ByteSpan gxy) {
  Bytes key(ni.begin(), ni.end());
  key.insert(key.end(), nr.begin(), nr.end());
  return secure(prf_of(prf, key, {gxy}));
}

Phase1Keys derive_phase1(core::PrfAlg prf, SecureBytes skeyid, ByteSpan gxy, std::uint64_t cky_i,
                         std::uint64_t cky_r) {
  const Bytes ci = be64(cky_i), cr = be64(cky_r);
  const std::uint8_t zero = 0, one = 1, two = 2;
  Phase1Keys k;
  k.d = secure(prf_of(prf, skeyid.span(), {gxy, ci, cr, {&zero, 1}}));
  k.a = secure(prf_of(prf, skeyid.span(), {k.d.span(), gxy, ci, cr, {&one, 1}}));
  k.e = secure(prf_of(prf, skeyid.span(), {k.a.span(), gxy, ci, cr, {&two, 1}}));
  k.skeyid = std::move(skeyid);
  return k;
}

SecureBytes encryption_key(core::PrfAlg prf, ByteSpan skeyid_e, std::size_t len) {
  if (skeyid_e.size() >= len) return SecureBytes(skeyid_e.first(len));
  // Appendix B: K1 = prf(SKEYID_e, 0) with a single zero octet, Kn = prf(SKEYID_e, Kn-1).
  const std::uint8_t zero = 0;
  return expand(prf, skeyid_e, {{&zero, 1}}, {}, len);
}

Bytes phase1_iv(core::PrfAlg hash, ByteSpan gxi, ByteSpan gxr, std::size_t block) {
  Bytes h = digest(hash, {gxi, gxr});
  if (h.size() < block) return {};
  h.resize(block);
  return h;
}

Bytes phase2_iv(core::PrfAlg hash, ByteSpan last_phase1_block, std::uint32_t message_id,
                std::size_t block) {
  Bytes h = digest(hash, {last_phase1_block, be32(message_id)});
  if (h.size() < block) return {};
  h.resize(block);
  return h;
}

Bytes nat_d(core::PrfAlg hash, std::uint64_t cky_i, std::uint64_t cky_r, const core::IpAddress& ip,
            std::uint16_t port) {
  const std::uint8_t p[2] = {static_cast<std::uint8_t>(port >> 8), static_cast<std::uint8_t>(port)};
  return digest(hash, {be64(cky_i), be64(cky_r), ip.bytes(), ByteSpan(p, 2)});
}

Bytes hash_i(core::PrfAlg prf, ByteSpan skeyid, ByteSpan gxi, ByteSpan gxr, std::uint64_t cky_i,
             std::uint64_t cky_r, ByteSpan sai_b, ByteSpan idii_b) {
  return prf_of(prf, skeyid, {gxi, gxr, be64(cky_i), be64(cky_r), sai_b, idii_b});
}

Bytes hash_r(core::PrfAlg prf, ByteSpan skeyid, ByteSpan gxi, ByteSpan gxr, std::uint64_t cky_i,
             std::uint64_t cky_r, ByteSpan sai_b, ByteSpan idir_b) {
  return prf_of(prf, skeyid, {gxr, gxi, be64(cky_r), be64(cky_i), sai_b, idir_b});
}

Bytes qm_hash1(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan rest) {
  return prf_of(prf, skeyid_a, {be32(mid), rest});
}

Bytes qm_hash2(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan ni_b, ByteSpan rest) {
  return prf_of(prf, skeyid_a, {be32(mid), ni_b, rest});
}

Bytes qm_hash3(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan ni_b, ByteSpan nr_b) {
  const std::uint8_t zero = 0;
  return prf_of(prf, skeyid_a, {{&zero, 1}, be32(mid), ni_b, nr_b});
}

SecureBytes keymat(core::PrfAlg prf, ByteSpan skeyid_d, ByteSpan gxy_qm, std::uint8_t protocol,
                   std::uint32_t spi, ByteSpan ni_b, ByteSpan nr_b, std::size_t len) {
  const Bytes s = be32(spi);
  const ByteSpan proto{&protocol, 1};
  return expand(prf, skeyid_d, {gxy_qm, proto, s, ni_b, nr_b}, {gxy_qm, proto, s, ni_b, nr_b}, len);
}

namespace {
SecureBytes expand(core::PrfAlg prf, ByteSpan key, std::initializer_list<ByteSpan> seed1,
                   std::initializer_list<ByteSpan> seed, std::size_t len) {
  Bytes out;
  Bytes k = prf_of(prf, key, seed1);
  // Room for all of it up front: a reallocation would free an unwiped copy.
  out.reserve(len + k.size());
  while (out.size() < len && !k.empty()) {
    out.insert(out.end(), k.begin(), k.end());
    std::vector<ByteSpan> parts{k};
    parts.insert(parts.end(), seed.begin(), seed.end());
    Bytes next = prf_parts(prf, key, parts);
    core::secure_wipe(k.data(), k.size());
    k = std::move(next);
  }
  core::secure_wipe(k.data(), k.size());
  if (out.size() < len) {
    core::secure_wipe(out.data(), out.size());
    return {};
  }
  out.resize(len);
  return secure(std::move(out));
}
}  // namespace

}  // namespace ipsecgw::ike::v1
