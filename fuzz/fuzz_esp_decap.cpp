// libFuzzer target: a datagram as it arrives on the ESP/IKE socket (UDP
// port 4500, or a raw ESP payload when the first input byte is odd), through
// classification and inbound ESP processing. The SA's SPI is 0x00001001 so
// the fuzzer can reach decryption, padding and inner header checks; byte 0
// also chooses the algorithm.
//
// Byte 0 bit 4 selects "sealed" mode: the rest of the input is taken as the
// ESP plaintext (payload, padding, pad length, next header, as the fuzzer
// wrote them), encrypted and authenticated with the SA's keys, and then
// decapsulated. A fuzzer cannot forge an ICV, so without this mode the
// padding, next-header, inner-header and selector checks would be out of its
// reach.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/packet.hpp"
#include "esp/dataplane.hpp"
#include "esp/natt.hpp"

using namespace ipsecgw;

namespace {
const char* kAlgs[] = {"aes128gcm16", "chacha20poly1305", "aes128-sha256", "null-sha256",
                       "aes128ctr-sha1", "3des-md5", "aes256gcm16-esn", "null-sha256-esn"};

std::vector<std::unique_ptr<esp::EspCrypto>> sealers;
std::uint32_t sealed_seq = 0;

std::vector<std::unique_ptr<esp::DataPlane>> make_planes() {
  core::log::set_level(core::log::Level::kError);
  std::vector<std::unique_ptr<esp::DataPlane>> planes;
  for (const char* alg : kAlgs) {
    std::string why;
    auto t = core::single_esp_transform(alg, why);
    core::SaParams p;
    p.name = alg;
    p.transform = *t;
    p.selectors.local = {core::IpRange::any(core::Family::V4), core::IpRange::any(core::Family::V6)};
    p.selectors.remote = {*core::IpRange::parse("10.2.0.0/16"), *core::IpRange::parse("fd02::/16")};
    p.replay_window = 32;
    core::Bytes k(t->keymat_len(), 0x11);
    p.out.spi = p.in.spi = 0x1001;
    p.out.keymat = core::SecureBytes(k);
    p.in.keymat = core::SecureBytes(k);
    sealers.push_back(esp::EspCrypto::create(*t, k, core::CipherDir::kEncrypt, why));
    if (!sealers.back()) __builtin_trap();
    auto dp = std::make_unique<esp::DataPlane>();
    if (!dp->install(std::move(p), why)) __builtin_trap();
    planes.push_back(std::move(dp));
  }
  return planes;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static auto planes = make_planes();
  if (size < 1) return 0;
  const std::size_t alg = (data[0] >> 1) % planes.size();
  auto& dp = *planes[alg];
  core::ByteSpan datagram(data + 1, size - 1);
  static core::Packet pkt;
  if (data[0] & 0x10) {
    // Sealed: hdr | iv | plaintext (block-aligned with zeros) | icv.
    const auto& t = sealers[alg]->transform();
    const std::size_t iv = core::iv_len(t.enc.alg), blk = core::block_len(t.enc.alg);
    std::size_t body = datagram.size();
    if (body < 2 || body > 2000) return 0;
    body = (body + blk - 1) / blk * blk;
    core::Bytes esp(esp::kEspHeaderLen + iv + body + t.icv_len(), 0);
    const std::uint32_t seq = ++sealed_seq;
    const std::uint8_t hdr[8] = {0, 0, 0x10, 0x01, static_cast<std::uint8_t>(seq >> 24),
                                 static_cast<std::uint8_t>(seq >> 16),
                                 static_cast<std::uint8_t>(seq >> 8), static_cast<std::uint8_t>(seq)};
    std::copy(hdr, hdr + 8, esp.begin());
    for (std::size_t i = 0; i < iv; ++i) esp[8 + i] = static_cast<std::uint8_t>(seq + i);
    std::copy(datagram.begin(), datagram.end(), esp.begin() + 8 + iv);
    if (!sealers[alg]->protect(esp, iv, 0)) __builtin_trap();
    pkt.assign(esp);
  } else if (data[0] & 1) {
    pkt.assign(datagram);
  } else {
    auto c = esp::classify_udp(datagram);
    if (c.kind != esp::UdpKind::kEsp) return 0;
    pkt.assign(c.payload);
  }
  auto snap = dp.snapshot();
  if (dp.process_inbound(*snap, pkt) == core::Drop::kNone) {
    // Whatever was accepted must be a well-formed IP packet inside the buffer.
    core::PacketInfo info;
    if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) __builtin_trap();
  }
  return 0;
}
