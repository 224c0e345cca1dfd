#include "core/ip.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace ipsecgw::core {

namespace {

__extension__ typedef unsigned __int128 u128;

u128 to_u128(const IpAddress& a) {
  u128 v = 0;
  for (auto b : a.bytes()) v = (v << 8) | b;
  return v;
}

IpAddress from_u128(u128 v, Family f) {
  std::array<std::uint8_t, 16> b{};
  std::size_t n = f == Family::V4 ? 4 : 16;
  for (std::size_t i = 0; i < n; ++i) {
    b[n - 1 - i] = static_cast<std::uint8_t>(v & 0xff);
    v >>= 8;
  }
  return f == Family::V4 ? IpAddress::v4(ByteSpan(b.data(), 4)) : IpAddress::v6(b);
}

unsigned bits(Family f) { return f == Family::V4 ? 32 : 128; }

u128 host_mask(Family f, unsigned len) {
  unsigned host = bits(f) - len;
  if (host == 0) return 0;
  if (host >= 128) return ~u128{0};
  return (u128{1} << host) - 1;
}

}  // namespace

IpAddress IpAddress::v4(ByteSpan four) noexcept {
  IpAddress a;
  a.family_ = Family::V4;
  std::copy_n(four.begin(), std::min<std::size_t>(4, four.size()), a.bytes_.begin());
  return a;
}

IpAddress IpAddress::v6(ByteSpan sixteen) noexcept {
  IpAddress a;
  a.family_ = Family::V6;
  std::copy_n(sixteen.begin(), std::min<std::size_t>(16, sixteen.size()), a.bytes_.begin());
  return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  std::string s(text);
  std::array<std::uint8_t, 16> buf{};
  if (inet_pton(AF_INET, s.c_str(), buf.data()) == 1) return v4(ByteSpan(buf.data(), 4));
  if (inet_pton(AF_INET6, s.c_str(), buf.data()) == 1) return v6(buf);
  return std::nullopt;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
  return buf;
}

std::string Prefix::to_string() const { return addr.to_string() + "/" + std::to_string(len); }

IpRange IpRange::from_prefix(const IpAddress& addr, unsigned len) {
  u128 v = to_u128(addr);
  u128 m = host_mask(addr.family(), len);
  return IpRange{from_u128(v & ~m, addr.family()), from_u128(v | m, addr.family())};
}

IpRange IpRange::any(Family f) {
  return from_prefix(f == Family::V4 ? *IpAddress::parse("0.0.0.0") : *IpAddress::parse("::"), 0);
}

std::optional<IpRange> IpRange::parse(std::string_view text) {
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    auto addr = IpAddress::parse(text.substr(0, slash));
    if (!addr) return std::nullopt;
    auto len_text = text.substr(slash + 1);
    unsigned len = 0;
    auto [p, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || p != len_text.data() + len_text.size() || len_text.empty() ||
        len > bits(addr->family())) {
      return std::nullopt;
    }
    return from_prefix(*addr, len);
  }
  if (auto dash = text.find('-'); dash != std::string_view::npos) {
    auto lo = IpAddress::parse(text.substr(0, dash));
    auto hi = IpAddress::parse(text.substr(dash + 1));
    if (!lo || !hi || lo->family() != hi->family() || *hi < *lo) return std::nullopt;
    return IpRange{*lo, *hi};
  }
  auto a = IpAddress::parse(text);
  if (!a) return std::nullopt;
  return IpRange{*a, *a};
}

std::vector<Prefix> IpRange::to_prefixes() const {
  std::vector<Prefix> out;
  Family f = family();
  u128 lo_v = to_u128(lo);
  const u128 hi_v = to_u128(hi);
  const unsigned nbits = bits(f);
  for (;;) {
    // Largest aligned block starting at lo_v that does not pass hi_v.
    unsigned len = nbits;
    while (len > 0) {
      u128 m = host_mask(f, len - 1);
      if ((lo_v & m) != 0 || (lo_v | m) > hi_v) break;
      --len;
    }
    out.push_back(Prefix{from_u128(lo_v, f), len});
    u128 last = lo_v | host_mask(f, len);
    if (last >= hi_v) break;
    lo_v = last + 1;
  }
  return out;
}

std::string IpRange::to_string() const {
  auto prefixes = to_prefixes();
  if (prefixes.size() == 1) {
    if (lo == hi) return lo.to_string();
    return prefixes[0].to_string();
  }
  return lo.to_string() + "-" + hi.to_string();
}

