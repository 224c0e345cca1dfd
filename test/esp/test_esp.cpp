// ESP encapsulation and decapsulation: round trips for every algorithm, and
// every inbound drop reason.
#include <catch2/catch.hpp>

#include "../vectors.hpp"
#include "core/packet.hpp"
#include "esp/esp_sa.hpp"
#include "esp/natt.hpp"
#include "esp_test_util.hpp"

using namespace ipsecgw;
using core::Drop;
using test::hex;
using test::make_sa;

namespace {
// ICMP echo 10.1.0.2 -> 10.2.0.2 (28 bytes) and an IPv6 UDP packet.
const char* kV4 = "4500001c00010000400164c50a0100020a0200020800f7ff00000000";
const char* kV6 =
    "6000000000081140fd010000000000000000000000000002fd020000000000000000000000000002"
    "d43100350008f00d";

struct Pair {
  std::unique_ptr<esp::OutboundSa> out;
  std::unique_ptr<esp::InboundSa> in;
};
Pair make_pair(const std::string& esp, std::uint32_t window = 64) {
  auto p = make_sa(esp, window);
  std::string why;
  Pair r{esp::OutboundSa::create(p, why), esp::InboundSa::create(p, why)};
  INFO(why);
  REQUIRE(r.out);
  REQUIRE(r.in);
  return r;
}
}  // namespace

TEST_CASE("ESP round trip for every algorithm, IPv4 and IPv6 inner", "[esp]") {
  const char* algs[] = {"aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256",
                        "aes256-sha512", "aes128ctr-sha256", "aes128-sha1", "3des-md5",
                        "null-sha256", "aes256-sha384", "aes128gcm16-esn", "aes256-sha256-esn",
                        "chacha20poly1305-esn", "aes192-sha256", "aes256ctr-sha512"};
  for (const char* alg : algs) {
    for (const char* inner : {kV4, kV6}) {
      INFO(alg << (inner == kV4 ? " v4" : " v6"));
      auto sa = make_pair(alg);
      const auto plain = hex(inner);
      for (int i = 0; i < 3; ++i) {
        core::Packet pkt;
        pkt.assign(plain);
        REQUIRE(sa.out->encapsulate(pkt) == Drop::kNone);
        CHECK(pkt.len > plain.size());
        const std::size_t payload = pkt.len - sa.out->params().transform.icv_len();
        CHECK(payload % 4 == 0);  // RFC 4303 2.4 alignment
        CHECK(core::load_be32(pkt.data()) == 0x1001);
        CHECK(core::load_be32(pkt.data() + 4) == static_cast<std::uint32_t>(i + 1));
        REQUIRE(sa.in->decapsulate(pkt) == Drop::kNone);
        CHECK(core::Bytes(pkt.span().begin(), pkt.span().end()) == plain);
      }
      CHECK(sa.in->counters().in.packets == 3);
      CHECK(sa.out->counters().out.bytes == 3 * plain.size());
    }
  }
}

TEST_CASE("ESP inbound drops: replay, flipped bits, bad padding, policy, malformed", "[esp]") {
  auto sa = make_pair("aes128-sha256");
  const auto plain = hex(kV4);
  core::Packet pkt;
  pkt.assign(plain);
  REQUIRE(sa.out->encapsulate(pkt) == Drop::kNone);
  const core::Bytes wire(pkt.span().begin(), pkt.span().end());

  core::Packet p1;
  p1.assign(wire);
  REQUIRE(sa.in->decapsulate(p1) == Drop::kNone);
  core::Packet p2;
  p2.assign(wire);
  CHECK(sa.in->decapsulate(p2) == Drop::kReplay);


  // Every truncation is malformed or fails authentication, never a crash.
  auto fresh = make_pair("aes128gcm16");
  core::Packet g;
  g.assign(plain);
  REQUIRE(fresh.out->encapsulate(g) == Drop::kNone);
  const core::Bytes gwire(g.span().begin(), g.span().end());
  for (std::size_t n = 0; n < gwire.size(); ++n) {
    core::Packet p;
    p.assign(core::ByteSpan(gwire.data(), n));
    auto d = fresh.in->decapsulate(p);
    CHECK((d == Drop::kMalformed || d == Drop::kAuthFailed));
  }
}

