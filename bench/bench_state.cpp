// Scale of the data plane's state: for 10, 1,000 and 100,000 installed SA
// pairs (each protecting its own remote /32 host, as road warriors' virtual
// addresses do, behind a few /24 and /16 networks of configured policies):
//   - memory per installed SA pair (heap growth, mallinfo2) with AES-GCM;
//   - the SPD lookup of one outbound packet through the snapshot's policy
//     index, next to a first-match walk of the same policies in order (what
//     the SPD was before issue 13), in ns;
//   - the SAD lookup by SPI, in ns;
//   - installing one more SA and publishing the snapshot, in us.
// The lookup must not grow linearly with the number of policies, nor the
// install with the number of SAs.
//
//   build/bench/bench_state [max]   (max SA pairs, default 100000)
#include <malloc.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "core/policy_index.hpp"
#include "esp/dataplane.hpp"

using namespace ipsecgw;
using Clock = std::chrono::steady_clock;

namespace {

core::IpAddress host(std::uint32_t v) {
  const std::uint8_t b[4] = {static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                             static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
  return core::IpAddress::v4(core::ByteSpan(b, 4));
}

// SA i protects 10.1.0.0/16 <-> 100.64.0.0/10 host i (a virtual address).
core::SaParams sa(std::uint32_t i) {
  std::string why;
  auto t = core::single_esp_transform("aes128gcm16", why);
  core::SaParams p;
  p.name = "rw" + std::to_string(i);
  p.transform = *t;
  p.local_addr = *core::IpAddress::parse("198.51.100.1");
  p.remote_addr = host(0xc0000000u + i);  // the peer's own address
  p.selectors.local = {*core::IpRange::parse("10.1.0.0/16")};
  p.selectors.remote = {core::IpRange{host(0x64400000u + i), host(0x64400000u + i)}};
  p.replay_window = 64;
  core::Bytes k(t->keymat_len(), static_cast<std::uint8_t>(i));
  p.out.spi = 0x10000000u + i;
  p.in.spi = 0x20000000u + i;
  p.out.keymat = core::SecureBytes(k);
  p.in.keymat = core::SecureBytes(k);
  return p;
}

// Configured policies ahead of the SAs': bypass for a few networks.
std::vector<core::StaticPolicy> configured() {
  std::vector<core::StaticPolicy> v;
  for (const char* net : {"10.9.0.0/16", "172.16.0.0/24", "192.168.1.0/24"}) {
    core::StaticPolicy sp;
    sp.policy.name = net;
    sp.policy.sel.local = {*core::IpRange::parse("10.1.0.0/16")};
    sp.policy.sel.remote = {*core::IpRange::parse(net)};
    sp.policy.action = core::PolicyAction::kBypass;
    v.push_back(sp);
  }
  return v;
}

std::size_t heap_bytes() {
  const auto m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

core::PacketInfo packet_to(std::uint32_t dst) {
  core::PacketInfo p;
  p.src = *core::IpAddress::parse("10.1.0.2");
  p.dst = host(dst);
  p.family = core::Family::V4;
  p.proto = 17;
  p.has_ports = true;
  p.src_port = 1000;
  p.dst_port = 53;
  return p;
}

template <class F>
double ns_per(std::size_t n, F&& f) {
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) f(i);
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
  const std::uint32_t max = argc > 1 ? static_cast<std::uint32_t>(std::atol(argv[1])) : 100000;
  core::log::Level quiet;
  if (core::log::parse_level("error", quiet)) core::log::set_level(quiet);  // no line per install
  std::printf("Data-plane state by installed SA pairs (AES-128-GCM, one /32 remote selector each)\n");
  std::printf("%9s %12s %14s %14s %10s %12s\n", "SAs", "bytes/SA", "SPD index ns", "SPD walk ns", "SAD ns",
              "install us");
  std::mt19937 rng(13);
  volatile std::uintptr_t sink = 0;
  for (std::uint32_t n : {10u, 1000u, 100000u}) {
    if (n > max) break;
    const std::size_t before = heap_bytes();
    auto dp = std::make_unique<esp::DataPlane>(configured(), 2);
    std::string why;
    dp->begin_batch();  // set up in bulk; the install cost is measured below
    for (std::uint32_t i = 0; i < n; ++i)
      if (!dp->install(sa(i), why)) {
        std::fprintf(stderr, "install: %s\n", why.c_str());
        return 1;
      }
    dp->end_batch();
    const std::size_t per_sa = (heap_bytes() - before) / n;

    auto snap = dp->snapshot();
    std::vector<core::PacketInfo> pkts;
    for (int i = 0; i < 4096; ++i) pkts.push_back(packet_to(0x64400000u + static_cast<std::uint32_t>(rng() % n)));
    const std::size_t iters = 2000000;
    const double idx_ns = ns_per(iters, [&](std::size_t i) {
      sink = sink + reinterpret_cast<std::uintptr_t>(snap->lookup(pkts[i & 4095]));
    });
    // The same policies walked in order, first match (the SPD before).
    std::vector<core::Policy> walk;
    for (const auto& sp : configured()) walk.push_back(sp.policy);
    for (std::uint32_t i = 0; i < n; ++i) {
      core::Policy p;
      p.sel = sa(i).selectors;
      p.action = core::PolicyAction::kProtect;
      walk.push_back(std::move(p));
    }
    const std::size_t walk_iters = n >= 100000 ? 2000 : n >= 1000 ? 100000 : 1000000;
    const double walk_ns = ns_per(walk_iters, [&](std::size_t i) {
      const auto& pk = pkts[i & 4095];
      for (const auto& p : walk)
        if (p.sel.matches_outbound(pk)) {
          sink = sink + reinterpret_cast<std::uintptr_t>(&p);
          break;
        }
    });
    const double sad_ns = ns_per(iters, [&](std::size_t i) {
      sink = sink + reinterpret_cast<std::uintptr_t>(snap->find_inbound(0x20000000u + static_cast<std::uint32_t>(i % n)));
    });
    snap.reset();
    // One more SA at a time, each published on its own (as the IKE engine's
    // installs are, outside a batch), then removed again.
    const int installs = 200;
    const auto t0 = Clock::now();
    for (int i = 0; i < installs; ++i) {
      if (!dp->install(sa(n + static_cast<std::uint32_t>(i)), why)) return 1;
    }
    const double install_us =
        std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / installs;
    std::printf("%9u %12zu %14.1f %14.1f %10.1f %12.1f\n", n, per_sa, idx_ns, walk_ns, sad_ns, install_us);
  }
  return sink == 1 ? 1 : 0;
}
