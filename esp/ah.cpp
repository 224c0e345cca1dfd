#include "esp/ah.hpp"

#include <array>
#include <cstring>

#include "core/ip.hpp"

namespace ipsecgw::esp {

namespace {
constexpr std::uint8_t kAh = 51;
constexpr std::size_t kMaxMasked = 512;  // IP header and extension headers before AH

// RFC 4302 appendix A.1: the IPv4 options that are immutable; every other
// option is zeroed whole. Compared by option number (the low five bits).
bool immutable_v4_option(std::uint8_t type) noexcept {
  switch (type & 0x1f) {
    case 0: case 1: case 2: case 5: case 6: case 20: case 21: return true;
    default: return false;
  }
}

bool mask_v4(std::uint8_t* h, std::size_t ihl) noexcept {
  h[1] = 0;            // TOS (DSCP, ECN)
  h[6] = h[7] = 0;     // flags, fragment offset
  h[8] = 0;            // TTL
  h[10] = h[11] = 0;   // checksum
  for (std::size_t o = 20; o < ihl;) {
    const std::uint8_t type = h[o];
    if (type == 0) break;  // end of options: the rest is padding, kept
    if (type == 1) {
      ++o;
      continue;
    }
    if (o + 1 >= ihl) return false;
    const std::size_t len = h[o + 1];
    if (len < 2 || o + len > ihl) return false;
    if (!immutable_v4_option(type)) std::memset(h + o, 0, len);
    o += len;
  }
  return true;
}

// Hop-by-hop and destination options (RFC 8200 4.2): the data of an option
// whose type has bit 0x20 set may change en route and is zeroed.
bool mask_v6_options(std::uint8_t* ext, std::size_t len) noexcept {
  for (std::size_t o = 2; o < len;) {
    const std::uint8_t type = ext[o];
    if (type == 0) {  // Pad1
      ++o;
      continue;
    }
    if (o + 1 >= len) return false;
    const std::size_t dlen = ext[o + 1];
    if (o + 2 + dlen > len) return false;
    if (type & 0x20) std::memset(ext + o + 2, 0, dlen);
    o += 2 + dlen;
  }
  return true;
}
}  // namespace

void neutralise_mutable_v4_options(std::uint8_t* h, std::size_t ihl) noexcept {
  for (std::size_t o = 20; o < ihl;) {
    const std::uint8_t type = h[o];
    if (type == 0) break;
    if (type == 1 || o + 1 >= ihl) {
      ++o;
      continue;
    }
    const std::size_t len = h[o + 1];
    if (len < 2 || o + len > ihl) return;  // cannot happen after mask_v4 accepted it
    if (!immutable_v4_option(type)) std::memset(h + o, 1, len);
    o += len;
  }
}

std::size_t ah_len(const core::AhTransform& t, bool v6) noexcept {
  const std::size_t raw = kAhHeaderLen + t.iv_len() + t.icv_len();
  const std::size_t align = v6 ? 8 : 4;
  return (raw + align - 1) / align * align;
}

std::size_t next_header_pos(core::ByteSpan ip, std::size_t l4_off) noexcept {
  if ((ip[0] >> 4) == 4) return 9;
  std::size_t pos = 6;
  for (std::size_t off = 40; off + 8 <= l4_off && off + 2 <= ip.size();) {
    pos = off;  // hop-by-hop, routing or destination options (fragments are refused before)
    off += (std::size_t{ip[off + 1]} + 1) * 8;
  }
  return pos;
}

std::size_t find_ah(core::ByteSpan ip, std::size_t& total, std::size_t& nh_pos) noexcept {
  if (ip.size() < 20) return 0;
  if ((ip[0] >> 4) == 4) {
    const std::size_t ihl = std::size_t{ip[0] & 0x0fu} * 4;
    total = core::load_be16(ip.data() + 2);
    if (ihl < 20 || total < ihl || total > ip.size() || ip[9] != kAh) return 0;
    nh_pos = 9;
    return ihl;
  }
  if ((ip[0] >> 4) != 6 || ip.size() < 40) return 0;
  total = 40 + std::size_t{core::load_be16(ip.data() + 4)};
  if (total > ip.size()) return 0;
  std::uint8_t next = ip[6];
  std::size_t off = 40;
  nh_pos = 6;
  for (int i = 0; i < 8; ++i) {
    if (next == kAh) return off;
    if (next != 0 && next != 60) return 0;  // only hop-by-hop and destination options before AH
    if (total - off < 8) return 0;
    const std::size_t len = (std::size_t{ip[off + 1]} + 1) * 8;
    if (len > total - off) return 0;
    next = ip[off];
    nh_pos = off;
    off += len;
  }
  return 0;
}

bool ah_icv(core::Mac& mac, core::ByteSpan ip, std::size_t ah_off, std::size_t iv_len, std::size_t icv_len,
            bool esn, std::uint32_t seq_hi, std::uint8_t* out) noexcept {
  if (ah_off > kMaxMasked || ip.size() < ah_off + kAhHeaderLen + iv_len + icv_len || ip.size() < 20) return false;
  std::array<std::uint8_t, kMaxMasked> hdr;
  std::memcpy(hdr.data(), ip.data(), ah_off);
  if ((ip[0] >> 4) == 4) {
    if (!mask_v4(hdr.data(), ah_off)) return false;
  } else {
    if (ah_off < 40) return false;
    hdr[0] = 0x60;  // traffic class and flow label
    hdr[1] = hdr[2] = hdr[3] = 0;
    hdr[7] = 0;  // hop limit
    std::uint8_t next = hdr[6];
    for (std::size_t off = 40; off < ah_off;) {
      if (next != 0 && next != 60) return false;  // a routing header is not supported
      if (off + 8 > ah_off) return false;
      const std::size_t len = (std::size_t{hdr[off + 1]} + 1) * 8;
      if (off + len > ah_off || !mask_v6_options(hdr.data() + off, len)) return false;
      next = hdr[off];
      off += len;
    }
  }
  static const std::uint8_t kZeros[64] = {};
  if (icv_len > sizeof kZeros) return false;
  std::uint8_t hi[4];
  core::store_be32(hi, seq_hi);
  const std::size_t after = ah_off + kAhHeaderLen + iv_len + icv_len;
  if (iv_len) mac.set_iv(ip.subspan(ah_off + kAhHeaderLen, iv_len));
  return mac.begin() && mac.update(core::ByteSpan(hdr.data(), ah_off)) &&
         mac.update(ip.subspan(ah_off, kAhHeaderLen + iv_len)) && mac.update(core::ByteSpan(kZeros, icv_len)) &&
         mac.update(ip.subspan(after)) && (!esn || mac.update(core::ByteSpan(hi, 4))) &&
         mac.finish(core::MutByteSpan(out, icv_len));
}

}  // namespace ipsecgw::esp
