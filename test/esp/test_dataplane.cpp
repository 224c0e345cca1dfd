// Two data planes back to back over in-memory TUN fakes: the SPD decides,
// the SAD finds the SA, and counters move as they should.
#include <catch2/catch.hpp>

#include "../vectors.hpp"
#include "esp/dataplane.hpp"
#include "esp_test_util.hpp"
#include "tun/device.hpp"

using namespace ipsecgw;
using core::Drop;
using test::hex;

namespace {
const char* kIcmp = "4500001c00010000400164c50a0100020a0200020800f7ff00000000";  // 10.1.0.2 -> 10.2.0.2
// UDP 10.1.0.2:1234 -> 10.2.0.53:53
const char* kDns = "45000020000000004011000a0a0100020a02003504d20035000c0000deadbeef";

core::SaParams side(bool a) {
  auto p = test::make_sa("aes256gcm16");
  p.name = "lan";
  p.selectors.local = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  p.selectors.remote = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  p.out.spi = a ? 0x1001 : 0x2001;
  p.in.spi = a ? 0x2001 : 0x1001;
  return p;
}

std::vector<core::StaticPolicy> dns_bypass() {
  core::StaticPolicy sp;
  sp.policy.sel.local = {*core::IpRange::parse("10.1.0.0/24")};
  sp.policy.sel.remote = {*core::IpRange::parse("10.2.0.53/32")};
  sp.policy.sel.proto = core::ipproto::kUdp;
  sp.policy.sel.remote_ports = {53, 53};
  sp.policy.action = core::PolicyAction::kBypass;
  return {sp};
}
}  // namespace

TEST_CASE("data plane: protect, bypass, no policy, bad SPI", "[esp][dataplane]") {
  esp::DataPlane a(dns_bypass()), b;
  std::string why;
  REQUIRE(a.install(side(true), why));
  REQUIRE(b.install(side(false), why));
  tun::FakeTun tun_a, tun_b;
  tun_a.inject(hex(kIcmp));
  tun_a.inject(hex(kDns));
  core::Packet p1, p2;
  core::Packet* batch[] = {&p1, &p2};
  REQUIRE(tun_a.read_batch(batch) == 2);

  auto snap_a = a.snapshot();
  auto d1 = a.process_outbound(*snap_a, p1);
  REQUIRE(d1.action == esp::OutAction::kSend);
  CHECK(d1.sa->params().remote_addr.to_string() == "198.51.100.2");
  CHECK(a.process_outbound(*snap_a, p2).action == esp::OutAction::kBypass);

  auto snap_b = b.snapshot();
  REQUIRE(b.process_inbound(*snap_b, p1) == Drop::kNone);
  core::Packet* out[] = {&p1};
  tun_b.write_batch(out);
  auto written = tun_b.take_written();
  REQUIRE(written.size() == 1);
  CHECK(written[0] == hex(kIcmp));

  // A packet no policy covers is dropped (default deny) and counted.
  core::Packet stray;
  stray.assign(hex("4500001c00010000400164c50a0900020a0200020800f7ff00000000"));
  CHECK(a.process_outbound(*snap_a, stray).reason == Drop::kNoPolicy);
  CHECK(a.global().dropped(Drop::kNoPolicy) == 1);

  // Unknown SPI.
  core::Packet bogus;
  bogus.assign(hex("deadbeef00000001000000000000000000000000000000000000000000000000"));
  CHECK(b.process_inbound(*snap_b, bogus) == Drop::kBadSpi);
  CHECK(b.global().dropped(Drop::kBadSpi) == 1);
}

TEST_CASE("data plane: snapshots survive changes; removal drops to no SA", "[esp][dataplane]") {
  esp::DataPlane a;
  std::string why;
  REQUIRE(a.install(side(true), why));
  auto old_snap = a.snapshot();
  REQUIRE(a.remove("lan"));
  // A worker still holding the old snapshot can finish its batch.
  core::Packet p;
  p.assign(hex(kIcmp));
  CHECK(a.process_outbound(*old_snap, p).action == esp::OutAction::kSend);
  p.assign(hex(kIcmp));
  CHECK(a.process_outbound(*a.snapshot(), p).reason == Drop::kNoPolicy);
  // Counted while a snapshot still holds the SA (totals never go back),
  // and once only when it is folded in.
  CHECK(a.retired().out.packets == 1);
  old_snap.reset();
  CHECK(a.retired().out.packets == 1);
  CHECK(a.retired().out.packets == 1);
}

