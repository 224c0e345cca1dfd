// Known-answer tests of the crypto layer against third-party vectors:
// Wycheproof (AEAD, AES-CBC, HMAC), RFC 4868, RFC 2202, RFC 3686.
#include <catch2/catch.hpp>

#include <map>

#include "../vectors.hpp"
#include "core/crypto.hpp"

using namespace ipsecgw::core;
using ipsecgw::test::hex;
using ipsecgw::test::load_vectors;

namespace {

// Runs a Wycheproof AEAD file through core::Aead, for the cases ESP can
// express: 12-byte nonce (4-byte salt + 8-byte IV) and 16-byte tag. Returns
// the cases run, by key size and result ("128 valid": n). Every key size
// in those groups is one ESP uses, so every case must run.
std::map<std::string, int> run_aead_file(const std::string& file, EncAlg alg) {
  auto doc = load_vectors("wycheproof/" + file);
  std::map<std::string, int> run;
  for (const auto& g : doc["testGroups"]) {
    if (g["ivSize"] != 96 || g["tagSize"] != 128) continue;
    for (const auto& t : g["tests"]) {
      auto key = hex(t["key"]), iv = hex(t["iv"]), aad = hex(t["aad"]);
      auto msg = hex(t["msg"]), ct = hex(t["ct"]), tag = hex(t["tag"]);
      ByteSpan salt(iv.data(), 4), iv8(iv.data() + 4, 8);
      INFO(file << " tcId " << t["tcId"] << ", " << key.size() * 8 << "-bit key");
      auto opener = Aead::create(alg, key, salt, CipherDir::kDecrypt);
      REQUIRE(opener);
      ++run[std::to_string(key.size() * 8) + " " + t["result"].get<std::string>()];
      auto buf = ct;
      bool ok = opener->open(iv8, aad, buf, tag);
      if (t["result"] == "invalid") {
        CHECK_FALSE(ok);
        continue;
      }
      REQUIRE(ok);
      CHECK(buf == msg);
      auto sealer = Aead::create(alg, key, salt, CipherDir::kEncrypt);
      REQUIRE(sealer);
      auto out = msg;
      Bytes out_tag(16);
      REQUIRE(sealer->seal(iv8, aad, out, out_tag));
      CHECK(out == ct);
      CHECK(out_tag == tag);
    }
  }
  return run;
}

}  // namespace

// Expected counts computed from the files with python3: the groups with
// ivSize 96 and tagSize 128, tests counted by keySize and result.
TEST_CASE("Wycheproof AES-GCM through Aead: 128-, 192- and 256-bit keys", "[core][crypto][vectors]") {
  const std::map<std::string, int> want{{"128 valid", 40}, {"128 invalid", 27}, {"192 valid", 37},
                                        {"192 invalid", 27}, {"256 valid", 39}, {"256 invalid", 27}};
  CHECK(run_aead_file("aes_gcm_test.json", EncAlg::kAesGcm16) == want);
}

TEST_CASE("Wycheproof ChaCha20-Poly1305 through Aead", "[core][crypto][vectors]") {
  const std::map<std::string, int> want{{"256 valid", 256}, {"256 invalid", 60}};
  CHECK(run_aead_file("chacha20_poly1305_test.json", EncAlg::kChaCha20Poly1305) == want);
}

TEST_CASE("Wycheproof AES-CBC (raw CBC of the valid cases) through Cipher", "[core][crypto][vectors]") {
  auto doc = load_vectors("wycheproof/aes_cbc_pkcs5_test.json");
  std::map<std::size_t, int> run;  // by key size
  for (const auto& g : doc["testGroups"]) {
    for (const auto& t : g["tests"]) {
      if (t["result"] != "valid") continue;
      auto key = hex(t["key"]), iv = hex(t["iv"]), msg = hex(t["msg"]), ct = hex(t["ct"]);
      INFO("tcId " << t["tcId"]);
      // ESP pads itself; apply PKCS#5 padding here to reproduce the file's ct.
      auto padded = msg;
      const std::size_t pad = 16 - msg.size() % 16;
      padded.insert(padded.end(), pad, static_cast<std::uint8_t>(pad));
      auto enc = Cipher::create(EncAlg::kAesCbc, key, {}, CipherDir::kEncrypt);
      auto dec = Cipher::create(EncAlg::kAesCbc, key, {}, CipherDir::kDecrypt);
      REQUIRE(enc);
      REQUIRE(dec);
      auto buf = padded;
      REQUIRE(enc->run(iv, buf));
      CHECK(buf == ct);
      REQUIRE(dec->run(iv, buf));
      CHECK(buf == padded);
      ++run[key.size() * 8];
    }
  }
  // The file's valid cases, counted with python3 by keySize.
  CHECK(run == std::map<std::size_t, int>{{128, 24}, {192, 24}, {256, 24}});
}

