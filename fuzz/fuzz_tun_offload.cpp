// libFuzzer target: the TUN offloads. The input is a virtio-net header and
// a packet as the kernel hands them over (TSO super-packets cut into
// segments), and then decrypted packets from a peer (which an
// authenticated but hostile peer chooses) grouped for coalescing (GRO).
// Checked: nothing read or written out of bounds, every segment within a
// packet buffer, the groups cover each packet once and a coalesced run
// stays under 64 KiB; a UDP run (USO, chosen by the header's top flag bit)
// has at most 64 datagrams and cuts back into its members' payloads.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "tun/offload.hpp"

using namespace ipsecgw;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::vector<std::unique_ptr<core::Packet>> storage;
  static std::vector<core::Packet*> pool;
  if (pool.empty())
    for (int i = 0; i < 128; ++i) {
      storage.push_back(std::make_unique<core::Packet>());
      pool.push_back(storage.back().get());
    }
  if (size < sizeof(tun::VirtioNetHdr)) return 0;
  tun::VirtioNetHdr h;
  std::memcpy(&h, data, sizeof h);
  const core::ByteSpan pkt(data + sizeof h, size - sizeof h);
  tun::SegmentError err;
  const std::size_t n = tun::segment(h, pkt, pool, err);
  if (n > pool.size()) __builtin_trap();
  for (std::size_t i = 0; i < n; ++i)
    if (pool[i]->len > core::Packet::kMaxData) __builtin_trap();
  // The segments, or else the input cut at its 0xff bytes, as packets to
  // coalesce.
  std::size_t count = n;
  if (count == 0) {
    std::size_t start = sizeof h;
    for (std::size_t i = sizeof h; i <= size && count < pool.size(); ++i) {
      if (i == size || data[i] == 0xff) {
        pool[count++]->assign(core::ByteSpan(data + start, i - start));
        start = i + 1;
      }
    }
  }
  // Every packet in exactly one group, each group's members in order, a
  // run's total within 64 KiB.
  tun::Coalescer gro;
  std::size_t covered = 0;
  std::vector<bool> seen(count);
  const bool udp = (h.flags & 0x80) != 0;
  static std::vector<std::unique_ptr<core::Packet>> again_storage;
  static std::vector<core::Packet*> again;
  if (again.empty())
    for (int i = 0; i < 64; ++i) {
      again_storage.push_back(std::make_unique<core::Packet>());
      again.push_back(again_storage.back().get());
    }
  for (const auto& g : gro.plan(std::span(pool).first(count), udp)) {
    const auto m = gro.members(g);
    if (g.count == 0 || m.size() != g.count) __builtin_trap();
    for (std::size_t k = 0; k < m.size(); ++k) {
      if (m[k] >= count || seen[m[k]] || (k && m[k] <= m[k - 1])) __builtin_trap();
      seen[m[k]] = true;
    }
    if (g.count > 1) {
      std::size_t total = pool[m[0]]->len;
      for (std::size_t k = 1; k < g.count; ++k) {
        if (pool[m[k]]->len < g.hdr.hdr_len) __builtin_trap();
        total += pool[m[k]]->len - g.hdr.hdr_len;
      }
      if (total > 65535) __builtin_trap();
      if (g.hdr.gso_type == tun::VirtioNetHdr::kGsoUdpL4) {
        if (!udp || g.count > 64) __builtin_trap();
        std::vector<std::uint8_t> wire(pool[m[0]]->data(), pool[m[0]]->data() + pool[m[0]]->len);
        for (std::size_t k = 1; k < g.count; ++k)
          wire.insert(wire.end(), pool[m[k]]->data() + g.hdr.hdr_len, pool[m[k]]->data() + pool[m[k]]->len);
        // The lengths the kernel reads: the IP and UDP lengths of the whole.
        const std::uint8_t* w = wire.data();
        const bool v4 = (w[0] >> 4) == 4;
        const std::size_t ip_len = v4 ? core::load_be16(w + 2) : core::load_be16(w + 4) + 40u;
        if (ip_len != wire.size() || core::load_be16(w + g.hdr.csum_start + 4) != wire.size() - g.hdr.csum_start)
          __builtin_trap();
        tun::SegmentError e2;
        if (tun::segment(g.hdr, wire, again, e2) != g.count) __builtin_trap();
        std::size_t at = pool[m[0]]->len;  // the first one's payload is in the rewritten first packet
        for (std::size_t k = 1; k < g.count; ++k) {
          const std::size_t plen = pool[m[k]]->len - g.hdr.hdr_len;
          if (again[k]->len != g.hdr.hdr_len + plen ||
              std::memcmp(again[k]->data() + g.hdr.hdr_len, wire.data() + at, plen) != 0)
            __builtin_trap();
          at += plen;
        }
      }
    }
    covered += g.count;
  }
  if (covered != count) __builtin_trap();
  return 0;
}
