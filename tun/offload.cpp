#include "tun/offload.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace ipsecgw::tun {

using core::load_be16;
using core::load_be32;
using core::store_be16;
using core::store_be32;

namespace {
constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoUdp = 17;
constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20, kEce = 0x40,
                       kCwr = 0x80;

// Where the `proto` (TCP or UDP) header starts in an IPv4 packet without
// fragmentation or an IPv6 packet whose next header is `proto`; 0 when it
// is not such a packet.
std::size_t l4_offset(const std::uint8_t* d, std::size_t len, std::uint8_t proto, bool allow_v4_options) noexcept {
  if (len < 20) return 0;
  if ((d[0] >> 4) == 4) {
    const std::size_t ihl = std::size_t{d[0] & 0x0fu} * 4;
    if (ihl < 20 || ihl > len || d[9] != proto) return 0;
    if (!allow_v4_options && ihl != 20) return 0;
    if ((load_be16(d + 6) & 0x3fff) != 0) return 0;  // a fragment
    return ihl;
  }
  if ((d[0] >> 4) == 6 && len >= 40 && d[6] == proto) return 40;
  return 0;
}
std::size_t tcp_offset(const std::uint8_t* d, std::size_t len, bool allow_v4_options) noexcept {
  return l4_offset(d, len, kProtoTcp, allow_v4_options);
}

// The pseudo-header's sum (RFC 793 / RFC 768 / RFC 8200 8.1) for `l4_len`
// bytes of TCP or UDP.
std::uint64_t pseudo_sum(const std::uint8_t* ip, std::size_t l4_len, std::uint8_t proto = kProtoTcp) noexcept {
  std::uint8_t tail[8] = {};
  std::uint64_t s = 0;
  if ((ip[0] >> 4) == 4) {
    s = csum_add(s, core::ByteSpan(ip + 12, 8));
    store_be16(tail, proto);
    store_be16(tail + 2, static_cast<std::uint16_t>(l4_len));
    return csum_add(s, core::ByteSpan(tail, 4));
  }
  s = csum_add(s, core::ByteSpan(ip + 8, 32));
  store_be32(tail, static_cast<std::uint32_t>(l4_len));
  tail[7] = proto;
  return csum_add(s, core::ByteSpan(tail, 8));
}

// Segment `i` of a super-packet: its headers (`hdrs` bytes, the transport
// header at `t`), its share of `payload` bytes in `size` steps, and its own
// IP length (IPv4: ID `id` + i and header checksum) into `o`; returns its
// payload length. The caller fixes the transport header.
std::size_t cut_one(const std::uint8_t* src, std::size_t t, std::size_t hdrs, std::size_t payload,
                    std::size_t size, std::size_t i, std::uint16_t id, core::Packet& o) noexcept {
  o.reset();
  const std::size_t off = i * size;
  const std::size_t len = std::min(size, payload - std::min(payload, off));
  std::uint8_t* d = o.data();
  std::memcpy(d, src, hdrs);
  std::memcpy(d + hdrs, src + hdrs + off, len);
  o.len = hdrs + len;
  if ((src[0] >> 4) == 4) {
    store_be16(d + 2, static_cast<std::uint16_t>(o.len));
    store_be16(d + 4, static_cast<std::uint16_t>(id + i));
    store_be16(d + 10, core::ipv4_header_checksum(core::ByteSpan(d, t)));
  } else {
    store_be16(d + 4, static_cast<std::uint16_t>(o.len - 40));
  }
  return len;
}

std::uint16_t swap_if_little(std::uint16_t v) noexcept {
  if constexpr (std::endian::native == std::endian::little) return static_cast<std::uint16_t>((v >> 8) | (v << 8));
  return v;
}
}  // namespace

std::uint64_t csum_add(std::uint64_t sum, core::ByteSpan data) noexcept {
  // Summed in host order, 32 bits at a time (the one's-complement sum is
  // the same in either byte order; csum_fold swaps back).
  const std::uint8_t* p = data.data();
  std::size_t n = data.size(), i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, p + i, 8);
    sum += (v & 0xffffffffu) + (v >> 32);
  }
  for (; i + 2 <= n; i += 2) {
    std::uint16_t v;
    std::memcpy(&v, p + i, 2);
    sum += v;
  }
  if (i < n) {
    std::uint8_t last[2] = {p[i], 0};
    std::uint16_t v;
    std::memcpy(&v, last, 2);
    sum += v;
  }
  return sum;
}

std::uint16_t csum_fold(std::uint64_t sum) noexcept {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return swap_if_little(static_cast<std::uint16_t>(sum));
}

