// IKEv1 Main Mode with pre-shared keys: two MainMode objects in one process,
// each message handed across, for several suites and the ways it must fail.
// (tshark reads the same task's encrypted messages: test/ike/ikev1_tshark_test.sh.)
#include <catch2/catch.hpp>

#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_main_mode.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;

namespace {
core::Proposal prop(const char* s) {
  std::string bad;
  auto p = core::parse_proposal(s, bad);
  REQUIRE(p);
  return *p;
}
v1::IdPayload fqdn(const std::string& n) { return {v1::IdType::kFqdn, 17, 500, core::Bytes(n.begin(), n.end())}; }
v1::MainModeConfig config(std::vector<const char*> props, const char* psk, const char* me, const char* peer) {
  v1::MainModeConfig c;
  for (auto* p : props) c.proposals.push_back(prop(p));
  const std::string k = psk;
  c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(k.data()), k.size()));
  c.local_id = fqdn(me);
  if (peer) c.remote_id = fqdn(peer);
  return c;
}
// Hands messages across until neither side has one to send; returns how many went.
int run(v1::MainMode& i, v1::MainMode& r) {
  int n = 0;
  for (int round = 0; round < 10; ++round) {
    bool moved = false;
    if (auto m = i.build()) {
      ++n;
      moved = true;
      r.process(*m);
    }
    if (auto m = r.build()) {
      ++n;
      moved = true;
      i.process(*m);
    }
    if (!moved) break;
  }
  return n;
}
}  // namespace

TEST_CASE("IKEv1 Main Mode (PSK): six messages, the same keys on both ends", "[ike][ikev1][mainmode]") {
  for (const char* suite : {"aes128-sha1-modp2048", "aes256-sha256-ecp256", "3des-md5-modp1024", "aes192-sha512-x25519"}) {
    INFO(suite);
    v1::MainMode i(true, config({suite}, "a long secret", "gw-a.example", "gw-b.example"));
    v1::MainMode r(false, config({"aes128-sha256-modp2048", suite}, "a long secret", "gw-b.example", "gw-a.example"));
    CHECK(run(i, r) == 6);
    INFO(i.error() << " / " << r.error());
    REQUIRE(i.done());
    REQUIRE(r.done());
    auto a = i.take_sa(), b = r.take_sa();
    CHECK(a.suite.name() == suite);
    CHECK(a.cky_i == b.cky_i);
    CHECK(a.cky_r == b.cky_r);
    CHECK(a.cky_r != 0);
    CHECK(a.keys.d.size() > 0);
    CHECK(core::ct_equal(a.keys.d.span(), b.keys.d.span()));
    CHECK(core::ct_equal(a.keys.a.span(), b.keys.a.span()));
    CHECK(core::ct_equal(a.keys.e.span(), b.keys.e.span()));
    CHECK(a.peer_id.to_string() == "gw-b.example");
    CHECK(b.peer_id.to_string() == "gw-a.example");
    // The ciphers go on into phase 2: a Quick Mode message sealed by one opens at the other.
    v1::Header h;
    h.cky_i = a.cky_i;
    h.cky_r = a.cky_r;
    h.exchange = v1::Exchange::kQuick;
    h.message_id = 77;
    const auto qm = a.cipher->seal(h, {{v1::Payload::kHash, core::Bytes(20, 1)}});
    std::string why;
    auto plain = b.cipher->open(qm, why);
    REQUIRE(plain);
    CHECK(core::Bytes(plain->begin() + 4, plain->begin() + 24) == core::Bytes(20, 1));
  }
}