TEST_CASE("ESP: every single-bit flip after the SPI fails authentication", "[esp]") {
  // Each flipped packet goes to a fresh inbound SA with the same keys, so
  // no flip is hidden behind a replay drop: the sequence number is new to
  // that SA, and only the ICV (or the AEAD tag) can catch the change.
  for (const char* alg : {"aes128-sha256", "aes128gcm16", "chacha20poly1305", "aes256-sha512-esn", "3des-md5"}) {
    INFO(alg);
    const auto params = make_sa(alg);
    std::string why;
    auto out = esp::OutboundSa::create(params, why);
    REQUIRE(out);
    core::Packet pkt;
    pkt.assign(hex(kV4));
    REQUIRE(out->encapsulate(pkt) == Drop::kNone);
    pkt.assign(hex(kV4));
    REQUIRE(out->encapsulate(pkt) == Drop::kNone);
    pkt.assign(hex(kV4));
    REQUIRE(out->encapsulate(pkt) == Drop::kNone);  // sequence number 3: no single flip makes it 0
    const core::Bytes wire(pkt.span().begin(), pkt.span().end());
    {
      auto in = esp::InboundSa::create(params, why);
      core::Packet ok;
      ok.assign(wire);
      REQUIRE(in->decapsulate(ok) == Drop::kNone);  // unflipped, it is accepted
    }
    std::size_t flips = 0, auth = 0;
    for (std::size_t bit = 32; bit < wire.size() * 8; ++bit) {
      auto in = esp::InboundSa::create(params, why);
      REQUIRE(in);
      core::Packet p;
      p.assign(wire);
      p.data()[bit / 8] ^= static_cast<std::uint8_t>(0x80 >> (bit % 8));
      INFO("bit " << bit);
      const auto d = in->decapsulate(p);
      CHECK(d == Drop::kAuthFailed);
      ++flips;
      auth += d == Drop::kAuthFailed;
      CHECK(in->counters().dropped(Drop::kAuthFailed) == 1);
    }
    CHECK(auth == flips);
    CHECK(flips == (wire.size() - 4) * 8);
  }
}

TEST_CASE("ESP padding is checked after decryption", "[esp]") {
  // Build a packet whose padding bytes are wrong but whose ICV is right, by
  // encapsulating with the sender and re-sealing by hand through EspCrypto.
  auto p = make_sa("aes128-sha256");
  std::string why;
  auto tx = esp::EspCrypto::create(p.transform, p.out.keymat.span(), core::CipherDir::kEncrypt, why);
  auto in = esp::InboundSa::create(p, why);
  REQUIRE(tx);
  REQUIRE(in);
  auto plain = hex(kV4);  // 28 bytes + 2 trailer -> 2 bytes of padding for 16-byte blocks
  core::Packet pkt;
  pkt.off = 100;
  pkt.len = 8 + 16 + 32 + 16;
  std::uint8_t* d = pkt.data();
  core::store_be32(d, 0x1001);
  core::store_be32(d + 4, 1);
  std::fill(d + 8, d + 24, 0x42);  // IV
  std::copy(plain.begin(), plain.end(), d + 24);
  d[24 + 28] = 1;
  d[24 + 29] = 7;  // should be 2
  d[24 + 30] = 2;
  d[24 + 31] = 4;
  REQUIRE(tx->protect(pkt.span(), 16, 0));
  CHECK(in->decapsulate(pkt) == Drop::kBadPadding);
}

TEST_CASE("ESP selectors are enforced after decryption", "[esp]") {
  auto p = make_sa("aes256gcm16");
  p.selectors.remote = {*core::IpRange::parse("10.9.0.0/16")};  // 10.1.0.2 is not in it
  std::string why;
  auto out = esp::OutboundSa::create(p, why);
  auto in = esp::InboundSa::create(p, why);
  core::Packet pkt;
  pkt.assign(hex(kV4));
  REQUIRE(out->encapsulate(pkt) == Drop::kNone);
  CHECK(in->decapsulate(pkt) == Drop::kPolicyMismatch);
  CHECK(in->counters().dropped(Drop::kPolicyMismatch) == 1);
}

