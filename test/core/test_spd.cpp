#include <catch2/catch.hpp>

#include "core/policy_index.hpp"

#include <random>

using namespace ipsecgw::core;

namespace {
PacketInfo udp(const char* src, std::uint16_t sport, const char* dst, std::uint16_t dport) {
  PacketInfo p;
  p.src = *IpAddress::parse(src);
  p.dst = *IpAddress::parse(dst);
  p.family = p.src.family();
  p.proto = ipproto::kUdp;
  p.has_ports = true;
  p.src_port = sport;
  p.dst_port = dport;
  return p;
}
Selectors sel(const char* l, const char* r) {
  Selectors s;
  s.local.push_back(*IpRange::parse(l));
  s.remote.push_back(*IpRange::parse(r));
  return s;
}
}  // namespace

TEST_CASE("SPD: first match wins, bypass before protect, default deny", "[core][spd]") {
  Spd spd;
  Policy dns;
  dns.sel = sel("10.1.0.0/24", "10.2.0.53/32");
  dns.sel.proto = ipproto::kUdp;
  dns.sel.remote_ports = {53, 53};
  dns.action = PolicyAction::kBypass;
  spd.add(dns);
  Policy lan;
  lan.sel = sel("10.1.0.0/24", "10.2.0.0/24");
  lan.action = PolicyAction::kProtect;
  lan.sa_index = 0;
  spd.add(lan);

  auto* p = spd.lookup_outbound(udp("10.1.0.2", 5000, "10.2.0.53", 53));
  REQUIRE(p);
  CHECK(p->action == PolicyAction::kBypass);
  p = spd.lookup_outbound(udp("10.1.0.2", 5000, "10.2.0.53", 54));
  REQUIRE(p);
  CHECK(p->action == PolicyAction::kProtect);
  CHECK(spd.lookup_outbound(udp("10.9.0.2", 5000, "10.2.0.53", 53)) == nullptr);
  CHECK(spd.lookup_outbound(udp("10.1.0.2", 5000, "10.3.0.1", 53)) == nullptr);
}

TEST_CASE("Selectors: inbound check is the mirror image", "[core][spd]") {
  auto s = sel("10.1.0.0/24", "10.2.0.0/24");
  s.proto = ipproto::kUdp;
  s.remote_ports = {53, 53};
  CHECK(s.matches_outbound(udp("10.1.0.5", 999, "10.2.0.1", 53)));
  CHECK(s.matches_inbound(udp("10.2.0.1", 53, "10.1.0.5", 999)));
  CHECK_FALSE(s.matches_inbound(udp("10.2.0.1", 54, "10.1.0.5", 999)));
  CHECK_FALSE(s.matches_inbound(udp("10.1.0.5", 999, "10.2.0.1", 53)));
  auto frag = udp("10.1.0.5", 0, "10.2.0.1", 0);
  frag.has_ports = false;  // non-first fragment: OPAQUE ports never match a port selector
  CHECK_FALSE(s.matches_outbound(frag));
}

namespace {
// The reference: the first policy of a plain list that matches.
const Policy* linear_lookup(const std::vector<std::shared_ptr<const Policy>>& list, const PacketInfo& p) {
  for (const auto& pol : list) {
    if (pol->whole_packets && p.fragment) continue;
    if (pol->sel.matches_outbound(p)) return pol.get();
  }
  return nullptr;
}
}  // namespace