TEST_CASE("Wycheproof HMAC-SHA1/256/384/512 through Hmac", "[core][crypto][vectors]") {
  const std::pair<const char*, const char*> files[] = {{"hmac_sha1_test.json", "SHA1"},
                                                       {"hmac_sha256_test.json", "SHA256"},
                                                       {"hmac_sha384_test.json", "SHA384"},
                                                       {"hmac_sha512_test.json", "SHA512"}};
  // The files' test counts (python3: sum of len(tests) over testGroups).
  const std::map<std::string, int> want{{"hmac_sha1_test.json", 170}, {"hmac_sha256_test.json", 174},
                                        {"hmac_sha384_test.json", 174}, {"hmac_sha512_test.json", 174}};
  for (const auto& [file, digest] : files) {
    auto doc = load_vectors(std::string("wycheproof/") + file);
    int run = 0;
    for (const auto& g : doc["testGroups"]) {
      const std::size_t tag_len = g["tagSize"].get<std::size_t>() / 8;
      for (const auto& t : g["tests"]) {
        auto key = hex(t["key"]), msg = hex(t["msg"]), tag = hex(t["tag"]);
        INFO(file << " tcId " << t["tcId"]);
        auto h = Hmac::create(digest, key);
        REQUIRE(h);
        Bytes out(tag_len);
        REQUIRE(h->begin());
        REQUIRE(h->update(msg));
        REQUIRE(h->finish(out));
        const bool match = ct_equal(out, tag) && tag.size() == tag_len;
        CHECK(match == (t["result"] == "valid"));
        ++run;
      }
    }
    CHECK(run == want.at(file));
  }
}

TEST_CASE("Wycheproof AES-GMAC through GmacMac (96-bit nonces: salt || IV as IPsec uses them)", "[core][crypto][vectors][gmac]") {
  auto doc = load_vectors("wycheproof/aes_gmac_test.json");
  int run = 0, valid = 0;
  for (const auto& g : doc["testGroups"]) {
    if (g["ivSize"].get<int>() != 96) continue;  // RFC 4543 nonces are 12 bytes
    for (const auto& t : g["tests"]) {
      auto key = hex(t["key"]), iv = hex(t["iv"]), msg = hex(t["msg"]), tag = hex(t["tag"]);
      INFO("tcId " << t["tcId"]);
      // The key material as IPsec keys it: the key, then the nonce's first 4 bytes as salt.
      Bytes keymat = key;
      keymat.insert(keymat.end(), iv.begin(), iv.begin() + 4);
      auto m = GmacMac::create(keymat);
      REQUIRE(m);
      Bytes out(16), out2(16);
      REQUIRE(m->one_shot(iv, msg, out));
      // The IPsec way: set_iv with the last 8 bytes, the message in two pieces.
      m->set_iv(ByteSpan(iv).subspan(4));
      REQUIRE(m->begin());
      REQUIRE(m->update(ByteSpan(msg).first(msg.size() / 2)));
      REQUIRE(m->update(ByteSpan(msg).subspan(msg.size() / 2)));
      REQUIRE(m->finish(out2));
      CHECK(out == out2);
      const bool match = tag.size() == 16 && ct_equal(out, tag);
      CHECK(match == (t["result"] == "valid"));
      valid += t["result"] == "valid";
      ++run;
    }
  }
  CHECK(run == 207);  // python3: the tests of the three 96-bit-IV groups
  CHECK(valid > 40);
}

