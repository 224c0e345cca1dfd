// IKEv1 Quick Mode: two QuickMode objects on a Main Mode's ISAKMP SA, each
// message handed across; the ESP SA pair they agree on, and how they fail.
// (tshark reads the same objects' messages: test/ike/ikev1_tshark_test.sh.)
#include <catch2/catch.hpp>

#include "ike/ikev1_quick_mode.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;

namespace {
core::Proposal prop(const char* s) {
  std::string bad;
  auto p = core::parse_proposal(s, bad);
  REQUIRE(p);
  return *p;
}
std::pair<v1::Phase1Sa, v1::Phase1Sa> main_mode() {
  auto cfg = [](const char* me) {
    v1::MainModeConfig c;
    c.proposals = {prop("aes128-sha256-modp2048")};
    c.psk = core::SecureBytes(core::Bytes(16, 0x5a));
    const std::string id = me;
    c.local_id = {v1::IdType::kFqdn, 17, 500, core::Bytes(id.begin(), id.end())};
    return c;
  };
  v1::MainMode i(true, cfg("a")), r(false, cfg("b"));
  for (int n = 0; n < 3; ++n) {
    auto m = i.build();
    REQUIRE(m);
    REQUIRE(r.process(*m));
    m = r.build();
    REQUIRE(m);
    REQUIRE(i.process(*m));
  }
  REQUIRE(i.done());
  REQUIRE(r.done());
  return {i.take_sa(), r.take_sa()};
}
v1::QuickModeConfig qcfg(std::vector<const char*> esp, const char* local, const char* remote) {
  v1::QuickModeConfig c;
  for (auto* e : esp) c.esp_proposals.push_back(prop(e));
  c.local_ts = *core::IpRange::parse(local);
  c.remote_ts = *core::IpRange::parse(remote);
  return c;
}
// (1) I -> R, (2) R -> I, (3) I -> R; `tamper` may change a message in flight.
void run(v1::QuickMode& i, v1::QuickMode& r, const std::function<void(int, Bytes&)>& tamper = {}) {
  for (int n = 1; n <= 3; ++n) {
    auto& from = n == 2 ? r : i;
    auto& to = n == 2 ? i : r;
    auto m = from.build();
    if (!m) return;
    if (tamper) tamper(n, *m);
    if (!to.process(*m)) return;
  }
}
}  // namespace

TEST_CASE("IKEv1 Quick Mode: one ESP SA pair, keys crosswise, with and without PFS", "[ike][ikev1][quickmode]") {
  for (const char* esp : {"aes128-sha256-modp2048", "aes256gcm16", "3des-sha1-ecp256", "aes128gcm16-x25519"}) {
    INFO(esp);
    auto [a, b] = main_mode();
    v1::QuickMode i(true, a, qcfg({esp}, "10.1.0.0/24", "10.2.0.0/24"), 0x1234, 0xaaaa0001);
    v1::QuickMode r(false, b, qcfg({"aes128-sha1", esp}, "10.2.0.0/16", "10.1.0.0/16"), 0, 0xbbbb0002);
    run(i, r);
    INFO(i.error() << " / " << r.error());
    REQUIRE(i.done());
    REQUIRE(r.done());
    const auto& x = i.result();
    const auto& y = r.result();
    CHECK(r.message_id() == 0x1234);
    CHECK(x.suite.name() == esp);
    CHECK(x.spi_out == 0xbbbb0002);
    CHECK(y.spi_out == 0xaaaa0001);
    CHECK(x.keymat_out.size() == x.suite.esp.keymat_len());
    CHECK(core::ct_equal(x.keymat_out.span(), y.keymat_in.span()));
    CHECK(core::ct_equal(x.keymat_in.span(), y.keymat_out.span()));
    CHECK_FALSE(core::ct_equal(x.keymat_in.span(), x.keymat_out.span()));
    CHECK(x.pfs == (std::string(esp).find("modp") != std::string::npos || std::string(esp).find("ecp") != std::string::npos ||
                    std::string(esp).find("x25519") != std::string::npos));
    CHECK(x.pfs == y.pfs);
    // The responder takes the initiator's narrower networks as the selectors.
    CHECK(y.local_ts.to_string() == "10.2.0.0/24");
    CHECK(y.remote_ts.to_string() == "10.1.0.0/24");
  }
}