TEST_CASE("IKEv1 Main Mode (PSK): the ways it fails, and what the peer is told", "[ike][ikev1][mainmode]") {
  SECTION("a different pre-shared key: the responder cannot read message 5, and says why") {
    v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "one secret", "gw-a.example", nullptr));
    v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "another secret", "gw-b.example", nullptr));
    run(i, r);
    CHECK_FALSE(i.done());
    CHECK_FALSE(r.done());
    // Not authenticated, so not the end of the exchange (a forged message 5
    // must not end a real one): rejected, with the reason and the notify.
    CHECK_FALSE(r.failed());
    CHECK(r.auth_suspect());
    CHECK((r.notify() == v1::Notify::kAuthenticationFailed || r.notify() == v1::Notify::kInvalidHashInformation));
    CHECK(r.error().find("pre-shared key") != std::string::npos);
  }
  SECTION("a forged message 5 does not end the exchange: the real one still completes it") {
    v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "k-k-k-k", "gw-a.example", nullptr));
    v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k-k-k-k", "gw-b.example", nullptr));
    for (int n = 0; n < 2; ++n) {
      auto m = i.build();
      REQUIRE(m);
      REQUIRE(r.process(*m));
      m = r.build();
      REQUIRE(m);
      REQUIRE(i.process(*m));
    }
    auto m5 = i.build();
    REQUIRE(m5);
    auto forged = *m5;
    forged[forged.size() - 20] ^= 0x40;  // somebody with the cookies, not the keys
    CHECK_FALSE(r.process(forged));
    CHECK_FALSE(r.failed());
    REQUIRE(r.process(*m5));
    auto m6 = r.build();
    REQUIRE(m6);
    REQUIRE(i.process(*m6));
    CHECK(i.done());
    CHECK(r.done());
  }
  SECTION("no suite in common: NO-PROPOSAL-CHOSEN on message 1") {
    v1::MainMode i(true, config({"3des-md5-modp1024"}, "k", "gw-a.example", nullptr));
    v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k", "gw-b.example", nullptr));
    CHECK(run(i, r) == 1);
    CHECK(r.failed());
    CHECK(r.notify() == v1::Notify::kNoProposalChosen);
  }
  SECTION("the peer is someone else: INVALID-ID-INFORMATION") {
    v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "k", "mallory.example", nullptr));
    v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k", "gw-b.example", "gw-a.example"));
    run(i, r);
    CHECK(r.failed());
    CHECK(r.notify() == v1::Notify::kInvalidIdInformation);
  }
  SECTION("the responder picks the first offered suite it allows") {
    v1::MainMode i(true, config({"aes256-sha384-modp3072", "aes128-sha1-modp2048"}, "k", "a", nullptr));
    v1::MainMode r(false, config({"aes128-sha1-modp2048", "aes256-sha384-modp3072"}, "k", "b", nullptr));
    CHECK(run(i, r) == 6);
    REQUIRE(i.done());
    CHECK(i.take_sa().suite.name() == "aes256-sha384-modp3072");
  }
  SECTION("garbage and truncated messages fail cleanly") {
    v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "k", "a", nullptr));
    auto m1 = *i.build();
    for (std::size_t n = 0; n < m1.size(); n += 7) {
      v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k", "b", nullptr));
      CHECK_FALSE(r.process(core::ByteSpan(m1.data(), n)));
      CHECK(r.failed());
      CHECK_FALSE(r.build());
    }
  }
}

