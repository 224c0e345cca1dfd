// libFuzzer target: an IP packet as the AH socket delivers it, through the
// data plane's AH path (find the header, SPI lookup, replay, ICV, then the
// tunnel or transport handling and the selectors). SAs with SPI 0x00005001
// in four data planes: tunnel and transport, IPv4 and IPv6 (byte 0 chooses).
//
// Byte 0 bit 4 selects "sealed" mode: the rest is an IP packet with an AH
// header wherever the fuzzer put it; its ICV is computed with the SA's key
// and written in before the packet goes in, so that what follows the ICV
// check (the header rebuilt in transport mode, inner packet checks,
// selectors) is within the fuzzer's reach.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/packet.hpp"
#include "esp/ah.hpp"
#include "esp/dataplane.hpp"

using namespace ipsecgw;

namespace {
const core::Bytes kKey(32, 0x5a);

std::vector<std::unique_ptr<esp::DataPlane>> make_planes() {
  core::log::set_level(core::log::Level::kError);
  std::vector<std::unique_ptr<esp::DataPlane>> planes;
  // 0-3: AH sha256 (v4/v6, tunnel/transport); 4-5: AH+ESP bundles (AH
  // sha256 over ESP aes128gcm16, tunnel), 6-7: AH with AES-GMAC, tunnel.
  for (int i = 0; i < 8; ++i) {
    const bool v6 = i & 1, transport = i >= 2 && i < 4, bundle = i == 4 || i == 5, gmac = i >= 6;
    std::string why;
    core::SaParams p;
    p.name = "ah";
    p.protocol = bundle ? core::IpsecProtocol::kAhEsp : core::IpsecProtocol::kAh;
    p.ah = *core::single_ah_transform(gmac ? "aes128gmac" : "sha256", why);
    if (bundle) {
      p.transform = *core::single_esp_transform("aes128gcm16", why);
      p.ah_out.spi = p.ah_in.spi = 0x5001;  // the AH SPI, as the seeds carry it
      p.ah_out.keymat = core::SecureBytes(kKey);
      p.ah_in.keymat = core::SecureBytes(kKey);
    }
    p.mode = transport ? core::SaMode::kTransport : core::SaMode::kTunnel;
    p.local_addr = *core::IpAddress::parse(v6 ? "2001:db8::1" : "198.51.100.1");
    p.remote_addr = *core::IpAddress::parse(v6 ? "2001:db8::2" : "198.51.100.2");
    if (transport) {
      p.selectors.local = {core::IpRange{p.local_addr, p.local_addr}};
      p.selectors.remote = {core::IpRange{p.remote_addr, p.remote_addr}};
    } else {
      p.selectors.local = {core::IpRange::any(core::Family::V4), core::IpRange::any(core::Family::V6)};
      p.selectors.remote = {*core::IpRange::parse("10.2.0.0/16"), *core::IpRange::parse("fd02::/16")};
    }
    p.replay_window = 32;
    p.out.spi = p.in.spi = bundle ? 0x6001 : 0x5001;
    const core::Bytes key = bundle ? core::Bytes(20, 0x3c) : gmac ? core::Bytes(20, 0x5a) : kKey;
    p.out.keymat = core::SecureBytes(key);
    p.in.keymat = core::SecureBytes(key);
    auto dp = std::make_unique<esp::DataPlane>();
    if (!dp->install(std::move(p), why)) __builtin_trap();
    planes.push_back(std::move(dp));
  }
  return planes;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto planes = make_planes();
  static auto mac = core::Hmac::create(core::digest_name(core::IntegAlg::kHmacSha256_128), kKey);
  if (size < 1) return 0;
  auto& dp = *planes[(data[0] >> 1) % planes.size()];
  static core::Packet pkt;
  pkt.assign(core::ByteSpan(data + 1, size - 1));
  const std::size_t which = (data[0] >> 1) % planes.size();
  if ((data[0] & 0x10) && which < 6) {  // sealed with HMAC-SHA-256 (not the GMAC planes)
    std::size_t total = 0, nh = 0;
    const std::size_t off = esp::find_ah(pkt.span(), total, nh);
    if (off != 0 && total >= off + esp::kAhHeaderLen + 16) {
      std::uint8_t icv[16];
      if (esp::ah_icv(*mac, pkt.span().first(total), off, 0, 16, false, 0, icv))
        std::copy(icv, icv + 16, pkt.data() + off + esp::kAhHeaderLen);
    }
  }
  auto snap = dp.snapshot();
  if (dp.process_inbound_ah(*snap, pkt) == core::Drop::kNone) {
    core::PacketInfo info;
    if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) __builtin_trap();
  }
  return 0;
}
