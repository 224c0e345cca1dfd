// Two engines speaking IKEv1 (Main Mode + Quick Mode, Informational) through
// the Engine's front door, with a fake clock and a lossy network: what the
// gateway runs, end to end. Message numbers in the filters count every
// datagram of the run, both directions:
//
//   0  A->B  MM1  HDR, SA, VID(NAT-T), VID(DPD)
//   1  B->A  MM2  HDR, SA, VIDs
//   2  A->B  MM3  HDR, KE, Ni, NAT-D, NAT-D
//   3  B->A  MM4  HDR, KE, Nr, NAT-D, NAT-D
//   4  A->B  MM5  HDR*, IDii, HASH_I [, N(INITIAL-CONTACT)]
//   5  B->A  MM6  HDR*, IDir, HASH_R
//   6  A->B  QM1  HDR*, HASH(1), SA, Ni [, KE], IDci, IDcr
//   7  B->A  QM2  HDR*, HASH(2), SA, Nr [, KE], IDci, IDcr
//   8  A->B  QM3  HDR*, HASH(3)
#include <catch2/catch.hpp>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "ike/ikev1_manager.hpp"
#include "ike/ikev1_sa.hpp"
#include "ike/isakmp.hpp"
#include "test/ike/engine_harness.hpp"
#include "test/ike/ike_scan_probes.hpp"

using namespace ipsecgw;
using namespace std::chrono_literals;
using test::Pair;
using test::check_keys_cross;
using test::prop;

namespace {

ike::ConnectionConfig conn1(bool a, const char* psk, const char* ike = "aes128-sha256-modp2048",
                            const char* esp = "aes128-sha256") {
  ike::ConnectionConfig c;
  c.name = a ? "site-b" : "site-a";
  c.version = 1;
  c.local_addrs = {*core::IpAddress::parse(a ? "198.51.100.1" : "198.51.100.2")};
  c.remote_addrs = {*core::IpAddress::parse(a ? "198.51.100.2" : "198.51.100.1")};
  c.local_id = a ? "gw-a.example" : "gw-b.example";
  c.remote_id = a ? "gw-b.example" : "gw-a.example";
  c.proposals.push_back(prop(ike));
  std::string s = psk;
  c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  ch.esp_proposals.push_back(prop(esp));
  ch.start_action = a ? ike::StartAction::kStart : ike::StartAction::kNone;
  c.children.push_back(std::move(ch));
  return c;
}

std::uint8_t exchange_of(const ike::Datagram& d) { return d.data.size() > 18 ? d.data[18] : 0; }

struct Quiet {
  Quiet() { core::log::set_level(core::log::Level::kError); }
} quiet;

}  // namespace

TEST_CASE("IKEv1: Main Mode + Quick Mode with PSK install matching IPsec SAs", "[ike][ikev1][engine]") {
  for (auto suite : std::vector<std::pair<const char*, const char*>>{
           {"aes128-sha256-modp2048", "aes128-sha256"},
           {"3des-sha1-modp1024", "3des-sha1"},
           {"3des-md5-modp1024", "aes128-sha1"},
           {"aes256-sha384-ecp384", "aes256gcm16"},
           {"aes192-sha512-modp3072", "aes192-sha256"}}) {
    INFO(suite.first << " / " << suite.second);
    Pair p(conn1(true, "a long shared secret", suite.first, suite.second),
           conn1(false, "a long shared secret", suite.first, suite.second));
    std::vector<int> exchanges;
    p.filter = [&](std::size_t, const ike::Datagram& d) {
      exchanges.push_back(exchange_of(d));
      return true;
    };
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK(p.b->established("site-a"));
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
    // Six Main Mode (2) messages, three Quick Mode (32), nothing else.
    CHECK(exchanges == std::vector<int>{2, 2, 2, 2, 2, 2, 32, 32, 32});
    CHECK(p.a->counters().ikev1_main_mode_done == 1);
    CHECK(p.b->counters().ikev1_main_mode_done == 1);
    CHECK(p.a->counters().ikev1_quick_mode_done == 1);
    CHECK(p.b->counters().ikev1_quick_mode_done == 1);
    const auto st = p.a->status(p.now);
    REQUIRE(st.size() == 1);
    CHECK(st[0].version == 1);
    CHECK(st[0].state == "ESTABLISHED");
    CHECK(st[0].remote_id == "gw-b.example");
    REQUIRE(st[0].children.size() == 1);
    CHECK(st[0].children[0].local_ts == "10.1.0.0/24");
    CHECK_FALSE(st[0].children[0].pfs);
    CHECK(p.ia.installed[0].encap == core::Encap::kNone);  // no NAT: raw ESP
  }
}