std::size_t segments_needed(const VirtioNetHdr& h, core::ByteSpan pkt) noexcept {
  const std::uint8_t type = h.gso_type & static_cast<std::uint8_t>(~VirtioNetHdr::kGsoEcn);
  if (type == VirtioNetHdr::kGsoNone) return pkt.empty() ? 0 : 1;
  if (type == VirtioNetHdr::kGsoUdpL4) {
    const std::size_t t = l4_offset(pkt.data(), pkt.size(), kProtoUdp, true);
    if (t == 0 || h.gso_size == 0 || pkt.size() < t + 8) return 0;
    if (t + 8 + h.gso_size > core::Packet::kMaxData) return 0;
    const std::size_t payload = pkt.size() - t - 8;
    return payload == 0 ? 1 : (payload + h.gso_size - 1) / h.gso_size;
  }
  if (type != VirtioNetHdr::kGsoTcpV4 && type != VirtioNetHdr::kGsoTcpV6) return 0;
  const std::size_t t = tcp_offset(pkt.data(), pkt.size(), true);
  if (t == 0 || h.gso_size == 0 || pkt.size() < t + 20) return 0;
  const std::size_t thl = static_cast<std::size_t>(pkt[t + 12] >> 4) * 4;
  if (thl < 20 || t + thl > pkt.size()) return 0;
  // Every segment must fit a packet buffer (a TUN MTU above 9000 set by
  // hand could make the kernel's gso_size larger).
  if (t + thl + h.gso_size > core::Packet::kMaxData) return 0;
  const std::size_t payload = pkt.size() - t - thl;
  return payload == 0 ? 1 : (payload + h.gso_size - 1) / h.gso_size;
}

std::size_t segment(const VirtioNetHdr& h, core::ByteSpan pkt, std::span<core::Packet*> out,
                    SegmentError& err) noexcept {
  err = SegmentError::kNone;
  const std::size_t n = segments_needed(h, pkt);
  if (n == 0 || pkt.size() > core::Packet::kMaxData * n) {
    err = SegmentError::kMalformed;
    return 0;
  }
  if (n > out.size()) {
    err = SegmentError::kTooMany;
    return 0;
  }
  const std::uint8_t type = h.gso_type & static_cast<std::uint8_t>(~VirtioNetHdr::kGsoEcn);
  if (type == VirtioNetHdr::kGsoNone) {
    core::Packet& o = *out[0];
    if (pkt.size() > core::Packet::kMaxData) {
      err = SegmentError::kMalformed;
      return 0;
    }
    o.assign(pkt);
    if (h.flags & VirtioNetHdr::kNeedsCsum) {
      // The kernel left the checksum from csum_start to the end to us, with
      // the pseudo-header's sum already in its field.
      const std::size_t at = std::size_t{h.csum_start} + h.csum_offset;
      if (h.csum_start >= o.len || at + 2 > o.len) {
        err = SegmentError::kMalformed;
        return 0;
      }
      std::uint8_t* d = o.data();
      std::uint16_t c = static_cast<std::uint16_t>(
          ~csum_fold(csum_add(0, core::ByteSpan(d + h.csum_start, o.len - h.csum_start))));
      if (c == 0 && h.csum_offset == 6) c = 0xffff;  // UDP: 0 means none
      store_be16(d + at, c);
    }
    return 1;
  }
  const std::uint8_t* src = pkt.data();
  const bool v4 = (src[0] >> 4) == 4;
  if (type == VirtioNetHdr::kGsoUdpL4) {
    // Each datagram: the headers, its share of the payload, its own IPv4
    // length, ID and header checksum, UDP length and checksum.
    const std::size_t t = l4_offset(src, pkt.size(), kProtoUdp, true);
    const std::size_t hdrs = t + 8;
    const std::size_t payload = pkt.size() - hdrs;
    const std::size_t size = h.gso_size;
    const std::uint16_t id = v4 ? load_be16(src + 4) : 0;
    for (std::size_t i = 0; i < n; ++i) {
      core::Packet& o = *out[i];
      const std::size_t len = cut_one(src, t, hdrs, payload, size, i, id, o);
      std::uint8_t* d = o.data();
      std::uint8_t* udp = d + t;
      const std::size_t l4 = 8 + len;
      store_be16(udp + 4, static_cast<std::uint16_t>(l4));
      store_be16(udp + 6, 0);
      std::uint16_t c = static_cast<std::uint16_t>(
          ~csum_fold(csum_add(pseudo_sum(d, l4, kProtoUdp), core::ByteSpan(udp, l4))));
      if (c == 0) c = 0xffff;  // 0 means none
      store_be16(udp + 6, c);
    }
    return n;
  }
  const std::size_t t = tcp_offset(src, pkt.size(), true);
  const std::size_t thl = static_cast<std::size_t>(src[t + 12] >> 4) * 4;
  const std::size_t hdrs = t + thl;
  const std::size_t payload = pkt.size() - hdrs;
  const std::size_t mss = h.gso_size;
  const std::uint16_t id = v4 ? load_be16(src + 4) : 0;
  const std::uint32_t seq = load_be32(src + t + 4);
  const std::uint8_t flags = src[t + 13];
  for (std::size_t i = 0; i < n; ++i) {
    core::Packet& o = *out[i];
    const std::size_t len = cut_one(src, t, hdrs, payload, mss, i, id, o);
    const std::size_t off = i * mss;
    std::uint8_t* d = o.data();
    std::uint8_t* tcp = d + t;
    store_be32(tcp + 4, static_cast<std::uint32_t>(seq + off));
    std::uint8_t f = flags;
    if (i + 1 != n) f = static_cast<std::uint8_t>(f & ~(kFin | kPsh));
    if (i != 0) f = static_cast<std::uint8_t>(f & ~kCwr);
    tcp[13] = f;
    store_be16(tcp + 16, 0);
    const std::size_t l4 = thl + len;
    store_be16(tcp + 16, static_cast<std::uint16_t>(~csum_fold(csum_add(pseudo_sum(d, l4), core::ByteSpan(tcp, l4)))));
  }
  return n;
}