TEST_CASE("data plane refuses a second SA with the same inbound SPI", "[esp][dataplane]") {
  esp::DataPlane a;
  std::string why;
  REQUIRE(a.install(side(true), why));
  auto other = side(true);
  other.name = "other";
  CHECK_FALSE(a.install(std::move(other), why));
  CHECK(why.find("already used") != std::string::npos);
}

TEST_CASE("data plane: during a rekey the newest SA sends, a responder's new SA only once the old one is gone", "[esp][dataplane][rekey]") {
  // Names chosen so that name order would pick the other SA.
  auto sa = [](const char* name, std::uint32_t spi_out, std::uint32_t spi_in, bool standby) {
    auto p = side(true);
    p.name = name;
    p.out.spi = spi_out;
    p.in.spi = spi_in;
    p.standby = standby;
    return p;
  };
  auto sender = [](esp::DataPlane& dp) {
    core::Packet p;
    p.assign(hex(kIcmp));
    auto d = dp.process_outbound(*dp.snapshot(), p);
    REQUIRE(d.action == esp::OutAction::kSend);
    return d.sa->params().out.spi;
  };
  std::string why;
  // Rekey initiator: the new SA (installed when the answer came) sends at once.
  esp::DataPlane i;
  REQUIRE(i.install(sa("lan/b-old", 0x1001, 0x2001, false), why));
  REQUIRE(i.install(sa("lan/a-new", 0x1002, 0x2002, false), why));
  CHECK(sender(i) == 0x1002);
  // Rekey responder: its new SA waits on standby; the old one sends until
  // the initiator deletes it.
  esp::DataPlane r;
  REQUIRE(r.install(sa("lan/z-old", 0x3001, 0x4001, false), why));
  REQUIRE(r.install(sa("lan/a-new", 0x3002, 0x4002, true), why));
  CHECK(sender(r) == 0x3001);
  REQUIRE(r.remove("lan/z-old"));
  CHECK(sender(r) == 0x3002);
  // Responder again at the next rekey: the current standby SA (older) still
  // sends, not the newer one on standby.
  REQUIRE(r.install(sa("lan/0-newer", 0x3003, 0x4003, true), why));
  CHECK(sender(r) == 0x3002);
}

TEST_CASE("data plane: a rekeyed SA stops sending at once and still decrypts for kRekeyedInboundDelay", "[esp][dataplane][rekey]") {
  esp::DataPlane a, b;
  std::string why;
  REQUIRE(a.install(side(true), why));
  REQUIRE(b.install(side(false), why));
  auto next = side(false);  // b's replacement: new SPIs both ways
  next.name = "lan2";
  next.out.spi = 0x2002;
  next.in.spi = 0x1002;
  next.standby = true;  // b answered the rekey: the old SA sends until it goes
  REQUIRE(b.install(std::move(next), why));
  auto b_sends = [&] {
    core::Packet back;
    back.assign(hex("4500001c00010000400164c50a0200020a0100020800f7ff00000000"));
    auto d = b.process_outbound(*b.snapshot(), back);
    REQUIRE(d.action == esp::OutAction::kSend);
    return d.sa->params().out.spi;
  };
  CHECK(b_sends() == 0x2001);
  // a sends three packets on the old SA; b removes it as rekeyed before
  // they arrive (the peer's DELETE overtook them on another worker).
  core::Packet p[3];
  for (auto& x : p) {
    x.assign(hex(kIcmp));
    REQUIRE(a.process_outbound(*a.snapshot(), x).action == esp::OutAction::kSend);
  }
  const auto t0 = esp::DataPlane::Clock::now();
  REQUIRE(b.remove_rekeyed("lan", t0));
  CHECK_FALSE(b.remove_rekeyed("lan", t0));
  CHECK(b.sa_count() == 1);  // no longer listed
  // b's outbound traffic takes the new SA at once.
  CHECK(b_sends() == 0x2002);
  // What was in flight still decrypts, and is counted (totals never go back).
  CHECK(b.process_inbound(*b.snapshot(), p[0]) == Drop::kNone);
  b.expire_rekeyed(t0 + core::kRekeyedInboundDelay - std::chrono::milliseconds(1));
  CHECK(b.process_inbound(*b.snapshot(), p[1]) == Drop::kNone);
  CHECK(b.retired().in.packets == 2);
  // Its SPI is still taken meanwhile.
  auto clash = [] {
    auto c = side(false);
    c.name = "clash";
    c.in.spi = 0x1001;
    return c;
  };
  CHECK_FALSE(b.install(clash(), why));
  // After the delay the inbound half goes: an unknown SPI from then on.
  b.expire_rekeyed(t0 + core::kRekeyedInboundDelay);
  CHECK(b.process_inbound(*b.snapshot(), p[2]) == Drop::kBadSpi);
  CHECK(b.retired().in.packets == 2);
  CHECK(b.install(clash(), why));
}

