// IP addresses, ranges and prefixes, and read-only views of IPv4/IPv6 headers.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/bytes.hpp"

namespace ipsecgw::core {

enum class Family : std::uint8_t { V4 = 4, V6 = 6 };

// An IPv4 or IPv6 address. IPv4 occupies the first 4 bytes; the rest are zero.
class IpAddress {
 public:
  IpAddress() = default;
  static IpAddress v4(ByteSpan four) noexcept;
  static IpAddress v6(ByteSpan sixteen) noexcept;
  static std::optional<IpAddress> parse(std::string_view text);

  [[nodiscard]] Family family() const noexcept { return family_; }
  [[nodiscard]] bool is_v4() const noexcept { return family_ == Family::V4; }
  [[nodiscard]] std::size_t size() const noexcept { return is_v4() ? 4 : 16; }
  [[nodiscard]] ByteSpan bytes() const noexcept { return ByteSpan(bytes_.data(), size()); }
  [[nodiscard]] std::string to_string() const;

  // Addresses order by family, then numerically.
  auto operator<=>(const IpAddress&) const = default;

 private:
  Family family_ = Family::V4;
  std::array<std::uint8_t, 16> bytes_{};
};

struct Prefix {
  IpAddress addr;
  unsigned len = 0;
  [[nodiscard]] std::string to_string() const;
};

// A route into the TUN device; `src` is the source address the kernel gives
// packets it sends there (transport-mode SAs: the SA's local address).
struct Route {
  Prefix dst;
  std::optional<IpAddress> src;
  bool operator==(const Route& o) const noexcept {
    return dst.addr == o.dst.addr && dst.len == o.dst.len && src == o.src;
  }
};

// An inclusive range of addresses of one family; a prefix is a special case.
struct IpRange {
  IpAddress lo;
  IpAddress hi;

  // "10.0.0.0/24", "10.0.0.1", "10.0.0.1-10.0.0.9", "fd00::/64".
  static std::optional<IpRange> parse(std::string_view text);
  static IpRange from_prefix(const IpAddress& addr, unsigned len);
  static IpRange any(Family f);
  [[nodiscard]] Family family() const noexcept { return lo.family(); }
  [[nodiscard]] bool contains(const IpAddress& a) const noexcept {
    return a.family() == lo.family() && lo <= a && a <= hi;
  }
  // The smallest set of prefixes that covers exactly this range (for routes).
  [[nodiscard]] std::vector<Prefix> to_prefixes() const;
  [[nodiscard]] std::string to_string() const;
  bool operator==(const IpRange&) const = default;
};

struct PortRange {
  std::uint16_t lo = 0;
  std::uint16_t hi = 65535;
  [[nodiscard]] bool any() const noexcept { return lo == 0 && hi == 65535; }
  [[nodiscard]] bool contains(std::uint16_t p) const noexcept { return lo <= p && p <= hi; }
  [[nodiscard]] std::string to_string() const;
  bool operator==(const PortRange&) const = default;
};

namespace ipproto {
inline constexpr std::uint8_t kIcmp = 1;
inline constexpr std::uint8_t kIpIp = 4;
inline constexpr std::uint8_t kTcp = 6;
inline constexpr std::uint8_t kUdp = 17;
inline constexpr std::uint8_t kIpv6 = 41;
inline constexpr std::uint8_t kEsp = 50;
inline constexpr std::uint8_t kAh = 51;
inline constexpr std::uint8_t kIcmpv6 = 58;
inline constexpr std::uint8_t kNoNext = 59;
inline constexpr std::uint8_t kSctp = 132;
inline constexpr std::uint8_t kUdpLite = 136;
}  // namespace ipproto

std::optional<std::uint8_t> parse_ip_protocol(std::string_view name);
std::string ip_protocol_name(std::uint8_t proto);

enum class IpParseError : std::uint8_t {
  kNone,
  kTruncated,
  kBadVersion,
  kBadHeaderLength,
  kBadTotalLength,
  kTooManyExtensions,
};
const char* to_string(IpParseError e) noexcept;

// What the SPD needs to know about a packet. Ports are valid only when
// has_ports; a non-first fragment has none (RFC 4301 4.4.1.3, OPAQUE).
struct PacketInfo {
  Family family = Family::V4;
  IpAddress src;
  IpAddress dst;
  std::uint8_t proto = 0;  // upper-layer protocol after extension headers
  bool has_ports = false;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  std::size_t total_len = 0;  // from the header; <= the buffer's size
  std::size_t l4_off = 0;     // where the upper-layer header starts (after extension headers)
  bool fragment = false;      // any fragment, the first one too
};

// Validates the IP header(s) of `packet` and fills `info`. Never reads past
// the span; a total length larger than the span is an error, a smaller one
// is allowed (trailing bytes, e.g. TFC padding, are not part of the packet).
IpParseError parse_ip_packet(ByteSpan packet, PacketInfo& info) noexcept;

// The IPv4 header checksum (RFC 791) of `hdr`, whose checksum field is
// taken as zero.
std::uint16_t ipv4_header_checksum(ByteSpan hdr) noexcept;

// Recomputes the TCP, UDP or ICMPv6 checksum of a whole IP packet without
// extension headers (`l4_off` 20 or 40) for the addresses now in its
// header; an IPv4 UDP checksum of 0 (none) stays 0. False when the
// protocol has no such checksum or the packet is too short for it.
bool recompute_l4_checksum(MutByteSpan packet, std::size_t l4_off) noexcept;

// Writes an IP header (20 bytes IPv4 with its checksum, or 40 bytes IPv6)
// for `payload_len` bytes of protocol `proto` from `src` to `dst`; returns
// its length. `out` must have room for it.
struct IpHeaderFields {
  std::uint8_t tos = 0;  // IPv4 TOS / IPv6 traffic class
  std::uint16_t id = 0;  // IPv4 only
  bool df = false;       // IPv4 only
  std::uint8_t ttl = 64;
};
std::size_t write_ip_header(std::uint8_t* out, const IpAddress& src, const IpAddress& dst, std::uint8_t proto,
                            std::size_t payload_len, const IpHeaderFields& f = {}) noexcept;

}  // namespace ipsecgw::core
