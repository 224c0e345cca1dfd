// IKEv1 phase-1 proposals against ike-scan's own transforms: our encoding of
// a suite is byte for byte the transform ike-scan sends for it, its offers
// decode to suites, and a responder picks what its configuration allows.
#include <catch2/catch.hpp>

#include <algorithm>

#include "ike/ikev1_phase2.hpp"
#include "ike/ikev1_proposals.hpp"
#include "test/ike/ike_scan_probes.hpp"
#include "test/vectors.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;

namespace {
v1::SaPayload offered(const char* probe) {
  v1::DecodeError err;
  auto m = v1::decode_plain(test::hex(probe), err);
  REQUIRE(m);
  REQUIRE(m->sa);
  return *m->sa;
}
core::Proposal prop(const char* s) {
  std::string bad;
  auto p = core::parse_proposal(s, bad);
  REQUIRE(p);
  return *p;
}
}  // namespace

TEST_CASE("IKEv1 phase 1: ike-scan's Main Mode transforms decode; DES is refused", "[ike][ikev1][proposals]") {
  const auto sa = offered(test::kMainModeProbe);
  const auto& ts = sa.proposals.at(0).transforms;
  REQUIRE(ts.size() == 8);
  std::vector<std::string> names;
  for (const auto& t : ts) {
    std::string why;
    auto s = v1::decode_phase1(t, why);
    if (!s) {
      CHECK((why.find("DES") != std::string::npos || why.find("group 1") != std::string::npos));
      names.push_back("-");
      continue;
    }
    CHECK(s->auth == v1::AuthMethod::kPsk);
    CHECK(s->life_seconds == 28800);
    names.push_back(s->name());
  }
  // ike-scan's default order: 3DES/SHA1, 3DES/MD5, DES/SHA1, DES/MD5, for group 2 then group 1
  // (group 1, MODP-768, is not spoken here either).
  CHECK(names == std::vector<std::string>{"3des-sha1-modp1024", "3des-md5-modp1024", "-", "-", "-", "-", "-", "-"});
}

TEST_CASE("IKEv1 phase 1: our transform for a suite is ike-scan's, byte for byte", "[ike][ikev1][proposals]") {
  const auto mm = offered(test::kMainModeProbe);
  std::string why;
  auto suites = v1::phase1_suites(prop("3des-sha1-modp1024"), v1::AuthMethod::kPsk, 28800, why);
  REQUIRE(suites.size() == 1);
  CHECK(v1::encode_sa({v1::kDoiIpsec, v1::kSitIdentityOnly, {{1, 1, {}, {v1::encode_phase1(suites[0], 1)}}}}) ==
        v1::encode_sa({v1::kDoiIpsec, v1::kSitIdentityOnly, {{1, 1, {}, {mm.proposals[0].transforms[0]}}}}));
  // With a key length: ike-scan -A --trans=7/256,5,1,14 is aes256-sha384-modp2048.
  const auto am = offered(test::kAggressiveProbe);
  suites = v1::phase1_suites(prop("aes256-sha384-modp2048"), v1::AuthMethod::kPsk, 28800, why);
  REQUIRE(suites.size() == 1);
  // ike-scan puts the key length after the group; attribute order has no meaning, so compare as sets.
  auto ours = v1::encode_phase1(suites[0], 1);
  auto theirs = am.proposals[0].transforms[0];
  auto by_type = [](const v1::Attribute& a, const v1::Attribute& b) { return a.type < b.type; };
  std::sort(ours.attributes.begin(), ours.attributes.end(), by_type);
  std::sort(theirs.attributes.begin(), theirs.attributes.end(), by_type);
  CHECK(ours == theirs);
}

