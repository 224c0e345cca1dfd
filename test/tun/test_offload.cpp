// TUN offloads without a kernel: a TSO super-packet cut into segments (each
// checked with core::recompute_l4_checksum, the checksum code the rest of
// the gateway uses, and with a plain 16-bit one's-complement sum written
// here), the segments coalesced back (GRO), and what must not coalesce.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <vector>

#include "core/ip.hpp"
#include "tun/offload.hpp"

using namespace ipsecgw;
using tun::VirtioNetHdr;

namespace {
// The RFC 1071 sum, 16 bits at a time, big-endian: the reference.
std::uint16_t rfc1071(const std::vector<std::uint8_t>& b) {
  std::uint32_t s = 0;
  for (std::size_t i = 0; i + 1 < b.size(); i += 2) s += static_cast<std::uint32_t>(b[i] << 8 | b[i + 1]);
  if (b.size() & 1) s += static_cast<std::uint32_t>(b.back() << 8);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}

// The reference pseudo-header (RFC 793 / RFC 768 / RFC 8200 8.1) of the
// packet at `d` for `l4` bytes of protocol `proto`.
std::vector<std::uint8_t> pseudo_header(const std::uint8_t* d, std::uint8_t proto, std::size_t l4) {
  std::vector<std::uint8_t> b;
  if ((d[0] >> 4) == 4) {
    b.insert(b.end(), d + 12, d + 20);
    b.insert(b.end(), {0, proto, static_cast<std::uint8_t>(l4 >> 8), static_cast<std::uint8_t>(l4)});
  } else {
    b.insert(b.end(), d + 8, d + 40);
    b.insert(b.end(), {0, 0, static_cast<std::uint8_t>(l4 >> 8), static_cast<std::uint8_t>(l4), 0, 0, 0, proto});
  }
  return b;
}

// The transport checksum over pseudo-header and segment verifies (sums to 0xffff).
bool l4_checksum_ok(const core::Packet& p, std::uint8_t proto) {
  const std::uint8_t* d = p.data();
  const std::size_t t = (d[0] >> 4) == 4 ? std::size_t{d[0] & 0x0fu} * 4 : 40;
  auto b = pseudo_header(d, proto, p.len - t);
  b.insert(b.end(), d + t, d + p.len);
  return rfc1071(b) == 0xffff;
}
bool tcp_checksum_ok(const core::Packet& p) { return l4_checksum_ok(p, 6); }

// Segment `i` cut from a put_ip() super-packet: its own IP length, and for
// IPv4 the ID counted up from the super-packet's and a correct checksum.
void check_segment_ip(const core::Packet& p, std::size_t i) {
  if ((p.data()[0] >> 4) == 4) {
    CHECK(core::load_be16(p.data() + 2) == p.len);
    CHECK(core::load_be16(p.data() + 4) == 0x1234 + i);
    CHECK(core::ipv4_header_checksum(core::ByteSpan(p.data(), 20)) == core::load_be16(p.data() + 10));
  } else {
    CHECK(core::load_be16(p.data() + 4) == p.len - 40);
  }
}

// The IP header of a test packet of `total` bytes, protocol `proto`, from
// 10.1.0.2 to 10.2.0.2 (or fd01::2 -> fd02::2).
void put_ip(std::uint8_t* d, bool v4, std::uint8_t proto, std::size_t total) {
  if (v4) {
    d[0] = 0x45;
    core::store_be16(d + 2, static_cast<std::uint16_t>(total));
    core::store_be16(d + 4, 0x1234);
    core::store_be16(d + 6, 0x4000);
    d[8] = 64;
    d[9] = proto;
    const std::uint8_t a[8] = {10, 1, 0, 2, 10, 2, 0, 2};
    std::memcpy(d + 12, a, 8);
    core::store_be16(d + 10, core::ipv4_header_checksum(core::ByteSpan(d, 20)));
  } else {
    d[0] = 0x60;
    core::store_be16(d + 4, static_cast<std::uint16_t>(total - 40));
    d[6] = proto;
    d[7] = 64;
    d[8] = 0xfd, d[9] = 0x01, d[23] = 2;
    d[24] = 0xfd, d[25] = 0x02, d[39] = 2;
  }
}

// A TCP packet from 10.1.0.2:40000 to 10.2.0.2:5201 (or fd01::2 -> fd02::2)
// with `payload` bytes, the timestamp option, flags, seq.
std::vector<std::uint8_t> tcp_packet(bool v4, std::size_t payload, std::uint8_t flags, std::uint32_t seq) {
  const std::size_t ip = v4 ? 20 : 40, tcp = 32;
  std::vector<std::uint8_t> b(ip + tcp + payload);
  std::uint8_t* d = b.data();
  put_ip(d, v4, 6, b.size());
  std::uint8_t* t = d + ip;
  core::store_be16(t, 40000);
  core::store_be16(t + 2, 5201);
  core::store_be32(t + 4, seq);
  core::store_be32(t + 8, 0x55667788);
  t[12] = (tcp / 4) << 4;
  t[13] = flags;
  core::store_be16(t + 14, 502);
  t[20] = 1, t[21] = 1, t[22] = 8, t[23] = 10;  // NOP NOP timestamps
  core::store_be32(t + 24, 111), core::store_be32(t + 28, 222);
  for (std::size_t i = 0; i < payload; ++i) d[ip + tcp + i] = static_cast<std::uint8_t>(i * 31 + 7);
  return b;
}

struct Pool {
  std::vector<std::unique_ptr<core::Packet>> storage;
  std::vector<core::Packet*> ptrs;
  explicit Pool(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      storage.push_back(std::make_unique<core::Packet>());
      ptrs.push_back(storage.back().get());
    }
  }
};
}  // namespace

