// Two IKEv2 engines in one process, a fake clock, and a lossy "network"
// between them: every exchange the engine does, checked end to end.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <map>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "test/ike/engine_harness.hpp"

using namespace ipsecgw;
using namespace std::chrono_literals;
using test::FakeInstaller;
using test::Pair;
using test::check_keys_cross;
using test::prop;
using test::conn;
using test::header_of;
using test::KeyBook;
using test::open_request;

namespace {

struct Quiet {
  Quiet() { core::log::set_level(core::log::Level::kError); }
} quiet;

}  // namespace

TEST_CASE("IKEv2: IKE_SA_INIT + IKE_AUTH with PSK installs matching Child SAs", "[ike][engine]") {
  for (auto suite : std::vector<std::pair<const char*, const char*>>{
           {"aes256gcm16-prfsha384-x25519", "aes256gcm16"},
           {"aes128-sha256-modp2048", "aes128-sha256"},
           {"chacha20poly1305-prfsha256-ecp256", "chacha20poly1305"}}) {
    INFO(suite.first);
    Pair p(conn(true, "a long shared secret", {suite.first}, {suite.second}),
           conn(false, "a long shared secret", {suite.first}, {suite.second}));
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK(p.b->established("site-a"));
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
    CHECK(p.a->counters().ike_established == 1);
    CHECK(p.b->counters().ike_established == 1);
    CHECK(p.delivered == 4);
  }
}

TEST_CASE("IKEv2: wrong PSK gives AUTHENTICATION_FAILED and no SA", "[ike][engine]") {
  Pair p(conn(true, "secret one"), conn(false, "secret two"));
  p.a->start(p.now);
  p.pump();
  CHECK_FALSE(p.a->established("site-b"));
  CHECK_FALSE(p.b->established("site-a"));
  CHECK(p.ia.installed.empty());
  CHECK(p.ib.installed.empty());
  CHECK(p.b->counters().auth_failed == 1);
  CHECK(p.a->counters().auth_failed == 1);
  CHECK(p.a->ike_sa_count() == 0);
  CHECK(p.b->ike_sa_count() == 0);
}

TEST_CASE("IKEv2: INVALID_KE_PAYLOAD and a retry with the group the responder asks for", "[ike][engine]") {
  Pair p(conn(true, "k", {"aes256gcm16-prfsha384-x25519-modp2048"}),
         conn(false, "k", {"aes256gcm16-prfsha384-modp2048"}));
  p.a->start(p.now);
  p.pump();
  CHECK(p.a->established("site-b"));
  CHECK(p.delivered == 6);  // INIT, INVALID_KE, INIT, INIT resp, AUTH, AUTH resp
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv2: COOKIE when half-open SAs pass the threshold", "[ike][engine]") {
  ike::EngineOptions ob;
  ob.cookie_threshold = 0;
  Pair p(conn(true, "k"), conn(false, "k"), ob);
  p.a->start(p.now);
  p.pump();
  CHECK(p.a->established("site-b"));
  CHECK(p.b->counters().cookies_sent == 1);
  CHECK(p.delivered == 6);
}

TEST_CASE("IKEv2: lost and duplicated messages", "[ike][engine]") {
  SECTION("lost IKE_AUTH request is retransmitted") {
    Pair p(conn(true, "k"), conn(false, "k"));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 2; };
    p.a->start(p.now);
    p.pump();
    CHECK_FALSE(p.a->established("site-b"));
    p.advance(1500ms);
    CHECK(p.a->established("site-b"));
    CHECK(p.a->counters().retransmits == 1);
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("lost IKE_AUTH response: the duplicate request is answered from the cache") {
    Pair p(conn(true, "k"), conn(false, "k"));
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 3; };
    p.a->start(p.now);
    p.pump();
    CHECK(p.b->established("site-a"));
    CHECK_FALSE(p.a->established("site-b"));
    p.advance(1500ms);
    CHECK(p.a->established("site-b"));
    CHECK(p.ib.installed.size() == 1);  // not installed twice
    check_keys_cross(p.ia, p.ib);
  }
  SECTION("a peer that never answers: bounded retransmission, then failure") {
    Pair p(conn(true, "k"), conn(false, "k"));
    p.filter = [](std::size_t, const ike::Datagram&) { return false; };
    p.a->start(p.now);
    p.pump();
    p.advance(120s);
    CHECK(p.a->counters().retransmits == 4);
    CHECK(p.a->counters().ike_failed >= 1);
  }
}

