// IKEv1 key derivation (RFC 2409 5 and appendix B) against NIST CAVS
// SP 800-135 vectors, and the appendix B key expansion and IVs against
// values computed here from the RFC's formulas with OpenSSL's own HMAC.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ike/ikev1_cipher.hpp"
#include "ike/ikev1_crypto.hpp"
#include "test/cavs.hpp"
#include "test/vectors.hpp"

using namespace ipsecgw;

namespace {

core::PrfAlg prf_named(const std::string& sha) {
  if (sha == "SHA-1") return core::PrfAlg::kHmacSha1;
  if (sha == "SHA-256") return core::PrfAlg::kHmacSha256;
  if (sha == "SHA-384") return core::PrfAlg::kHmacSha384;
  if (sha == "SHA-512") return core::PrfAlg::kHmacSha512;
  FAIL("unknown hash " << sha);
  return core::PrfAlg::kHmacSha1;
}

std::uint64_t u64(const core::Bytes& b) {
  std::uint64_t v = 0;
  for (auto c : b) v = v << 8 | c;
  return v;
}

std::filesystem::path vector_file(const char* rel) {
  auto dir = test::vectors_dir();
  INFO("the shared/vectors folder (IPSECGW_VECTORS) holds " << rel);
  REQUIRE(dir);
  return *dir / rel;
}

// Runs one CAVS IKEv1 file; `psk` selects SKEYID = prf(psk, Ni|Nr), else
// prf(Ni|Nr, g^xy).
std::size_t run_ikev1_file(const char* rel, bool psk) {
  std::map<std::string, int> per_hash;
  const auto n = test::for_each_cavs(vector_file(rel), [&](const test::CavsRecord& r) {
    const auto& v = r.fields;
    const auto prf = prf_named(r.section.at("SHA"));
    const auto ni = test::hex(v.at("Ni")), nr = test::hex(v.at("Nr")), gxy = test::hex(v.at("g^xy"));
    auto skeyid = psk ? ike::v1::skeyid_psk(prf, test::hex(v.at("pre-shared-key")), ni, nr)
                      : ike::v1::skeyid_sig(prf, ni, nr, gxy);
    INFO(r.section.at("SHA") << " CKY_I " << v.at("CKY_I"));
    CHECK(core::to_hex(skeyid.span()) == v.at("SKEYID"));
    const auto k = ike::v1::derive_phase1(prf, std::move(skeyid), gxy, u64(test::hex(v.at("CKY_I"))),
                                          u64(test::hex(v.at("CKY_R"))));
    CHECK(core::to_hex(k.d.span()) == v.at("SKEYID_d"));
    CHECK(core::to_hex(k.a.span()) == v.at("SKEYID_a"));
    CHECK(core::to_hex(k.e.span()) == v.at("SKEYID_e"));
    ++per_hash[r.section.at("SHA")];
  });
  // Counted with: zcat FILE | awk '/^\[SHA/{h=$0} /^COUNT/{c[h]++} END{for(k in c) print k, c[k]}'
  // (the same in both files: 1700 records).
  const std::map<std::string, int> want{{"SHA-1", 500}, {"SHA-256", 400}, {"SHA-384", 400}, {"SHA-512", 400}};
  CHECK(per_hash == want);
  return n;
}

core::Bytes hmac(const char* md, core::ByteSpan key, core::ByteSpan data) {
  core::Bytes out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  HMAC(EVP_get_digestbyname(md), key.data(), static_cast<int>(key.size()), data.data(), data.size(),
       out.data(), &len);
  out.resize(len);
  return out;
}

}  // namespace

TEST_CASE("IKEv1 KDF: NIST CAVS pre-shared-key vectors (SKEYID, SKEYID_d/_a/_e)", "[ike][ikev1][kdf][vectors]") {
  CHECK(run_ikev1_file("nist_cavp_kdf135/ikev1_psk.fax.gz", true) == 1700);
}

TEST_CASE("IKEv1 KDF: NIST CAVS digital-signature vectors (SKEYID = prf(Ni|Nr, g^xy))", "[ike][ikev1][kdf][vectors]") {
  CHECK(run_ikev1_file("nist_cavp_kdf135/ikev1_dsa.fax.gz", false) == 1700);
}

TEST_CASE("IKEv1 appendix B: the cipher key from SKEYID_e", "[ike][ikev1][kdf]") {
  const core::Bytes e = *core::from_hex("000102030405060708090a0b0c0d0e0f10111213");  // 20 bytes (SHA-1)
  // Shorter than SKEYID_e: its first bytes.
  CHECK(core::to_hex(ike::v1::encryption_key(core::PrfAlg::kHmacSha1, e, 16).span()) ==
        "000102030405060708090a0b0c0d0e0f");
  // AES-256 with HMAC-SHA1 needs 32 bytes: K1 = prf(SKEYID_e, 0x00), K2 = prf(SKEYID_e, K1).
  const std::uint8_t zero = 0;
  const auto k1 = hmac("SHA1", e, {&zero, 1});
  const auto k2 = hmac("SHA1", e, k1);
  core::Bytes want = k1;
  want.insert(want.end(), k2.begin(), k2.end());
  want.resize(32);
  CHECK(core::to_hex(ike::v1::encryption_key(core::PrfAlg::kHmacSha1, e, 32).span()) == core::to_hex(want));
  // 3DES (24 bytes) with HMAC-MD5 (16): K1 | first 8 of K2.
  const core::Bytes e16(e.begin(), e.begin() + 16);
  const auto m1 = hmac("MD5", e16, {&zero, 1});
  const auto m2 = hmac("MD5", e16, m1);
  core::Bytes want3 = m1;
  want3.insert(want3.end(), m2.begin(), m2.begin() + 8);
  CHECK(core::to_hex(ike::v1::encryption_key(core::PrfAlg::kHmacMd5, e16, 24).span()) == core::to_hex(want3));
}