TEST_CASE("TUN offload: a TSO super-packet cut into segments and coalesced back", "[tun][offload]") {
  for (bool v4 : {true, false}) {
    INFO((v4 ? "IPv4" : "IPv6"));
    const std::size_t mss = 1348, total = 60000;
    auto super = tcp_packet(v4, total, 0x18 | 0x80 /* PSH ACK CWR */, 1000);
    VirtioNetHdr h;
    h.flags = VirtioNetHdr::kNeedsCsum;
    h.gso_type = v4 ? VirtioNetHdr::kGsoTcpV4 : VirtioNetHdr::kGsoTcpV6;
    h.gso_size = mss;
    h.hdr_len = static_cast<std::uint16_t>((v4 ? 20 : 40) + 32);
    const std::size_t want = (total + mss - 1) / mss;
    CHECK(tun::segments_needed(h, super) == want);
    Pool pool(64);
    tun::SegmentError err;
    // Too small a batch: refused, nothing half done.
    CHECK(tun::segment(h, super, std::span(pool.ptrs).first(want - 1), err) == 0);
    CHECK(err == tun::SegmentError::kTooMany);
    const std::size_t n = tun::segment(h, super, pool.ptrs, err);
    REQUIRE(n == want);
    std::size_t bytes = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const core::Packet& p = *pool.ptrs[i];
      const std::uint8_t* t = p.data() + (v4 ? 20 : 40);
      const std::size_t len = p.len - (v4 ? 20 : 40) - 32;
      CHECK(len == std::min(mss, total - i * mss));
      CHECK(core::load_be32(t + 4) == 1000 + i * mss);
      CHECK(((t[13] & 0x08) != 0) == (i + 1 == n));  // PSH on the last only
      CHECK(((t[13] & 0x80) != 0) == (i == 0));      // CWR on the first only
      CHECK(tcp_checksum_ok(p));
      // The gateway's own checksum code agrees.
      core::Packet copy = p;
      REQUIRE(core::recompute_l4_checksum(copy.span(), v4 ? 20 : 40));
      CHECK(std::memcmp(copy.data(), p.data(), p.len) == 0);
      check_segment_ip(p, i);
      CHECK(std::memcmp(p.data() + p.len - len, super.data() + (v4 ? 20 : 40) + 32 + i * mss, len) == 0);
      bytes += len;
    }
    CHECK(bytes == total);

    // Back together: the segments after the first (no CWR) form one run.
    tun::Coalescer gro;
    const auto& groups = gro.plan(std::span(pool.ptrs).subspan(1, n - 1));
    REQUIRE(groups.size() == 1);
    CHECK(groups[0].count == n - 1);
    CHECK(groups[0].hdr.gso_type == (v4 ? VirtioNetHdr::kGsoTcpV4 : VirtioNetHdr::kGsoTcpV6));
    CHECK(groups[0].hdr.gso_size == mss);
    CHECK(groups[0].hdr.csum_offset == 16);
    const core::Packet& head = *pool.ptrs[1];
    const std::size_t run = total - mss + (v4 ? 20 : 40) + 32;
    CHECK((v4 ? core::load_be16(head.data() + 2) : core::load_be16(head.data() + 4) + 40u) == run);
    CHECK((head.data()[(v4 ? 20 : 40) + 13] & 0x08) != 0);  // the last one's PSH
  }
}

