// Two engines in one process, a fake clock and a lossy "network" between
// them, shared by the IKEv2 and IKEv1 exchange tests.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <functional>
#include <map>
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
    core::IpsecProtocol protocol = core::IpsecProtocol::kEsp;
    core::SaMode mode = core::SaMode::kTunnel;
    core::Selectors selectors;
    core::AhTransform ah;
    std::uint32_t ah_spi_in = 0, ah_spi_out = 0;  // AH+ESP bundles
    core::Bytes ah_key_in, ah_key_out;
  };
  std::vector<Entry> installed;
  std::vector<std::string> removed;
  std::vector<std::pair<std::string, core::SaPath>> moved;  // update_path() calls
  std::vector<std::string> events;  // "+name" and "-name", in the order they happened
  bool install(core::SaParams p, std::string&) override {
    installed.push_back({p.name, p.in.spi, p.out.spi,
                         core::Bytes(p.in.keymat.span().begin(), p.in.keymat.span().end()),
                         core::Bytes(p.out.keymat.span().begin(), p.out.keymat.span().end()), p.encap, p.remote_port,
                         p.protocol, p.mode, p.selectors, p.ah, p.ah_in.spi, p.ah_out.spi,
                         core::Bytes(p.ah_in.keymat.span().begin(), p.ah_in.keymat.span().end()),
                         core::Bytes(p.ah_out.keymat.span().begin(), p.ah_out.keymat.span().end())});
    events.push_back("+" + p.name);
    return true;
  }
  bool remove(const std::string& name) override {
    removed.push_back(name);
    events.push_back("-" + name);
    return true;
  }
  // A rekeyed SA is removed like any other here (and noted).
  std::vector<std::string> removed_rekeyed;
  bool remove_rekeyed(const std::string& name) override {
    removed_rekeyed.push_back(name);
    return remove(name);
  }
  bool update_path(const std::string& name, const core::SaPath& path) override {
    moved.emplace_back(name, path);
    events.push_back(">" + name);
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

// A site-to-site IKEv2 connection between 198.51.100.1 ("site-b", the
// initiator when `a`) and 198.51.100.2, 10.1.0.0/24 === 10.2.0.0/24.
inline ike::ConnectionConfig conn(bool a, const char* psk, std::vector<const char*> ike_props = {"aes256gcm16-prfsha384-x25519"},
                           std::vector<const char*> esp_props = {"aes256gcm16"}) {
  ike::ConnectionConfig c;
  c.name = a ? "site-b" : "site-a";
  c.local_addrs = {*core::IpAddress::parse(a ? "198.51.100.1" : "198.51.100.2")};
  c.remote_addrs = {*core::IpAddress::parse(a ? "198.51.100.2" : "198.51.100.1")};
  c.local_id = a ? "gw-a.example" : "gw-b.example";
  c.remote_id = a ? "gw-b.example" : "gw-a.example";
  for (auto* s : ike_props) c.proposals.push_back(prop(s));
  std::string pskstr = psk;
  c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(pskstr.data()), pskstr.size()));
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  for (auto* s : esp_props) ch.esp_proposals.push_back(prop(s));
  ch.start_action = a ? ike::StartAction::kStart : ike::StartAction::kNone;
  c.children.push_back(std::move(ch));
  return c;
}

// The plain header of a datagram (it is never encrypted).
inline ike::Header header_of(const ike::Datagram& d) {
  std::string why;
  auto h = ike::parse_header(d.data, why);
  REQUIRE(h);
  return *h;
}

// Keys an engine derived, by initiator SPI (from its key logger).
struct KeyBook {
  std::map<std::uint64_t, std::pair<ike::IkeTransform, std::array<core::Bytes, 4>>> keys;  // ei, er, ai, ar
  std::function<void(const ike::IkeKeyLog&)> logger() {
    return [this](const ike::IkeKeyLog& k) {
      keys[k.spi_i] = {k.transform, {core::Bytes(k.sk_ei.begin(), k.sk_ei.end()), core::Bytes(k.sk_er.begin(), k.sk_er.end()),
                                     core::Bytes(k.sk_ai.begin(), k.sk_ai.end()), core::Bytes(k.sk_ar.begin(), k.sk_ar.end())}};
    };
  }
  // The initiator's direction of an IKE SA (SK_ei, SK_ai).
  std::unique_ptr<ike::SkCipher> initiator(std::uint64_t spi_i, core::CipherDir dir) {
    REQUIRE(keys.count(spi_i));
    const auto& [t, k] = keys[spi_i];
    return ike::SkCipher::create(t, k[0], k[2], dir);
  }
};

// Decrypts a request the initiator of an IKE SA sent; returns its payloads.
inline std::vector<ike::Payload> open_request(KeyBook& kb, const ike::Datagram& d) {
  const auto h = header_of(d);
  auto c = kb.initiator(h.spi_i, core::CipherDir::kDecrypt);
  REQUIRE(c);
  std::string why;
  std::vector<ike::Payload> outer;
  REQUIRE(ike::parse_chain(core::ByteSpan(d.data).subspan(ike::kHeaderLen), h.next, outer, why));
  REQUIRE(outer.back().type == ike::PayloadType::kSk);
  auto plain = c->open(d.data, d.data.size() - outer.back().body.size(), why);
  INFO(why);
  REQUIRE(plain);
  std::vector<ike::Payload> inner;
  REQUIRE(ike::parse_chain(*plain, outer.back().inner_first, inner, why));
  return inner;
}

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
