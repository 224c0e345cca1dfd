// What peers that have not authenticated (and some that have) can make an
// IKEv2 engine hold or do: each finding of the attacker's review, shown with
// two engines in one process and hand-made datagrams.
#include <catch2/catch.hpp>

#include <array>
#include <map>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "test/ike/engine_harness.hpp"

using namespace ipsecgw;
using namespace std::chrono_literals;
using test::FakeInstaller;
using test::Pair;
using test::prop;

namespace {

ike::ConnectionConfig conn(bool a, std::vector<const char*> esp = {"aes128gcm16"}) {
  ike::ConnectionConfig c;
  c.name = a ? "site-b" : "site-a";
  c.local_addrs = {*core::IpAddress::parse(a ? "198.51.100.1" : "198.51.100.2")};
  c.remote_addrs = {*core::IpAddress::parse(a ? "198.51.100.2" : "198.51.100.1")};
  c.local_id = a ? "gw-a.example" : "gw-b.example";
  c.remote_id = a ? "gw-b.example" : "gw-a.example";
  c.proposals.push_back(prop("aes128gcm16-prfsha256-x25519"));
  const std::string psk = "a shared key";
  c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(psk.data()), psk.size()));
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  for (auto* s : esp) ch.esp_proposals.push_back(prop(s));
  ch.start_action = a ? ike::StartAction::kStart : ike::StartAction::kNone;
  c.children.push_back(std::move(ch));
  return c;
}

struct Quiet {
  Quiet() { core::log::set_level(core::log::Level::kError); }
} quiet;

ike::Header header_of(const core::Bytes& d) {
  std::string why;
  auto h = ike::parse_header(d, why);
  REQUIRE(h);
  return *h;
}

// A's first IKE_SA_INIT request, as it would reach B.
ike::Datagram first_init(Pair& p) {
  p.a->start(p.now);
  auto out = p.a->take_output();
  REQUIRE(out.size() == 1);
  return {out[0].remote, out[0].local, out[0].data};  // B's view: local, remote
}

// B's answers to one datagram, by kind.
struct Answer {
  bool init_response = false;  // SA, KE, Nonce: a half-open SA was made
  bool cookie = false;
  core::Bytes cookie_data;
};
Answer answer(ike::Engine& b) {
  Answer a;
  for (auto& d : b.take_output()) {
    std::string why;
    std::vector<ike::Payload> pl;
    const auto h = header_of(d.data);
    REQUIRE(ike::parse_chain(core::ByteSpan(d.data).subspan(ike::kHeaderLen), h.next, pl, why));
    for (const auto& x : pl) {
      if (x.type == ike::PayloadType::kSa) a.init_response = true;
      if (x.type != ike::PayloadType::kNotify) continue;
      auto n = ike::decode_notify(x.body, why);
      if (n && n->type == static_cast<std::uint16_t>(ike::Notify::kCookie)) {
        a.cookie = true;
        a.cookie_data = n->data;
      }
    }
  }
  return a;
}

// The same request with the COOKIE notify in front (RFC 7296 2.6).
core::Bytes with_cookie(const core::Bytes& req, const core::Bytes& cookie) {
  auto h = header_of(req);
  std::string why;
  std::vector<ike::Payload> pl;
  REQUIRE(ike::parse_chain(core::ByteSpan(req).subspan(ike::kHeaderLen), h.next, pl, why));
  ike::NotifyPayload n;
  n.type = static_cast<std::uint16_t>(ike::Notify::kCookie);
  n.data = cookie;
  ike::Payload c;
  c.type = ike::PayloadType::kNotify;
  c.body = ike::encode_notify(n);
  pl.insert(pl.begin(), c);
  return ike::encode_plain(h, pl);
}

void set_spi_i(core::Bytes& d, std::uint64_t spi) {
  for (int i = 0; i < 8; ++i) d[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(spi >> (56 - 8 * i));
}

}  // namespace