TEST_CASE("IKEv1 Informational: protected DELETE, INITIAL-CONTACT and DPD under the ISAKMP SA", "[ike][ikev1][informational]") {
  v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "k", "a", nullptr));
  v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k", "b", nullptr));
  REQUIRE(run(i, r) == 6);
  auto a = i.take_sa(), b = r.take_sa();
  // A -> B  HDR*, HASH(1), D(ESP: two SPIs), N(INITIAL-CONTACT)
  const auto msg = v1::seal_informational(a, 0x1001, {v1::delete_esp({0x01020304, 0xa0b0c0d0}),
                                                      v1::initial_contact(a.cky_i, a.cky_r)});
  v1::DecodeError err;
  auto m = v1::open_informational(b, msg, err);
  INFO(err.detail);
  REQUIRE(m);
  REQUIRE(m->deletes.size() == 1);
  CHECK(m->deletes[0].protocol == 3);
  CHECK(m->deletes[0].spis == std::vector<core::Bytes>{{1, 2, 3, 4}, {0xa0, 0xb0, 0xc0, 0xd0}});
  REQUIRE(m->notifies.size() == 1);
  CHECK(m->notifies[0].type == static_cast<std::uint16_t>(v1::Notify::kInitialContact));
  // B -> A  R-U-THERE with sequence 42, A answers R-U-THERE-ACK 42 (RFC 3706).
  const auto ping = v1::seal_informational(b, 0x2002, {v1::dpd_notify(false, b.cky_i, b.cky_r, 42)});
  auto p = v1::open_informational(a, ping, err);
  REQUIRE(p);
  REQUIRE(p->notifies.size() == 1);
  CHECK(p->notifies[0].type == static_cast<std::uint16_t>(v1::Notify::kRUThere));
  CHECK(v1::dpd_sequence(p->notifies[0], a.cky_i, a.cky_r) == 42u);
  CHECK_FALSE(v1::dpd_sequence(p->notifies[0], a.cky_i, a.cky_r + 1));  // another SA's cookies
  const auto ack = v1::seal_informational(a, 0x3003, {v1::dpd_notify(true, a.cky_i, a.cky_r, 42)});
  auto q = v1::open_informational(b, ack, err);
  REQUIRE(q);
  CHECK(q->notifies[0].type == static_cast<std::uint16_t>(v1::Notify::kRUThereAck));
  // DELETE of the ISAKMP SA itself names its cookies.
  const auto bye = v1::seal_informational(a, 0x4004, {v1::delete_isakmp(a.cky_i, a.cky_r)});
  auto d = v1::open_informational(b, bye, err);
  REQUIRE(d);
  CHECK(d->deletes.at(0).protocol == 1);
  CHECK(d->deletes.at(0).spis.at(0).size() == 16);
  // A HASH(1) made with another SKEYID_a is refused before anything in the message is used.
  const auto keep = a.keys.a.clone();
  a.keys.a = core::SecureBytes(core::Bytes(keep.size(), 0x01));
  const auto forged = v1::seal_informational(a, 0x5005, {v1::delete_isakmp(a.cky_i, a.cky_r)});
  CHECK_FALSE(v1::open_informational(b, forged, err));
  CHECK(err.notify == v1::Notify::kInvalidHashInformation);
  CHECK(err.detail == "HASH(1) does not verify");
  // An unprotected one is refused too.
  v1::Header h;
  h.cky_i = a.cky_i;
  h.cky_r = a.cky_r;
  h.exchange = v1::Exchange::kInformational;
  h.message_id = 6;
  CHECK_FALSE(v1::open_informational(b, v1::encode_plain(h, {v1::delete_isakmp(a.cky_i, a.cky_r)}), err));
}

TEST_CASE("IKEv1 Main Mode: NAT detection (RFC 3947 NAT-D in messages 3 and 4)", "[ike][ikev1][mainmode][nat]") {
  auto ep = [](v1::MainModeConfig c, const char* local, std::uint16_t lport, const char* remote, std::uint16_t rport) {
    c.local_addr = *core::IpAddress::parse(local);
    c.local_port = lport;
    c.remote_addr = *core::IpAddress::parse(remote);
    c.remote_port = rport;
    return c;
  };
  SECTION("no NAT: both ends see the same addresses") {
    v1::MainMode i(true, ep(config({"aes128-sha256-modp2048"}, "k", "a", nullptr), "198.51.100.1", 500, "198.51.100.2", 500));
    v1::MainMode r(false, ep(config({"aes128-sha256-modp2048"}, "k", "b", nullptr), "198.51.100.2", 500, "198.51.100.1", 500));
    REQUIRE(run(i, r) == 6);
    auto a = i.take_sa(), b = r.take_sa();
    CHECK(a.natt);
    CHECK(b.natt);
    CHECK_FALSE(a.nat_local);
    CHECK_FALSE(a.nat_remote);
    CHECK_FALSE(b.nat_local);
    CHECK_FALSE(b.nat_remote);
  }
  SECTION("the initiator behind a NAT: it finds itself behind one, the responder finds the peer behind one") {
    // The initiator sends from 192.168.1.10:500; the NAT maps it to 198.51.100.254:31000.
    v1::MainMode i(true, ep(config({"aes128-sha256-modp2048"}, "k", "a", nullptr), "192.168.1.10", 500, "198.51.100.2", 500));
    v1::MainMode r(false, ep(config({"aes128-sha256-modp2048"}, "k", "b", nullptr), "198.51.100.2", 500, "198.51.100.254", 31000));
    REQUIRE(run(i, r) == 6);
    auto a = i.take_sa(), b = r.take_sa();
    CHECK(a.nat_local);
    CHECK_FALSE(a.nat_remote);
    CHECK_FALSE(b.nat_local);
    CHECK(b.nat_remote);
  }
  SECTION("without addresses no NAT-D is sent or judged") {
    v1::MainMode i(true, config({"aes128-sha256-modp2048"}, "k", "a", nullptr));
    v1::MainMode r(false, config({"aes128-sha256-modp2048"}, "k", "b", nullptr));
    REQUIRE(run(i, r) == 6);
    CHECK_FALSE(i.take_sa().natt);
  }
}
