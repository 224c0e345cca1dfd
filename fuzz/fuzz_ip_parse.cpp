// libFuzzer target: IPv4/IPv6 header parsing and the SPD lookup that reads
// every packet coming out of the TUN device.
#include <cstdint>

#include "core/ip.hpp"
#include "core/policy_index.hpp"

using namespace ipsecgw;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static core::Spd spd = [] {
    core::Spd s;
    core::Policy p;
    p.sel.local = {*core::IpRange::parse("10.1.0.0/24"), *core::IpRange::parse("fd01::/64")};
    p.sel.remote = {*core::IpRange::parse("10.2.0.0/24"), *core::IpRange::parse("fd02::/64")};
    p.sel.proto = core::ipproto::kUdp;
    p.sel.remote_ports = {53, 53};
    s.add(p);
    return s;
  }();
  core::PacketInfo info;
  if (core::parse_ip_packet(core::ByteSpan(data, size), info) == core::IpParseError::kNone) {
    if (info.total_len > size) __builtin_trap();
    (void)spd.lookup_outbound(info);
  }
  return 0;
}
