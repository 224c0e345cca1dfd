// Whole ESP packets from the RFCs, reproduced byte for byte and decrypted.
#include <catch2/catch.hpp>

#include "../vectors.hpp"
#include "core/packet.hpp"
#include "esp/esp_sa.hpp"

using namespace ipsecgw;
using test::hex;
using test::load_vectors;

namespace {
core::SaParams params_for(core::EspTransform t, const core::Bytes& keymat, std::uint32_t spi) {
  core::SaParams p;
  p.name = "kat";
  p.transform = t;
  p.selectors.local = {core::IpRange::any(core::Family::V4)};
  p.selectors.remote = p.selectors.local;
  p.out.spi = p.in.spi = spi;
  p.out.keymat = core::SecureBytes(keymat);
  p.in.keymat = core::SecureBytes(keymat);
  return p;
}

void check_vector(const core::SaParams& p, const core::Bytes& inner, std::uint64_t seq,
                  const core::Bytes& iv, const core::Bytes& expected_esp) {
  std::string why;
  auto out = esp::OutboundSa::create(p, why);
  auto in = esp::InboundSa::create(p, why);
  INFO(why);
  REQUIRE(out);
  REQUIRE(in);
  core::Packet pkt;
  pkt.assign(inner);
  REQUIRE(out->encapsulate_with(pkt, seq, iv) == core::Drop::kNone);
  CHECK(core::to_hex(pkt.span()) == core::to_hex(expected_esp));
  core::Packet rx;
  rx.assign(expected_esp);
  REQUIRE(in->decapsulate(rx) == core::Drop::kNone);
  CHECK(core::to_hex(rx.span()) == core::to_hex(inner));
}
}  // namespace

TEST_CASE("RFC 3602 tunnel-mode ESP packets (cases 7 and 8)", "[esp][vectors]") {
  auto doc = load_vectors("rfc/rfc3602_aes_cbc_esp.json");
  int run = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["type"] != "esp-tunnel") continue;
    INFO(v["case"]);
    // The RFC's examples are encryption-only; the crypto layer allows that,
    // the configuration does not.
    core::EspTransform t{{core::EncAlg::kAesCbc, 16}, core::IntegAlg::kNone, false};
    auto p = params_for(t, hex(v["key"]), static_cast<std::uint32_t>(std::stoul(v["spi"].get<std::string>(), nullptr, 16)));
    auto inner = hex(v["original_ip_header"].get<std::string>() + v["original_data"].get<std::string>());
    check_vector(p, inner, v["seq"].get<std::uint64_t>(), hex(v["iv"]), hex(v["esp_packet"]));
    ++run;
  }
  CHECK(run == 2);
}

TEST_CASE("RFC 7634 Appendix A ChaCha20-Poly1305 ESP packet", "[esp][vectors]") {
  auto doc = load_vectors("rfc/rfc7634_chacha20_poly1305_esp_ikev2.json");
  const auto& v = doc["vectors"][0];
  core::EspTransform t{{core::EncAlg::kChaCha20Poly1305, 32}, core::IntegAlg::kNone, false};
  auto p = params_for(t, hex(v["keymat"]), 0x01020304);
  auto ip = hex(v["ip_packet"]);
  core::Bytes esp_packet(ip.begin() + 20, ip.end());  // strip the outer IPv4 header
  check_vector(p, hex(v["inner_packet"]), v["seq"].get<std::uint64_t>(), hex(v["iv"]), esp_packet);
}