std::string PortRange::to_string() const {
  if (any()) return "any";
  if (lo == hi) return std::to_string(lo);
  return std::to_string(lo) + "-" + std::to_string(hi);
}

namespace {
struct ProtoName {
  std::string_view name;
  std::uint8_t number;
};
constexpr ProtoName kProtoNames[] = {
    {"icmp", ipproto::kIcmp},   {"tcp", ipproto::kTcp},       {"udp", ipproto::kUdp},
    {"esp", ipproto::kEsp},     {"ah", ipproto::kAh},         {"ipv6-icmp", ipproto::kIcmpv6},
    {"icmpv6", ipproto::kIcmpv6}, {"sctp", ipproto::kSctp},   {"udplite", ipproto::kUdpLite},
    {"gre", 47},
};
}  // namespace

std::optional<std::uint8_t> parse_ip_protocol(std::string_view name) {
  for (const auto& p : kProtoNames) {
    if (p.name == name) return p.number;
  }
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(name.data(), name.data() + name.size(), v);
  if (ec == std::errc{} && ptr == name.data() + name.size() && !name.empty() && v <= 255) {
    return static_cast<std::uint8_t>(v);
  }
  return std::nullopt;
}

std::string ip_protocol_name(std::uint8_t proto) {
  for (const auto& p : kProtoNames) {
    if (p.number == proto) return std::string(p.name);
  }
  return std::to_string(proto);
}

const char* to_string(IpParseError e) noexcept {
  switch (e) {
    case IpParseError::kNone: return "ok";
    case IpParseError::kTruncated: return "truncated header";
    case IpParseError::kBadVersion: return "bad IP version";
    case IpParseError::kBadHeaderLength: return "bad header length";
    case IpParseError::kBadTotalLength: return "bad total length";
    case IpParseError::kTooManyExtensions: return "too many IPv6 extension headers";
  }
  return "?";
}

namespace {

bool has_ports(std::uint8_t proto) {
  return proto == ipproto::kTcp || proto == ipproto::kUdp || proto == ipproto::kSctp ||
         proto == ipproto::kUdpLite;
}

void read_ports(ByteSpan l4, PacketInfo& info) {
  info.has_ports = false;
  if (has_ports(info.proto) && l4.size() >= 4) {
    info.has_ports = true;
    info.src_port = load_be16(l4.data());
    info.dst_port = load_be16(l4.data() + 2);
  } else if ((info.proto == ipproto::kIcmp || info.proto == ipproto::kIcmpv6) && l4.size() >= 2) {
    // RFC 4301 4.4.1.1: ICMP type and code take the place of the ports.
    info.has_ports = true;
    info.src_port = l4[0];
    info.dst_port = l4[1];
  }
}

IpParseError parse_v4(ByteSpan pkt, PacketInfo& info) {
  if (pkt.size() < 20) return IpParseError::kTruncated;
  std::size_t ihl = std::size_t{pkt[0] & 0x0fu} * 4;
  if (ihl < 20) return IpParseError::kBadHeaderLength;
  if (ihl > pkt.size()) return IpParseError::kTruncated;
  std::size_t total = load_be16(pkt.data() + 2);
  if (total < ihl || total > pkt.size()) return IpParseError::kBadTotalLength;
  info.family = Family::V4;
  info.total_len = total;
  info.proto = pkt[9];
  info.src = IpAddress::v4(pkt.subspan(12, 4));
  info.dst = IpAddress::v4(pkt.subspan(16, 4));
  std::uint16_t frag = load_be16(pkt.data() + 6);
  bool non_first_fragment = (frag & 0x1fff) != 0;
  info.fragment = (frag & 0x3fff) != 0;  // MF or an offset
  info.l4_off = ihl;
  info.has_ports = false;
  if (!non_first_fragment) read_ports(pkt.subspan(ihl, total - ihl), info);
  return IpParseError::kNone;
}

IpParseError parse_v6(ByteSpan pkt, PacketInfo& info) {
  if (pkt.size() < 40) return IpParseError::kTruncated;
  std::size_t total = 40 + std::size_t{load_be16(pkt.data() + 4)};
  if (total > pkt.size()) return IpParseError::kBadTotalLength;
  info.family = Family::V6;
  info.total_len = total;
  info.src = IpAddress::v6(pkt.subspan(8, 16));
  info.dst = IpAddress::v6(pkt.subspan(24, 16));
  std::uint8_t next = pkt[6];
  std::size_t off = 40;
  bool non_first_fragment = false;
  info.fragment = false;
  // Walk the extension headers (RFC 8200 4), bounded.
  for (int i = 0;; ++i) {
    if (i >= 8) return IpParseError::kTooManyExtensions;
    if (next == 0 || next == 43 || next == 60) {  // hop-by-hop, routing, dest opts
      if (total - off < 8) return IpParseError::kTruncated;
      std::size_t len = (std::size_t{pkt[off + 1]} + 1) * 8;
      if (len > total - off) return IpParseError::kTruncated;
      next = pkt[off];
      off += len;
    } else if (next == 44) {  // fragment
      if (total - off < 8) return IpParseError::kTruncated;
      non_first_fragment = (load_be16(pkt.data() + off + 2) & 0xfff8) != 0;
      info.fragment = true;
      next = pkt[off];
      off += 8;
    } else {
      break;
    }
  }
  info.proto = next;
  info.l4_off = off;
  info.has_ports = false;
  if (!non_first_fragment) read_ports(pkt.subspan(off, total - off), info);
  return IpParseError::kNone;
}

}  // namespace