TEST_CASE("IKEv2: Child SA rekey make-before-break, with and without PFS", "[ike][engine]") {
  for (const char* esp : {"aes128gcm16", "aes128gcm16-x25519"}) {
    INFO(esp);
    auto ca = conn(true, "k", {"aes256gcm16-prfsha384-x25519"}, {esp});
    auto cb = conn(false, "k", {"aes256gcm16-prfsha384-x25519"}, {esp});
    ca.children[0].rekey_time = 60;
    cb.children[0].rekey_time = 0;
    const bool want_pfs = std::string(esp).find("x25519") != std::string::npos;
    Pair p(std::move(ca), std::move(cb));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    auto child_pfs = [&](ike::Engine& e) {
      const auto st = e.status(p.now);
      REQUIRE(st.size() == 1);
      REQUIRE(st[0].children.size() == 1);
      return st[0].children[0].pfs;
    };
    CHECK(!child_pfs(*p.a));  // the first Child SA comes from IKE_AUTH: no DH of its own
    p.advance(61s);
    REQUIRE(p.ia.installed.size() == 2);
    REQUIRE(p.ib.installed.size() == 2);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
    CHECK(p.ia.installed[0].key_in != p.ia.installed[1].key_in);
    // Make before break, on both ends: the new SA is installed before the
    // old one is removed, so traffic always has an SA.
    for (const FakeInstaller* f : {&p.ia, &p.ib}) {
      const auto old_name = f->installed[0].name, new_name = f->installed[1].name;
      REQUIRE(f->at("-" + old_name) >= 0);
      CHECK(f->at("+" + new_name) < f->at("-" + old_name));
      CHECK(f->at("-" + new_name) == -1);
      // As a rekeyed SA, on both ends: its inbound SPI stays a little for
      // what was in flight (the data plane's delay).
      CHECK(f->removed_rekeyed == std::vector<std::string>{old_name});
    }
    // PFS: the rekey exchanged KE payloads exactly when the proposal has a group.
    CHECK(child_pfs(*p.a) == want_pfs);
    CHECK(child_pfs(*p.b) == want_pfs);
    CHECK(p.a->counters().child_rekeyed == 1);
    CHECK(p.b->counters().child_rekeyed == 1);
  }
}

TEST_CASE("IKEv2: DELETE and liveness checks", "[ike][engine]") {
  SECTION("shutdown deletes the IKE SA on both sides") {
    Pair p(conn(true, "k"), conn(false, "k"));
    p.a->start(p.now);
    p.pump();
    p.a->shutdown(p.now);
    p.pump();
    CHECK(p.ia.active() == 0);
    CHECK(p.ib.active() == 0);
    CHECK(p.b->ike_sa_count() == 0);
  }
  SECTION("DPD notices a dead peer and clears its SAs") {
    auto ca = conn(true, "k");
    ca.dpd_delay = 10;
    Pair p(std::move(ca), conn(false, "k"));
    p.a->start(p.now);
    p.pump();
    p.advance(11s);
    CHECK(p.a->established("site-b"));  // answered
    p.filter = [](std::size_t, const ike::Datagram&) { return false; };
    p.advance(60s);
    CHECK(p.ia.removed.size() >= 1);
  }
  SECTION("dpd_timeout bounds the liveness check; dpd_action restart brings the tunnel back") {
    auto ca = conn(true, "k");
    ca.dpd_delay = 2;
    ca.dpd_timeout = 5;
    ca.children[0].dpd_action = ike::DpdAction::kRestart;
    Pair p(std::move(ca), conn(false, "k"));
    p.a->start(p.now);
    p.pump();
    p.filter = [](std::size_t, const ike::Datagram&) { return false; };
    p.advance(7500ms);  // 2 s idle + 5 s timeout
    CHECK(p.ia.removed.size() == 1);
    CHECK_FALSE(p.a->established("site-b"));
    p.filter = [](std::size_t, const ike::Datagram&) { return true; };
    p.advance(3s);  // the restarted IKE_SA_INIT is retransmitted and answered
    CHECK(p.a->established("site-b"));
    CHECK(p.ia.active() == 1);
  }
}