TEST_CASE("TUN offload: what is not coalesced", "[tun][offload]") {
  Pool pool(8);
  auto put = [&](std::size_t i, const std::vector<std::uint8_t>& b) { pool.ptrs[i]->assign(b); };
  auto fix_csum = [&](std::size_t i) { REQUIRE(core::recompute_l4_checksum(pool.ptrs[i]->span(), 20)); };
  tun::Coalescer gro;
  // A gap in the sequence, then another flow, then a bad checksum, then SYN.
  put(0, tcp_packet(true, 1000, 0x10, 0));
  put(1, tcp_packet(true, 1000, 0x10, 1000));
  put(2, tcp_packet(true, 1000, 0x10, 3000));  // gap
  auto other = tcp_packet(true, 1000, 0x10, 4000);
  core::store_be16(other.data() + 20, 40001);  // another source port
  put(3, other);
  put(4, tcp_packet(true, 1000, 0x10, 5000));
  put(5, tcp_packet(true, 1000, 0x10, 6000));
  put(6, tcp_packet(true, 1000, 0x12, 7000));  // SYN ACK
  for (std::size_t i = 0; i < 7; ++i) fix_csum(i);
  pool.ptrs[5]->data()[100] ^= 1;  // after its checksum: now wrong
  const auto& g = gro.plan(std::span(pool.ptrs).first(7));
  REQUIRE(g.size() == 6);
  CHECK(gro.members(g[0])[0] == 0);
  CHECK(g[0].count == 2);  // 0 and 1
  for (std::size_t k = 1; k < g.size(); ++k) CHECK(g[k].count == 1);
  // A shorter segment ends a run; one after it starts the next.
  put(0, tcp_packet(true, 1000, 0x10, 0));
  put(1, tcp_packet(true, 500, 0x10, 1000));
  put(2, tcp_packet(true, 1000, 0x10, 1500));
  for (std::size_t i = 0; i < 3; ++i) fix_csum(i);
  const auto& g2 = gro.plan(std::span(pool.ptrs).first(3));
  REQUIRE(g2.size() == 2);
  CHECK(g2[0].count == 2);
  CHECK(g2[1].count == 1);
}

