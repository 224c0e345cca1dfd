#include <catch2/catch.hpp>

#include "core/spd.hpp"

using namespace ipsecgw::core;

namespace {
PacketInfo udp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport) {
  PacketInfo p;
  p.src = *IpAddress::parse(src);
  p.dst = *IpAddress::parse(dst);
  p.family = p.src.family();
  p.proto = ipproto::kUdp;
  p.has_ports = true;
  p.src_port = sport;
  p.dst_port = dport;
  return p;
}
Selectors sel(const char* l, const char* r) {
  Selectors s;
  s.local.push_back(*IpRange::parse(l));
  s.remote.push_back(*IpRange::parse(r));
  return s;
}
}  // namespace

TEST_CASE("SPD: first match wins, bypass before protect, default deny", "[core][spd]") {
  Spd spd;
  Policy dns;
  dns.sel = sel("10.1.0.0/24", "10.2.0.53/32");
  dns.sel.proto = ipproto::kUdp;
  dns.sel.remote_ports = {53, 53};
  dns.action = PolicyAction::kBypass;
  spd.add(dns);
  Policy lan;
  lan.sel = sel("10.1.0.0/24", "10.2.0.0/24");
  lan.action = PolicyAction::kProtect;
  lan.sa_index = 0;
  spd.add(lan);

  auto* p = spd.lookup_outbound(udp("10.1.0.2", 5000, "10.2.0.53", 53));
  REQUIRE(p);
  CHECK(p->action == PolicyAction::kBypass);
  p = spd.lookup_outbound(udp("10.1.0.2", 5000, "10.2.0.53", 54));
  REQUIRE(p);
  CHECK(p->action == PolicyAction::kProtect);
  CHECK(spd.lookup_outbound(udp("10.9.0.2", 5000, "10.2.0.53", 53)) == nullptr);
  CHECK(spd.lookup_outbound(udp("10.1.0.2", 5000, "10.3.0.1", 53)) == nullptr);
}

TEST_CASE("Selectors: inbound check is the mirror image", "[core][spd]") {
  auto s = sel("10.1.0.0/24", "10.2.0.0/24");
  s.proto = ipproto::kUdp;
  s.remote_ports = {53, 53};
  CHECK(s.matches_outbound(udp("10.1.0.5", 999, "10.2.0.1", 53)));
  CHECK(s.matches_inbound(udp("10.2.0.1", 53, "10.1.0.5", 999)));
  CHECK_FALSE(s.matches_inbound(udp("10.2.0.1", 54, "10.1.0.5", 999)));
  CHECK_FALSE(s.matches_inbound(udp("10.1.0.5", 999, "10.2.0.1", 53)));
  auto frag = udp("10.1.0.5", 0, "10.2.0.1", 0);
  frag.has_ports = false;  // non-first fragment: OPAQUE ports never match a port selector
  CHECK_FALSE(s.matches_outbound(frag));
}