TEST_CASE("IKEv2: mismatched proposals and selectors are refused", "[ike][engine]") {
  SECTION("no common IKE proposal") {
    Pair p(conn(true, "k", {"aes128-sha256-modp2048"}), conn(false, "k", {"aes256gcm16-prfsha384-x25519"}));
    p.a->start(p.now);
    p.pump();
    CHECK_FALSE(p.a->established("site-b"));
    CHECK(p.a->counters().ike_failed == 1);
  }
  SECTION("no common ESP proposal: IKE SA up, no child") {
    Pair p(conn(true, "k", {"aes256gcm16-prfsha384-x25519"}, {"aes128-sha256"}),
           conn(false, "k", {"aes256gcm16-prfsha384-x25519"}, {"aes256gcm16"}));
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));
    CHECK(p.ia.installed.empty());
  }
}

TEST_CASE("IKEv2: IKE SA rekey from either side moves the Child SAs; later Child rekeys use the new SK_d", "[ike][engine]") {
  for (bool a_rekeys : {true, false}) {
    INFO(a_rekeys);
    auto ca = conn(true, "k");
    auto cb = conn(false, "k");
    (a_rekeys ? ca : cb).rekey_time = 100;
    (a_rekeys ? cb : ca).rekey_time = 0;
    ca.children[0].rekey_time = 150;
    cb.children[0].rekey_time = 0;
    Pair p(std::move(ca), std::move(cb));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.a->established("site-b"));
    auto spis = [&](ike::Engine& e) {
      const auto st = e.status(p.now);
      REQUIRE(st.size() == 1);
      return std::pair{st[0].spi_i, st[0].spi_r};
    };
    const auto before_a = spis(*p.a), before_b = spis(*p.b);
    CHECK(before_a == before_b);
    p.advance(101s);
    CHECK(p.a->ike_sa_count() == 1);
    CHECK(p.b->ike_sa_count() == 1);
    // The surviving IKE SA is a new one (RFC 7296 2.18: new SPIs), the same on both ends.
    const auto after_a = spis(*p.a), after_b = spis(*p.b);
    CHECK(after_a == after_b);
    CHECK(after_a.first != before_a.first);
    CHECK(after_a.second != before_a.second);
    CHECK(p.a->counters().ike_rekeyed == 1);
    CHECK(p.b->counters().ike_rekeyed == 1);
    CHECK(p.a->child_sa_count() == 1);
    CHECK(p.b->child_sa_count() == 1);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    CHECK(p.ia.installed.size() == 1);  // the Child SA moved, not re-made
    CHECK(p.a->counters().ike_established == 1);
    // The Child SA rekey after the IKE rekey: both sides derive the same keys
    // from the new SK_d.
    p.advance(50s);
    CHECK(p.ia.installed.size() == 2);
    CHECK(p.ib.installed.size() == 2);
    check_keys_cross(p.ia, p.ib);
    CHECK(p.a->established("site-b"));
    CHECK(spis(*p.a) == after_a);  // done on the new IKE SA
    CHECK(p.a->counters().child_rekeyed == 1);
  }
}

