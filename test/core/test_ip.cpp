#include <catch2/catch.hpp>

#include "../vectors.hpp"
#include "core/ip.hpp"

using namespace ipsecgw::core;
using ipsecgw::test::hex;

TEST_CASE("addresses and ranges parse", "[core][ip]") {
  auto r = IpRange::parse("10.1.0.0/24");
  REQUIRE(r);
  CHECK(r->contains(*IpAddress::parse("10.1.0.255")));
  CHECK_FALSE(r->contains(*IpAddress::parse("10.1.1.0")));
  CHECK_FALSE(r->contains(*IpAddress::parse("::")));
  CHECK(r->to_string() == "10.1.0.0/24");
  auto r6 = IpRange::parse("fd00::/64");
  REQUIRE(r6);
  CHECK(r6->contains(*IpAddress::parse("fd00::1234")));
  CHECK_FALSE(IpRange::parse("10.0.0.0/33"));
  CHECK_FALSE(IpRange::parse("10.0.0.9-10.0.0.1"));
  CHECK_FALSE(IpRange::parse("10.0.0.1-::1"));
  CHECK_FALSE(IpRange::parse("banana"));
  CHECK_FALSE(IpRange::parse("10.0.0.0/"));
}

TEST_CASE("ranges split into the fewest prefixes", "[core][ip]") {
  auto r = IpRange::parse("10.0.0.1-10.0.0.6");
  REQUIRE(r);
  auto p = r->to_prefixes();
  REQUIRE(p.size() == 4);  // .1/32 .2/31 .4/31 .6/32
  CHECK(p[0].to_string() == "10.0.0.1/32");
  CHECK(p[1].to_string() == "10.0.0.2/31");
  CHECK(p[2].to_string() == "10.0.0.4/31");
  CHECK(p[3].to_string() == "10.0.0.6/32");
  CHECK(IpRange::any(Family::V6).to_prefixes().size() == 1);
  CHECK(IpRange::any(Family::V4).to_prefixes()[0].to_string() == "0.0.0.0/0");
}

TEST_CASE("IPv4 packet parse: ports and every truncation", "[core][ip][truncation]") {
  // UDP 10.1.0.2:1234 -> 10.2.0.2:53, 4 bytes of payload.
  auto pkt = hex("45000020000000004011000a0a0100020a02000204d20035000c0000deadbeef");
  PacketInfo info;
  REQUIRE(parse_ip_packet(pkt, info) == IpParseError::kNone);
  CHECK(info.proto == ipproto::kUdp);
  CHECK(info.has_ports);
  CHECK(info.src_port == 1234);
  CHECK(info.dst_port == 53);
  CHECK(info.total_len == 32);
  for (std::size_t n = 0; n < pkt.size(); ++n) {
    PacketInfo i2;
    CHECK(parse_ip_packet(ByteSpan(pkt.data(), n), i2) != IpParseError::kNone);
  }
  pkt[0] = 0x44;  // IHL 16 bytes
  CHECK(parse_ip_packet(pkt, info) == IpParseError::kBadHeaderLength);
  pkt[0] = 0x55;
  CHECK(parse_ip_packet(pkt, info) == IpParseError::kBadVersion);
}

TEST_CASE("IPv6 packet parse walks extension headers", "[core][ip][truncation]") {
  // fd01::2 -> fd02::2, hop-by-hop (8 bytes) then TCP 40000 -> 443.
  auto pkt = hex(
      "60000000001c0040fd010000000000000000000000000002fd020000000000000000000000000002"
      "0600000000000000"
      "9c4001bb00000000000000005002000000000000");
  PacketInfo info;
  REQUIRE(parse_ip_packet(pkt, info) == IpParseError::kNone);
  CHECK(info.family == Family::V6);
  CHECK(info.proto == ipproto::kTcp);
  CHECK(info.src_port == 40000);
  CHECK(info.dst_port == 443);
  for (std::size_t n = 0; n < pkt.size(); ++n) {
    PacketInfo i2;
    CHECK(parse_ip_packet(ByteSpan(pkt.data(), n), i2) != IpParseError::kNone);
  }
}

TEST_CASE("protocol names", "[core][ip]") {
  CHECK(parse_ip_protocol("udp") == ipproto::kUdp);
  CHECK(parse_ip_protocol("47") == 47);
  CHECK_FALSE(parse_ip_protocol("256"));
  CHECK_FALSE(parse_ip_protocol("bogus"));
  CHECK(ip_protocol_name(6) == "tcp");
}
