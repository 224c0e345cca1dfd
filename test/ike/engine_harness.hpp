// Two engines in one process, a fake clock and a lossy "network" between
// them, shared by the IKEv2 and IKEv1 exchange tests.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/algorithms.hpp"
#include "ike/engine.hpp"

namespace ipsecgw::test {

using namespace std::chrono_literals;

struct FakeInstaller : core::SaInstaller {
  struct Entry {
    std::string name;
    std::uint32_t spi_in, spi_out;
    core::Bytes key_in, key_out;
    core::Encap encap;
    std::uint16_t remote_port;
  };
  std::vector<Entry> installed;
  std::vector<std::string> removed;
  std::vector<std::string> events;  // "+name" and "-name", in the order they happened
  bool install(core::SaParams p, std::string&) override {
    installed.push_back({p.name, p.in.spi, p.out.spi,
                         core::Bytes(p.in.keymat.span().begin(), p.in.keymat.span().end()),
                         core::Bytes(p.out.keymat.span().begin(), p.out.keymat.span().end()), p.encap, p.remote_port});
    events.push_back("+" + p.name);
    return true;
  }
  bool remove(const std::string& name) override {
    removed.push_back(name);
    events.push_back("-" + name);
    return true;
  }
  // Position of an event, or -1.
  [[nodiscard]] long at(const std::string& ev) const {
    auto it = std::find(events.begin(), events.end(), ev);
    return it == events.end() ? -1 : it - events.begin();
  }
  [[nodiscard]] std::size_t active() const { return installed.size() - removed.size(); }
};

inline core::Proposal prop(const char* s) {
  std::string bad;
  auto p = core::parse_proposal(s, bad);
  REQUIRE(p);
  return *p;
}

struct Pair {
  FakeInstaller ia, ib;
  std::unique_ptr<ike::Engine> a, b;
  ike::TimePoint now = ike::TimePoint{} + 1000s;
  std::size_t delivered = 0;
  // Return false to drop the n-th datagram (counted over the whole run).
  std::function<bool(std::size_t, const ike::Datagram&)> filter = [](std::size_t, const ike::Datagram&) { return true; };
  std::size_t seen = 0;

  Pair(ike::ConnectionConfig ca, ike::ConnectionConfig cb, ike::EngineOptions ob = {}, ike::EngineOptions oa = {}) {
    std::vector<ike::ConnectionConfig> va, vb;
    va.push_back(std::move(ca));
    vb.push_back(std::move(cb));
    a = std::make_unique<ike::Engine>(std::move(va), ia, oa);
    b = std::make_unique<ike::Engine>(std::move(vb), ib, ob);
  }
  // Moves datagrams until nothing is in flight.
  void pump() {
    for (int round = 0; round < 50; ++round) {
      auto fa = a->take_output();
      auto fb = b->take_output();
      if (fa.empty() && fb.empty()) return;
      for (auto& d : fa)
        if (filter(seen++, d)) {
          ++delivered;
          b->receive({d.remote, d.local, d.data}, now);
        }
      for (auto& d : fb)
        if (filter(seen++, d)) {
          ++delivered;
          a->receive({d.remote, d.local, d.data}, now);
        }
    }
  }
  void advance(std::chrono::milliseconds dt) {
    const auto until = now + dt;
    while (true) {
      auto na = a->next_deadline(), nb = b->next_deadline();
      auto next = std::min(na.value_or(ike::TimePoint::max()), nb.value_or(ike::TimePoint::max()));
      if (next > until) break;
      now = std::max(now, next);
      a->tick(now);
      b->tick(now);
      pump();
    }
    now = until;
  }
};

inline void check_keys_cross(const FakeInstaller& x, const FakeInstaller& y) {
  REQUIRE(!x.installed.empty());
  REQUIRE(!y.installed.empty());
  const auto& ex = x.installed.back();
  const auto& ey = y.installed.back();
  CHECK(ex.spi_in == ey.spi_out);
  CHECK(ex.spi_out == ey.spi_in);
  CHECK(ex.key_in == ey.key_out);
  CHECK(ex.key_out == ey.key_in);
  CHECK(ex.key_in != ex.key_out);
}

}  // namespace ipsecgw::test