TEST_CASE("IKEv2: fragmentation (RFC 7383) of IKE_AUTH and later exchanges, with loss", "[ike][engine][fragmentation]") {
  for (const char* suite : {"aes256gcm16-prfsha384-x25519", "aes128-sha256-modp2048"}) {
    INFO(suite);
    auto ca = conn(true, "k", {suite}, {"aes128gcm16-x25519"});
    auto cb = conn(false, "k", {suite}, {"aes128gcm16-x25519"});
    ca.fragment_size = 160;
    cb.fragment_size = 160;
    ca.children[0].rekey_time = 60;
    cb.children[0].rekey_time = 0;
    Pair p(std::move(ca), std::move(cb));
    // Lose the second datagram of IKE_AUTH once: the whole message is resent.
    p.filter = [](std::size_t n, const ike::Datagram&) { return n != 3; };
    p.a->start(p.now);
    p.pump();
    p.advance(3s);
    CHECK(p.a->established("site-b"));
    CHECK(p.b->established("site-a"));
    check_keys_cross(p.ia, p.ib);
    CHECK(p.delivered > 6);  // fragments, not single messages
    p.advance(61s);          // a Child SA rekey with PFS, fragmented too
    CHECK(p.ia.installed.size() == 2);
    check_keys_cross(p.ia, p.ib);
  }
}

TEST_CASE("IKEv2: acquire (trap) sets up the IKE SA, then further children by CREATE_CHILD_SA", "[ike][engine]") {
  auto ca = conn(true, "k");
  auto cb = conn(false, "k");
  ca.children[0].start_action = ike::StartAction::kTrap;
  ike::ChildConfig second;
  second.name = "dmz";
  second.local_ts = {*core::IpRange::parse("10.1.1.0/24")};
  second.remote_ts = {*core::IpRange::parse("10.2.1.0/24")};
  second.esp_proposals = ca.children[0].esp_proposals;
  second.start_action = ike::StartAction::kTrap;
  ike::ChildConfig second_b = second;
  second_b.local_ts = second.remote_ts;
  second_b.remote_ts = second.local_ts;
  second_b.start_action = ike::StartAction::kNone;
  ca.children.push_back(second);
  cb.children.push_back(second_b);
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);  // trap: nothing starts by itself
  p.pump();
  CHECK(p.delivered == 0);
  p.a->acquire("site-b", "lan", p.now);
  p.a->acquire("site-b", "lan", p.now);  // a second packet: no second IKE SA
  p.pump();
  CHECK(p.a->established("site-b"));
  CHECK(p.a->ike_sa_count() == 1);
  CHECK(p.ia.active() == 1);
  p.a->acquire("site-b", "dmz", p.now);
  p.pump();
  CHECK(p.ia.active() == 2);
  CHECK(p.ib.active() == 2);
  CHECK(p.a->ike_sa_count() == 1);
  check_keys_cross(p.ia, p.ib);
  CHECK(p.ia.installed.back().name.find("site-b/dmz/") == 0);
}

