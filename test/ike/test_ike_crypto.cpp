// IKEv2 key derivation against the NIST CAVS SP 800-135 IKEv2 KDF vectors,
// and Diffie-Hellman against RFC 5903 (ECP), RFC 7748 / RFC 8031 (X25519,
// X448) and Wycheproof (P-256 ECDH), plus SK payload round trips.
#include <fstream>
#include <map>

#include "ike/ike_crypto.hpp"
#include "test/cavs.hpp"
#include "test/vectors.hpp"

using namespace ipsecgw;
using ipsecgw::test::hex;

namespace {
core::PrfAlg prf_of(const std::string& sha) {
  if (sha == "SHA-1") return core::PrfAlg::kHmacSha1;
  if (sha == "SHA-256") return core::PrfAlg::kHmacSha256;
  if (sha == "SHA-384") return core::PrfAlg::kHmacSha384;
  REQUIRE(sha == "SHA-512");
  return core::PrfAlg::kHmacSha512;
}
std::uint64_t u64(const core::Bytes& b) {
  std::uint64_t v = 0;
  for (auto c : b) v = v << 8 | c;
  return v;
}
}  // namespace

TEST_CASE("IKEv2 KDF: NIST CAVS SP 800-135 vectors", "[ike][kdf][vectors]") {
  std::map<std::string, int> per_hash;
  const auto n = test::for_each_cavs(test::vector_path("nist_cavp_kdf135/ikev2.fax"), [&](const test::CavsRecord& r) {
    auto v = r.fields;
    const auto prf = prf_of(r.section.at("SHA"));
    const std::size_t dkm_bits = std::stoul(r.section.at("DKM length"));
    const std::size_t child_bits = std::stoul(r.section.at("Child SA DKM length"));
    const auto ni = hex(v["Ni"]), nr = hex(v["Nr"]), gir = hex(v["g^ir"]),
               gir_new = hex(v["g^ir (new)"]);
    core::Bytes nonces = ni;
    nonces.insert(nonces.end(), nr.begin(), nr.end());
    const auto skeyseed = ike::prf(prf, nonces, gir);
    CHECK(core::to_hex(skeyseed) == v["SKEYSEED"]);
    core::Bytes seed = nonces;
    core::ByteAppender a{seed};
    a.u64(u64(hex(v["SPIi"])));
    a.u64(u64(hex(v["SPIr"])));
    const auto dkm = ike::prf_plus(prf, skeyseed, seed, dkm_bits / 8);
    CHECK(core::to_hex(dkm.span()) == v["DKM"]);
    const auto sk_d = dkm.first(ike::prf_len(prf));
    CHECK(core::to_hex(ike::prf_plus(prf, sk_d, nonces, child_bits / 8).span()) ==
          v["DKM(Child SA)"]);
    core::Bytes pfs = gir_new;
    pfs.insert(pfs.end(), nonces.begin(), nonces.end());
    CHECK(core::to_hex(ike::prf_plus(prf, sk_d, pfs, child_bits / 8).span()) ==
          v["DKM(Child SA D-H)"]);
    CHECK(core::to_hex(ike::prf(prf, sk_d, pfs)) == v["SKEYSEED(Rekey)"]);
    ++per_hash[r.section.at("SHA")];
  });
  // Counted with: awk '/^\[SHA/{h=$0} /^COUNT/{c[h]++} END{for(k in c) print k, c[k]}' ikev2.fax
  CHECK(n == 900);
  const std::map<std::string, int> want{{"SHA-1", 300}, {"SHA-256", 200}, {"SHA-384", 200}, {"SHA-512", 200}};
  CHECK(per_hash == want);
}

TEST_CASE("ECP groups 19-21: RFC 5903 section 8", "[ike][dh][vectors]") {
  auto j = test::load_vectors("rfc/rfc5903_ecp_groups_ikev2.json");
  int n = 0;
  for (const auto& v : j["vectors"]) {
    const auto g = static_cast<core::DhGroup>(v["dh_group"].get<int>());
    std::string why;
    auto ki = ike::DhKey::from_private(g, hex(v["i"]), why);
    REQUIRE(ki);
    auto gr = hex(v["grx"]);
    auto gry = hex(v["gry"]);
    gr.insert(gr.end(), gry.begin(), gry.end());
    auto s = ki->shared_secret(gr, why);
    INFO(why);
    REQUIRE(s);
    CHECK(core::to_hex(s->span()) == v["girx"].get<std::string>());
    ++n;
  }
  CHECK(n == 3);
}