TEST_CASE("ESP sequence numbers never wrap on a non-ESN SA", "[esp]") {
  auto sa = make_pair("aes128gcm16");
  sa.out->set_next_seq(0xffffffffULL);
  core::Packet pkt;
  pkt.assign(hex(kV4));
  CHECK(sa.out->encapsulate(pkt) == Drop::kNone);  // the last one
  pkt.assign(hex(kV4));
  CHECK(sa.out->encapsulate(pkt) == Drop::kSeqExhausted);
  pkt.assign(hex(kV4));
  CHECK(sa.out->encapsulate(pkt) == Drop::kSeqExhausted);
  CHECK(sa.out->counters().dropped(Drop::kSeqExhausted) == 2);

  auto esn = make_pair("aes128gcm16-esn");
  esn.out->set_next_seq(0xffffffffULL);
  for (int i = 0; i < 3; ++i) {
    pkt.assign(hex(kV4));
    REQUIRE(esn.out->encapsulate(pkt) == Drop::kNone);
    CHECK(esn.in->decapsulate(pkt) == Drop::kNone);  // high bits inferred
  }
  CHECK(esn.in->replay().top() == 0x100000001ULL);
}

TEST_CASE("ESN high bits are authenticated", "[esp][esn]") {
  // A packet sealed with seq_hi = 1 does not verify at a receiver that
  // infers seq_hi = 0.
  auto sa = make_pair("aes128-sha256-esn");
  sa.out->set_next_seq((1ULL << 32) + 1);
  core::Packet pkt;
  pkt.assign(hex(kV4));
  REQUIRE(sa.out->encapsulate(pkt) == Drop::kNone);
  CHECK(sa.in->decapsulate(pkt) == Drop::kAuthFailed);
}

TEST_CASE("UDP encapsulation classification and truncation", "[esp][natt][truncation]") {
  const std::uint8_t ka[] = {0xff};
  CHECK(esp::classify_udp(ka).kind == esp::UdpKind::kKeepalive);
  core::Bytes ike(4 + 28, 0);
  CHECK(esp::classify_udp(ike).kind == esp::UdpKind::kIke);
  CHECK(esp::classify_udp(ike).payload.size() == 28);
  core::Bytes esp_pkt = {0, 0, 0x10, 0x01, 0, 0, 0, 1};
  CHECK(esp::classify_udp(esp_pkt).kind == esp::UdpKind::kEsp);
  for (std::size_t n = 0; n < ike.size(); ++n) {
    auto k = esp::classify_udp(core::ByteSpan(ike.data(), n)).kind;
    CHECK(k == esp::UdpKind::kMalformed);
  }
  for (std::size_t n = 0; n < esp_pkt.size(); ++n) {
    auto k = esp::classify_udp(core::ByteSpan(esp_pkt.data(), n)).kind;
    CHECK((k == esp::UdpKind::kMalformed));
  }
}

TEST_CASE("ESP SA creation refuses wrong key lengths and unsupported modes", "[esp]") {
  auto p = make_sa("aes256gcm16");
  p.out.keymat = core::SecureBytes(core::Bytes(35, 1));
  std::string why;
  CHECK_FALSE(esp::OutboundSa::create(p, why));
  CHECK(why.find("36 bytes") != std::string::npos);
  auto q = make_sa("aes256gcm16");
  q.protocol = core::IpsecProtocol::kAh;
  CHECK_FALSE(esp::InboundSa::create(q, why));
  auto u = make_sa("aes256gcm16");
  u.protocol = core::IpsecProtocol::kAh;
  u.encap = core::Encap::kUdp;
  CHECK_FALSE(esp::OutboundSa::create(u, why));
  CHECK(why.find("NAT") != std::string::npos);
}

