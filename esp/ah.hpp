// AH (RFC 4302): the header and its ICV, for the SA objects in esp_sa.
//
// An AH packet is handled whole, outer IP header included, because the ICV
// covers that header with its mutable fields zeroed (3.3.3.1): IPv4 TOS,
// flags and fragment offset, TTL, checksum and the options RFC 4302
// appendix A calls mutable; IPv6 traffic class, flow label, hop limit and
// the data of hop-by-hop and destination options whose type has the
// "may change en route" bit. A routing header is refused (the ICV would
// need it as it will look at the destination).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "core/crypto.hpp"

namespace ipsecgw::esp {

inline constexpr std::size_t kAhHeaderLen = 12;  // next header, length, reserved, SPI, sequence number

// The AH header with its IV (AES-GMAC) and ICV, padded to 4 bytes (IPv4) or
// 8 (IPv6, 2.6).
std::size_t ah_len(const core::AhTransform& t, bool v6) noexcept;

// Computes the ICV of the IP packet `ip` (exactly its total length) whose
// AH header starts at `ah_off`: the header(s) before it masked, the AH
// header with its `iv_len` bytes of IV as they are (the MAC's IV too) and
// `icv_len` bytes of ICV taken as zero, what follows, then `seq_hi` when
// `esn`. Writes `icv_len` bytes to `out`. False when the headers cannot be
// masked (malformed options, a routing header).
bool ah_icv(core::Mac& mac, core::ByteSpan ip, std::size_t ah_off, std::size_t iv_len, std::size_t icv_len,
            bool esn, std::uint32_t seq_hi, std::uint8_t* out) noexcept;

// After verification, in transport mode: the IPv4 options outside the ICV
// (the mutable ones, zeroed whole for it, type and length included) become
// NOPs, so that nothing the ICV did not cover reaches the stack (a Record
// Route rewritten into a source route on the way, say).
void neutralise_mutable_v4_options(std::uint8_t* ip_header, std::size_t ihl) noexcept;

// The offset of the AH header in an IP packet: after the IPv4 header, or
// after IPv6 hop-by-hop and destination options; 0 when the packet is not
// AH or is malformed. `total` gets the packet's length from its header,
// `nh_pos` the offset of the next-header (protocol) byte that names AH.
std::size_t find_ah(core::ByteSpan ip, std::size_t& total, std::size_t& nh_pos) noexcept;

// The offset of the byte that names the upper-layer protocol found at
// `l4_off` (IPv4: the protocol field; IPv6: the last extension header's
// next header, or the fixed header's).
std::size_t next_header_pos(core::ByteSpan ip, std::size_t l4_off) noexcept;

}  // namespace ipsecgw::esp