namespace {
struct TcpView {
  std::size_t t = 0;     // TCP header offset
  std::size_t hdrs = 0;  // IP + TCP headers
  std::size_t payload = 0;
  std::uint32_t seq = 0;
  std::uint8_t flags = 0;
};

// A TCP segment that may be coalesced: IPv4 without options or IPv6
// without extension headers, not a fragment, only ACK (and PSH) set, with
// payload, and a correct checksum (what the kernel would check itself).
bool coalescable(const core::Packet& p, TcpView& v) noexcept {
  const std::uint8_t* d = p.data();
  v.t = tcp_offset(d, p.len, false);
  if (v.t == 0 || p.len < v.t + 20) return false;
  const std::size_t thl = static_cast<std::size_t>(d[v.t + 12] >> 4) * 4;
  if (thl < 20 || v.t + thl >= p.len) return false;
  const std::size_t ip_len = (d[0] >> 4) == 4 ? load_be16(d + 2) : std::size_t{load_be16(d + 4)} + 40;
  if (ip_len != p.len) return false;
  // A bad IPv4 header checksum stays the kernel's to refuse: the run's
  // header is rewritten with a fresh one.
  if ((d[0] >> 4) == 4 && core::ipv4_header_checksum(core::ByteSpan(d, 20)) != load_be16(d + 10)) return false;
  v.hdrs = v.t + thl;
  v.payload = p.len - v.hdrs;
  v.flags = d[v.t + 13];
  if ((v.flags & (kFin | kSyn | kRst | kUrg | kEce | kCwr)) || !(v.flags & kAck)) return false;
  v.seq = load_be32(d + v.t + 4);
  const std::size_t l4 = p.len - v.t;
  return csum_fold(csum_add(pseudo_sum(d, l4), core::ByteSpan(d + v.t, l4))) == 0xffff;
}

// The same IP header but for length, ID and checksum (no IPv4 options, no
// IPv6 extension headers: the callers checked).
bool same_ip(const std::uint8_t* a, const std::uint8_t* b) noexcept {
  if ((a[0] >> 4) == 4)
    return a[0] == b[0] && a[1] == b[1] && load_be16(a + 6) == load_be16(b + 6) && a[8] == b[8] && a[9] == b[9] &&
           std::memcmp(a + 12, b + 12, 8) == 0;
  return std::memcmp(a, b, 4) == 0 && std::memcmp(a + 6, b + 6, 34) == 0;
}

// The same flow and headers but for what segmentation changes.
bool same_headers(const std::uint8_t* a, const std::uint8_t* b, const TcpView& va) noexcept {
  if (!same_ip(a, b)) return false;
  const std::uint8_t* ta = a + va.t;
  const std::uint8_t* tb = b + va.t;
  // Ports, ACK number, data offset, window, urgent pointer and options.
  return std::memcmp(ta, tb, 4) == 0 && std::memcmp(ta + 8, tb + 8, 5) == 0 && std::memcmp(ta + 14, tb + 14, 2) == 0 &&
         std::memcmp(ta + 18, tb + 18, va.hdrs - va.t - 18) == 0;
}

// Whether `b` may belong to the `proto` (TCP or UDP) flow of `a` (a
// coalescable packet whose header is at `at`): the same addresses and
// protocol, or what may hide it (an IPv4 fragment, an IPv6 extension
// header, ESP, AH), and the same ports where they can be read. A run never
// passes a packet that might be of its own flow.
bool maybe_same_flow(const core::Packet& a, std::size_t at, std::uint8_t proto, const core::Packet& b) noexcept {
  const std::uint8_t* x = a.data();
  const std::uint8_t* y = b.data();
  if (b.len < 20 || (x[0] >> 4) != (y[0] >> 4)) return false;
  std::size_t t = 0;
  if ((x[0] >> 4) == 4) {
    if (std::memcmp(x + 12, y + 12, 8) != 0) return false;
    if (y[9] == 50 || y[9] == 51) return true;  // ESP, AH: the flow may be inside
    if (y[9] != proto) return false;
    t = l4_offset(y, b.len, proto, true);  // 0 for a fragment
  } else {
    if (b.len < 40 || std::memcmp(x + 8, y + 8, 32) != 0) return false;
    switch (y[6]) {
      case 0: case 43: case 44: case 50: case 51: case 60: case 135: case 139: case 140: case 253: case 254:
        return true;  // extension headers (RFC 8200 4, IANA): the flow may follow
      default:
        if (y[6] != proto) return false;
        t = 40;
    }
  }
  if (t == 0 || b.len < t + 4) return true;  // cannot tell
  return std::memcmp(x + at, y + t, 4) == 0;
}
bool maybe_same_flow(const core::Packet& a, const TcpView& va, const core::Packet& b) noexcept {
  return maybe_same_flow(a, va.t, kProtoTcp, b);
}

struct UdpView {
  std::size_t t = 0;  // UDP header offset
  std::size_t payload = 0;
};

// A UDP datagram that may be coalesced: IPv4 without options or IPv6
// without extension headers, not a fragment, lengths that agree, payload,
// and a checksum that is there (not 0) and correct, so the checksum the
// kernel computes for it again changes nothing.
bool udp_coalescable(const core::Packet& p, UdpView& v) noexcept {
  const std::uint8_t* d = p.data();
  v.t = l4_offset(d, p.len, kProtoUdp, false);
  if (v.t == 0 || p.len <= v.t + 8) return false;
  const std::size_t ip_len = (d[0] >> 4) == 4 ? load_be16(d + 2) : std::size_t{load_be16(d + 4)} + 40;
  if (ip_len != p.len || load_be16(d + v.t + 4) != p.len - v.t || load_be16(d + v.t + 6) == 0) return false;
  if ((d[0] >> 4) == 4 && core::ipv4_header_checksum(core::ByteSpan(d, 20)) != load_be16(d + 10)) return false;
  v.payload = p.len - v.t - 8;
  const std::size_t l4 = p.len - v.t;
  return csum_fold(csum_add(pseudo_sum(d, l4, kProtoUdp), core::ByteSpan(d + v.t, l4))) == 0xffff;
}
}  // namespace