IpParseError parse_ip_packet(ByteSpan packet, PacketInfo& info) noexcept {
  if (packet.empty()) return IpParseError::kTruncated;
  switch (packet[0] >> 4) {
    case 4: return parse_v4(packet, info);
    case 6: return parse_v6(packet, info);
    default: return IpParseError::kBadVersion;
  }
}

std::uint16_t ipv4_header_checksum(ByteSpan hdr) noexcept {
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i + 1 < hdr.size(); i += 2) {
    if (i == 10) continue;  // the checksum field itself
    sum += load_be16(hdr.data() + i);
  }
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

bool recompute_l4_checksum(MutByteSpan pkt, std::size_t l4_off) noexcept {
  if (pkt.size() < l4_off || (l4_off != 20 && l4_off != 40)) return false;
  const bool v4 = l4_off == 20;
  const std::uint8_t proto = v4 ? pkt[9] : pkt[6];
  std::size_t at = 0;
  if (proto == 6) at = 16;
  else if (proto == 17) at = 6;
  else if (proto == 58 && !v4) at = 2;
  else return false;
  const std::size_t l4_len = pkt.size() - l4_off;
  if (l4_len < at + 2) return false;
  std::uint8_t* l4 = pkt.data() + l4_off;
  if (v4 && proto == 17 && load_be16(l4 + 6) == 0) return true;  // no checksum
  store_be16(l4 + at, 0);
  std::uint32_t sum = proto + static_cast<std::uint32_t>(l4_len & 0xffff) + static_cast<std::uint32_t>(l4_len >> 16);
  const std::size_t addr_len = v4 ? 8 : 32;
  const std::uint8_t* addrs = pkt.data() + (v4 ? 12 : 8);
  for (std::size_t i = 0; i < addr_len; i += 2) sum += load_be16(addrs + i);
  for (std::size_t i = 0; i + 1 < l4_len; i += 2) sum += load_be16(l4 + i);
  if (l4_len & 1) sum += std::uint32_t{l4[l4_len - 1]} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  std::uint16_t c = static_cast<std::uint16_t>(~sum);
  if (proto == 17 && c == 0) c = 0xffff;
  store_be16(l4 + at, c);
  return true;
}

std::size_t write_ip_header(std::uint8_t* out, const IpAddress& src, const IpAddress& dst, std::uint8_t proto,
                            std::size_t payload_len, const IpHeaderFields& f) noexcept {
  if (src.is_v4()) {
    out[0] = 0x45;
    out[1] = f.tos;
    store_be16(out + 2, static_cast<std::uint16_t>(20 + payload_len));
    store_be16(out + 4, f.id);
    store_be16(out + 6, f.df ? 0x4000 : 0);
    out[8] = f.ttl;
    out[9] = proto;
    store_be16(out + 10, 0);
    std::memcpy(out + 12, src.bytes().data(), 4);
    std::memcpy(out + 16, dst.bytes().data(), 4);
    store_be16(out + 10, ipv4_header_checksum(ByteSpan(out, 20)));
    return 20;
  }
  store_be32(out, 0x60000000u | (std::uint32_t{f.tos} << 20));
  store_be16(out + 4, static_cast<std::uint16_t>(payload_len));
  out[6] = proto;
  out[7] = f.ttl;
  std::memcpy(out + 8, src.bytes().data(), 16);
  std::memcpy(out + 24, dst.bytes().data(), 16);
  return 40;
}

}  // namespace ipsecgw::core
