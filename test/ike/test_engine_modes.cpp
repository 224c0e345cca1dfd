// IKEv2 Child SAs beyond ESP tunnels: transport mode (USE_TRANSPORT_MODE,
// RFC 7296 1.3.1), AH (ah_proposals) and selectors with protocol and ports
// (2.9), negotiated between two engines and checked in what they install.
#include <catch2/catch.hpp>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "test/ike/engine_harness.hpp"

using namespace ipsecgw;
using namespace std::chrono_literals;
using test::check_keys_cross;
using test::conn;
using test::Pair;
using test::prop;

namespace {

struct Quiet {
  Quiet() { core::log::set_level(core::log::Level::kError); }
} quiet;

// A host-to-host child: no selectors, so the addresses IKE runs on.
ike::ConnectionConfig host(bool a, core::SaMode mode) {
  auto c = conn(a, "k");
  c.children[0].local_ts.clear();
  c.children[0].remote_ts.clear();
  c.children[0].mode = mode;
  return c;
}

core::IpAddress ip(const char* s) { return *core::IpAddress::parse(s); }

const ike::ChildStatus& only_child(ike::Engine& e, ike::TimePoint now, std::vector<ike::IkeStatus>& keep) {
  keep = e.status(now);
  REQUIRE(keep.size() == 1);
  REQUIRE(keep[0].children.size() == 1);
  return keep[0].children[0];
}

}  // namespace

TEST_CASE("IKEv2 transport mode: both ends transport, between the two hosts", "[ike][engine][transport]") {
  Pair p(host(true, core::SaMode::kTransport), host(false, core::SaMode::kTransport));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  check_keys_cross(p.ia, p.ib);
  for (const auto* f : {&p.ia, &p.ib}) {
    const auto& e = f->installed.back();
    CHECK(e.mode == core::SaMode::kTransport);
    CHECK(e.protocol == core::IpsecProtocol::kEsp);
  }
  const auto& sa = p.ia.installed.back().selectors;
  REQUIRE(sa.local.size() == 1);
  REQUIRE(sa.remote.size() == 1);
  CHECK(sa.local[0].lo == ip("198.51.100.1"));
  CHECK(sa.local[0].hi == ip("198.51.100.1"));
  CHECK(sa.remote[0].lo == ip("198.51.100.2"));
  std::vector<ike::IkeStatus> keep;
  CHECK(only_child(*p.a, p.now, keep).mode == "transport");
}

TEST_CASE("IKEv2 transport mode: a tunnel child answers a transport request in tunnel mode", "[ike][engine][transport]") {
  Pair p(host(true, core::SaMode::kTransport), host(false, core::SaMode::kTunnel));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  CHECK(p.ia.installed.back().mode == core::SaMode::kTunnel);  // the initiator takes the fallback
  CHECK(p.ib.installed.back().mode == core::SaMode::kTunnel);
  check_keys_cross(p.ia, p.ib);
  std::vector<ike::IkeStatus> keep;
  CHECK(only_child(*p.b, p.now, keep).mode == "tunnel");
}

TEST_CASE("IKEv2 transport mode: a transport child refuses a peer that insists on a tunnel", "[ike][engine][transport]") {
  Pair p(host(true, core::SaMode::kTunnel), host(false, core::SaMode::kTransport));
  p.a->start(p.now);
  p.pump();
  // The IKE SA is up and usable; the Child SA is refused (NO_PROPOSAL_CHOSEN).
  CHECK(p.a->established("site-b"));
  CHECK(p.b->established("site-a"));
  CHECK(p.ia.installed.empty());
  CHECK(p.ib.installed.empty());
  SECTION("and the IKE SA still carries exchanges: DPD is answered") {
    auto st = p.a->status(p.now);
    REQUIRE(st.size() == 1);
    const auto before = p.delivered;
    p.a->shutdown(p.now);
    p.pump();
    CHECK(p.delivered == before + 2);  // the DELETE was answered
    CHECK(p.b->ike_sa_count() == 0);
  }
}