TEST_CASE("IKEv2 hardening: one SPIi from many ports counts as many half-open SAs, and COOKIE engages", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.cookie_threshold = 8;
  Pair p(conn(true), conn(false), ob);
  auto req = first_init(p);
  // An attacker replays one IKE_SA_INIT (one SPIi) from 100 source ports.
  std::size_t made = 0, cookies = 0;
  for (std::uint16_t port = 1000; port < 1100; ++port) {
    ike::Datagram d = req;
    d.remote.port = port;
    p.b->receive(d, p.now);
    const auto a = answer(*p.b);
    made += a.init_response;
    cookies += a.cookie;
  }
  // Each port made its own half-open SA until the threshold; then cookies.
  CHECK(made == 8);
  CHECK(p.b->half_open_count() == 8);
  CHECK(cookies == 92);
  CHECK(p.b->counters().cookies_sent == 92);
  // The same datagram from a port already seen is a retransmission: answered
  // from its half-open SA, nothing new.
  ike::Datagram again = req;
  again.remote.port = 1003;
  p.b->receive(again, p.now);
  CHECK(answer(*p.b).init_response);
  CHECK(p.b->half_open_count() == 8);
  // Half-open SAs time out; the count follows.
  p.now += 31s;
  p.b->tick(p.now);
  CHECK(p.b->half_open_count() == 0);
}

TEST_CASE("IKEv2 hardening: half-open budgets per source address and in total", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.cookie_threshold = 1000;
  ob.max_half_open_per_source = 5;
  ob.max_half_open = 12;
  ike::ConnectionConfig cb = conn(false);
  cb.remote_addrs.clear();  // answers anyone
  Pair p(conn(true), std::move(cb), ob);
  auto req = first_init(p);
  // 20 SPIs from one address: 5 half-open SAs, then refused and counted.
  for (std::uint64_t spi = 1; spi <= 20; ++spi) {
    ike::Datagram d = req;
    set_spi_i(d.data, spi);
    p.b->receive(d, p.now);
    p.b->take_output();
  }
  CHECK(p.b->half_open_count() == 5);
  CHECK(p.b->counters().half_open_refused == 15);
  // From other addresses: the total budget (12) holds.
  for (std::uint64_t spi = 100; spi < 120; ++spi) {
    ike::Datagram d = req;
    set_spi_i(d.data, spi);
    d.remote.addr = *core::IpAddress::parse("203.0.113." + std::to_string(spi - 99));
    p.b->receive(d, p.now);
    p.b->take_output();
  }
  CHECK(p.b->half_open_count() == 12);
  CHECK(p.b->counters().half_open_refused == 15 + 13);
  // A legitimate peer gets in once the half-open SAs time out.
  p.now += 31s;
  p.b->tick(p.now);
  CHECK(p.b->half_open_count() == 0);
  p.a = nullptr;
  std::vector<ike::ConnectionConfig> va;
  va.push_back(conn(true));
  FakeInstaller fresh;
  p.a = std::make_unique<ike::Engine>(std::move(va), fresh);
  p.a->start(p.now);
  p.pump();
  CHECK(p.a->established("site-b"));
  p.a = nullptr;  // before `fresh` goes
}

TEST_CASE("IKEv2 hardening: the COOKIE binds the initiator's port, and its secret rotates with a version byte", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.cookie_threshold = 0;  // always
  ob.cookie_secret_life = 10s;
  Pair p(conn(true), conn(false), ob);
  auto req = first_init(p);
  ike::Datagram req88 = req;
  set_spi_i(req88.data, 88);
  ike::Datagram probe = req;
  set_spi_i(probe.data, 77);
  // Two requests get cookies of the first secret.
  p.b->receive(req, p.now);
  const Answer c1 = answer(*p.b);
  p.b->receive(req88, p.now);
  const Answer c88 = answer(*p.b);
  REQUIRE(c1.cookie);
  REQUIRE(c88.cookie);
  REQUIRE(c1.cookie_data.size() == 33);
  ike::Datagram ok = req;
  ok.data = with_cookie(req.data, c1.cookie_data);
  ike::Datagram ok88 = req88;
  ok88.data = with_cookie(req88.data, c88.cookie_data);
  // The cookie from another port of the same address: refused.
  ike::Datagram other_port = ok;
  other_port.remote.port = 4711;
  p.b->receive(other_port, p.now);
  CHECK_FALSE(answer(*p.b).init_response);
  CHECK(p.b->counters().cookies_rejected == 1);
  // One rotation later (a new version byte) the cookie still holds: the
  // previous secret is kept.
  p.now += 11s;
  p.b->receive(probe, p.now);
  const Answer rotated = answer(*p.b);
  REQUIRE(rotated.cookie);
  CHECK(rotated.cookie_data[0] != c1.cookie_data[0]);
  p.b->receive(ok, p.now);
  CHECK(answer(*p.b).init_response);
  // Two rotations later it does not.
  p.now += 11s;
  p.b->receive(probe, p.now);
  const Answer fresh = answer(*p.b);
  p.b->receive(ok88, p.now);
  CHECK_FALSE(answer(*p.b).init_response);
  CHECK(p.b->counters().cookies_rejected == 2);
  // A cookie of the current secret works.
  REQUIRE(fresh.cookie);
  ike::Datagram ok77 = probe;
  ok77.data = with_cookie(probe.data, fresh.cookie_data);
  p.b->receive(ok77, p.now);
  CHECK(answer(*p.b).init_response);
  CHECK(p.b->half_open_count() == 2);
}

