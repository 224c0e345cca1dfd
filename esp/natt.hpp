// UDP encapsulation of ESP and IKE on one port (RFC 3948 2, RFC 7296 2.23).
//
//   0xFF (1 byte)             NAT-keepalive       (RFC 3948 2.3)
//   00 00 00 00 | IKE msg     non-ESP marker      (RFC 3948 2.2)
//   SPI != 0 | seq | ...      ESP                 (RFC 3948 2.1)
#pragma once

#include "core/bytes.hpp"

namespace ipsecgw::esp {

enum class UdpKind : std::uint8_t { kEsp, kIke, kKeepalive, kMalformed };

struct UdpClassified {
  UdpKind kind = UdpKind::kMalformed;
  core::ByteSpan payload;  // ESP packet, or IKE message after the marker
};

UdpClassified classify_udp(core::ByteSpan datagram) noexcept;

inline constexpr std::uint8_t kKeepaliveByte = 0xff;
inline constexpr std::size_t kNonEspMarkerLen = 4;

}  // namespace ipsecgw::esp