TEST_CASE("TUN offload: interleaved flows coalesce each on its own, in its own order", "[tun][offload]") {
  for (bool v4 : {true, false}) {
    INFO((v4 ? "IPv4" : "IPv6"));
    const std::size_t ip = v4 ? 20 : 40;
    Pool pool(8);
    auto seg = [&](std::size_t i, std::uint16_t port, std::uint32_t seq) {
      auto b = tcp_packet(v4, 1000, 0x10, seq);
      core::store_be16(b.data() + ip, port);
      pool.ptrs[i]->assign(b);
      REQUIRE(core::recompute_l4_checksum(pool.ptrs[i]->span(), ip));
    };
    // A0 B0 (UDP between the same hosts) A1 B1 A2 B2
    seg(0, 40000, 0);
    seg(1, 40001, 0);
    auto udp = tcp_packet(v4, 100, 0x10, 0);
    udp[v4 ? 9 : 6] = 17;
    pool.ptrs[2]->assign(udp);
    seg(3, 40000, 1000);
    seg(4, 40001, 1000);
    seg(5, 40000, 2000);
    seg(6, 40001, 2000);
    tun::Coalescer gro;
    const auto& g = gro.plan(std::span(pool.ptrs).first(7));
    REQUIRE(g.size() == 3);
    auto ids = [&](const tun::Coalescer::Group& x) {
      const auto m = gro.members(x);
      return std::vector<std::uint32_t>(m.begin(), m.end());
    };
    CHECK(ids(g[0]) == std::vector<std::uint32_t>{0, 3, 5});
    CHECK(ids(g[1]) == std::vector<std::uint32_t>{1, 4, 6});
    CHECK(ids(g[2]) == std::vector<std::uint32_t>{2});
    const std::uint8_t* h = pool.ptrs[0]->data();
    CHECK((v4 ? core::load_be16(h + 2) : core::load_be16(h + 4) + 40u) == ip + 32 + 3000);
    CHECK(g[0].hdr.gso_size == 1000);

    // A packet of the flow that cannot join ends its run: A0 B0 A(gap) B1 A1
    // gives A0 | B0 B1 | A(gap) | A1, so A's packets stay in their order.
    seg(0, 40000, 0);
    seg(1, 40001, 0);
    seg(2, 40000, 5000);
    seg(3, 40001, 1000);
    seg(4, 40000, 1000);
    const auto& g2 = gro.plan(std::span(pool.ptrs).first(5));
    REQUIRE(g2.size() == 4);
    CHECK(ids(g2[0]) == std::vector<std::uint32_t>{0});
    CHECK(ids(g2[1]) == std::vector<std::uint32_t>{1, 3});
    CHECK(ids(g2[2]) == std::vector<std::uint32_t>{2});
    CHECK(ids(g2[3]) == std::vector<std::uint32_t>{4});

    // What may be of the run's flow ends it too, however it looks: a pure
    // ACK of the flow, and between the same hosts an IPv4 fragment or ESP
    // (IPv6: an extension header). The segments after it are not taken.
    auto maybe_flow = [&](int kind) {
      auto b = tcp_packet(v4, 0, 0x10, 1000);  // a pure ACK of flow A
      if (kind == 1) {
        b = tcp_packet(v4, 40, 0x10, 1000);
        if (v4) {
          core::store_be16(b.data() + 6, 0x2000);  // more fragments
        } else {
          b[6] = 44;  // a fragment header follows
        }
      } else if (kind == 2) {
        b[v4 ? 9 : 6] = 50;
      }
      return b;
    };
    for (int kind = 0; kind < 3; ++kind) {
      INFO("kind " << kind);
      seg(0, 40000, 0);
      seg(1, 40001, 0);
      pool.ptrs[2]->assign(maybe_flow(kind));
      seg(3, 40000, 1000);
      const auto& g3 = gro.plan(std::span(pool.ptrs).first(4));
      REQUIRE(g3.size() == 4);
      CHECK(ids(g3[0]) == std::vector<std::uint32_t>{0});
      CHECK(ids(g3[3]) == std::vector<std::uint32_t>{3});
    }
  }
}

TEST_CASE("TUN offload: truncated and inconsistent headers are refused", "[tun][offload]") {
  auto super = tcp_packet(true, 5000, 0x10, 1);
  VirtioNetHdr h;
  h.gso_type = VirtioNetHdr::kGsoTcpV4;
  h.gso_size = 1000;
  Pool pool(16);
  tun::SegmentError err;
  for (std::size_t len = 0; len < 20 + 32; ++len) {
    CHECK(tun::segment(h, core::ByteSpan(super.data(), len), pool.ptrs, err) == 0);
    CHECK(err == tun::SegmentError::kMalformed);
  }
  h.gso_size = 0;
  CHECK(tun::segment(h, super, pool.ptrs, err) == 0);
  h.gso_size = 1000;
  h.gso_type = VirtioNetHdr::kGsoUdp;  // not offered to the kernel
  CHECK(tun::segment(h, super, pool.ptrs, err) == 0);
  // A checksum position past the end.
  VirtioNetHdr c;
  c.flags = VirtioNetHdr::kNeedsCsum;
  c.csum_start = 20;
  c.csum_offset = 5100;
  CHECK(tun::segment(c, super, pool.ptrs, err) == 0);
  // A UDP packet with its checksum left to us (NEEDS_CSUM): completed.
  std::vector<std::uint8_t> udp(20 + 8 + 33, 0);
  udp[0] = 0x45, udp[8] = 64, udp[9] = 17;
  core::store_be16(udp.data() + 2, static_cast<std::uint16_t>(udp.size()));
  udp[12] = 10, udp[15] = 1, udp[16] = 10, udp[19] = 2;
  core::store_be16(udp.data() + 24, static_cast<std::uint16_t>(udp.size() - 20));
  for (std::size_t i = 28; i < udp.size(); ++i) udp[i] = static_cast<std::uint8_t>(i);
  core::Packet want;
  want.assign(udp);
  core::store_be16(want.data() + 26, 1);  // not 0, which says "no checksum" over IPv4
  REQUIRE(core::recompute_l4_checksum(want.span(), 20));
  // The kernel's partial: the pseudo-header's sum in the field.
  std::vector<std::uint8_t> pseudo = {10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, static_cast<std::uint8_t>(udp.size() - 20)};
  core::store_be16(udp.data() + 26, rfc1071(pseudo));
  c.csum_start = 20;
  c.csum_offset = 6;
  REQUIRE(tun::segment(c, udp, pool.ptrs, err) == 1);
  CHECK(core::load_be16(pool.ptrs[0]->data() + 26) == core::load_be16(want.data() + 26));
  CHECK(std::memcmp(pool.ptrs[0]->data(), want.data(), want.len) == 0);
}