TEST_CASE("IKEv1: phase-1 and phase-2 IVs, Quick Mode hashes and KEYMAT follow RFC 2409", "[ike][ikev1][kdf]") {
  const core::Bytes gxi(128, 0x11), gxr(128, 0x22);
  core::Bytes both = gxi;
  both.insert(both.end(), gxr.begin(), gxr.end());
  core::Bytes sha(EVP_MAX_MD_SIZE);
  unsigned n = 0;
  EVP_Digest(both.data(), both.size(), sha.data(), &n, EVP_sha256(), nullptr);
  sha.resize(16);
  CHECK(ike::v1::phase1_iv(core::PrfAlg::kHmacSha256, gxi, gxr, 16) == sha);
  // Phase 2: hash(last CBC block | M-ID), M-ID big-endian.
  const core::Bytes last(16, 0x33);
  core::Bytes in = last;
  in.insert(in.end(), {0xde, 0xad, 0xbe, 0xef});
  core::Bytes md(EVP_MAX_MD_SIZE);
  EVP_Digest(in.data(), in.size(), md.data(), &n, EVP_sha1(), nullptr);
  md.resize(8);  // a 3DES block
  CHECK(ike::v1::phase2_iv(core::PrfAlg::kHmacSha1, last, 0xdeadbeef, 8) == md);

  const core::Bytes a(32, 0x44), ni(16, 0x55), nr(16, 0x66), rest{1, 2, 3};
  core::Bytes m{0, 0, 0, 7};
  core::Bytes h1 = m;
  h1.insert(h1.end(), rest.begin(), rest.end());
  CHECK(ike::v1::qm_hash1(core::PrfAlg::kHmacSha256, a, 7, rest) == hmac("SHA256", a, h1));
  core::Bytes h3{0};
  h3.insert(h3.end(), m.begin(), m.end());
  h3.insert(h3.end(), ni.begin(), ni.end());
  h3.insert(h3.end(), nr.begin(), nr.end());
  CHECK(ike::v1::qm_hash3(core::PrfAlg::kHmacSha256, a, 7, ni, nr) == hmac("SHA256", a, h3));

  // KEYMAT for 64 bytes with SHA-256: K1 | K2, ESP (3), SPI 0x01020304, with PFS.
  const core::Bytes d(32, 0x77), g(32, 0x88);
  core::Bytes seed = g;
  seed.insert(seed.end(), {3, 1, 2, 3, 4});
  seed.insert(seed.end(), ni.begin(), ni.end());
  seed.insert(seed.end(), nr.begin(), nr.end());
  const auto k1 = hmac("SHA256", d, seed);
  core::Bytes s2 = k1;
  s2.insert(s2.end(), seed.begin(), seed.end());
  const auto k2 = hmac("SHA256", d, s2);
  core::Bytes want = k1;
  want.insert(want.end(), k2.begin(), k2.end());
  CHECK(core::to_hex(ike::v1::keymat(core::PrfAlg::kHmacSha256, d, g, 3, 0x01020304, ni, nr, 64).span()) ==
        core::to_hex(want));
}

TEST_CASE("IKEv1 ISAKMP encryption: IV chains per exchange, bad bodies refused", "[ike][ikev1][cipher]") {
  std::string why;
  std::string bad;
  auto prop = core::parse_proposal("aes128-sha256-modp2048", bad);
  REQUIRE(prop);
  const auto s = ike::v1::phase1_suites(*prop, ike::v1::AuthMethod::kPsk, 0, why).at(0);
  const core::Bytes key(16, 0x11), iv(16, 0x22);
  auto a = ike::v1::Ikev1Cipher::create(s, key, iv);
  auto b = ike::v1::Ikev1Cipher::create(s, key, iv);
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(ike::v1::Ikev1Cipher::create(s, core::Bytes(15, 0), iv));  // wrong key size
  ike::v1::Header h;
  h.cky_i = 1;
  h.cky_r = 2;
  const std::vector<ike::v1::RawPayload> pl{{ike::v1::Payload::kHash, core::Bytes(20, 0x33)}};
  // Phase 1: a -> b, then b -> a on the chained IV; then a Quick Mode (M-ID 7) and an
  // Informational (M-ID 9), each on its own chain from the last phase-1 block.
  for (std::uint32_t mid : {0u, 0u, 7u, 7u, 9u, 7u}) {
    h.message_id = mid;
    h.exchange = mid == 0 ? ike::v1::Exchange::kMain : mid == 7 ? ike::v1::Exchange::kQuick : ike::v1::Exchange::kInformational;
    auto msg = a->seal(h, pl);
    REQUIRE(msg.size() == ike::v1::kHeaderLen + 32);  // 24 bytes of payload padded to two blocks
    auto plain = b->open(msg, why);
    INFO(why);
    REQUIRE(plain);
    CHECK(core::Bytes(plain->begin() + 4, plain->begin() + 24) == core::Bytes(20, 0x33));
    b->commit(msg);
    std::swap(a, b);  // the other side speaks next
  }
  // A body that is not whole blocks, and a plain message, are refused.
  h.message_id = 0;
  auto msg = a->seal(h, pl);
  msg.resize(msg.size() - 1);
  msg[27] = static_cast<std::uint8_t>(msg.size());  // keep the length field true
  CHECK_FALSE(b->open(msg, why));
  CHECK(why.find("block size") != std::string::npos);
  CHECK_FALSE(b->open(ike::v1::encode_plain(h, pl), why));
}