TEST_CASE("IKEv1: Quick Mode with PFS", "[ike][ikev1][engine]") {
  Pair p(conn1(true, "k-k-k-k-k", "aes128-sha256-modp2048", "aes128-sha256-modp2048"),
         conn1(false, "k-k-k-k-k", "aes128-sha256-modp2048", "aes128-sha256-modp2048"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  check_keys_cross(p.ia, p.ib);
  CHECK(p.a->status(p.now).at(0).children.at(0).pfs);
  CHECK(p.b->status(p.now).at(0).children.at(0).pfs);
}

TEST_CASE("IKEv1: a wrong PSK is refused on both sides and says so", "[ike][ikev1][engine]") {
  Pair p(conn1(true, "one shared secret"), conn1(false, "another shared secret"));
  p.a->start(p.now);
  p.pump();
  p.advance(60s);
  CHECK_FALSE(p.a->established("site-b"));
  CHECK_FALSE(p.b->established("site-a"));
  CHECK(p.ia.installed.empty());
  CHECK(p.ib.installed.empty());
  // B cannot read message 5; it says AUTHENTICATION-FAILED in the clear and A stops.
  CHECK(p.b->counters().auth_failed == 1);
  CHECK(p.b->counters().ikev1_main_mode_failed == 1);
  CHECK(p.a->counters().ikev1_main_mode_failed == 1);
  CHECK(p.a->ike_sa_count() == 0);
}

TEST_CASE("IKEv1: lost and duplicated messages", "[ike][ikev1][engine]") {
  SECTION("message 2 lost: A resends message 1, B answers from its flight") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 1; };
    p.a->start(p.now);
    p.pump();
    CHECK_FALSE(p.a->established("site-b"));
    p.advance(1500ms);
    CHECK(p.a->established("site-b"));
    CHECK(p.ia.active() == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("message 6 lost: A resends message 5, B resends message 6 and does not set up twice") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 5; };
    p.a->start(p.now);
    p.pump();
    CHECK(p.b->established("site-a"));
    CHECK_FALSE(p.a->established("site-b"));
    p.advance(1500ms);
    CHECK(p.a->established("site-b"));
    CHECK(p.b->counters().ikev1_main_mode_done == 1);
    CHECK(p.ib.installed.size() == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("Quick Mode message 3 lost: B resends message 2, A answers with message 3 again") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 8; };
    p.a->start(p.now);
    p.pump();
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 0);
    p.advance(1500ms);
    CHECK(p.ib.active() == 1);
    CHECK(p.ia.installed.size() == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("every message delivered twice: one ISAKMP SA and one IPsec SA pair each side") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.a->start(p.now);
    for (int round = 0; round < 20; ++round) {
      auto fa = p.a->take_output();
      auto fb = p.b->take_output();
      if (fa.empty() && fb.empty()) break;
      for (auto& d : fa)
        for (int i = 0; i < 2; ++i) p.b->receive({d.remote, d.local, d.data}, p.now);
      for (auto& d : fb)
        for (int i = 0; i < 2; ++i) p.a->receive({d.remote, d.local, d.data}, p.now);
    }
    CHECK(p.ia.installed.size() == 1);
    CHECK(p.ib.installed.size() == 1);
    CHECK(p.a->counters().ikev1_main_mode_done == 1);
    CHECK(p.b->counters().ikev1_main_mode_done == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("a peer that never answers: bounded retransmission, then failure") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [](std::size_t, const ike::Datagram&) { return false; };
    p.a->start(p.now);
    p.pump();
    p.advance(120s);
    CHECK(p.a->counters().retransmits == 4);
    CHECK(p.a->counters().ikev1_main_mode_failed == 1);
    CHECK(p.a->ike_sa_count() == 0);
  }
}

TEST_CASE("IKEv1: IPsec SA rekey is make-before-break and the old SA is deleted on both ends", "[ike][ikev1][engine]") {
  auto ca = conn1(true, "k-k-k-k-k"), cb = conn1(false, "k-k-k-k-k");
  ca.children[0].rekey_time = 60;
  cb.children[0].rekey_time = 600;
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto old_a = p.ia.installed[0].name, old_b = p.ib.installed[0].name;
  p.advance(61s);
  CHECK(p.ia.installed.size() == 2);
  CHECK(p.ib.installed.size() == 2);
  CHECK(p.ia.active() == 1);
  CHECK(p.ib.active() == 1);
  // The new pair went in before the old one came out, on both ends.
  CHECK(p.ia.at("+" + p.ia.installed[1].name) < p.ia.at("-" + old_a));
  CHECK(p.ib.at("+" + p.ib.installed[1].name) < p.ib.at("-" + old_b));
  // Removed as rekeyed SAs on both ends (the inbound SPI stays a little).
  CHECK(p.ia.removed_rekeyed == std::vector<std::string>{old_a});
  CHECK(p.ib.removed_rekeyed == std::vector<std::string>{old_b});
  // Either end may have rekeyed first (B takes A's shorter lifetime, with jitter); both count it.
  CHECK(p.a->counters().child_rekeyed == 1);
  CHECK(p.b->counters().child_rekeyed == 1);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: DELETE from either side removes both ends' SAs", "[ike][ikev1][engine]") {
  for (bool from_a : {true, false}) {
    INFO(from_a);
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ib.active() == 1);
    std::string why;
    SECTION("one IPsec SA") {
      REQUIRE((from_a ? p.a->terminate("site-b", "lan", p.now, why) : p.b->terminate("site-a", "lan", p.now, why)));
      p.pump();
      CHECK(p.ia.active() == 0);
      CHECK(p.ib.active() == 0);
      CHECK(p.ia.removed_rekeyed.empty());  // not a rekey: gone at once
      CHECK(p.ib.removed_rekeyed.empty());
      CHECK(p.a->established("site-b"));  // the ISAKMP SA stays
    }
    SECTION("the ISAKMP SA and its IPsec SAs") {
      REQUIRE((from_a ? p.a->terminate("site-b", "", p.now, why) : p.b->terminate("site-a", "", p.now, why)));
      p.pump();
      CHECK(p.ia.active() == 0);
      CHECK(p.ib.active() == 0);
      CHECK(p.a->ike_sa_count() == 0);
      CHECK(p.b->ike_sa_count() == 0);
    }
  }
}