TEST_CASE("X25519 and X448: RFC 7748 and RFC 8031", "[ike][dh][vectors]") {
  auto j = test::load_vectors("rfc/rfc7748_x25519_x448.json");
  int n = 0;
  for (const auto& v : j["vectors"]) {
    if (v["type"] != "function") continue;
    const auto g = v["function"] == "X25519" ? core::DhGroup::kCurve25519 : core::DhGroup::kCurve448;
    std::string why;
    auto k = ike::DhKey::from_private(g, hex(v["scalar"]), why);
    REQUIRE(k);
    auto s = k->shared_secret(hex(v["u"]), why);
    REQUIRE(s);
    CHECK(core::to_hex(s->span()) == v["output"].get<std::string>());
    ++n;
  }
  CHECK(n >= 2);
  auto j2 = test::load_vectors("rfc/rfc8031_curve25519_ikev2.json");
  for (const auto& v : j2["vectors"]) {
    std::string why;
    auto ki = ike::DhKey::from_private(core::DhGroup::kCurve25519, hex(v["random_i"]), why);
    REQUIRE(ki);
    CHECK(core::to_hex(ki->public_value()) == v["pub_i"].get<std::string>());
    auto s = ki->shared_secret(hex(v["pub_r"]), why);
    REQUIRE(s);
    CHECK(core::to_hex(s->span()) == v["shared_secret"].get<std::string>());
  }
}

TEST_CASE("ECDH P-256: Wycheproof, invalid points refused", "[ike][dh][vectors]") {
  auto j = test::load_vectors("wycheproof/ecdh_secp256r1_ecpoint_test.json");
  int valid = 0, refused = 0;
  for (const auto& grp : j["testGroups"]) {
    for (const auto& t : grp["tests"]) {
      auto pub = hex(t["public"]);
      if (pub.empty() || pub[0] != 0x04) continue;  // IKE carries x || y only
      pub.erase(pub.begin());
      auto priv = hex(t["private"]);
      while (priv.size() > 32 && priv[0] == 0) priv.erase(priv.begin());
      if (priv.size() > 32) continue;
      std::string why;
      auto k = ike::DhKey::from_private(core::DhGroup::kEcp256, priv, why);
      REQUIRE(k);
      auto s = k->shared_secret(pub, why);
      INFO("tcId " << t["tcId"] << " " << t["comment"]);
      if (t["result"] == "valid") {
        REQUIRE(s);
        CHECK(core::to_hex(s->span()) == t["shared"].get<std::string>());
        ++valid;
      } else if (t["result"] == "invalid") {
        CHECK_FALSE(s);
        ++refused;
      }
    }
  }
  CHECK(valid > 10);
  CHECK(refused > 10);
}

TEST_CASE("DH: every group agrees with itself, bad sizes refused", "[ike][dh]") {
  for (auto g : {core::DhGroup::kModp1024, core::DhGroup::kModp1536, core::DhGroup::kModp2048,
                 core::DhGroup::kModp3072, core::DhGroup::kEcp256, core::DhGroup::kEcp384,
                 core::DhGroup::kEcp521, core::DhGroup::kCurve25519, core::DhGroup::kCurve448}) {
    std::string why;
    auto a = ike::DhKey::generate(g, why);
    auto b = ike::DhKey::generate(g, why);
    INFO("group " << static_cast<int>(g) << " " << why);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->public_value().size() == ike::dh_public_len(g));
    auto s1 = a->shared_secret(b->public_value(), why);
    auto s2 = b->shared_secret(a->public_value(), why);
    REQUIRE(s1);
    REQUIRE(s2);
    CHECK(s1->span().size() == s2->span().size());
    CHECK(core::ct_equal(s1->span(), s2->span()));
    auto shortv = a->public_value();
    shortv.pop_back();
    CHECK_FALSE(a->shared_secret(shortv, why));
    core::Bytes zeros(ike::dh_public_len(g), 0);
    CHECK_FALSE(a->shared_secret(zeros, why));
  }
}

