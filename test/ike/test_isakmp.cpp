// ISAKMP (IKEv1) codec: messages written by a third party (ike-scan 1.9.5,
// Debian's package: a Main Mode probe with its default eight transforms and
// an Aggressive Mode probe with a user-FQDN identity, captured on loopback)
// decode to what ike-scan's own options say, re-encode byte for byte, and
// fail with the RFC 2408 notify at every truncation point.
#include <catch2/catch.hpp>

#include "ike/isakmp.hpp"
#include "test/ike/ike_scan_probes.hpp"
#include "test/vectors.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;
using ipsecgw::test::kAggressiveProbe;
using ipsecgw::test::kMainModeProbe;

namespace {

std::uint64_t attr(const v1::Transform& t, std::uint16_t type) {
  const auto* a = t.find(type);
  REQUIRE(a != nullptr);
  auto n = a->number();
  REQUIRE(n.has_value());
  return *n;
}

}  // namespace

TEST_CASE("ISAKMP: ike-scan's Main Mode probe decodes and re-encodes byte for byte", "[ike][ikev1][isakmp]") {
  const auto msg = test::hex(kMainModeProbe);
  v1::DecodeError err;
  auto m = v1::decode_plain(msg, err);
  INFO(err.detail);
  REQUIRE(m);
  CHECK(m->header.exchange == v1::Exchange::kMain);
  CHECK(m->header.cky_r == 0);
  CHECK(m->header.message_id == 0);
  CHECK(m->header.version == v1::kVersion1);
  REQUIRE(m->sa);
  CHECK(m->sa->doi == v1::kDoiIpsec);
  CHECK(m->sa->situation == v1::kSitIdentityOnly);
  REQUIRE(m->sa->proposals.size() == 1);
  const auto& p = m->sa->proposals[0];
  CHECK(p.protocol == 1);  // PROTO_ISAKMP
  CHECK(p.spi.empty());
  REQUIRE(p.transforms.size() == 8);
  // ike-scan's default: {3DES, DES} x {SHA1, MD5} x {group 2, group 1}, PSK, 28800 s.
  for (std::size_t i = 0; i < 8; ++i) {
    const auto& t = p.transforms[i];
    INFO("transform " << i + 1);
    CHECK(t.number == i + 1);
    CHECK(t.id == 1);  // KEY_IKE
    CHECK(attr(t, 1) == (i % 4 < 2 ? 5u : 1u));   // encryption: 3DES-CBC, DES-CBC
    CHECK(attr(t, 2) == (i % 2 == 0 ? 2u : 1u));  // hash: SHA, MD5
    CHECK(attr(t, 3) == 1);                       // pre-shared key
    CHECK(attr(t, 4) == (i < 4 ? 2u : 1u));       // group 2, group 1
    CHECK(attr(t, 11) == 1);                      // life type: seconds
    CHECK(attr(t, 12) == 28800);                  // a 4-byte TLV
    CHECK_FALSE(t.find(12)->basic);
  }
  // Re-encoded from the typed view: identical bytes.
  std::vector<v1::RawPayload> chain{{v1::Payload::kSa, v1::encode_sa(*m->sa)}};
  CHECK(v1::encode_plain(m->header, chain) == msg);
}

TEST_CASE("ISAKMP: ike-scan's Aggressive Mode probe decodes and re-encodes byte for byte", "[ike][ikev1][isakmp]") {
  const auto msg = test::hex(kAggressiveProbe);
  v1::DecodeError err;
  auto m = v1::decode_plain(msg, err);
  INFO(err.detail);
  REQUIRE(m);
  CHECK(m->header.exchange == v1::Exchange::kAggressive);
  REQUIRE(m->sa);
  REQUIRE(m->sa->proposals.size() == 1);
  REQUIRE(m->sa->proposals[0].transforms.size() == 1);
  const auto& t = m->sa->proposals[0].transforms[0];
  CHECK(attr(t, 1) == 7);    // AES-CBC
  CHECK(attr(t, 14) == 256);  // key length
  CHECK(attr(t, 2) == 5);    // SHA2-384
  CHECK(attr(t, 3) == 1);    // pre-shared key
  CHECK(attr(t, 4) == 14);   // MODP-2048
  CHECK(m->ke.size() == 256);
  CHECK(m->nonce.size() == 20);
  REQUIRE(m->ids.size() == 1);
  CHECK(m->ids[0].type == v1::IdType::kUserFqdn);
  CHECK(m->ids[0].protocol == 17);
  CHECK(m->ids[0].port == 500);
  CHECK(m->ids[0].to_string() == "gw-a.example");
  CHECK(v1::encode_plain(m->header, m->raw) == msg);
  // The typed payloads re-encode to the bodies received.
  CHECK(v1::encode_sa(*m->sa) == m->sa_body);
  CHECK(v1::encode_id(m->ids[0]) == m->id_bodies[0]);
}

