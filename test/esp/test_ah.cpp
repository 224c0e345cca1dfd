// AH (RFC 4302) in the SA objects and the data plane: round trips in both
// modes and families, every single-bit flip, replay, truncation at every
// length, the SPI space shared with ESP. scapy checks the bytes themselves
// (test/oracle); these tests check the drops.
#include <catch2/catch.hpp>

#include "core/packet.hpp"
#include "esp/ah.hpp"
#include "esp/dataplane.hpp"
#include "esp/esp_sa.hpp"

using namespace ipsecgw;
using core::Drop;

namespace {
core::SaParams ah_sa(const std::string& alg, core::SaMode mode, bool v6, bool flip = false) {
  std::string why;
  auto t = core::single_ah_transform(alg, why);
  REQUIRE(t);
  core::SaParams p;
  p.name = "ah-" + alg;
  p.protocol = core::IpsecProtocol::kAh;
  p.mode = mode;
  p.ah = *t;
  p.local_addr = *core::IpAddress::parse(v6 ? "2001:db8::1" : "198.51.100.1");
  p.remote_addr = *core::IpAddress::parse(v6 ? "2001:db8::2" : "198.51.100.2");
  if (flip) std::swap(p.local_addr, p.remote_addr);
  if (mode == core::SaMode::kTransport) {
    p.selectors.local = {core::IpRange{p.local_addr, p.local_addr}};
    p.selectors.remote = {core::IpRange{p.remote_addr, p.remote_addr}};
  } else {
    p.selectors.local = {core::IpRange::any(core::Family::V4), core::IpRange::any(core::Family::V6)};
    p.selectors.remote = p.selectors.local;
  }
  core::Bytes k(t->keymat_len());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i * 5 + 3);
  p.out.spi = p.in.spi = 0x5001;
  p.out.keymat = core::SecureBytes(k);
  p.in.keymat = core::SecureBytes(k);
  return p;
}

core::Bytes udp_between(const core::IpAddress& src, const core::IpAddress& dst, std::size_t n) {
  core::Bytes pkt(src.is_v4() ? 20 : 40);
  core::Bytes udp(8 + n, 0x61);
  core::store_be16(udp.data(), 1701);
  core::store_be16(udp.data() + 2, 1701);
  core::store_be16(udp.data() + 4, static_cast<std::uint16_t>(udp.size()));
  core::store_be16(udp.data() + 6, 0);  // no checksum (IPv4); fine for these tests
  core::write_ip_header(pkt.data(), src, dst, 17, udp.size());
  pkt.insert(pkt.end(), udp.begin(), udp.end());
  return pkt;
}

// This side's outbound SA and the peer's inbound one.
struct Pair {
  std::unique_ptr<esp::OutboundSa> out;
  std::unique_ptr<esp::InboundSa> peer_in;
};
Pair pair(const std::string& alg, core::SaMode mode, bool v6) {
  std::string why;
  Pair r{esp::OutboundSa::create(ah_sa(alg, mode, v6), why), esp::InboundSa::create(ah_sa(alg, mode, v6, true), why)};
  INFO(why);
  REQUIRE(r.out);
  REQUIRE(r.peer_in);
  return r;
}
core::Bytes inner_for(const esp::OutboundSa& out, core::SaMode mode) {
  const auto& p = out.params();
  if (mode == core::SaMode::kTransport) return udp_between(p.local_addr, p.remote_addr, 100);
  return udp_between(*core::IpAddress::parse("10.1.0.2"), *core::IpAddress::parse("10.2.0.2"), 100);
}
}  // namespace