TEST_CASE("SK payload: RFC 7634 appendix B, ChaCha20-Poly1305 in IKEv2, byte for byte", "[ike][sk][vectors]") {
  const auto doc = test::load_vectors("rfc/rfc7634_chacha20_poly1305_esp_ikev2.json");
  const nlohmann::json* vp = nullptr;
  for (const auto& v : doc["vectors"])
    if (v["section"] == "Appendix B") vp = &v;
  REQUIRE(vp);
  const auto& v = *vp;
  std::string why;
  auto et = core::single_esp_transform("chacha20poly1305", why);
  REQUIRE(et);
  ike::IkeTransform t;
  t.enc = et->enc;
  t.integ = et->integ;
  core::Bytes ek = hex(v["key"]);
  const auto salt = hex(v["salt"]);
  ek.insert(ek.end(), salt.begin(), salt.end());
  auto enc = ike::SkCipher::create(t, ek, {}, core::CipherDir::kEncrypt);
  auto dec = ike::SkCipher::create(t, ek, {}, core::CipherDir::kDecrypt);
  REQUIRE(enc);
  REQUIRE(dec);
  // The RFC's message: INFORMATIONAL request 9, flags 0, one SET_WINDOW_SIZE notify.
  ike::Header h;
  h.spi_i = u64(hex(v["spi_i"]));
  h.spi_r = u64(hex(v["spi_r"]));
  h.exchange = ike::Exchange::kInformational;
  h.flags = 0;
  h.message_id = v["message_id"].get<std::uint32_t>();
  std::vector<ike::Payload> inner;
  inner.push_back({ike::PayloadType::kNotify, false, ike::encode_notify({{}, {}, 16385, {0, 0, 0, 10}}), {}});
  CHECK(core::to_hex(ike::encode_chain(inner)) == v["notify_payload"].get<std::string>());
  enc->set_next_iv(u64(hex(v["iv"])));
  const auto msg = enc->seal(h, inner);
  CHECK(core::to_hex(msg) == v["ike_message"].get<std::string>());
  // And the RFC's bytes open to the notify.
  const auto rfc = hex(v["ike_message"]);
  auto plain = dec->open(rfc, ike::kHeaderLen + ike::kGenericHeaderLen, why);
  INFO(why);
  REQUIRE(plain);
  CHECK(core::to_hex(*plain) == v["notify_payload"].get<std::string>());
  // One flipped bit anywhere in the RFC's message (header included, as AAD) fails.
  for (std::size_t i = 0; i < rfc.size(); i += 5) {
    auto bad = rfc;
    bad[i] ^= 0x01;
    CHECK_FALSE(dec->open(bad, ike::kHeaderLen + ike::kGenericHeaderLen, why));
  }
}

TEST_CASE("SK payload: seal/open round trip, tamper and truncation", "[ike][sk]") {
  for (const char* name : {"aes256gcm16", "chacha20poly1305", "aes128-sha256", "aes256-sha512",
                           "aes128gcm16"}) {
    std::string why;
    auto et = core::single_esp_transform(name, why);
    REQUIRE(et);
    ike::IkeTransform t;
    t.enc = et->enc;
    t.integ = et->integ;
    core::Bytes ek(t.enc.key_bytes + core::salt_len(t.enc.alg), 0x42);
    core::Bytes ak(core::integ_key_len(t.integ), 0x17);
    auto enc = ike::SkCipher::create(t, ek, ak, core::CipherDir::kEncrypt);
    auto dec = ike::SkCipher::create(t, ek, ak, core::CipherDir::kDecrypt);
    REQUIRE(enc);
    REQUIRE(dec);
    ike::Header h;
    h.spi_i = 1;
    h.spi_r = 2;
    h.exchange = ike::Exchange::kInformational;
    std::vector<ike::Payload> inner;
    inner.push_back({ike::PayloadType::kNotify, false, ike::encode_notify({{}, {}, 16384, {1, 2, 3}}), {}});
    auto msg = enc->seal(h, inner);
    REQUIRE(msg.size() > ike::kHeaderLen);
    std::string err;
    auto hdr = ike::parse_header(msg, err);
    REQUIRE(hdr);
    auto plain = dec->open(msg, ike::kHeaderLen + 4, err);
    INFO(name << ": " << err);
    REQUIRE(plain);
    std::vector<ike::Payload> out;
    REQUIRE(ike::parse_chain(*plain, ike::PayloadType::kNotify, out, err));
    REQUIRE(out.size() == 1);
    CHECK(out[0].body == inner[0].body);
    for (std::size_t i = 0; i < msg.size(); i += 7) {
      auto bad = msg;
      bad[i] ^= 1;
      CHECK_FALSE(dec->open(bad, ike::kHeaderLen + 4, err));
    }
    for (std::size_t n = 0; n < msg.size(); ++n) {
      core::ByteSpan cut(msg.data(), n);
      CHECK_FALSE(dec->open(cut, ike::kHeaderLen + 4, err));
    }
  }
}