TEST_CASE("data plane: an SA installed again under a lingering SA's name is not taken by its expiry", "[esp][dataplane][rekey]") {
  esp::DataPlane a, b;
  std::string why;
  REQUIRE(a.install(side(true), why));
  REQUIRE(b.install(side(false), why));
  const auto t0 = esp::DataPlane::Clock::now();
  REQUIRE(b.remove_rekeyed("lan", t0));
  REQUIRE(b.install(side(false), why));  // same name, same inbound SPI
  CHECK(b.sa_count() == 1);
  b.expire_rekeyed(t0 + core::kRekeyedInboundDelay);
  core::Packet x;
  x.assign(hex(kIcmp));
  REQUIRE(a.process_outbound(*a.snapshot(), x).action == esp::OutAction::kSend);
  CHECK(b.process_inbound(*b.snapshot(), x) == Drop::kNone);
}

TEST_CASE("data plane: removing a rekeyed SA by name takes its inbound half at once", "[esp][dataplane][rekey]") {
  esp::DataPlane a, b;
  std::string why;
  REQUIRE(a.install(side(true), why));
  REQUIRE(b.install(side(false), why));
  core::Packet x;
  x.assign(hex(kIcmp));
  REQUIRE(a.process_outbound(*a.snapshot(), x).action == esp::OutAction::kSend);
  REQUIRE(b.remove_rekeyed("lan", esp::DataPlane::Clock::now()));
  REQUIRE(b.remove("lan"));
  CHECK_FALSE(b.remove("lan"));
  CHECK(b.process_inbound(*b.snapshot(), x) == Drop::kBadSpi);
}

TEST_CASE("data plane: an SA moved to a new path keeps its sequence numbers, counters and replay window", "[esp][dataplane][nat]") {
  esp::DataPlane a, b;
  std::string why;
  auto pa = side(true);
  pa.encap = core::Encap::kUdp;
  pa.remote_port = 4500;
  REQUIRE(a.install(std::move(pa), why));
  REQUIRE(b.install(side(false), why));
  auto send = [&](const std::shared_ptr<const esp::Snapshot>& snap, core::Packet& p) {
    p.assign(hex(kIcmp));
    auto d = a.process_outbound(*snap, p);
    REQUIRE(d.action == esp::OutAction::kSend);
    return d.sa;
  };
  core::Packet p1, p2, p3;
  auto before = a.snapshot();
  const esp::OutboundSa* sa1 = send(before, p1);
  CHECK(sa1->params().remote_port == 4500);

  // The peer's NAT picked a new address and port.
  const core::SaPath moved{*core::IpAddress::parse("198.51.100.1"), *core::IpAddress::parse("203.0.113.9"),
                           core::Encap::kUdp, 31337};
  REQUIRE(a.update_path("lan", moved));
  CHECK_FALSE(a.update_path("no-such-sa", moved));
  const esp::OutboundSa* sa2 = send(a.snapshot(), p2);
  CHECK(sa2->params().remote_addr.to_string() == "203.0.113.9");
  CHECK(sa2->params().remote_port == 31337);
  CHECK(sa2->spi() == sa1->spi());
  // A worker still on the older snapshot sends on the old path, but with the
  // shared sequence number: no number is used twice.
  const esp::OutboundSa* sa3 = send(before, p3);
  CHECK(sa3->params().remote_port == 4500);
  auto seq = [](const core::Packet& p) { return core::load_be32(p.data() + 4); };
  CHECK(seq(p1) == 1);
  CHECK(seq(p2) == 2);
  CHECK(seq(p3) == 3);
  CHECK(sa2->next_seq() == 4);
  CHECK(sa2->counters().out.packets == 3);

  // The peer decrypts all three, in any order, and a replay is still caught.
  core::Packet again;
  again.assign(core::ByteSpan(p1.data(), p1.len));
  auto snap_b = b.snapshot();
  CHECK(b.process_inbound(*snap_b, p3) == Drop::kNone);
  CHECK(b.process_inbound(*snap_b, p1) == Drop::kNone);
  CHECK(b.process_inbound(*snap_b, p2) == Drop::kNone);
  CHECK(b.process_inbound(*snap_b, again) == Drop::kReplay);

  // Counted once when the SA goes, though two objects carried its packets.
  before.reset();
  REQUIRE(a.remove("lan"));
  CHECK(a.retired().out.packets == 3);
}