TEST_CASE("AH round trip: every algorithm, tunnel and transport, IPv4 and IPv6", "[ah]") {
  for (const char* alg : {"md5", "sha1", "sha256", "sha384", "sha512", "sha256-esn"}) {
    for (auto mode : {core::SaMode::kTunnel, core::SaMode::kTransport}) {
      for (bool v6 : {false, true}) {
        INFO(alg << (mode == core::SaMode::kTunnel ? " tunnel" : " transport") << (v6 ? " v6" : " v4"));
        auto pr = pair(alg, mode, v6);
        const auto inner = inner_for(*pr.out, mode);
        core::Packet pkt;
        pkt.assign(inner);
        REQUIRE(pr.out->encapsulate(pkt) == Drop::kNone);
        std::size_t total = 0, nh = 0;
        const std::size_t ah_off = esp::find_ah(pkt.span(), total, nh);
        REQUIRE(ah_off == (v6 ? 40u : 20u));
        CHECK(total == pkt.len);
        CHECK(core::load_be32(pkt.data() + ah_off + 4) == 0x5001);
        if (!v6) CHECK(core::load_be16(pkt.data() + 4) != 0);  // never an ID the kernel would replace
        REQUIRE(pr.peer_in->decapsulate(pkt) == Drop::kNone);
        if (mode == core::SaMode::kTunnel) {
          CHECK(core::Bytes(pkt.span().begin(), pkt.span().end()) == inner);
        } else {
          // The header comes back as sent, but for the ID AH had to set.
          auto got = core::Bytes(pkt.span().begin(), pkt.span().end());
          auto want = inner;
          if (!v6) {
            std::copy(got.begin() + 4, got.begin() + 6, want.begin() + 4);
            core::store_be16(want.data() + 10, core::ipv4_header_checksum(core::ByteSpan(want).first(20)));
          }
          CHECK(got == want);
        }
      }
    }
  }
}

TEST_CASE("AH: every bit outside the mutable fields is under the ICV", "[ah]") {
  for (bool v6 : {false, true}) {
    auto pr = pair("sha256", core::SaMode::kTunnel, v6);
    core::Packet pkt;
    pkt.assign(inner_for(*pr.out, core::SaMode::kTunnel));
    REQUIRE(pr.out->encapsulate(pkt) == Drop::kNone);
    const core::Bytes wire(pkt.span().begin(), pkt.span().end());
    std::string why;
    std::size_t accepted = 0, refused = 0;
    for (std::size_t bit = 0; bit < wire.size() * 8; ++bit) {
      const std::size_t byte = bit / 8;
      // Mutable: IPv4 TOS (1), flags/offset (6-7), TTL (8), checksum (10-11);
      // IPv6 traffic class and flow label (0-3, but the version nibble), hop limit (7).
      const bool mutable_field = v6 ? ((byte == 0 && bit % 8 >= 4) || (byte >= 1 && byte <= 3) || byte == 7)
                                    : (byte == 1 || byte == 6 || byte == 7 || byte == 8 || byte == 10 || byte == 11);
      auto in = esp::InboundSa::create(ah_sa("sha256", core::SaMode::kTunnel, v6, true), why);
      core::Packet p;
      p.assign(wire);
      p.data()[byte] ^= static_cast<std::uint8_t>(0x80 >> (bit % 8));
      const Drop d = in->decapsulate(p);
      if (mutable_field) {
        // Fragment bits make it a fragment, which AH refuses before the ICV.
        if (!(byte == 6 || byte == 7) || v6) CHECK(d == Drop::kNone);
        accepted += d == Drop::kNone;
      } else {
        CHECK(d != Drop::kNone);
        refused += d != Drop::kNone;
      }
    }
    CHECK(accepted > 0);
    CHECK(refused > 0);
  }
}

TEST_CASE("AH: replay, truncation at every length, and bad lengths are dropped and counted", "[ah][truncation]") {
  auto pr = pair("sha512", core::SaMode::kTransport, false);
  core::Packet pkt;
  pkt.assign(inner_for(*pr.out, core::SaMode::kTransport));
  REQUIRE(pr.out->encapsulate(pkt) == Drop::kNone);
  const core::Bytes wire(pkt.span().begin(), pkt.span().end());
  core::Packet p;
  p.assign(wire);
  REQUIRE(pr.peer_in->decapsulate(p) == Drop::kNone);
  p.assign(wire);
  CHECK(pr.peer_in->decapsulate(p) == Drop::kReplay);
  CHECK(pr.peer_in->counters().dropped(Drop::kReplay) == 1);
  for (std::size_t n = 0; n < wire.size(); ++n) {
    p.assign(core::ByteSpan(wire).first(n));
    CHECK(pr.peer_in->decapsulate(p) != Drop::kNone);
  }
  // A Payload Length that does not match the algorithm's ICV.
  auto bad = wire;
  bad[21] = static_cast<std::uint8_t>(bad[21] - 1);
  p.assign(bad);
  CHECK(pr.peer_in->decapsulate(p) == Drop::kMalformed);
}