TEST_CASE("IKEv1 Quick Mode: the ways it fails, and what the peer is told", "[ike][ikev1][quickmode]") {
  SECTION("a changed bit in message 1 is rejected, not fatal: the real message 1 still goes through") {
    auto [a, b] = main_mode();
    v1::QuickMode i(true, a, qcfg({"aes128-sha256"}, "10.1.0.0/24", "10.2.0.0/24"), 7, 1000);
    v1::QuickMode r(false, b, qcfg({"aes128-sha256"}, "10.2.0.0/24", "10.1.0.0/24"), 0, 2000);
    auto m1 = i.build();
    REQUIRE(m1);
    auto forged = *m1;
    forged[forged.size() - 20] ^= 0x01;
    CHECK_FALSE(r.process(forged));
    CHECK_FALSE(r.failed());  // not the peer's: the exchange (and its IV chain) is as it was
    CHECK_FALSE(r.error().empty());
    REQUIRE(r.process(*m1));
    auto m2 = r.build();
    REQUIRE(m2);
    REQUIRE(i.process(*m2));
    auto m3 = i.build();
    REQUIRE(m3);
    REQUIRE(r.process(*m3));
    CHECK(i.done());
    CHECK(r.done());
  }
  SECTION("a well-formed message 1 whose HASH(1) was made with another SKEYID_a is rejected") {
    auto [a, b] = main_mode();
    a.keys.a = core::SecureBytes(core::Bytes(a.keys.a.size(), 0x01));  // encryption intact, HASH key not
    v1::QuickMode i(true, a, qcfg({"aes128-sha256"}, "10.1.0.0/24", "10.2.0.0/24"), 7, 1000);
    v1::QuickMode r(false, b, qcfg({"aes128-sha256"}, "10.2.0.0/24", "10.1.0.0/24"), 0, 2000);
    run(i, r);
    CHECK_FALSE(r.failed());
    CHECK_FALSE(r.done());
    CHECK(r.error() == "HASH(1) does not verify");
  }
  SECTION("networks outside the responder's: INVALID-ID-INFORMATION") {
    auto [a, b] = main_mode();
    v1::QuickMode i(true, a, qcfg({"aes128-sha256"}, "10.9.0.0/24", "10.2.0.0/24"), 7, 1000);
    v1::QuickMode r(false, b, qcfg({"aes128-sha256"}, "10.2.0.0/24", "10.1.0.0/24"), 0, 2000);
    run(i, r);
    CHECK(r.failed());
    CHECK(r.notify() == v1::Notify::kInvalidIdInformation);
  }
  SECTION("no ESP transform in common: NO-PROPOSAL-CHOSEN") {
    auto [a, b] = main_mode();
    v1::QuickMode i(true, a, qcfg({"3des-md5"}, "10.1.0.0/24", "10.2.0.0/24"), 7, 1000);
    v1::QuickMode r(false, b, qcfg({"aes128gcm16"}, "10.2.0.0/24", "10.1.0.0/24"), 0, 2000);
    run(i, r);
    CHECK(r.failed());
    CHECK(r.notify() == v1::Notify::kNoProposalChosen);
  }
  SECTION("PFS demanded by the initiator but not configured at the responder: NO-PROPOSAL-CHOSEN") {
    auto [a, b] = main_mode();
    v1::QuickMode i(true, a, qcfg({"aes128-sha256-modp2048"}, "10.1.0.0/24", "10.2.0.0/24"), 7, 1000);
    v1::QuickMode r(false, b, qcfg({"aes128-sha256"}, "10.2.0.0/24", "10.1.0.0/24"), 0, 2000);
    run(i, r);
    CHECK(r.failed());
    CHECK(r.notify() == v1::Notify::kNoProposalChosen);
  }
}