namespace {
// The UDP checksum is there (not 0) and verifies.
bool udp_checksum_ok(const core::Packet& p) {
  const std::uint8_t* d = p.data();
  const std::size_t t = (d[0] >> 4) == 4 ? std::size_t{d[0] & 0x0fu} * 4 : 40;
  return core::load_be16(d + t + 6) != 0 && l4_checksum_ok(p, 17);
}

// A UDP datagram from 10.1.0.2:40000 to 10.2.0.2:5201 (or fd01::2 ->
// fd02::2) with `payload` bytes from `seed`, its checksum computed by the
// reference sum.
std::vector<std::uint8_t> udp_packet(bool v4, std::size_t payload, std::uint8_t seed, std::uint16_t sport = 40000) {
  const std::size_t ip = v4 ? 20 : 40;
  std::vector<std::uint8_t> b(ip + 8 + payload);
  std::uint8_t* d = b.data();
  put_ip(d, v4, 17, b.size());
  std::uint8_t* u = d + ip;
  core::store_be16(u, sport);
  core::store_be16(u + 2, 5201);
  core::store_be16(u + 4, static_cast<std::uint16_t>(8 + payload));
  for (std::size_t i = 0; i < payload; ++i) d[ip + 8 + i] = static_cast<std::uint8_t>(i * 13 + seed);
  const std::size_t l4 = 8 + payload;
  auto sum = pseudo_header(d, 17, l4);
  sum.insert(sum.end(), u, u + l4);
  std::uint16_t c = static_cast<std::uint16_t>(~rfc1071(sum));
  core::store_be16(u + 6, c == 0 ? 0xffff : c);
  return b;
}

// What LinuxTun::write_batch writes for a group: the first packet whole,
// then each member's payload after hdr_len.
std::vector<std::uint8_t> joined(const tun::Coalescer& gro, const tun::Coalescer::Group& g, const Pool& pool) {
  const auto m = gro.members(g);
  std::vector<std::uint8_t> out(pool.ptrs[m[0]]->data(), pool.ptrs[m[0]]->data() + pool.ptrs[m[0]]->len);
  for (std::size_t k = 1; k < m.size(); ++k) {
    const core::Packet& p = *pool.ptrs[m[k]];
    out.insert(out.end(), p.data() + g.hdr.hdr_len, p.data() + p.len);
  }
  return out;
}
}  // namespace