TEST_CASE("IKEv2 transport mode: selectors that are not the two hosts stay a tunnel", "[ike][engine][transport]") {
  // The initiator asks for transport mode with its 10.1.0.0/24 network: the
  // responder's transport child cannot take it (not host-to-host), and its
  // selectors do not match a tunnel either.
  auto ca = conn(true, "k");
  ca.children[0].mode = core::SaMode::kTransport;
  Pair p(std::move(ca), host(false, core::SaMode::kTransport));
  p.a->start(p.now);
  p.pump();
  CHECK(p.a->established("site-b"));
  CHECK(p.ib.installed.empty());
}

TEST_CASE("IKEv2 AH: ah_proposals negotiate an AH Child SA, rekeyed and deleted as AH", "[ike][engine][ah]") {
  for (const char* ah : {"sha256", "sha1", "sha512-esn", "aesxcbc", "sha384-x25519", "aes128gmac", "aes256gmac-esn"}) {
    INFO(ah);
    std::string why;
    auto pr = core::parse_ah_proposal(ah, why);
    REQUIRE(pr);
    auto make = [&](bool a) {
      auto c = conn(a, "k");
      c.children[0].esp_proposals.clear();
      c.children[0].ah_proposals = {*pr};
      c.children[0].rekey_time = a ? 60 : 0;
      return c;
    };
    Pair p(make(true), make(false));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    REQUIRE(p.ib.active() == 1);
    check_keys_cross(p.ia, p.ib);
    const auto& e = p.ia.installed.back();
    CHECK(e.protocol == core::IpsecProtocol::kAh);
    CHECK(e.ah.integ == pr->integ[0]);
    CHECK(e.ah.esn == (!pr->esn.empty() && pr->esn[0]));
    CHECK(e.key_in.size() == core::integ_key_len(pr->integ[0]));  // the integrity key alone
    std::vector<ike::IkeStatus> keep;
    CHECK(only_child(*p.b, p.now, keep).protocol == "ah");
    // Rekeyed (REKEY_SA names an AH SPI) and the old one deleted on both ends.
    p.advance(61s);
    REQUIRE(p.ia.installed.size() == 2);
    REQUIRE(p.ib.installed.size() == 2);
    CHECK(p.ia.active() == 1);
    CHECK(p.ib.active() == 1);
    CHECK(p.ib.installed.back().protocol == core::IpsecProtocol::kAh);
    check_keys_cross(p.ia, p.ib);
    // A Delete for AH removes it on both ends.
    p.a->shutdown(p.now);
    p.pump();
    CHECK(p.ia.active() == 0);
    CHECK(p.ib.active() == 0);
  }
}

TEST_CASE("IKEv2 AH: an AH request to an ESP child, and ESP to an AH child, get NO_PROPOSAL_CHOSEN", "[ike][engine][ah]") {
  std::string why;
  auto ah = [&](bool a) {
    auto c = conn(a, "k");
    c.children[0].esp_proposals.clear();
    c.children[0].ah_proposals = {*core::parse_ah_proposal("sha256", why)};
    return c;
  };
  for (bool ah_initiates : {true, false}) {
    INFO(ah_initiates);
    Pair p(ah_initiates ? ah(true) : conn(true, "k"), ah_initiates ? conn(false, "k") : ah(false));
    p.a->start(p.now);
    p.pump();
    CHECK(p.a->established("site-b"));  // the IKE SA stays
    CHECK(p.ia.installed.empty());
    CHECK(p.ib.installed.empty());
  }
}