TEST_CASE("ISAKMP: every truncation fails with the notify RFC 2408 names", "[ike][ikev1][isakmp][truncation]") {
  for (const char* hex : {kMainModeProbe, kAggressiveProbe}) {
    const auto msg = test::hex(hex);
    for (std::size_t n = 0; n < msg.size(); ++n) {
      INFO("cut at " << n);
      const core::ByteSpan cut(msg.data(), n);
      v1::DecodeError err;
      // Whole message: the header's length no longer matches (or the header is short).
      CHECK_FALSE(v1::decode_plain(cut, err));
      if (n < v1::kHeaderLen) {
        CHECK(err.notify == v1::Notify::kPayloadMalformed);
        continue;
      }
      CHECK(err.notify == v1::Notify::kUnequalPayloadLengths);
      // The chain alone, cut: a payload that runs past its end is malformed.
      std::vector<v1::RawPayload> chain;
      v1::Message m;
      v1::DecodeError e2;
      const bool ok = v1::parse_chain(cut.subspan(v1::kHeaderLen), static_cast<v1::Payload>(msg[16]), chain, e2) &&
                      v1::decode_payloads(chain, m, e2);
      CHECK_FALSE(ok);
      CHECK((e2.notify == v1::Notify::kPayloadMalformed || e2.notify == v1::Notify::kBadProposalSyntax));
    }
  }
}

TEST_CASE("ISAKMP: malformed payloads carry their notify", "[ike][ikev1][isakmp]") {
  v1::DecodeError err;
  // SA with a DOI other than IPsec.
  CHECK_FALSE(v1::decode_sa(test::hex("0000000200000001"), err));
  CHECK(err.notify == v1::Notify::kDoiNotSupported);
  // SA whose proposal announces two transforms but chains one.
  CHECK_FALSE(v1::decode_sa(test::hex("0000000100000001" "00000010" "01010002" "00000008" "01010000"), err));
  CHECK(err.notify == v1::Notify::kBadProposalSyntax);
  // A chain starting with an unknown payload type.
  std::vector<v1::RawPayload> chain;
  CHECK_FALSE(v1::parse_chain(test::hex("00000004"), static_cast<v1::Payload>(99), chain, err));
  CHECK(err.notify == v1::Notify::kInvalidPayloadType);
  // A proposal payload at the top level is not allowed there.
  CHECK_FALSE(v1::parse_chain(test::hex("00000004"), v1::Payload::kProposal, chain, err));
  CHECK(err.notify == v1::Notify::kInvalidPayloadType);
  // IPv4 subnet ID with a non-contiguous mask.
  CHECK_FALSE(v1::decode_id(test::hex("04000000" "0a010000" "ff00ff00"), err));
  CHECK(err.notify == v1::Notify::kInvalidIdInformation);
  // Delete whose SPI count does not match its length.
  CHECK_FALSE(v1::decode_delete(test::hex("00000001" "03" "04" "0002" "01020304"), err));
  CHECK(err.notify == v1::Notify::kPayloadMalformed);
  // Nonce of 4 bytes (RFC 2409 5: 8 to 256).
  v1::Message m;
  CHECK_FALSE(v1::decode_payloads({{v1::Payload::kNonce, {1, 2, 3, 4}}}, m, err));
  // Major version 2 in the header.
  auto msg = test::hex(kMainModeProbe);
  msg[17] = 0x20;
  CHECK_FALSE(v1::parse_header(msg, err));
  CHECK(err.notify == v1::Notify::kInvalidMajorVersion);
}

TEST_CASE("ISAKMP: identities as traffic selectors", "[ike][ikev1][isakmp]") {
  for (const char* text : {"10.1.0.0/24", "10.1.0.7", "10.1.0.1-10.1.0.9", "fd00::/64", "2001:db8::1"}) {
    INFO(text);
    const auto r = *core::IpRange::parse(text);
    const auto id = v1::IdPayload::from_range(r);
    v1::DecodeError err;
    auto back = v1::decode_id(v1::encode_id(id), err);
    REQUIRE(back);
    REQUIRE(back->range());
    CHECK(*back->range() == r);
  }
  CHECK(v1::IdPayload::from_range(*core::IpRange::parse("10.1.0.0/24")).type == v1::IdType::kIpv4Subnet);
  CHECK(v1::IdPayload::from_range(*core::IpRange::parse("10.1.0.1-10.1.0.9")).type == v1::IdType::kIpv4Range);
  // The vendor IDs NAT-T and DPD are recognised.
  CHECK(v1::vendor_name(test::hex("4a131c81070358455c5728f20e95452f")) == "RFC 3947");
  CHECK(v1::vendor_name(test::hex("afcad71368a1f1c96b8696fc77570100")) == "DPD");
}