TEST_CASE("IKEv1 phase 1: the responder picks the first offered transform it allows", "[ike][ikev1][proposals]") {
  const auto mm = offered(test::kMainModeProbe);
  std::string why;
  auto c = v1::select_phase1({prop("3des-sha1-modp1024")}, v1::AuthMethod::kPsk, mm, why);
  REQUIRE(c);
  CHECK(c->transform.number == 1);
  CHECK(c->suite.name() == "3des-sha1-modp1024");
  c = v1::select_phase1({prop("aes128-sha256-modp2048"), prop("3des-md5-modp1024")}, v1::AuthMethod::kPsk, mm, why);
  REQUIRE(c);
  CHECK(c->transform.number == 2);
  // Nothing configured matches: none, with the reason.
  CHECK_FALSE(v1::select_phase1({prop("aes128-sha256-modp2048")}, v1::AuthMethod::kPsk, mm, why));
  CHECK(why.find("no acceptable transform") != std::string::npos);
  // Another authentication method than the offered one: none.
  CHECK_FALSE(v1::select_phase1({prop("3des-sha1-modp1024")}, v1::AuthMethod::kRsaSig, mm, why));
  // A configured proposal with alternatives expands to every combination.
  auto all = v1::phase1_suites(prop("aes128-aes256-sha256-sha1-modp2048-ecp256"), v1::AuthMethod::kPsk, 0, why);
  CHECK(all.size() == 8);
  // AEAD has no place in IKEv1 phase 1.
  CHECK(v1::phase1_suites(prop("aes128gcm16-prfsha256-modp2048"), v1::AuthMethod::kPsk, 0, why).empty());
  CHECK(why.find("AES-CBC or 3DES") != std::string::npos);
}

TEST_CASE("IKEv1 phase 2: ESP suites as transforms and back", "[ike][ikev1][proposals]") {
  std::string why;
  for (const char* text : {"aes128-sha256-modp2048", "aes256gcm16", "3des-sha1", "aes192ctr-sha512-ecp256",
                           "aes128-sha1-esn", "null-sha256"}) {
    INFO(text);
    const auto suites = v1::phase2_suites(prop(text), v1::EncapMode::kUdpTunnel, 3600, 500000, why);
    REQUIRE(suites.size() == 1);
    auto back = v1::decode_phase2(v1::encode_phase2(suites[0], 1), why);
    INFO(why);
    REQUIRE(back);
    CHECK(*back == suites[0]);
    CHECK(back->name() == text);
  }
  // Proposal: ESP, our SPI, one transform per suite.
  const auto two = v1::phase2_suites(prop("aes128-aes256-sha256"), v1::EncapMode::kTunnel, 0, 0, why);
  const auto p = v1::esp_proposal(1, 0xc0ffee01, two);
  CHECK(p.protocol == v1::kProtoEsp);
  CHECK(p.spi == core::Bytes{0xc0, 0xff, 0xee, 0x01});
  CHECK(p.transforms.size() == 2);
  // IKEv1 has no number for ChaCha20-Poly1305; an AEAD with an integrity attribute is refused.
  CHECK(v1::phase2_suites(prop("chacha20poly1305"), v1::EncapMode::kTunnel, 0, 0, why).empty());
  auto gcm = v1::encode_phase2(v1::phase2_suites(prop("aes128gcm16"), v1::EncapMode::kTunnel, 0, 0, why).at(0), 1);
  gcm.attributes.push_back({5, true, 2, {}});
  CHECK_FALSE(v1::decode_phase2(gcm, why));
  // No encapsulation mode: refused.
  auto cbc = v1::encode_phase2(v1::phase2_suites(prop("aes128-sha1"), v1::EncapMode::kTunnel, 0, 0, why).at(0), 1);
  cbc.attributes.erase(std::remove_if(cbc.attributes.begin(), cbc.attributes.end(),
                                      [](const v1::Attribute& a) { return a.type == 4; }),
                       cbc.attributes.end());
  CHECK_FALSE(v1::decode_phase2(cbc, why));
  CHECK(why == "no encapsulation mode");
}
