#include "esp/natt.hpp"

#include "esp/esp_sa.hpp"

namespace ipsecgw::esp {

UdpClassified classify_udp(core::ByteSpan d) noexcept {
  if (d.size() == 1 && d[0] == kKeepaliveByte) return {UdpKind::kKeepalive, {}};
  if (d.size() < kNonEspMarkerLen) return {UdpKind::kMalformed, {}};
  if (core::load_be32(d.data()) == 0) {
    // An IKE header is 28 bytes; anything shorter cannot be IKE.
    if (d.size() < kNonEspMarkerLen + 28) return {UdpKind::kMalformed, {}};
    return {UdpKind::kIke, d.subspan(kNonEspMarkerLen)};
  }
  if (d.size() < kEspHeaderLen) return {UdpKind::kMalformed, {}};
  return {UdpKind::kEsp, d};
}

}  // namespace ipsecgw::esp