TEST_CASE("IKEv2 selectors with protocol and ports: narrowed to the responder's, installed no wider", "[ike][engine][ts]") {
  auto cb = conn(false, "k");
  cb.children[0].ts_proto = 6;
  cb.children[0].local_ports = {443, 443};  // the responder's 10.2.0.0/24[tcp/443]
  Pair p(conn(true, "k"), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  REQUIRE(p.ib.active() == 1);
  for (const auto* f : {&p.ia, &p.ib}) {
    const auto& sel = f->installed.back().selectors;
    CHECK(sel.proto == 6);
  }
  // The initiator's remote side is the responder's local one.
  CHECK(p.ia.installed.back().selectors.remote_ports == core::PortRange{443, 443});
  CHECK(p.ia.installed.back().selectors.local_ports.any());
  CHECK(p.ib.installed.back().selectors.local_ports == core::PortRange{443, 443});
  SECTION("a protocol the responder does not allow: TS_UNACCEPTABLE") {
    auto ca = conn(true, "k");
    ca.children[0].ts_proto = 17;
    auto cb2 = conn(false, "k");
    cb2.children[0].ts_proto = 6;
    Pair q(std::move(ca), std::move(cb2));
    q.a->start(q.now);
    q.pump();
    CHECK(q.a->established("site-b"));
    CHECK(q.ia.installed.empty());
  }
}

TEST_CASE("IKEv2 ESP NULL-GMAC (RFC 4543): ENCR_NULL_AUTH_AES_GMAC with its key length", "[ike][engine][gmac]") {
  for (const char* esp : {"aes128gmac", "aes192gmac", "aes256gmac"}) {
    INFO(esp);
    Pair p(conn(true, "k", {"aes256gcm16-prfsha384-x25519"}, {esp}),
           conn(false, "k", {"aes256gcm16-prfsha384-x25519"}, {"aes128gcm16", esp}));
    p.a->start(p.now);
    p.pump();
    REQUIRE(p.ia.active() == 1);
    check_keys_cross(p.ia, p.ib);
    std::string bits(esp + 3, 3);
    CHECK(p.ia.installed.back().key_in.size() == std::stoul(bits) / 8 + 4);  // key and salt
    std::vector<ike::IkeStatus> keep;
    CHECK(only_child(*p.b, p.now, keep).algorithms == esp);
  }
}

TEST_CASE("IKEv2 transport mode: a tunnel fallback is rekeyed as a tunnel by the end that wanted transport", "[ike][engine][transport]") {
  auto ca = host(true, core::SaMode::kTransport);
  auto cb = host(false, core::SaMode::kTunnel);
  ca.children[0].rekey_time = 0;
  cb.children[0].rekey_time = 60;  // B (tunnel) rekeys, without USE_TRANSPORT_MODE
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ia.active() == 1);
  p.advance(61s);
  CHECK(p.ia.installed.size() == 2);  // A took B's tunnel-mode rekey of the fallback SA
  CHECK(p.ia.active() == 1);
  CHECK(p.ia.installed.back().mode == core::SaMode::kTunnel);
  check_keys_cross(p.ia, p.ib);
}

TEST_CASE("IKEv2: the responder looks past a child whose proposals do not fit (ESP listed before AH)", "[ike][engine][ah]") {
  std::string why;
  auto ca = conn(true, "k");
  ca.children[0].esp_proposals.clear();
  ca.children[0].ah_proposals = {*core::parse_ah_proposal("sha256", why)};
  auto cb = conn(false, "k");  // "lan": ESP, same selectors
  auto ah_child = cb.children[0];
  ah_child.name = "lan-ah";
  ah_child.esp_proposals.clear();
  ah_child.ah_proposals = {*core::parse_ah_proposal("sha256", why)};
  cb.children.push_back(ah_child);
  Pair p(std::move(ca), std::move(cb));
  p.a->start(p.now);
  p.pump();
  REQUIRE(p.ib.active() == 1);
  CHECK(p.ib.installed.back().protocol == core::IpsecProtocol::kAh);
  CHECK(p.ib.installed.back().name.find("site-a/lan-ah/") == 0);
}
