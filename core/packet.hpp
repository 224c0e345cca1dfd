// A packet buffer with headroom and tailroom, so that ESP can be added and
// removed in place: the packet read from TUN is encrypted where it lies, and
// the packet received from the network is decrypted where it lies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "core/bytes.hpp"
#include "core/ip.hpp"

namespace ipsecgw::core {

struct Packet {
  static constexpr std::size_t kHeadroom = 128;  // outer headers + ESP header + IV
  static constexpr std::size_t kMaxData = 9216 + 256;
  static constexpr std::size_t kTailroom = 128;  // padding + trailer + ICV
  static constexpr std::size_t kCapacity = kHeadroom + kMaxData + kTailroom;

  alignas(64) std::array<std::uint8_t, kCapacity> buf;
  std::size_t off = kHeadroom;
  std::size_t len = 0;
  // Where a datagram came from (inbound) or goes to (outbound).
  IpAddress peer;
  std::uint16_t peer_port = 0;

  void reset() noexcept {
    off = kHeadroom;
    len = 0;
    peer_port = 0;
  }
  std::uint8_t* data() noexcept { return buf.data() + off; }
  [[nodiscard]] const std::uint8_t* data() const noexcept { return buf.data() + off; }
  MutByteSpan span() noexcept { return MutByteSpan(data(), len); }
  [[nodiscard]] ByteSpan span() const noexcept { return ByteSpan(data(), len); }
  // Room for receiving into the buffer at the default offset.
  MutByteSpan recv_area() noexcept { return MutByteSpan(buf.data() + kHeadroom, kMaxData); }
  [[nodiscard]] std::size_t headroom() const noexcept { return off; }
  [[nodiscard]] std::size_t tailroom() const noexcept { return kCapacity - off - len; }
  void assign(ByteSpan bytes) noexcept;  // copies at the default offset (truncates)
};

}  // namespace ipsecgw::core