TEST_CASE("IKEv2 hardening: IKE_AUTH fragments that never complete are bounded per SA and in total", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.max_reassembly_bytes = 40000;
  std::map<std::uint64_t, std::array<core::Bytes, 2>> keys;  // spi_i -> SK_ei, SK_ai
  ike::IkeTransform transform;
  ike::EngineOptions oa;
  oa.key_logger = [&](const ike::IkeKeyLog& k) {
    transform = k.transform;
    keys[k.spi_i] = {core::Bytes(k.sk_ei.begin(), k.sk_ei.end()), core::Bytes(k.sk_ai.begin(), k.sk_ai.end())};
  };
  auto ca = conn(true);
  ca.children[0].start_action = ike::StartAction::kNone;
  Pair p(std::move(ca), conn(false), ob, oa);
  // IKE_SA_INIT completes; A's IKE_AUTH is held back. Instead, an IKE_AUTH
  // of 60 KB in fragments of ~1 KB, encrypted with A's keys, whose last
  // fragment never comes.
  p.filter = [](std::size_t, const ike::Datagram& d) { return header_of(d.data).exchange == ike::Exchange::kSaInit; };
  std::string why;
  REQUIRE(p.a->initiate("site-b", "", p.now, why));
  p.pump();
  REQUIRE(keys.size() == 1);
  REQUIRE(p.b->half_open_count() == 1);
  const auto spi_i = keys.begin()->first;
  const auto st = p.b->status(p.now);
  REQUIRE(st.size() == 1);
  auto sealer = ike::SkCipher::create(transform, keys[spi_i][0], keys[spi_i][1], core::CipherDir::kEncrypt);
  REQUIRE(sealer);
  ike::Header h;
  h.spi_i = spi_i;
  h.spi_r = st[0].spi_r;
  h.exchange = ike::Exchange::kAuth;
  h.flags = ike::kFlagInitiator;
  h.message_id = 1;
  std::vector<ike::Payload> big;
  for (int i = 0; i < 4; ++i) {
    ike::Payload v;
    v.type = ike::PayloadType::kVendor;
    v.body.assign(15000, static_cast<std::uint8_t>(i));
    big.push_back(v);
  }
  auto frags = sealer->seal_fragmented(h, big, 1200);
  REQUIRE(frags.size() > 50);
  REQUIRE(frags.size() <= 64);
  const ike::Endpoint a_end{*core::IpAddress::parse("198.51.100.1"), 500};
  const ike::Endpoint b_end{*core::IpAddress::parse("198.51.100.2"), 500};
  for (std::size_t i = 0; i + 1 < frags.size(); ++i) p.b->receive({b_end, a_end, frags[i]}, p.now);
  // At most 40000 bytes are held for peers not yet authenticated.
  CHECK(p.b->reassembly_bytes() <= 40000);
  CHECK(p.b->reassembly_bytes() > 30000);
  CHECK(p.b->counters().reassembly_refused > 0);
  // The SA times out, and with it what it held.
  p.now += 31s;
  p.b->tick(p.now);
  CHECK(p.b->reassembly_bytes() == 0);
}

TEST_CASE("IKEv2 hardening: log lines about unauthenticated input are rate-limited, the input still counted", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.log_lines_per_second = 10;
  Pair p(conn(true), conn(false), ob);
  auto req = first_init(p);
  // IKE_SA_INIT whose KE payload is cut short: malformed, 500 times in a second.
  ike::Datagram bad = req;
  bad.data.resize(bad.data.size() - 40);
  const auto len = static_cast<std::uint32_t>(bad.data.size());
  bad.data[24] = static_cast<std::uint8_t>(len >> 24);
  bad.data[25] = static_cast<std::uint8_t>(len >> 16);
  bad.data[26] = static_cast<std::uint8_t>(len >> 8);
  bad.data[27] = static_cast<std::uint8_t>(len);
  for (int i = 0; i < 500; ++i) p.b->receive(bad, p.now + std::chrono::milliseconds(i));
  CHECK(p.b->counters().invalid_messages == 500);
  CHECK(p.b->counters().log_suppressed == 490);
  // The next second has its budget again.
  p.b->receive(bad, p.now + 1500ms);
  CHECK(p.b->counters().log_suppressed == 490);
}