TEST_CASE("AH in the data plane: its own receive path, ESP's SPIs are not AH's", "[ah][dataplane]") {
  std::string why;
  esp::DataPlane a, b;
  REQUIRE(a.install(ah_sa("sha256", core::SaMode::kTransport, false), why));
  REQUIRE(b.install(ah_sa("sha256", core::SaMode::kTransport, false, true), why));
  core::Packet pkt;
  pkt.assign(udp_between(*core::IpAddress::parse("198.51.100.1"), *core::IpAddress::parse("198.51.100.2"), 40));
  auto d = a.process_outbound(*a.snapshot(), pkt);
  REQUIRE(d.action == esp::OutAction::kSend);
  const core::Bytes wire(pkt.span().begin(), pkt.span().end());
  // Handed to the ESP path (as if it came on the ESP socket), the SPI is no ESP SA's.
  core::Packet as_esp;
  as_esp.assign(core::ByteSpan(wire).subspan(20));
  CHECK(b.process_inbound(*b.snapshot(), as_esp) == Drop::kBadSpi);
  CHECK(b.process_inbound_ah(*b.snapshot(), pkt) == Drop::kNone);
  // Not AH at all, and an unknown SPI.
  core::Packet junk;
  junk.assign(udp_between(*core::IpAddress::parse("198.51.100.2"), *core::IpAddress::parse("198.51.100.1"), 4));
  CHECK(b.process_inbound_ah(*b.snapshot(), junk) == Drop::kMalformed);
  auto other = wire;
  other[24] ^= 0xff;
  junk.assign(other);
  CHECK(b.process_inbound_ah(*b.snapshot(), junk) == Drop::kBadSpi);
  CHECK(b.global().dropped(Drop::kBadSpi) == 2);
}

TEST_CASE("an SA narrowed to tcp/443 protects that port; other traffic to the host is dropped and counted",
          "[dataplane][ts]") {
  std::string why;
  auto p = ah_sa("sha256", core::SaMode::kTunnel, false);
  p.protocol = core::IpsecProtocol::kEsp;
  p.transform = *core::single_esp_transform("aes128gcm16", why);
  p.out.keymat = core::SecureBytes(core::Bytes(20, 7));
  p.in.keymat = core::SecureBytes(core::Bytes(20, 7));
  p.selectors.local = {*core::IpRange::parse("10.1.0.0/24")};
  p.selectors.remote = {*core::IpRange::parse("10.2.0.5")};
  p.selectors.proto = 6;
  p.selectors.remote_ports = {443, 443};
  esp::DataPlane dp;
  REQUIRE(dp.install(std::move(p), why));
  auto tcp_to = [](std::uint16_t port) {
    core::Bytes pkt(20 + 20, 0);
    core::write_ip_header(pkt.data(), *core::IpAddress::parse("10.1.0.2"), *core::IpAddress::parse("10.2.0.5"), 6, 20);
    core::store_be16(pkt.data() + 20, 40000);
    core::store_be16(pkt.data() + 22, port);
    pkt[32] = 0x50;  // data offset
    return pkt;
  };
  core::Packet pkt;
  pkt.assign(tcp_to(443));
  CHECK(dp.process_outbound(*dp.snapshot(), pkt).action == esp::OutAction::kSend);
  pkt.assign(tcp_to(80));
  const auto d = dp.process_outbound(*dp.snapshot(), pkt);
  CHECK(d.action == esp::OutAction::kDrop);
  CHECK(d.reason == Drop::kNoPolicy);
  CHECK(dp.global().dropped(Drop::kNoPolicy) == 1);
}