namespace {
// Transport mode between 198.51.100.1 (here) and 198.51.100.2 (the peer),
// or 2001:db8::1 and ::2: this side's outbound SA and the peer's inbound one.
struct TransportPair {
  std::unique_ptr<esp::OutboundSa> out;
  std::unique_ptr<esp::InboundSa> peer_in;
};
TransportPair transport_pair(const std::string& esp, bool v6) {
  auto p = make_sa(esp);
  p.mode = core::SaMode::kTransport;
  if (v6) {
    p.local_addr = *core::IpAddress::parse("2001:db8::1");
    p.remote_addr = *core::IpAddress::parse("2001:db8::2");
  }
  p.selectors.local = {core::IpRange{p.local_addr, p.local_addr}};
  p.selectors.remote = {core::IpRange{p.remote_addr, p.remote_addr}};
  auto q = make_sa(esp);
  q.mode = core::SaMode::kTransport;
  q.local_addr = p.remote_addr;
  q.remote_addr = p.local_addr;
  q.selectors.local = p.selectors.remote;
  q.selectors.remote = p.selectors.local;
  std::string why;
  TransportPair r{esp::OutboundSa::create(p, why), esp::InboundSa::create(q, why)};
  INFO(why);
  REQUIRE(r.out);
  REQUIRE(r.peer_in);
  return r;
}
// A UDP datagram with its checksum from `src` to `dst`, as the kernel would
// write it (TTL/hop limit 64, no DF, ID 0, TOS 0): what transport-mode
// decapsulation must give back byte for byte.
core::Bytes udp_packet(const core::IpAddress& src, const core::IpAddress& dst, std::size_t payload) {
  core::Bytes udp(8 + payload);
  core::store_be16(udp.data(), 40000);
  core::store_be16(udp.data() + 2, 1701);
  core::store_be16(udp.data() + 4, static_cast<std::uint16_t>(udp.size()));
  for (std::size_t i = 0; i < payload; ++i) udp[8 + i] = static_cast<std::uint8_t>(i * 13);
  std::uint32_t sum = 17 + static_cast<std::uint32_t>(udp.size());  // pseudo-header
  auto add = [&](core::ByteSpan b) {
    for (std::size_t i = 0; i < b.size(); i += 2) sum += (b[i] << 8) | (i + 1 < b.size() ? b[i + 1] : 0);
  };
  add(src.bytes());
  add(dst.bytes());
  add(udp);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  core::store_be16(udp.data() + 6, static_cast<std::uint16_t>(~sum));
  core::Bytes pkt(src.is_v4() ? 20 : 40);
  core::write_ip_header(pkt.data(), src, dst, 17, udp.size());
  pkt.insert(pkt.end(), udp.begin(), udp.end());
  return pkt;
}
}  // namespace

TEST_CASE("ESP transport mode: the IP header leaves, and comes back built from the SA's addresses",
          "[esp][transport]") {
  for (const char* alg : {"aes128gcm16", "aes128-sha256", "chacha20poly1305", "null-sha256"}) {
    for (bool v6 : {false, true}) {
      INFO(alg << (v6 ? " IPv6" : " IPv4"));
      auto tp = transport_pair(alg, v6);
      const auto& a = tp.out->params();
      const auto original = udp_packet(a.local_addr, a.remote_addr, 333);
      core::Packet pkt;
      pkt.assign(original);
      REQUIRE(tp.out->encapsulate(pkt) == Drop::kNone);
      // No IP header inside: the ESP payload is the UDP datagram, next header 17.
      if (std::string(alg) == "null-sha256") {
        const std::size_t hl = v6 ? 40 : 20;
        CHECK(core::Bytes(pkt.data() + 8, pkt.data() + 8 + original.size() - hl) ==
              core::Bytes(original.begin() + static_cast<std::ptrdiff_t>(hl), original.end()));
        const std::size_t icv = 16;
        CHECK(pkt.data()[pkt.len - icv - 1] == 17);
      }
      CHECK(pkt.len < original.size() + 40);
      REQUIRE(tp.peer_in->decapsulate(pkt) == Drop::kNone);
      CHECK(core::Bytes(pkt.span().begin(), pkt.span().end()) == original);
      core::PacketInfo info;
      REQUIRE(core::parse_ip_packet(pkt.span(), info) == core::IpParseError::kNone);
      CHECK(info.dst_port == 1701);
      if (!v6) CHECK(core::ipv4_header_checksum(pkt.span().first(20)) == core::load_be16(pkt.data() + 10));
    }
  }
}

