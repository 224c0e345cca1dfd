// Segmentation offloads of the TUN device (IFF_VNET_HDR), without I/O:
//
//   - segment(): a packet the kernel hands over with a virtio-net header:
//     a TCP super-packet (TSO, up to 64 KiB) is cut into segments of
//     gso_size payload bytes, each with its own IP and TCP header (IPv4
//     length, ID and header checksum; TCP sequence number, FIN/PSH only on
//     the last, CWR only on the first) and its TCP checksum computed; a
//     packet whose checksum the kernel left to us (NEEDS_CSUM) gets it.
//     A UDP super-packet (USO, GSO_UDP_L4: kernel 6.2 and later) is cut
//     the same way: IPv4 length, ID and header checksum, UDP length and
//     checksum for each datagram.
//   - Coalescer: decrypted TCP segments of one flow that follow each other
//     (the same headers but for length, ID and sequence number, payloads
//     of one size, the last no larger, only ACK and a final PSH) are written
//     back as one super-packet with a TCPv4/v6 GSO header (GRO), so the
//     kernel's stack handles one packet instead of forty. Where the device
//     takes USO, UDP datagrams of one flow (the same headers but for
//     length, ID and checksum, payloads of one size, the last no larger, a
//     correct non-zero checksum) become one GSO_UDP_L4 super-packet too,
//     which the kernel cuts back into the same datagrams.
//
// As in wireguard-go's tun offloads (tun/offload_linux.go) and the Linux
// GSO/GRO rules (net/ipv4/tcp_offload.c). Headers are host byte order
// (virtio-net on TUN without TUNSETVNETBE; x86 and arm64 are little endian).
#pragma once

#include <array>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <span>
#include <vector>

#include "core/bytes.hpp"
#include "core/packet.hpp"

namespace ipsecgw::tun {

struct VirtioNetHdr {
  static constexpr std::uint8_t kNeedsCsum = 1;
  // kGsoUdp is UFO (IP fragments, never used here); kGsoUdpL4 is USO.
  static constexpr std::uint8_t kGsoNone = 0, kGsoTcpV4 = 1, kGsoUdp = 3, kGsoTcpV6 = 4, kGsoUdpL4 = 5,
                                kGsoEcn = 0x80;
  std::uint8_t flags = 0;
  std::uint8_t gso_type = kGsoNone;
  std::uint16_t hdr_len = 0;
  std::uint16_t gso_size = 0;
  std::uint16_t csum_start = 0;
  std::uint16_t csum_offset = 0;
};
static_assert(sizeof(VirtioNetHdr) == 10);

// The Internet checksum's one's-complement sum of `data` added to `sum`
// (not folded, not complemented).
std::uint64_t csum_add(std::uint64_t sum, core::ByteSpan data) noexcept;
std::uint16_t csum_fold(std::uint64_t sum) noexcept;

enum class SegmentError : std::uint8_t { kNone, kMalformed, kTooMany };

// Cuts `pkt` (what followed the header) into packets, each written at the
// default offset of one of `out`; returns how many, or 0 with `err` set.
// `out` must have room for every segment (kTooMany otherwise: the caller
// asks segments_needed() first).
std::size_t segment(const VirtioNetHdr& h, core::ByteSpan pkt, std::span<core::Packet*> out,
                    SegmentError& err) noexcept;
// How many packets segment() will make of this one (1 without GSO), or 0
// when the header is not usable.
std::size_t segments_needed(const VirtioNetHdr& h, core::ByteSpan pkt) noexcept;

// Groups packets for writing: each group is one packet, or a run of TCP
// segments of one flow to coalesce. A run takes the flow's next segments
// past other flows' packets (several streams interleave in a batch), and
// ends at the first packet of its flow it cannot take, so each flow's
// order is kept; flows may pass each other, as on any multi-queue path.
class Coalescer {
 public:
  static constexpr std::size_t kMaxSavedHeaders = 128;  // IPv6 + TCP with options: 100
  struct Group {
    std::size_t at = 0, count = 1;  // members(): [at, at + count)
    VirtioNetHdr hdr;               // gso_type none for a single packet
    // A run's first packet's headers as they were before plan() rewrote
    // them (hdr.hdr_len bytes), for restore().
    std::array<std::uint8_t, kMaxSavedHeaders> saved{};
  };
  // Puts back the headers of a run's first packet, so its members can be
  // written one by one after all (the kernel refused the super-packet).
  static void restore(const Group& g, core::Packet& first) noexcept {
    if (g.count > 1) std::memcpy(first.data(), g.saved.data(), g.hdr.hdr_len);
  }
  // Fixes the headers of each run's first packet (lengths, IPv4 checksum,
  // the TCP checksum field to the pseudo-header sum for NEEDS_CSUM) and
  // returns the groups, in the order to write them. A run's payloads follow
  // its first packet's headers (hdr.hdr_len bytes of it) in members' order.
  // `udp`: UDP runs too (the device takes GSO_UDP_L4).
  const std::vector<Group>& plan(std::span<core::Packet* const> pkts, bool udp = false) noexcept;
  // A group's packets, as indexes into what plan() was given, in order.
  [[nodiscard]] std::span<const std::uint32_t> members(const Group& g) const noexcept {
    return {members_.data() + g.at, g.count};
  }

 private:
  // Other flows' packets a run looks past for its next segment.
  static constexpr std::size_t kMaxSkip = 64;
  // Datagrams in one UDP run (the kernel's UDP_MAX_SEGMENTS).
  static constexpr std::size_t kMaxUdpSegments = 64;
  void plan_udp(std::span<core::Packet* const> pkts, std::size_t i, Group& g) noexcept;
  std::vector<Group> groups_;
  std::vector<std::uint32_t> members_;
  std::vector<std::uint8_t> taken_;
};

}  // namespace ipsecgw::tun