TEST_CASE("RFC 4868 and RFC 2202 HMAC vectors, truncated as ESP uses them", "[core][crypto][vectors]") {
  const std::map<std::string, int> want{{"rfc/rfc4868_hmac_sha2_ipsec.json", 42}, {"rfc/rfc2202_hmac_md5_sha1.json", 14}};
  for (const char* f : {"rfc/rfc4868_hmac_sha2_ipsec.json", "rfc/rfc2202_hmac_md5_sha1.json"}) {
    auto doc = load_vectors(f);
    int run = 0;
    for (const auto& v : doc["vectors"]) {
      std::string alg = v.value("hash", v.value("algorithm", ""));
      const char* digest = alg.find("512") != std::string::npos   ? "SHA512"
                           : alg.find("384") != std::string::npos ? "SHA384"
                           : alg.find("256") != std::string::npos ? "SHA256"
                           : alg.find("MD5") != std::string::npos ? "MD5"
                                                                  : "SHA1";
      auto expected = hex(v.value("mac", v.value("digest", "")));
      auto h = Hmac::create(digest, hex(v["key"]));
      REQUIRE(h);
      Bytes out(expected.size());
      REQUIRE(h->begin());
      REQUIRE(h->update(hex(v["data"])));
      REQUIRE(h->finish(out));
      INFO(f << " " << v.value("case", std::string()) << " " << alg);
      CHECK(out == expected);
      // Reusing the prepared context gives the same answer.
      Bytes again(expected.size());
      REQUIRE(h->begin());
      REQUIRE(h->update(hex(v["data"])));
      REQUIRE(h->finish(again));
      CHECK(again == expected);
      ++run;
    }
    CHECK(run == want.at(f));
  }
}

TEST_CASE("RFC 3566 AES-XCBC-MAC-96 vectors through XcbcMac, whole and in pieces", "[core][crypto][vectors][xcbc]") {
  auto doc = load_vectors("rfc/rfc3566_rfc4434_aes_xcbc.json");
  int run = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["algorithm"] != "AUTH_AES_XCBC_96") continue;  // the PRF cases take other key lengths (IKE)
    const auto key = hex(v["key"]);
    const std::string m = v["message"];
    // Case #7 is 1000 zero bytes, written out in the file as such.
    const Bytes msg = hex(m);
    const auto full = hex(v["mac"]);
    auto x = XcbcMac::create(key);
    REQUIRE(x);
    INFO(v["case"].get<std::string>());
    Bytes out(16);
    REQUIRE(x->begin());
    REQUIRE(x->update(msg));
    REQUIRE(x->finish(out));
    CHECK(out == full);
    // In pieces of 1, 5 and 16 bytes: the same MAC; truncated to 96 bits as AH sends it.
    for (std::size_t piece : {1u, 5u, 16u}) {
      REQUIRE(x->begin());
      for (std::size_t i = 0; i < msg.size(); i += piece)
        REQUIRE(x->update(ByteSpan(msg).subspan(i, std::min(piece, msg.size() - i))));
      Bytes out96(12);
      REQUIRE(x->finish(out96));
      CHECK(out96 == hex(v["mac_96"]));
    }
    ++run;
  }
  CHECK(run == 7);
  CHECK_FALSE(XcbcMac::create(Bytes(15, 1)));
  auto via = Mac::create(IntegAlg::kAesXcbc96, Bytes(16, 2));
  CHECK(via);
}

TEST_CASE("RFC 3686 AES-CTR ESP vectors through Cipher", "[core][crypto][vectors]") {
  auto doc = load_vectors("rfc/rfc3686_aes_ctr_esp.json");
  int run = 0;
  for (const auto& v : doc["vectors"]) {
    if (!v.contains("plaintext") || !v.contains("ciphertext")) continue;
    auto c = Cipher::create(EncAlg::kAesCtr, hex(v["key"]), hex(v["nonce"]), CipherDir::kEncrypt);
    REQUIRE(c);
    auto buf = hex(v["plaintext"]);
    REQUIRE(c->run(hex(v["iv"]), buf));
    CHECK(buf == hex(v["ciphertext"]));
    ++run;
  }
  CHECK(run == 9);  // all nine of RFC 3686 section 6
}