TEST_CASE("TUN offload: a USO super-packet cut into datagrams and coalesced back", "[tun][offload]") {
  for (bool v4 : {true, false}) {
    INFO((v4 ? "IPv4" : "IPv6"));
    const std::size_t ip = v4 ? 20 : 40, size = 1200, total = 40 * size + 700;
    auto super = udp_packet(v4, total, 3);
    VirtioNetHdr h;
    h.flags = VirtioNetHdr::kNeedsCsum;
    h.gso_type = VirtioNetHdr::kGsoUdpL4;
    h.gso_size = size;
    h.hdr_len = static_cast<std::uint16_t>(ip + 8);
    h.csum_start = static_cast<std::uint16_t>(ip);
    h.csum_offset = 6;
    const std::size_t want = 41;
    CHECK(tun::segments_needed(h, super) == want);
    Pool pool(64);
    tun::SegmentError err;
    const std::size_t n = tun::segment(h, super, pool.ptrs, err);
    REQUIRE(n == want);
    for (std::size_t i = 0; i < n; ++i) {
      const core::Packet& p = *pool.ptrs[i];
      const std::size_t len = std::min(size, total - i * size);
      REQUIRE(p.len == ip + 8 + len);
      CHECK(udp_checksum_ok(p));
      CHECK(core::load_be16(p.data() + ip + 4) == 8 + len);
      check_segment_ip(p, i);
      CHECK(std::memcmp(p.data() + ip + 8, super.data() + ip + 8 + i * size, len) == 0);
    }
    std::vector<std::vector<std::uint8_t>> originals;
    for (std::size_t i = 0; i < n; ++i) originals.emplace_back(pool.ptrs[i]->data(), pool.ptrs[i]->data() + pool.ptrs[i]->len);

    // Without USO on the device: one datagram per write.
    tun::Coalescer gro;
    CHECK(gro.plan(std::span(pool.ptrs).first(n), false).size() == n);
    // With it: runs of at most 64; these 41 (the last shorter) are one.
    const auto& groups = gro.plan(std::span(pool.ptrs).first(n), true);
    REQUIRE(groups.size() == 1);
    const auto g = groups[0];
    CHECK(g.count == n);
    CHECK(g.hdr.gso_type == VirtioNetHdr::kGsoUdpL4);
    CHECK(g.hdr.flags == VirtioNetHdr::kNeedsCsum);
    CHECK(g.hdr.gso_size == size);
    CHECK(g.hdr.hdr_len == ip + 8);
    CHECK(g.hdr.csum_start == ip);
    CHECK(g.hdr.csum_offset == 6);
    // What the kernel gets: its headers checked field by field against the
    // reference sum (the kernel trims to the IP length and starts each
    // datagram's checksum from this field), then cut again: the same
    // datagrams, byte for byte.
    const auto wire = joined(gro, g, pool);
    CHECK(wire.size() == super.size());
    const std::uint8_t* w = wire.data();
    if (v4) {
      CHECK(core::load_be16(w + 2) == wire.size());
      CHECK(core::ipv4_header_checksum(core::ByteSpan(w, 20)) == core::load_be16(w + 10));
    } else {
      CHECK(core::load_be16(w + 4) + 40u == wire.size());
    }
    const std::size_t l4 = wire.size() - ip;
    CHECK(core::load_be16(w + ip + 4) == l4);
    CHECK(core::load_be16(w + ip + 6) == rfc1071(pseudo_header(w, 17, l4)));  // NEEDS_CSUM: the pseudo-header's sum
    Pool again(64);
    REQUIRE(tun::segment(g.hdr, wire, again.ptrs, err) == n);
    for (std::size_t i = 0; i < n; ++i) {
      INFO("datagram " << i);
      REQUIRE(again.ptrs[i]->len == originals[i].size());
      CHECK(std::memcmp(again.ptrs[i]->data(), originals[i].data(), originals[i].size()) == 0);
    }
    // Should the kernel refuse the super-packet: the first datagram's
    // headers back as they came, so each is written on its own.
    tun::Coalescer::restore(g, *pool.ptrs[0]);
    CHECK(std::memcmp(pool.ptrs[0]->data(), originals[0].data(), originals[0].size()) == 0);
    CHECK(udp_checksum_ok(*pool.ptrs[0]));
  }
}