TEST_CASE("IKEv2 hardening: the cached response answers only a true repeat of its request", "[ike][hardening]") {
  Pair p(conn(true), conn(false));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.a->established("site-b"));
  // A -> B  INFORMATIONAL request 2 (DELETE of "lan"), answered by B.
  std::string why;
  REQUIRE(p.a->terminate("site-b", "lan", p.now, why));
  auto out = p.a->take_output();
  REQUIRE(out.size() == 1);
  const ike::Datagram req{out[0].remote, out[0].local, out[0].data};
  p.b->receive(req, p.now);
  REQUIRE(p.b->take_output().size() == 1);
  // The same datagram again: the response again.
  p.b->receive(req, p.now);
  CHECK(p.b->take_output().size() == 1);
  // Same SPIs and message ID, other bytes (not a repeat, not authentic): nothing.
  ike::Datagram forged = req;
  forged.data.back() ^= 0x5a;
  const auto dropped = p.b->counters().dropped_messages;
  p.b->receive(forged, p.now);
  CHECK(p.b->take_output().empty());
  CHECK(p.b->counters().dropped_messages == dropped + 1);
}

TEST_CASE("IKEv2 hardening: a Child SA that demands PFS is not rekeyed without KE", "[ike][hardening]") {
  // A offers no DH group for the child; B's child demands one.
  auto ca = conn(true, {"aes128gcm16"});
  ca.children[0].rekey_bytes = 1000;
  Pair p(std::move(ca), conn(false, {"aes128gcm16-x25519"}));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.a->established("site-b"));
  REQUIRE(p.ib.installed.size() == 1);  // the first child comes without PFS (IKE_AUTH)
  p.a->bytes_used(p.ia.installed[0].name, 5000, p.now);
  p.advance(2s);
  CHECK(p.ib.installed.size() == 1);  // the rekey without KE is refused
  CHECK(p.ia.installed.size() == 1);
  // ... and tried again only later, not at every tick.
  const auto sent_before = p.delivered;
  p.advance(10s);
  CHECK(p.delivered == sent_before);
}

TEST_CASE("IKEv2 hardening: Child SAs per IKE SA are capped", "[ike][hardening]") {
  ike::EngineOptions ob;
  ob.max_children_per_ike_sa = 1;
  auto ca = conn(true);
  ca.children[0].rekey_bytes = 1000;
  auto cb = conn(false);
  for (auto* c : {&ca, &cb}) {
    ike::ChildConfig more = c->children[0];
    more.name = "lan2";
    more.local_ts = {*core::IpRange::parse(c == &ca ? "10.3.0.0/24" : "10.4.0.0/24")};
    more.remote_ts = {*core::IpRange::parse(c == &ca ? "10.4.0.0/24" : "10.3.0.0/24")};
    more.start_action = ike::StartAction::kNone;
    c->children.push_back(more);
  }
  Pair p(std::move(ca), std::move(cb), ob);
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.b->child_sa_count() == 1);
  p.a->acquire("site-b", "lan2", p.now);
  p.pump();
  CHECK(p.b->child_sa_count() == 1);
  CHECK(p.a->child_sa_count() == 1);
  CHECK(p.b->counters().children_refused == 1);
  // A rekey still has room (make-before-break): new SA, then the old one goes.
  p.a->bytes_used(p.ia.installed[0].name, 5000, p.now);
  p.a->tick(p.now);
  p.pump();
  CHECK(p.ib.installed.size() == 2);
  CHECK(p.b->child_sa_count() == 1);
  CHECK(p.a->child_sa_count() == 1);
}