TEST_CASE("policy index: the same answer as a first-match walk, for random policies and packets",
          "[core][spd][policy_index]") {
  std::mt19937 gen(4500);
  auto rng = [&gen] { return static_cast<std::uint32_t>(gen()); };
  auto addr4 = [&](std::uint32_t v) {
    const std::uint8_t b[4] = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                               static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
    return IpAddress::v4(ByteSpan(b, 4));
  };
  // Addresses in 10.0.0.0/22 so that policies overlap: prefixes of every
  // length, arbitrary ranges, several ranges per policy, protocols, ports.
  auto range = [&] {
    const std::uint32_t base = 0x0a000000u | (rng() & 0x3ffu);
    switch (rng() % 4) {
      case 0: return IpRange::from_prefix(addr4(base), 32);
      case 1: return IpRange::from_prefix(addr4(base), 22 + rng() % 10);
      case 2: return IpRange::from_prefix(addr4(base), rng() % 23);
      default: {
        const std::uint32_t hi = base + rng() % 300;
        return IpRange{addr4(base), addr4(hi)};
      }
    }
  };
  for (int round = 0; round < 20; ++round) {
    std::vector<std::shared_ptr<const Policy>> list;
    PolicyIndex<Policy> index;
    std::uint64_t epoch = 0;
    const int n = 1 + static_cast<int>(rng() % 200);
    for (int i = 0; i < n; ++i) {
      auto p = std::make_shared<Policy>();
      p->name = "p" + std::to_string(i);
      p->sel.local.push_back(rng() % 3 ? IpRange::any(Family::V4) : range());
      for (unsigned k = 0, m = 1 + rng() % 2; k < m; ++k) p->sel.remote.push_back(range());
      if (rng() % 3 == 0) p->sel.proto = ipproto::kUdp;
      if (p->sel.proto && rng() % 2) p->sel.remote_ports = {53, 60};
      p->whole_packets = rng() % 5 == 0;
      list.push_back(p);
      index.insert(p, static_cast<std::uint64_t>(i), epoch);
      if (rng() % 7 == 0) ++epoch;  // a publication in between
    }
    // Some go again, as SAs are removed.
    for (int i = 0; i < n / 4; ++i) {
      const std::size_t k = rng() % list.size();
      REQUIRE(index.erase(list[k].get(), epoch));
      list.erase(list.begin() + static_cast<std::ptrdiff_t>(k));
    }
    CHECK(index.size() == list.size());
    for (int i = 0; i < 2000; ++i) {
      PacketInfo p = udp("10.0.0.1", 1000, "10.0.0.1", static_cast<std::uint16_t>(50 + rng() % 15));
      p.src = addr4(0x0a000000u | (rng() & 0x3ffu));
      p.dst = addr4(0x0a000000u | (rng() & 0x7ffu));
      p.fragment = rng() % 4 == 0;
      if (rng() % 3 == 0) p.proto = ipproto::kTcp;
      const Policy* want = linear_lookup(list, p);
      const Policy* got = index.lookup(p);
      INFO("round " << round << " dst " << p.dst.to_string() << " want " << (want ? want->name : "none"));
      REQUIRE(got == want);
    }
  }
}

TEST_CASE("policy index: a copy taken before a change never sees it (copy on write by epoch)",
          "[core][spd][policy_index]") {
  PolicyIndex<Policy> index;
  auto a = std::make_shared<Policy>();
  a->name = "a";
  a->sel = sel("10.1.0.0/24", "10.2.0.0/24");
  index.insert(a, 10, 0);
  const PolicyIndex<Policy> published = index;  // epoch 0 is published
  auto b = std::make_shared<Policy>();
  b->name = "b";
  b->sel = sel("10.1.0.0/24", "10.2.0.0/24");
  index.insert(b, 5, 1);  // the next epoch: the shard is copied
  const auto p = udp("10.1.0.1", 1, "10.2.0.1", 2);
  CHECK(index.lookup(p) == b.get());
  CHECK(published.lookup(p) == a.get());
  REQUIRE(index.erase(a.get(), 1));
  REQUIRE(index.erase(b.get(), 1));
  CHECK(index.lookup(p) == nullptr);
  CHECK(published.lookup(p) == a.get());
  CHECK(published.size() == 1);
  // IPv6 and the whole space.
  auto any6 = std::make_shared<Policy>();
  any6->sel = sel("::/0", "::/0");
  index.insert(any6, 1, 1);
  CHECK(index.lookup(udp("fd00::1", 1, "2001:db8::1", 2)) == any6.get());
  CHECK(index.lookup(p) == nullptr);
}