TEST_CASE("TUN offload: which UDP datagrams are not coalesced", "[tun][offload]") {
  Pool pool(80);
  auto put = [&](std::size_t i, const std::vector<std::uint8_t>& b) { pool.ptrs[i]->assign(b); };
  tun::Coalescer gro;
  // 0-1 a run; 2 has a bad checksum; 3 no checksum; 4 another port; 5-6 a
  // run again (5 takes 6 past nothing of its flow).
  for (std::size_t i = 0; i < 7; ++i) put(i, udp_packet(true, 1000, static_cast<std::uint8_t>(i)));
  pool.ptrs[2]->data()[100] ^= 1;
  core::store_be16(pool.ptrs[3]->data() + 26, 0);
  put(4, udp_packet(true, 1000, 4, 40001));
  CHECK(udp_checksum_ok(*pool.ptrs[4]));
  const auto& g = gro.plan(std::span(pool.ptrs).first(7), true);
  // The bad one (2) ends the run at 0-1: it may be of the flow. 3 and 4
  // stand alone; 5-6 form a run.
  REQUIRE(g.size() == 5);
  CHECK(g[0].count == 2);
  CHECK(g[1].count == 1);
  CHECK(gro.members(g[1])[0] == 2);
  CHECK(g[2].count == 1);
  CHECK(g[3].count == 1);
  CHECK(gro.members(g[3])[0] == 4);
  CHECK(g[4].count == 2);

  // A larger datagram after the first ends the run (sizes must not grow);
  // 70 of one size: runs of 64 and 6.
  put(0, udp_packet(false, 800, 1));
  put(1, udp_packet(false, 900, 2));
  CHECK(gro.plan(std::span(pool.ptrs).first(2), true).size() == 2);
  for (std::size_t i = 0; i < 70; ++i) put(i, udp_packet(false, 500, static_cast<std::uint8_t>(i)));
  const auto& g2 = gro.plan(std::span(pool.ptrs).first(70), true);
  REQUIRE(g2.size() == 2);
  CHECK(g2[0].count == 64);
  CHECK(g2[1].count == 6);
  // Another destination address is another flow: a run passes it. The same
  // flow with another TOS or TTL ends the run (its headers differ).
  auto rewrite_v4 = [&](std::size_t i, std::size_t at, std::uint8_t v) {
    std::uint8_t* d = pool.ptrs[i]->data();
    d[at] = v;
    core::store_be16(d + 10, 0);
    core::store_be16(d + 10, core::ipv4_header_checksum(core::ByteSpan(d, 20)));
  };
  for (std::size_t at : {std::size_t{19}, std::size_t{1}, std::size_t{8}}) {
    INFO("IPv4 header byte " << at);
    put(0, udp_packet(true, 700, 1));
    put(1, udp_packet(true, 700, 2));
    put(2, udp_packet(true, 700, 3));
    rewrite_v4(1, at, at == 19 ? 3 : at == 1 ? 0x10 : 63);  // 10.2.0.3, TOS 0x10, TTL 63
    if (at == 19) REQUIRE(core::recompute_l4_checksum(pool.ptrs[1]->span(), 20));
    REQUIRE(udp_checksum_ok(*pool.ptrs[1]));
    const auto& g3 = gro.plan(std::span(pool.ptrs).first(3), true);
    if (at == 19) {
      REQUIRE(g3.size() == 2);
      CHECK(g3[0].count == 2);
      CHECK(gro.members(g3[0])[1] == 2);
      CHECK(gro.members(g3[1])[0] == 1);
    } else {
      CHECK(g3.size() == 3);
    }
  }
  // TCP and UDP between the same hosts, interleaved: each its own run, each
  // in its own order.
  put(0, udp_packet(true, 1000, 1));
  put(1, tcp_packet(true, 1000, 0x10, 0));
  put(2, udp_packet(true, 1000, 2));
  put(3, tcp_packet(true, 1000, 0x10, 1000));
  put(4, udp_packet(true, 1000, 3));
  REQUIRE(core::recompute_l4_checksum(pool.ptrs[1]->span(), 20));
  REQUIRE(core::recompute_l4_checksum(pool.ptrs[3]->span(), 20));
  {
    const auto& g4 = gro.plan(std::span(pool.ptrs).first(5), true);
    REQUIRE(g4.size() == 2);
    REQUIRE(g4[0].count == 3);
    CHECK(g4[0].hdr.gso_type == VirtioNetHdr::kGsoUdpL4);
    CHECK(gro.members(g4[0])[0] == 0);
    CHECK(gro.members(g4[0])[1] == 2);
    CHECK(gro.members(g4[0])[2] == 4);
    REQUIRE(g4[1].count == 2);
    CHECK(g4[1].hdr.gso_type == VirtioNetHdr::kGsoTcpV4);
    CHECK(gro.members(g4[1])[0] == 1);
    CHECK(gro.members(g4[1])[1] == 3);
  }
  // An IPv4 fragment is never part of a run, and a run does not pass it.
  put(0, udp_packet(true, 600, 1));
  put(1, udp_packet(true, 600, 2));
  core::store_be16(pool.ptrs[1]->data() + 6, 0x2000);  // MF
  core::store_be16(pool.ptrs[1]->data() + 10, 0);
  core::store_be16(pool.ptrs[1]->data() + 10, core::ipv4_header_checksum(core::ByteSpan(pool.ptrs[1]->data(), 20)));
  put(2, udp_packet(true, 600, 3));
  CHECK(gro.plan(std::span(pool.ptrs).first(3), true).size() == 3);
}