TEST_CASE("a transport SA narrowed to udp/1701: the rest between the hosts is clear, but never a fragment",
          "[dataplane][ts][transport]") {
  std::string why;
  auto p = ah_sa("sha256", core::SaMode::kTransport, false);
  p.selectors.proto = 17;
  p.selectors.local_ports = p.selectors.remote_ports = {1701, 1701};
  const auto here = *core::IpAddress::parse("198.51.100.1"), there = *core::IpAddress::parse("198.51.100.2");
  core::Packet pkt;
  auto other = udp_between(here, there, 30);
  core::store_be16(other.data() + 22, 53);
  {
    // Narrowed by the peer (IKE), not by the configuration: nothing in the clear.
    esp::DataPlane narrowed;
    auto q = ah_sa("sha256", core::SaMode::kTransport, false);
    q.selectors = p.selectors;
    REQUIRE(narrowed.install(std::move(q), why));
    pkt.assign(other);
    CHECK(narrowed.process_outbound(*narrowed.snapshot(), pkt).action == esp::OutAction::kDrop);
  }
  p.clear_outside_selectors = true;  // as config/manual.cpp sets it for "[udp/1701]"
  esp::DataPlane dp;
  REQUIRE(dp.install(std::move(p), why));
  pkt.assign(udp_between(here, there, 30));  // 1701 -> 1701
  CHECK(dp.process_outbound(*dp.snapshot(), pkt).action == esp::OutAction::kSend);
  pkt.assign(other);
  CHECK(dp.process_outbound(*dp.snapshot(), pkt).action == esp::OutAction::kBypass);
  // A later fragment of a 1701 datagram shows no ports: not clear, dropped.
  auto frag = udp_between(here, there, 30);
  core::store_be16(frag.data() + 6, 0x0010);  // offset 128 bytes
  core::store_be16(frag.data() + 10, core::ipv4_header_checksum(core::ByteSpan(frag).first(20)));
  pkt.assign(frag);
  const auto d = dp.process_outbound(*dp.snapshot(), pkt);
  CHECK(d.action == esp::OutAction::kDrop);
  CHECK(d.reason == Drop::kNoPolicy);
}

TEST_CASE("a transport SA does not deliver a packet in a packet its selectors never saw", "[ah][esp][transport]") {
  for (bool ah : {true, false}) {
    INFO((ah ? "AH" : "ESP"));
    std::string why;
    auto a = ah_sa("sha256", core::SaMode::kTransport, false);
    auto b = ah_sa("sha256", core::SaMode::kTransport, false, true);
    if (!ah) {
      for (auto* x : {&a, &b}) {
        x->protocol = core::IpsecProtocol::kEsp;
        x->transform = *core::single_esp_transform("aes128gcm16", why);
        x->out.keymat = core::SecureBytes(core::Bytes(20, 9));
        x->in.keymat = core::SecureBytes(core::Bytes(20, 9));
      }
    }
    auto out = esp::OutboundSa::create(a, why);
    auto in = esp::InboundSa::create(b, why);
    REQUIRE(out);
    REQUIRE(in);
    // 198.51.100.1 -> .2, protocol 4 (IP-in-IP) around a packet for 10.9.9.9.
    auto inner = udp_between(*core::IpAddress::parse("192.0.2.7"), *core::IpAddress::parse("10.9.9.9"), 8);
    core::Bytes pkt_bytes(20);
    core::write_ip_header(pkt_bytes.data(), a.local_addr, a.remote_addr, 4, inner.size());
    pkt_bytes.insert(pkt_bytes.end(), inner.begin(), inner.end());
    core::Packet pkt;
    pkt.assign(pkt_bytes);
    REQUIRE(out->encapsulate(pkt) == Drop::kNone);
    CHECK(in->decapsulate(pkt) == Drop::kPolicyMismatch);
  }
}

namespace {
core::SaParams bundle_sa(core::SaMode mode, bool v6, bool flip) {
  auto p = ah_sa("sha256", mode, v6, flip);
  std::string why;
  p.name = "bundle";
  p.protocol = core::IpsecProtocol::kAhEsp;
  p.transform = *core::single_esp_transform("aes128gcm16", why);
  core::Bytes ek(20, 0x42);
  p.ah_out.spi = p.ah_in.spi = 0x6101;
  p.ah_out.keymat = std::move(p.out.keymat);
  p.ah_in.keymat = std::move(p.in.keymat);
  p.out.spi = p.in.spi = 0x6001;
  p.out.keymat = core::SecureBytes(ek);
  p.in.keymat = core::SecureBytes(ek);
  return p;
}
}  // namespace