TEST_CASE("IKEv2: byte lifetimes: rekey_bytes rekeys, life_bytes removes", "[ike][engine]") {
  auto ca = conn(true, "k");
  ca.children[0].rekey_bytes = 1000000;
  ca.children[0].life_bytes = 2000000;
  Pair p(std::move(ca), conn(false, "k"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  const auto first = p.ia.installed[0].name;
  p.a->bytes_used(first, 999999, p.now);
  p.advance(100ms);
  CHECK(p.ia.installed.size() == 1);
  p.a->bytes_used(first, 1000001, p.now);
  p.advance(100ms);
  CHECK(p.ia.installed.size() == 2);  // rekeyed, the old one deleted
  CHECK(p.ia.active() == 1);
  check_keys_cross(p.ia, p.ib);
  const auto second = p.ia.installed[1].name;
  p.a->bytes_used(second, 2000001, p.now);
  CHECK(p.ia.active() == 0);
}

TEST_CASE("IKEv2: life_time holds with rekey_time 0: the Child SA is deleted on both ends at its life time", "[ike][engine]") {
  auto ca = conn(true, "k");
  ca.children[0].rekey_time = 0;
  ca.children[0].life_time = 100;
  auto cb = conn(false, "k");
  cb.children[0].rekey_time = 0;  // b alone would keep it forever
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  p.advance(99s);
  CHECK(p.ia.active() == 1);
  CHECK(p.ib.active() == 1);
  p.advance(2s);
  CHECK(p.ia.active() == 0);
  CHECK(p.ib.active() == 0);            // a's DELETE reached b
  CHECK(p.ia.installed.size() == 1);    // removed, not rekeyed
  CHECK(p.ib.installed.size() == 1);
  CHECK(p.a->established("site-b"));    // the IKE SA stays
}

TEST_CASE("IKEv2: simultaneous Child SA rekey from both ends (RFC 7296 2.8.1)", "[ike][engine]") {
  // The random nonces decide who wins: 16 rounds see both outcomes (all
  // alike has probability 2^-15).
  std::uint64_t a_won = 0, b_won = 0;
  for (int round = 0; round < 16; ++round) {
    auto ca = conn(true, "k");
    auto cb = conn(false, "k");
    ca.children[0].rekey_bytes = 1000;
    cb.children[0].rekey_bytes = 1000;
    Pair p(std::move(ca), std::move(cb));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    p.a->bytes_used(p.ia.installed[0].name, 5000, p.now);
    p.b->bytes_used(p.ib.installed[0].name, 5000, p.now);
    p.a->tick(p.now);  // both send CREATE_CHILD_SA with REKEY_SA before either answers
    p.b->tick(p.now);
    p.pump();
    p.advance(5s);
    INFO("round " << round);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    CHECK(p.a->child_sa_count() == 1);
    CHECK(p.b->child_sa_count() == 1);
    // The surviving pair matches crosswise.
    std::vector<FakeInstaller::Entry> la, lb;
    for (const auto& e : p.ia.installed)
      if (std::find(p.ia.removed.begin(), p.ia.removed.end(), e.name) == p.ia.removed.end()) la.push_back(e);
    for (const auto& e : p.ib.installed)
      if (std::find(p.ib.removed.begin(), p.ib.removed.end(), e.name) == p.ib.removed.end()) lb.push_back(e);
    REQUIRE(la.size() == 1);
    REQUIRE(lb.size() == 1);
    CHECK(la[0].spi_in == lb[0].spi_out);
    CHECK(la[0].key_in == lb[0].key_out);
    CHECK(la[0].name != p.ia.installed[0].name);  // the old one is gone
    // A collision happened and was settled once at each end: one won, one lost.
    const auto& ka = p.a->counters();
    const auto& kb = p.b->counters();
    CHECK(ka.rekey_collisions_won + ka.rekey_collisions_lost == 1);
    CHECK(kb.rekey_collisions_won + kb.rekey_collisions_lost == 1);
    CHECK(ka.rekey_collisions_won == kb.rekey_collisions_lost);
    CHECK(p.ia.installed.size() == 3);  // the old SA and both new ones
    CHECK(p.ib.installed.size() == 3);
    // Only the old SA lingers as rekeyed; the redundant new one goes at once.
    CHECK(p.ia.removed_rekeyed == std::vector<std::string>{p.ia.installed[0].name});
    CHECK(p.ib.removed_rekeyed == std::vector<std::string>{p.ib.installed[0].name});
    a_won += ka.rekey_collisions_won;
    b_won += kb.rekey_collisions_won;
  }
  CHECK(a_won > 0);
  CHECK(b_won > 0);
}

TEST_CASE("IKEv2: simultaneous IKE SA rekey from both ends (RFC 7296 2.8.2)", "[ike][engine]") {
  std::uint64_t a_won = 0, b_won = 0;
  for (int round = 0; round < 16; ++round) {  // both outcomes, as for 2.8.1
    auto ca = conn(true, "k");
    auto cb = conn(false, "k");
    ca.rekey_time = 100;  // both established at the same instant: both rekey at once
    cb.rekey_time = 100;
    ca.children[0].rekey_time = 0;
    cb.children[0].rekey_time = 0;
    ca.children[0].rekey_bytes = 1000;
    Pair p(std::move(ca), std::move(cb));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.a->established("site-b"));
    const auto first = p.a->status(p.now).at(0).spi_i;
    p.advance(101s);
    p.advance(5s);
    INFO("round " << round);
    CHECK(p.a->ike_sa_count() == 1);
    CHECK(p.b->ike_sa_count() == 1);
    const auto& ka = p.a->counters();
    const auto& kb = p.b->counters();
    CHECK(ka.rekey_collisions_won + ka.rekey_collisions_lost == 1);
    CHECK(kb.rekey_collisions_won + kb.rekey_collisions_lost == 1);
    CHECK(ka.rekey_collisions_won == kb.rekey_collisions_lost);
    a_won += ka.rekey_collisions_won;
    b_won += kb.rekey_collisions_won;
    const auto sa_a = p.a->status(p.now).at(0), sa_b = p.b->status(p.now).at(0);
    CHECK(sa_a.spi_i != first);  // a new IKE SA survived, the same one on both ends
    CHECK(sa_a.spi_i == sa_b.spi_i);
    CHECK(sa_a.spi_r == sa_b.spi_r);
    CHECK(p.a->child_sa_count() == 1);
    CHECK(p.b->child_sa_count() == 1);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    // The surviving IKE SA works: a Child SA rekey over it derives matching keys.
    p.a->bytes_used(p.ia.installed[0].name, 5000, p.now);
    p.advance(2s);
    CHECK(p.ia.installed.size() == 2);
    check_keys_cross(p.ia, p.ib);
  }
  CHECK(a_won > 0);
  CHECK(b_won > 0);
}

TEST_CASE("IKEv2: INITIAL_CONTACT makes the responder drop the peer's stale IKE SAs", "[ike][engine]") {
  Pair p(conn(true, "k"), conn(false, "k"));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.b->ike_sa_count() == 1);
  // The initiator "reboots": a fresh engine, same identity, INITIAL_CONTACT.
  FakeInstaller fresh;
  std::vector<ike::ConnectionConfig> v;
  v.push_back(conn(true, "k"));
  p.a = std::make_unique<ike::Engine>(std::move(v), fresh);
  p.a->start(p.now);
  p.pump();
  p.advance(1s);
  CHECK(p.a->established("site-b"));
  CHECK(p.b->ike_sa_count() == 1);
  CHECK(p.ib.active() == 1);
}