// A run of UDP datagrams of one flow from pkts[i] (GSO_UDP_L4): payloads
// of the first one's size, the last no larger; at most kMaxUdpSegments.
void Coalescer::plan_udp(std::span<core::Packet* const> pkts, std::size_t i, Group& g) noexcept {
  UdpView v;
  if (!udp_coalescable(*pkts[i], v)) return;
  const std::size_t size = v.payload;
  std::size_t total = pkts[i]->len;
  std::size_t skipped = 0;
  for (std::size_t j = i + 1; j < pkts.size() && skipped <= kMaxSkip &&
                              members_.size() - g.at < kMaxUdpSegments;
       ++j) {
    if (taken_[j]) continue;
    if (!maybe_same_flow(*pkts[i], v.t, kProtoUdp, *pkts[j])) {
      ++skipped;
      continue;
    }
    UdpView w;
    if (!udp_coalescable(*pkts[j], w) || w.t != v.t || w.payload > size || total + w.payload > 65535 ||
        !same_ip(pkts[i]->data(), pkts[j]->data()) ||
        std::memcmp(pkts[i]->data() + v.t, pkts[j]->data() + v.t, 4) != 0)
      break;
    taken_[j] = 1;
    members_.push_back(static_cast<std::uint32_t>(j));
    total += w.payload;
    if (w.payload < size) break;  // a run ends with a shorter datagram
  }
  g.count = members_.size() - g.at;
  if (g.count < 2) return;
  std::uint8_t* d = pkts[i]->data();
  const bool v4 = (d[0] >> 4) == 4;
  std::memcpy(g.saved.data(), d, v.t + 8);
  if (v4) {
    store_be16(d + 2, static_cast<std::uint16_t>(total));
    store_be16(d + 10, core::ipv4_header_checksum(core::ByteSpan(d, 20)));
  } else {
    store_be16(d + 4, static_cast<std::uint16_t>(total - 40));
  }
  store_be16(d + v.t + 4, static_cast<std::uint16_t>(total - v.t));
  // NEEDS_CSUM: the field holds the pseudo-header's sum, not complemented.
  store_be16(d + v.t + 6, csum_fold(pseudo_sum(d, total - v.t, kProtoUdp)));
  g.hdr.flags = VirtioNetHdr::kNeedsCsum;
  g.hdr.gso_type = VirtioNetHdr::kGsoUdpL4;
  g.hdr.hdr_len = static_cast<std::uint16_t>(v.t + 8);
  g.hdr.gso_size = static_cast<std::uint16_t>(size);
  g.hdr.csum_start = static_cast<std::uint16_t>(v.t);
  g.hdr.csum_offset = 6;
}