TEST_CASE("IKEv2 hardening: with any remote identity allowed, INITIAL_CONTACT removes only SAs from the same address", "[ike][hardening]") {
  auto cb = conn(false);
  cb.remote_id.clear();     // any identity that knows the PSK
  cb.remote_addrs.clear();  // from anywhere
  Pair p(conn(true), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.b->ike_sa_count() == 1);
  // Another holder of the PSK, at another address, claims A's identity and
  // sends INITIAL_CONTACT.
  auto cm = conn(true);
  cm.local_addrs = {*core::IpAddress::parse("198.51.100.9")};
  FakeInstaller im;
  std::vector<ike::ConnectionConfig> vm;
  vm.push_back(std::move(cm));
  auto real_a = std::move(p.a);
  p.a = std::make_unique<ike::Engine>(std::move(vm), im);
  p.a->start(p.now);
  p.pump();
  CHECK(p.a->established("site-b"));
  CHECK(p.b->ike_sa_count() == 2);  // A's SA survives
  CHECK(p.ib.active() == 2);
  p.a = nullptr;
  // A itself restarting from its own address still clears its stale SA.
  FakeInstaller ia2;
  std::vector<ike::ConnectionConfig> va;
  va.push_back(conn(true));
  p.a = std::make_unique<ike::Engine>(std::move(va), ia2);
  p.a->start(p.now);
  p.pump();
  CHECK(p.b->ike_sa_count() == 2);  // the impostor's and A's new one
  p.a = nullptr;
  real_a = nullptr;
}

TEST_CASE("IKEv2 hardening: without a NAT in front of the peer, an authenticated message from elsewhere does not move the SA", "[ike][hardening]") {
  Pair p(conn(true), conn(false));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.a->established("site-b"));
  REQUIRE(p.b->status(p.now)[0].remote == "198.51.100.1:500");
  // A -> B  INFORMATIONAL request 2, as if from another port (a copy an
  // on-path attacker re-sent from elsewhere before the original arrived).
  std::string why;
  REQUIRE(p.a->terminate("site-b", "lan", p.now, why));
  auto out = p.a->take_output();
  REQUIRE(out.size() == 1);
  p.b->receive({out[0].remote, {out[0].local.addr, 40000}, out[0].data}, p.now);
  p.b->take_output();
  CHECK(p.b->status(p.now)[0].remote == "198.51.100.1:500");
}

TEST_CASE("IKEv2 hardening: behind a NAT whose mapping changes, the IKE SA and its installed Child SAs follow the peer", "[ike][hardening][nat]") {
  // A sits behind a NAT (public 203.0.113.5); B accepts it from any address.
  auto ca = conn(true);
  ca.dpd_delay = 10;
  auto cb = conn(false);
  cb.remote_addrs.clear();
  Pair p(std::move(ca), std::move(cb));
  const auto a_addr = *core::IpAddress::parse("198.51.100.1");
  const auto nat_addr = *core::IpAddress::parse("203.0.113.5");
  std::uint16_t nat_500 = 39500, nat_4500 = 40000;  // the NAT's mappings of A's ports 500 and 4500
  auto pump_nat = [&] {
    for (int round = 0; round < 50; ++round) {
      auto fa = p.a->take_output();
      auto fb = p.b->take_output();
      if (fa.empty() && fb.empty()) return;
      for (auto& d : fa)
        p.b->receive({d.remote, {nat_addr, d.local.port == 500 ? nat_500 : nat_4500}, d.data}, p.now);
      for (auto& d : fb) {
        REQUIRE(d.remote.addr == nat_addr);
        const std::uint16_t port = d.remote.port == nat_500 ? 500 : d.remote.port == nat_4500 ? 4500 : 0;
        if (port) p.a->receive({{a_addr, port}, d.local, d.data}, p.now);  // else: no mapping, the NAT drops it
      }
    }
  };
  p.a->start(p.now);
  pump_nat();
  REQUIRE(p.a->established("site-b"));
  REQUIRE(p.ib.installed.size() == 1);
  CHECK(p.ib.installed[0].encap == core::Encap::kUdp);
  CHECK(p.ib.installed[0].remote_port == 40000);
  CHECK(p.b->status(p.now)[0].remote == "203.0.113.5:40000");

  // The NAT forgets A and maps its port 4500 anew; A's next message (DPD)
  // comes from there. B's answers to the old port would be lost.
  nat_4500 = 41000;
  p.now += 11s;
  p.a->tick(p.now);
  pump_nat();
  CHECK(p.b->status(p.now)[0].remote == "203.0.113.5:41000");
  REQUIRE(p.ib.moved.size() == 1);
  CHECK(p.ib.moved[0].first == p.ib.installed[0].name);
  CHECK(p.ib.moved[0].second.remote_addr == nat_addr);
  CHECK(p.ib.moved[0].second.remote_port == 41000);
  CHECK(p.ib.moved[0].second.encap == core::Encap::kUdp);
  // A is not behind a NAT from its own view of B: nothing of A's moves.
  CHECK(p.ia.moved.empty());
  CHECK(p.a->established("site-b"));
}