TEST_CASE("IKEv2: injected randomness makes an exchange repeat exactly (SPIs, nonces)", "[ike][engine]") {
  // splitmix64, seeded per engine.
  auto rng = [](std::uint64_t seed) {
    auto state = std::make_shared<std::uint64_t>(seed);
    return [state](core::MutByteSpan out) {
      for (auto& b : out) {
        std::uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        b = static_cast<std::uint8_t>(z ^ (z >> 31));
      }
    };
  };
  struct Run {
    std::uint64_t spi_i, spi_r;
    std::string child;
    core::Bytes nonce_i;
  };
  auto run = [&](std::uint64_t seed) {
    ike::EngineOptions oa, ob;
    oa.random = rng(seed);
    ob.random = rng(seed + 1);
    Pair p(conn(true, "k"), conn(false, "k"), ob, oa);
    core::Bytes ni;
    p.filter = [&](std::size_t n, const ike::Datagram& d) {
      if (n == 0) {  // A -> B  IKE_SA_INIT request: SA, KE, Ni, N(NAT_DETECTION_*), ...
        std::string why;
        std::vector<ike::Payload> pl;
        const auto h = header_of(d);
        REQUIRE(ike::parse_chain(core::ByteSpan(d.data).subspan(ike::kHeaderLen), h.next, pl, why));
        for (const auto& x : pl)
          if (x.type == ike::PayloadType::kNonce) ni = x.body;
      }
      return true;
    };
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.a->established("site-b"));
    const auto st = p.a->status(p.now).at(0);
    return Run{st.spi_i, st.spi_r, p.ia.installed.at(0).name, ni};
  };
  const auto r1 = run(42), r2 = run(42), r3 = run(7);
  CHECK(r1.spi_i == r2.spi_i);
  CHECK(r1.spi_r == r2.spi_r);
  CHECK(r1.child == r2.child);
  CHECK(r1.nonce_i.size() == 32);
  CHECK(r1.nonce_i == r2.nonce_i);
  CHECK(r1.spi_i != r3.spi_i);
  CHECK(r1.nonce_i != r3.nonce_i);
}