TEST_CASE("AH+ESP bundle: IP | AH | ESP both ways, each SA with its own SPI, window and ICV", "[ah][bundle]") {
  for (auto mode : {core::SaMode::kTunnel, core::SaMode::kTransport}) {
    for (bool v6 : {false, true}) {
      INFO((mode == core::SaMode::kTunnel ? "tunnel " : "transport ") << (v6 ? "v6" : "v4"));
      std::string why;
      auto out = esp::OutboundSa::create(bundle_sa(mode, v6, false), why);
      auto in = esp::InboundSa::create(bundle_sa(mode, v6, true), why);
      REQUIRE(out);
      REQUIRE(in);
      CHECK(in->spi() == 0x6101);  // found by its AH SPI
      const auto src = *core::IpAddress::parse(v6 ? "2001:db8::1" : "198.51.100.1");
      const auto dst = *core::IpAddress::parse(v6 ? "2001:db8::2" : "198.51.100.2");
      const auto inner = udp_between(src, dst, 100);
      core::Packet pkt;
      pkt.assign(inner);
      REQUIRE(out->encapsulate(pkt) == Drop::kNone);
      const core::Bytes wire(pkt.span().begin(), pkt.span().end());
      std::size_t total = 0, nh = 0;
      const std::size_t ah_off = esp::find_ah(wire, total, nh);
      REQUIRE(ah_off == (v6 ? 40u : 20u));
      CHECK(wire[ah_off] == 50);                               // AH's next header: ESP
      CHECK(core::load_be32(wire.data() + ah_off + 4) == 0x6101);  // AH SPI
      const std::size_t esp_off = ah_off + esp::ah_len(core::AhTransform{}, v6);
      CHECK(core::load_be32(wire.data() + esp_off) == 0x6001);  // ESP SPI
      CHECK(core::load_be32(wire.data() + ah_off + 8) == 1);    // each SA's own sequence number
      CHECK(core::load_be32(wire.data() + esp_off + 4) == 1);
      pkt.assign(wire);
      REQUIRE(in->decapsulate(pkt) == Drop::kNone);
      if (mode == core::SaMode::kTunnel) CHECK(core::Bytes(pkt.span().begin(), pkt.span().end()) == inner);
      pkt.assign(wire);
      CHECK(in->decapsulate(pkt) == Drop::kReplay);
      // Every bit of AH, ESP and payload is under one ICV or the other.
      int failed = 0;
      for (std::size_t i = ah_off; i < wire.size(); ++i) {
        auto bad = wire;
        bad[i] ^= 0x10;
        core::store_be32(bad.data() + ah_off + 8, 1000 + static_cast<std::uint32_t>(i));  // fresh AH sequence
        if (i >= ah_off + 8 && i < ah_off + 12) continue;  // the sequence number itself, rewritten here
        pkt.assign(bad);
        failed += in->decapsulate(pkt) != Drop::kNone;
      }
      CHECK(failed == static_cast<int>(wire.size() - ah_off - 4));
      // ESP alone, without the AH around it, is not the bundle.
      pkt.assign(core::Bytes(wire.begin() + static_cast<long>(esp_off), wire.end()));
      CHECK(in->decapsulate(pkt) != Drop::kNone);
    }
  }
}

TEST_CASE("AH+ESP bundle in the data plane: found by the AH SPI only, the ESP SPI alone is unknown", "[ah][bundle][dataplane]") {
  std::string why;
  esp::DataPlane dp;
  REQUIRE(dp.install(bundle_sa(core::SaMode::kTunnel, false, false), why));
  auto snap = dp.snapshot();
  CHECK(snap->find_inbound(0x6101) != nullptr);
  CHECK(snap->find_inbound(0x6001) == nullptr);
  core::Bytes esp(40, 0);
  core::store_be32(esp.data(), 0x6001);
  core::Packet pkt;
  pkt.assign(esp);
  CHECK(dp.process_inbound(*snap, pkt) == Drop::kBadSpi);
}