TEST_CASE("ESP transport mode carries only whole packets between its own two addresses",
          "[esp][transport]") {
  auto tp = transport_pair("aes128gcm16", false);
  const auto& a = tp.out->params();
  core::Packet pkt;
  // Another source address: not this SA's traffic.
  pkt.assign(udp_packet(*core::IpAddress::parse("198.51.100.9"), a.remote_addr, 10));
  CHECK(tp.out->encapsulate(pkt) == Drop::kPolicyMismatch);
  // A fragment (MF set): transport SAs carry none (RFC 4301 7).
  auto frag = udp_packet(a.local_addr, a.remote_addr, 10);
  frag[6] = 0x20;
  core::store_be16(frag.data() + 10, core::ipv4_header_checksum(core::ByteSpan(frag).first(20)));
  pkt.assign(frag);
  CHECK(tp.out->encapsulate(pkt) == Drop::kMalformed);
  // An IPv6 packet with a destination options header would lose it.
  auto tp6 = transport_pair("aes128gcm16", true);
  auto v6 = udp_packet(tp6.out->params().local_addr, tp6.out->params().remote_addr, 10);
  v6[6] = 60;  // next header: destination options, then UDP
  const std::uint8_t dstopts[8] = {17, 0, 1, 4, 0, 0, 0, 0};  // PadN
  v6.insert(v6.begin() + 40, dstopts, dstopts + 8);
  core::store_be16(v6.data() + 4, static_cast<std::uint16_t>(v6.size() - 40));
  pkt.assign(v6);
  CHECK(tp6.out->encapsulate(pkt) == Drop::kMalformed);
  CHECK(tp.out->counters().dropped(Drop::kPolicyMismatch) == 1);
  CHECK(tp.out->counters().dropped(Drop::kMalformed) == 1);
  CHECK(tp6.out->counters().dropped(Drop::kMalformed) == 1);
  // Inbound: a payload the selectors refuse (another port is fine, another
  // protocol too; a narrower selector would refuse them).
  pkt.assign(udp_packet(a.local_addr, a.remote_addr, 10));
  REQUIRE(tp.out->encapsulate(pkt) == Drop::kNone);
  CHECK(tp.peer_in->decapsulate(pkt) == Drop::kNone);
}

TEST_CASE("ESP transport in UDP through a NAT: the receiver recomputes the TCP/UDP checksum (RFC 3948 3.1.2)",
          "[esp][transport][natt]") {
  // The initiator at 192.168.1.10 behind a NAT whose public address is
  // 203.0.113.1 talks to 203.0.113.2, which knows it only by the public one.
  auto a = make_sa("aes128gcm16");
  a.mode = core::SaMode::kTransport;
  a.encap = core::Encap::kUdp;
  a.local_addr = *core::IpAddress::parse("192.168.1.10");
  a.remote_addr = *core::IpAddress::parse("203.0.113.2");
  a.selectors.local = {core::IpRange{a.local_addr, a.local_addr}};
  a.selectors.remote = {core::IpRange{a.remote_addr, a.remote_addr}};
  auto b = make_sa("aes128gcm16");
  b.mode = core::SaMode::kTransport;
  b.encap = core::Encap::kUdp;
  b.local_addr = a.remote_addr;
  b.remote_addr = *core::IpAddress::parse("203.0.113.1");
  b.selectors.local = {core::IpRange{b.local_addr, b.local_addr}};
  b.selectors.remote = {core::IpRange{b.remote_addr, b.remote_addr}};
  std::string why;
  auto out = esp::OutboundSa::create(a, why);
  auto in = esp::InboundSa::create(b, why);
  REQUIRE(out);
  REQUIRE(in);
  core::Packet pkt;
  pkt.assign(udp_packet(a.local_addr, a.remote_addr, 77));
  REQUIRE(out->encapsulate(pkt) == Drop::kNone);
  REQUIRE(in->decapsulate(pkt) == Drop::kNone);
  // What B's stack gets: from the NAT's address, with a checksum right for it.
  const auto want = udp_packet(b.remote_addr, b.local_addr, 77);
  CHECK(core::Bytes(pkt.span().begin(), pkt.span().end()) == want);
}