TEST_CASE("IKEv2: a request that breaks its exchange's payload rules gets INVALID_SYNTAX and reaches no handler", "[ike][engine][rules]") {
  KeyBook kb;
  ike::EngineOptions oa;
  oa.key_logger = kb.logger();
  Pair p(conn(true, "k"), conn(false, "k"), {}, oa);
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.b->established("site-a"));
  const auto st = p.b->status(p.now).at(0);
  // INFORMATIONAL request 2 (as A would send it) with a DELETE of the IKE SA and an SA payload, which
  // has no place there: B answers INVALID_SYNTAX and does not delete anything.
  ike::Header h;
  h.spi_i = st.spi_i;
  h.spi_r = st.spi_r;
  h.exchange = ike::Exchange::kInformational;
  h.flags = ike::kFlagInitiator;
  h.message_id = 2;
  // A well-formed SA payload (one ESP proposal, AES-GCM-16 128): only the rules can refuse it.
  ike::SaPayload valid_sa;
  valid_sa.proposals.push_back({1, ike::ProtocolId::kEsp, {1, 2, 3, 4}, {{ike::TransformType::kEncr, 20, 128}}});
  std::string why0;
  REQUIRE(ike::decode_sa(ike::encode_sa(valid_sa), why0));
  auto c = kb.initiator(st.spi_i, core::CipherDir::kEncrypt);
  const auto msg = c->seal(h, {{ike::PayloadType::kDelete, false, ike::encode_delete({ike::ProtocolId::kIke, {}}), {}},
                               {ike::PayloadType::kSa, false, ike::encode_sa(valid_sa), {}}});
  const ike::Endpoint a_ep{*core::IpAddress::parse("198.51.100.1"), 500};
  const ike::Endpoint b_ep{*core::IpAddress::parse("198.51.100.2"), 500};
  p.b->receive({a_ep, b_ep, msg}, p.now);
  const auto out = p.b->take_output();
  REQUIRE(out.size() == 1);
  CHECK(header_of(out[0]).is_response());
  CHECK(header_of(out[0]).message_id == 2);
  CHECK(p.b->established("site-a"));  // the DELETE did not run
  CHECK(p.ib.active() == 1);
  // B's answer, opened with SK_er: N(INVALID_SYNTAX).
  const auto& [t, k] = kb.keys[st.spi_i];
  auto rc = ike::SkCipher::create(t, k[1], k[3], core::CipherDir::kDecrypt);
  std::string why;
  std::vector<ike::Payload> outer;
  REQUIRE(ike::parse_chain(core::ByteSpan(out[0].data).subspan(ike::kHeaderLen), header_of(out[0]).next, outer, why));
  auto plain = rc->open(out[0].data, out[0].data.size() - outer.back().body.size(), why);
  REQUIRE(plain);
  std::vector<ike::Payload> inner;
  REQUIRE(ike::parse_chain(*plain, outer.back().inner_first, inner, why));
  REQUIRE(inner.size() == 1);
  auto n = ike::decode_notify(inner[0].body, why);
  REQUIRE(n);
  CHECK(n->type == static_cast<std::uint16_t>(ike::Notify::kInvalidSyntax));
}