TEST_CASE("IKEv1: RFC 3706 DPD notices a dead peer; R-U-THERE is answered", "[ike][ikev1][engine]") {
  auto ca = conn1(true, "k-k-k-k-k");
  ca.dpd_delay = 5;
  ca.dpd_timeout = 20;
  Pair p(std::move(ca), conn1(false, "k-k-k-k-k"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  p.advance(12s);  // two R-U-THERE, both answered
  CHECK(p.a->established("site-b"));
  const auto before = p.delivered;
  CHECK(before >= 9 + 4);
  p.filter = [](std::size_t, const ike::Datagram&) { return false; };  // B is gone
  p.advance(19s);  // the first unanswered R-U-THERE went at 15 s; dpd_timeout 20 s from then
  CHECK(p.a->established("site-b"));
  p.advance(5s);
  CHECK_FALSE(p.a->established("site-b"));
  CHECK(p.ia.active() == 0);
}

TEST_CASE("IKEv1: phase-1 rekey makes a new ISAKMP SA; the IPsec SAs stay up", "[ike][ikev1][engine]") {
  auto ca = conn1(true, "k-k-k-k-k"), cb = conn1(false, "k-k-k-k-k");
  ca.rekey_time = 100;
  cb.rekey_time = 1000;
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto spi_before = p.a->status(p.now).at(0).spi_i;
  // Until the new ISAKMP SA is up, then kReplacedDeleteDelay with both:
  // the old one, its IPsec SAs handed over, is deleted only after it.
  for (int i = 0; i < 1100 && p.a->counters().ikev1_main_mode_done < 2; ++i) p.advance(100ms);
  REQUIRE(p.a->counters().ikev1_main_mode_done == 2);
  CHECK(p.a->status(p.now).size() == 2);
  CHECK(p.b->status(p.now).size() == 2);
  p.advance(ike::v1::kReplacedDeleteDelay - 200ms);
  CHECK(p.a->status(p.now).size() == 2);
  p.advance(300ms);
  const auto sa = p.a->status(p.now);
  REQUIRE(sa.size() == 1);
  CHECK(sa[0].spi_i != spi_before);
  CHECK(sa[0].children.size() == 1);  // moved to the new ISAKMP SA
  const auto sb = p.b->status(p.now);
  REQUIRE(sb.size() == 1);
  CHECK(sb[0].spi_i == sa[0].spi_i);
  CHECK(sb[0].children.size() == 1);
  CHECK(p.ia.removed.empty());
  CHECK(p.ib.removed.empty());
  CHECK(p.a->counters().ikev1_main_mode_done == 2);
  // A later Quick Mode runs on the new ISAKMP SA.
  std::string why;
  REQUIRE(p.a->terminate("site-b", "lan", p.now, why));
  p.pump();
  REQUIRE(p.a->initiate("site-b", "lan", p.now, why));
  p.pump();
  CHECK(p.ia.active() == 1);
  CHECK(p.ib.active() == 1);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: an ISAKMP SA whose lifetime ends during its rekey's Main Mode keeps its IPsec SAs for the successor",
          "[ike][ikev1][engine]") {
  // rekey_time 8 s: the lifetime ends 0.8-1.6 s after the rekey starts,
  // less than the retransmissions of a lost Main Mode message 1 take.
  auto ca = conn1(true, "k-k-k-k-k"), cb = conn1(false, "k-k-k-k-k");
  ca.rekey_time = 8;
  cb.rekey_time = 1000;
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto spi_before = p.a->status(p.now).at(0).spi_i;
  // From now on the first two Main Mode messages 1 from A are lost.
  int lost = 0;
  p.filter = [&](std::size_t, const ike::Datagram& d) {
    const bool mm1 = d.data.size() >= 28 && d.data[18] == 2 &&
                     std::all_of(d.data.begin() + 8, d.data.begin() + 16, [](std::uint8_t b) { return b == 0; });
    if (mm1 && d.local.addr == *core::IpAddress::parse("198.51.100.1") && lost < 2) {
      ++lost;
      return false;
    }
    return true;
  };
  for (int i = 0; i < 400 && p.a->counters().ikev1_main_mode_done < 2; ++i) p.advance(100ms);
  REQUIRE(lost == 2);
  REQUIRE(p.a->counters().ikev1_main_mode_done == 2);
  CHECK(p.ia.removed.empty());  // the IPsec SA did not go down with the old ISAKMP SA
  CHECK(p.ia.active() == 1);
  p.advance(ike::v1::kReplacedDeleteDelay + 500ms);
  const auto sa = p.a->status(p.now);
  REQUIRE(sa.size() == 1);
  CHECK(sa[0].spi_i != spi_before);
  CHECK(sa[0].children.size() == 1);  // moved to the new ISAKMP SA
  CHECK(p.ia.removed.empty());
  CHECK(p.ib.removed.empty());
  const auto sb = p.b->status(p.now);
  REQUIRE(sb.size() == 1);
  CHECK(sb[0].children.size() == 1);
}

TEST_CASE("IKEv1: Aggressive Mode is refused unless allowed, with NO-PROPOSAL-CHOSEN; a Main Mode probe gets an answer", "[ike][ikev1][engine]") {
  Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k", "3des-sha1-modp1024"));
  const ike::Endpoint from{*core::IpAddress::parse("198.51.100.1"), 500};
  const ike::Endpoint to{*core::IpAddress::parse("198.51.100.2"), 500};
  p.b->receive({to, from, *core::from_hex(test::kAggressiveProbe)}, p.now);
  auto out = p.b->take_output();
  REQUIRE(out.size() == 1);
  ike::v1::DecodeError err;
  auto m = ike::v1::decode_plain(out[0].data, err);
  REQUIRE(m);
  CHECK(m->header.exchange == ike::v1::Exchange::kInformational);
  REQUIRE(m->notifies.size() == 1);
  CHECK(m->notifies[0].type == static_cast<std::uint16_t>(ike::v1::Notify::kNoProposalChosen));
  CHECK(p.b->counters().ikev1_main_mode_failed == 1);
  // ike-scan's default Main Mode probe offers 3DES/SHA1/modp1024 with PSK among others.
  p.b->receive({to, from, *core::from_hex(test::kMainModeProbe)}, p.now);
  out = p.b->take_output();
  REQUIRE(out.size() == 1);
  m = ike::v1::decode_plain(out[0].data, err);
  REQUIRE(m);
  CHECK(m->header.exchange == ike::v1::Exchange::kMain);
  REQUIRE(m->sa);
  CHECK(m->sa->proposals.at(0).transforms.size() == 1);
}

TEST_CASE("IKEv1: NAT-T: the initiator behind a NAT floats to 4500 and ESP goes in UDP", "[ike][ikev1][engine][nat]") {
  auto cb = conn1(false, "k-k-k-k-k");
  cb.remote_addrs.clear();  // B answers whoever the NAT makes A look like
  Pair p(conn1(true, "k-k-k-k-k"), std::move(cb));
  // A is 198.51.100.1 inside; B sees it as 203.0.113.7 with ports the NAT picked.
  const auto inside = *core::IpAddress::parse("198.51.100.1");
  const auto outside = *core::IpAddress::parse("203.0.113.7");
  const std::map<std::uint16_t, std::uint16_t> nat{{500, 31500}, {4500, 34500}};
  std::vector<std::uint16_t> a_ports, b_ports;
  p.a->start(p.now);
  for (int round = 0; round < 20; ++round) {
    auto fa = p.a->take_output();
    auto fb = p.b->take_output();
    if (fa.empty() && fb.empty()) break;
    for (auto& d : fa) {
      a_ports.push_back(d.local.port);
      REQUIRE(d.local.addr == inside);
      REQUIRE(d.local.port == d.remote.port);
      p.b->receive({d.remote, {outside, nat.at(d.local.port)}, d.data}, p.now);
    }
    for (auto& d : fb) {
      b_ports.push_back(d.remote.port);
      REQUIRE(d.remote.addr == outside);
      const std::uint16_t inner = d.remote.port == 31500 ? 500 : 4500;
      p.a->receive({{inside, inner}, d.local, d.data}, p.now);
    }
  }
  // Messages 1-4 on 500, then 4500 (RFC 3947 4): MM5, QM1, QM3 from A.
  CHECK(a_ports == std::vector<std::uint16_t>{500, 500, 4500, 4500, 4500});
  CHECK(b_ports == std::vector<std::uint16_t>{31500, 31500, 34500, 34500});
  const auto sa = p.a->status(p.now).at(0), sb = p.b->status(p.now).at(0);
  CHECK(sa.nat_local);
  CHECK_FALSE(sa.nat_remote);
  CHECK(sb.nat_remote);
  CHECK_FALSE(sb.nat_local);
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  CHECK(p.ia.installed[0].encap == core::Encap::kUdp);
  CHECK(p.ib.installed[0].encap == core::Encap::kUdp);
  CHECK(p.ib.installed[0].remote_port == 34500);  // ESP goes to the NAT's mapping of A's 4500
  CHECK(p.ia.installed[0].remote_port == 4500);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: Aggressive Mode where both connections allow it, with loss and NAT", "[ike][ikev1][engine][aggressive]") {
  auto agg = [](bool a, const char* psk = "k-k-k-k-k") {
    auto c = conn1(a, psk);
    c.aggressive = true;
    return c;
  };
  SECTION("three messages, then Quick Mode") {
    Pair p(agg(true), agg(false));
    std::vector<int> exchanges;
    p.filter = [&](std::size_t, const ike::Datagram& d) {
      exchanges.push_back(exchange_of(d));
      return true;
    };
    p.a->start(p.now);
    p.pump();
    CHECK(exchanges == std::vector<int>{4, 4, 4, 32, 32, 32});
    CHECK(p.a->established("site-b"));
    CHECK(p.b->established("site-a"));
    CHECK(p.b->status(p.now).at(0).remote_id == "gw-a.example");
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("message 3 lost: B resends message 2, A answers with message 3 again") {
    Pair p(agg(true), agg(false));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 2; };
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK_FALSE(p.b->established("site-a"));
    p.advance(5s);
    CHECK(p.b->established("site-a"));
    CHECK(p.b->counters().retransmits >= 1);
    REQUIRE(p.ib.active() == 1);  // A's Quick Mode retransmission got through once B was up
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("a wrong PSK fails on HASH_R at the initiator") {
    Pair p(agg(true), agg(false, "other-other"));
    p.a->start(p.now);
    p.pump();
    p.advance(30s);
    CHECK_FALSE(p.a->established("site-b"));
    CHECK(p.a->counters().ikev1_main_mode_failed == 1);
    CHECK(p.ia.installed.empty());
  }
  SECTION("a Main Mode connection meets an Aggressive one: refused with NO-PROPOSAL-CHOSEN") {
    Pair p(agg(true), conn1(false, "k-k-k-k-k"));
    p.a->start(p.now);
    p.pump();
    p.advance(30s);
    CHECK_FALSE(p.a->established("site-b"));
    CHECK(p.b->counters().ikev1_main_mode_failed == 1);
    CHECK(p.a->counters().ikev1_main_mode_failed == 1);  // A heard NO-PROPOSAL-CHOSEN
  }
}

TEST_CASE("IKEv1: RESPONDER-LIFETIME: a responder with a shorter lifetime says so, and the initiator keeps to it", "[ike][ikev1][engine]") {
  auto ca = conn1(true, "k-k-k-k-k"), cb = conn1(false, "k-k-k-k-k");
  ca.children[0].rekey_time = 3600;  // offers 3960 s
  cb.children[0].rekey_time = 500;
  cb.children[0].life_time = 600;    // B holds it 600 s
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto ca_st = p.a->status(p.now).at(0).children.at(0);
  const auto cb_st = p.b->status(p.now).at(0).children.at(0);
  CHECK(cb_st.expire_in_s == 600);
  CHECK(ca_st.expire_in_s == 600);  // told by RESPONDER-LIFETIME, not its own 3960
  CHECK(ca_st.rekey_in_s < 600);    // and rekeys before then
  // Left alone, A rekeys before B's lifetime ends: the pair is never gone.
  p.advance(610s);
  CHECK(p.ia.active() == 1);
  CHECK(p.ib.active() == 1);
  CHECK(p.a->counters().child_rekeyed + p.b->counters().child_rekeyed >= 1);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: half-open Main Modes have a budget per source address", "[ike][ikev1][engine][budget]") {
  auto cb = conn1(false, "k-k-k-k-k", "3des-sha1-modp1024");
  cb.remote_addrs.clear();  // answers anyone
  Pair p(conn1(true, "k-k-k-k-k"), std::move(cb));
  auto probe = *core::from_hex(test::kMainModeProbe);
  const ike::Endpoint to{*core::IpAddress::parse("198.51.100.2"), 500};
  auto send_from = [&](const char* addr, std::uint64_t cookie) {
    for (int i = 0; i < 8; ++i) probe[i] = static_cast<std::uint8_t>(cookie >> (56 - 8 * i));
    p.b->receive({to, {*core::IpAddress::parse(addr), 500}, probe}, p.now);
    return p.b->take_output().size();
  };
  std::size_t answered = 0;
  for (std::uint64_t c = 1; c <= 64 + 10; ++c) answered += send_from("203.0.113.9", c);
  CHECK(answered == 64);  // limits.half_open_per_source, shared with IKEv2
  CHECK(p.b->counters().half_open_refused == 10);
  // Another address is still answered.
  CHECK(send_from("203.0.113.10", 999) == 1);
  // Half-open SAs time out; then the first address is answered again.
  p.now += 31s;
  p.b->tick(p.now);
  CHECK(send_from("203.0.113.9", 5000) == 1);
}

TEST_CASE("IKEv1: Main Modes under way keep to the configured limits, and their log lines to the shared rate",
          "[ike][ikev1][engine][budget]") {
  auto cb = conn1(false, "k-k-k-k-k", "3des-sha1-modp1024");
  cb.remote_addrs.clear();
  ike::EngineOptions ob;
  ob.max_half_open = 12;
  ob.max_half_open_per_source = 5;
  ob.log_lines_per_second = 3;
  Pair p(conn1(true, "k-k-k-k-k"), std::move(cb), ob);
  auto probe = *core::from_hex(test::kMainModeProbe);
  const ike::Endpoint to{*core::IpAddress::parse("198.51.100.2"), 500};
  std::uint64_t cookie = 1;
  auto send_from = [&](const std::string& addr) {
    ++cookie;
    for (int i = 0; i < 8; ++i) probe[i] = static_cast<std::uint8_t>(cookie >> (56 - 8 * i));
    p.b->receive({to, {*core::IpAddress::parse(addr), 500}, probe}, p.now);
    return p.b->take_output().size();
  };
  std::size_t answered = 0;
  for (int i = 0; i < 8; ++i) answered += send_from("203.0.113.9");
  CHECK(answered == 5);  // half_open_per_source
  for (int host = 20; host < 30; ++host) answered += send_from("203.0.113." + std::to_string(host));
  CHECK(answered == 12);  // half_open in total
  CHECK(p.b->counters().half_open_refused == 3 + 3);
  // 6 refusals within one second: 3 logged, the rest counted.
  CHECK(p.b->counters().log_suppressed == 3);
}

TEST_CASE("IKEv1: NAT-T with a peer that speaks only the drafts (02/02n/03): payload 130 and mode 61443", "[ike][ikev1][engine][nat]") {
  auto cb = conn1(false, "k-k-k-k-k");
  cb.remote_addrs.clear();
  Pair p(conn1(true, "k-k-k-k-k"), std::move(cb));
  const auto inside = *core::IpAddress::parse("198.51.100.1");
  const auto outside = *core::IpAddress::parse("203.0.113.7");
  // Messages 1 and 2 lose RFC 3947's vendor ID on the way, as if each end
  // were an older implementation; what is left are the drafts' IDs.
  auto strip_rfc = [](const core::Bytes& msg) {
    ike::v1::DecodeError err;
    auto m = ike::v1::decode_plain(msg, err);
    REQUIRE(m);
    std::vector<ike::v1::RawPayload> kept;
    for (const auto& r : m->raw)
      if (!(r.type == ike::v1::Payload::kVendor && ike::v1::vendor_name(r.body) == "RFC 3947")) kept.push_back(r);
    REQUIRE(kept.size() + 1 == m->raw.size());
    return ike::v1::encode_plain(m->header, kept);
  };
  std::vector<ike::v1::Payload> nat_d_types;
  std::size_t n = 0;
  p.a->start(p.now);
  for (int round = 0; round < 20; ++round) {
    auto fa = p.a->take_output();
    auto fb = p.b->take_output();
    if (fa.empty() && fb.empty()) break;
    auto look = [&](core::Bytes& data) {
      if (n < 2) data = strip_rfc(data);
      if (n == 2 || n == 3) {
        ike::v1::DecodeError err;
        auto m = ike::v1::decode_plain(data, err);
        REQUIRE(m);
        for (const auto& r : m->raw)
          if (r.type == ike::v1::Payload::kNatD || r.type == ike::v1::Payload::kNatDDraft) nat_d_types.push_back(r.type);
      }
      ++n;
    };
    for (auto& d : fa) {
      look(d.data);
      p.b->receive({d.remote, {outside, static_cast<std::uint16_t>(d.local.port + 30000)}, d.data}, p.now);
    }
    for (auto& d : fb) {
      look(d.data);
      p.a->receive({{inside, static_cast<std::uint16_t>(d.remote.port - 30000)}, d.local, d.data}, p.now);
    }
  }
  CHECK(nat_d_types == std::vector<ike::v1::Payload>(4, ike::v1::Payload::kNatDDraft));
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  CHECK(p.ia.installed[0].encap == core::Encap::kUdp);
  CHECK(p.ib.installed[0].encap == core::Encap::kUdp);
  CHECK(p.ib.installed[0].remote_port == 34500);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: dpd_action restart sets the connection up again once the peer is back", "[ike][ikev1][engine]") {
  auto ca = conn1(true, "k-k-k-k-k");
  ca.dpd_delay = 5;
  ca.dpd_timeout = 10;
  ca.children[0].dpd_action = ike::DpdAction::kRestart;
  Pair p(std::move(ca), conn1(false, "k-k-k-k-k"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto first = p.a->status(p.now).at(0).spi_i;
  p.filter = [](std::size_t, const ike::Datagram&) { return false; };
  p.advance(16s);  // R-U-THERE at 5 s unanswered; dead at 15 s; restart begins
  CHECK(p.ia.active() == 0);
  CHECK(p.a->counters().ikev1_main_mode_failed == 0);  // a dead peer of an SA that was up is not a failed setup
  p.filter = [](std::size_t, const ike::Datagram&) { return true; };
  p.advance(5s);
  REQUIRE(p.a->established("site-b"));
  CHECK(p.a->status(p.now).at(0).spi_i != first);
  CHECK(p.ia.active() == 1);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv1: a reload that removes the connection deletes its SAs on both ends", "[ike][ikev1][engine]") {
  Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ib.active() == 1);
  const auto r = p.a->reload({}, p.now);
  CHECK(r.removed == std::vector<std::string>{"site-b"});
  p.pump();
  CHECK(p.ia.active() == 0);
  CHECK(p.ib.active() == 0);
  CHECK(p.b->ike_sa_count() == 0);
}

TEST_CASE("IKEv1: forged and replayed messages end no exchange and create nothing", "[ike][ikev1][engine][forgery]") {
  auto flip = [](core::Bytes m) {
    m[m.size() - 20] ^= 0x01;
    return m;
  };
  SECTION("a forged copy of Quick Mode message 1 (or 2), then the real one: the IPsec SA is made") {
    for (std::size_t target : {6u, 7u}) {
      INFO(target);
      Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
      p.filter = [&](std::size_t n, const ike::Datagram& d) {
        if (n == target) {
          // The attacker has seen the cookies and the message ID, not the keys.
          if (target == 6) p.b->receive({d.remote, d.local, flip(d.data)}, p.now);
          else p.a->receive({d.remote, d.local, flip(d.data)}, p.now);
        }
        return true;
      };
      p.a->start(p.now);
      p.pump();
      CHECK(p.ia.active() == 1);
      CHECK(p.ib.active() == 1);
      CHECK((p.a->counters().invalid_messages + p.b->counters().invalid_messages) == 1);
      CHECK(p.a->counters().ikev1_quick_mode_failed + p.b->counters().ikev1_quick_mode_failed == 0);
      check_keys_cross(p.ia, p.ib);
    }
  }
  SECTION("a forged Informational with an ongoing Quick Mode's message ID does not break its IV chain") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [&](std::size_t n, const ike::Datagram& d) {
      if (n == 6) {
        auto f = flip(d.data);
        f[18] = 5;  // exchange: Informational, same cookies and message ID
        p.b->receive({d.remote, d.local, f}, p.now);
      }
      return true;
    };
    p.a->start(p.now);
    p.pump();
    CHECK(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("a forged message 5 does not end the responder's Main Mode") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    p.filter = [&](std::size_t n, const ike::Datagram& d) {
      if (n == 4) p.b->receive({d.remote, d.local, flip(d.data)}, p.now);
      return true;
    };
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK(p.b->established("site-a"));
    CHECK(p.ib.active() == 1);
  }
  SECTION("Quick Mode message 1 replayed after its exchange is gone: dropped, nothing made") {
    Pair p(conn1(true, "k-k-k-k-k"), conn1(false, "k-k-k-k-k"));
    core::Bytes qm1;
    ike::Datagram seen;
    p.filter = [&](std::size_t n, const ike::Datagram& d) {
      if (n == 6) {
        qm1 = d.data;
        seen = d;
      }
      return true;
    };
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ib.active() == 1);
    p.advance(40s);  // past the 30 s a finished exchange is kept to answer repeats
    const auto dropped = p.b->counters().dropped_messages;
    p.b->receive({seen.remote, seen.local, qm1}, p.now);
    CHECK(p.b->take_output().empty());
    CHECK(p.b->counters().dropped_messages == dropped + 1);
    CHECK(p.ib.installed.size() == 1);
  }
  SECTION("an R-U-THERE replayed is not answered again") {
    auto ca = conn1(true, "k-k-k-k-k");
    ca.dpd_delay = 5;
    Pair p(std::move(ca), conn1(false, "k-k-k-k-k"));
    p.a->start(p.now);
    p.pump();
    core::Bytes dpd;
    ike::Datagram seen;
    p.filter = [&](std::size_t, const ike::Datagram& d) {
      if (d.data.size() > 18 && d.data[18] == 5 && dpd.empty() && d.local.addr == *core::IpAddress::parse("198.51.100.1")) {
        dpd = d.data;
        seen = d;
      }
      return true;
    };
    p.advance(6s);
    REQUIRE_FALSE(dpd.empty());
    p.b->receive({seen.remote, seen.local, dpd}, p.now);
    CHECK(p.b->take_output().empty());
  }
}

namespace {
ike::ConnectionConfig v1_child(bool a, std::vector<const char*> esp, std::vector<const char*> ah,
                               core::SaMode mode = core::SaMode::kTunnel) {
  auto c = conn1(a, "a long shared secret");
  auto& ch = c.children[0];
  ch.esp_proposals.clear();
  for (auto* e : esp) ch.esp_proposals.push_back(prop(e));
  std::string why;
  for (auto* x : ah) ch.ah_proposals.push_back(*core::parse_ah_proposal(x, why));
  ch.mode = mode;
  if (mode == core::SaMode::kTransport) {
    ch.local_ts.clear();
    ch.remote_ts.clear();
  }
  return c;
}
}  // namespace

TEST_CASE("IKEv1 Quick Mode: AH alone (AH transform IDs with their authentication algorithm)", "[ike][ikev1][engine][ah]") {
  for (const char* ah : {"sha256", "sha1", "md5", "sha512-esn", "aesxcbc", "aes128gmac", "sha384-modp2048"}) {
    INFO(ah);
    Pair p(v1_child(true, {}, {ah}), v1_child(false, {}, {"sha512", ah}));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    REQUIRE(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
    const auto& e = p.ia.installed.back();
    CHECK(e.protocol == core::IpsecProtocol::kAh);
    CHECK(e.key_in.size() == e.ah.keymat_len());
    CHECK(p.b->status(p.now).at(0).children.at(0).protocol == "ah");
  }
}

TEST_CASE("IKEv1 Quick Mode: ESP transport mode between the two hosts", "[ike][ikev1][engine][transport]") {
  Pair p(v1_child(true, {"aes128gcm16"}, {}, core::SaMode::kTransport),
         v1_child(false, {"aes128gcm16"}, {}, core::SaMode::kTransport));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  check_keys_cross(p.ia, p.ib);
  CHECK(p.ia.installed.back().mode == core::SaMode::kTransport);
  CHECK(p.ib.installed.back().mode == core::SaMode::kTransport);
  CHECK(p.a->status(p.now).at(0).children.at(0).mode == "transport");
  SECTION("a tunnel-mode peer gets NO_PROPOSAL_CHOSEN (IKEv1 has no fallback)") {
    auto cb = v1_child(false, {"aes128gcm16"}, {});
    cb.children[0].local_ts = {*core::IpRange::parse("198.51.100.2/32")};
    cb.children[0].remote_ts = {*core::IpRange::parse("198.51.100.1/32")};
    Pair q(v1_child(true, {"aes128gcm16"}, {}, core::SaMode::kTransport), std::move(cb));
    q.a->start(q.now);
    q.pump();
    CHECK(q.a->established("site-b"));
    CHECK(q.ia.installed.empty());
    CHECK(q.b->counters().ikev1_quick_mode_failed == 1);
  }
}

TEST_CASE("IKEv1 Quick Mode: an AH+ESP bundle, one proposal number, two SAs each way, rekeyed and deleted",
          "[ike][ikev1][engine][bundle]") {
  for (auto mode : {core::SaMode::kTunnel, core::SaMode::kTransport}) {
    INFO((mode == core::SaMode::kTunnel ? "tunnel" : "transport"));
    auto ca = v1_child(true, {"aes128-sha256", "aes128gcm16"}, {"sha256"}, mode);
    auto cb = v1_child(false, {"aes128gcm16"}, {"sha1", "sha256"}, mode);
    ca.children[0].rekey_time = 60;
    cb.children[0].rekey_time = 0;
    Pair p(std::move(ca), std::move(cb));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    REQUIRE(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);  // the ESP pair
    const auto& a = p.ia.installed.back();
    const auto& b = p.ib.installed.back();
    CHECK(a.protocol == core::IpsecProtocol::kAhEsp);
    CHECK(b.protocol == core::IpsecProtocol::kAhEsp);
    CHECK(a.mode == mode);
    CHECK(a.ah.integ == core::IntegAlg::kHmacSha256_128);
    // The AH pair: its own SPIs and KEYMAT (protocol 2 in the KEYMAT input).
    CHECK(a.ah_spi_in == b.ah_spi_out);
    CHECK(a.ah_spi_out == b.ah_spi_in);
    CHECK(a.ah_spi_in != a.spi_in);
    CHECK(a.ah_key_in == b.ah_key_out);
    CHECK(a.ah_key_out == b.ah_key_in);
    CHECK(a.ah_key_in.size() == 32);
    CHECK(a.ah_key_in != a.ah_key_out);
    CHECK(p.a->status(p.now).at(0).children.at(0).protocol == "ah+esp");
    p.advance(61s);  // A rekeys the bundle; the old one is deleted on both ends
    CHECK(p.ia.installed.size() == 2);
    CHECK(p.ib.installed.size() == 2);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    CHECK(p.ib.installed.back().protocol == core::IpsecProtocol::kAhEsp);
    p.a->shutdown(p.now);
    p.pump();
    CHECK(p.ib.active() == 0);
  }
}

TEST_CASE("IKEv1 Quick Mode: a bundle offer to an ESP-only child, and ESP to a bundle child, are refused", "[ike][ikev1][engine][bundle]") {
  for (bool bundle_initiates : {true, false}) {
    INFO(bundle_initiates);
    Pair p(bundle_initiates ? v1_child(true, {"aes128gcm16"}, {"sha256"}) : v1_child(true, {"aes128gcm16"}, {}),
           bundle_initiates ? v1_child(false, {"aes128gcm16"}, {}) : v1_child(false, {"aes128gcm16"}, {"sha256"}));
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK(p.ia.installed.empty());
    CHECK(p.ib.installed.empty());
  }
}

TEST_CASE("IKEv1 Quick Mode: client IDs with protocol and port, installed no wider", "[ike][ikev1][engine][ts]") {
  auto ca = conn1(true, "a long shared secret");
  auto cb = conn1(false, "a long shared secret");
  ca.children[0].ts_proto = 6;
  ca.children[0].remote_ports = {443, 443};  // A: 10.1.0.0/24[tcp] === 10.2.0.0/24[tcp/443]
  cb.children[0].ts_proto = 6;
  cb.children[0].local_ports = {443, 443};
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  check_keys_cross(p.ia, p.ib);
  CHECK(p.ia.installed.back().selectors.proto == 6);
  CHECK(p.ia.installed.back().selectors.remote_ports == core::PortRange{443, 443});
  CHECK(p.ia.installed.back().selectors.local_ports.any());
  CHECK(p.ib.installed.back().selectors.local_ports == core::PortRange{443, 443});
  SECTION("a peer asking for more than the responder's child allows is refused") {
    auto wa = conn1(true, "a long shared secret");  // any protocol
    auto wb = conn1(false, "a long shared secret");
    wb.children[0].ts_proto = 6;
    wb.children[0].local_ports = {443, 443};
    Pair q(std::move(wa), std::move(wb));
    q.a->start(q.now);
    q.pump();
    CHECK(q.a->established("site-b"));
    CHECK(q.ib.installed.empty());
    CHECK(q.b->counters().ikev1_quick_mode_failed == 1);
  }
  SECTION("a narrower peer is taken as it asks (udp/53 inside any protocol)") {
    auto na = conn1(true, "a long shared secret");
    na.children[0].ts_proto = 17;
    na.children[0].remote_ports = {53, 53};
    Pair q(std::move(na), conn1(false, "a long shared secret"));
    q.a->start(q.now);
    q.pump();
    REQUIRE(q.ib.active() == 1);
    CHECK(q.ib.installed.back().selectors.proto == 17);
    CHECK(q.ib.installed.back().selectors.local_ports == core::PortRange{53, 53});
  }
}