const std::vector<Coalescer::Group>& Coalescer::plan(std::span<core::Packet* const> pkts, bool udp) noexcept {
  groups_.clear();
  members_.clear();
  taken_.assign(pkts.size(), 0);
  for (std::size_t i = 0; i < pkts.size(); ++i) {
    if (taken_[i]) continue;
    taken_[i] = 1;
    Group g;
    g.at = members_.size();
    members_.push_back(static_cast<std::uint32_t>(i));
    if (udp && pkts[i]->len >= 20 && pkts[i]->data()[(pkts[i]->data()[0] >> 4) == 4 ? 9 : 6] == kProtoUdp) {
      plan_udp(pkts, i, g);
      groups_.push_back(g);
      continue;
    }
    TcpView v;
    if (!coalescable(*pkts[i], v) || (v.flags & kPsh)) {
      groups_.push_back(g);
      continue;
    }
    const std::size_t mss = v.payload;
    std::size_t total = pkts[i]->len;
    std::uint32_t next_seq = v.seq + static_cast<std::uint32_t>(v.payload);
    std::uint8_t last_flags = v.flags;
    std::size_t skipped = 0;
    for (std::size_t j = i + 1; j < pkts.size() && skipped <= kMaxSkip; ++j) {
      if (taken_[j]) continue;
      if (!maybe_same_flow(*pkts[i], v, *pkts[j])) {
        ++skipped;
        continue;
      }
      TcpView w;
      if (!coalescable(*pkts[j], w) || w.hdrs != v.hdrs || w.seq != next_seq || w.payload > mss ||
          total + w.payload > 65535 || !same_headers(pkts[i]->data(), pkts[j]->data(), v))
        break;
      taken_[j] = 1;
      members_.push_back(static_cast<std::uint32_t>(j));
      total += w.payload;
      next_seq += static_cast<std::uint32_t>(w.payload);
      last_flags = w.flags;
      if (w.payload < mss || (w.flags & kPsh)) break;  // a run ends with a short segment or PSH
    }
    g.count = members_.size() - g.at;
    if (g.count > 1) {
      std::uint8_t* d = pkts[i]->data();
      const bool v4 = (d[0] >> 4) == 4;
      static_assert(40 + 60 <= kMaxSavedHeaders);
      std::memcpy(g.saved.data(), d, v.hdrs);
      if (v4) {
        store_be16(d + 2, static_cast<std::uint16_t>(total));
        store_be16(d + 10, core::ipv4_header_checksum(core::ByteSpan(d, 20)));
      } else {
        store_be16(d + 4, static_cast<std::uint16_t>(total - 40));
      }
      d[v.t + 13] = static_cast<std::uint8_t>(d[v.t + 13] | (last_flags & kPsh));
      // NEEDS_CSUM: the field holds the pseudo-header's sum, not complemented.
      store_be16(d + v.t + 16, csum_fold(pseudo_sum(d, total - v.t)));
      g.hdr.flags = VirtioNetHdr::kNeedsCsum;
      g.hdr.gso_type = v4 ? VirtioNetHdr::kGsoTcpV4 : VirtioNetHdr::kGsoTcpV6;
      g.hdr.hdr_len = static_cast<std::uint16_t>(v.hdrs);
      g.hdr.gso_size = static_cast<std::uint16_t>(mss);
      g.hdr.csum_start = static_cast<std::uint16_t>(v.t);
      g.hdr.csum_offset = 16;
    }
    groups_.push_back(g);
  }
  return groups_;
}

}  // namespace ipsecgw::tun
