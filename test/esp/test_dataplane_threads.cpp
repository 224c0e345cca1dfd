// The data plane under concurrent use, as the gateway's threads use it:
// several workers encrypting with one outbound SA (each with its own crypto
// lane), the owner of an inbound SA decrypting, and the control thread
// installing and removing other SAs, publishing snapshots, and reading
// counters and the replay window's top meanwhile. Meant for the
// ThreadSanitizer build as much as for the answers it checks.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "../vectors.hpp"
#include "esp/dataplane.hpp"
#include "esp_test_util.hpp"

using namespace ipsecgw;
using core::Drop;
using test::hex;

namespace {
const char* kIcmp = "4500001c00010000400164c50a0100020a0200020800f7ff00000000";  // 10.1.0.2 -> 10.2.0.2

core::SaParams lan(bool a, const std::string& esp) {
  auto p = test::make_sa(esp, 4096);
  p.name = "lan";
  p.selectors.local = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  p.selectors.remote = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  p.out.spi = a ? 0x1001 : 0x2001;
  p.in.spi = a ? 0x2001 : 0x1001;
  return p;
}

// The control thread's churn: other SAs (other selectors and SPIs) come and
// go, every change published, while statistics are read. (No Catch2
// assertion off the main thread: failures are counted and checked after.)
void churn(esp::DataPlane& dp, std::atomic<bool>& stop, std::uint64_t& reads, std::size_t& failed,
           const std::string& esp) {
  std::uint32_t i = 0;
  while (!stop.load()) {
    auto p = test::make_sa(esp);
    p.name = "other" + std::to_string(i % 50);
    p.selectors.local = {*core::IpRange::parse("10.1.0.0/24")};
    p.selectors.remote = {core::IpRange::from_prefix(
        *core::IpAddress::parse("10.50." + std::to_string(i % 50) + ".0"), 24)};
    p.out.spi = 0x10000 + i % 50;
    p.in.spi = 0x20000 + i % 50;
    std::string why;
    if (i % 3 == 2) dp.remove(p.name);
    else if (!dp.install(std::move(p), why)) ++failed;
    dp.for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa& in) {
      reads += out.next_seq() + in.replay().top() + in.counters().in.packets.load();
    });
    (void)dp.retired();
    ++i;
  }
}
}  // namespace

TEST_CASE("data plane: workers encrypt and decrypt while the control thread changes the SAD",
          "[esp][dataplane][concurrency]") {
  for (const std::string esp : {"aes128gcm16", "aes128-sha256", "chacha20poly1305"}) {
    INFO(esp);
    constexpr unsigned kWorkers = 3;
    constexpr std::size_t kPerWorker = 600;
    esp::DataPlane a({}, kWorkers), b({}, kWorkers);
    std::string why;
    REQUIRE(a.install(lan(true, esp), why));
    REQUIRE(b.install(lan(false, esp), why));
    std::atomic<bool> stop{false};
    std::uint64_t reads_a = 0, reads_b = 0;
    std::size_t failed_a = 0, failed_b = 0;
    std::thread control_a([&] { churn(a, stop, reads_a, failed_a, esp); });

    // Workers on A: one lane each, all on SA "lan".
    std::vector<std::vector<core::Bytes>> sent(kWorkers);
    std::vector<std::thread> workers;
    const core::Bytes icmp = hex(kIcmp);
    for (unsigned w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&, w] {
        core::Packet p;
        for (std::size_t n = 0; n < kPerWorker; ++n) {
          p.assign(icmp);
          const esp::Snapshot& snap = a.enter(w);  // as a worker takes it, per batch
          const auto d = a.process_outbound(snap, p, w);
          if (d.action == esp::OutAction::kSend) sent[w].emplace_back(p.span().begin(), p.span().end());
        }
        a.leave(w);
      });
    }
    for (auto& t : workers) t.join();
    // Every packet got its own sequence number across the lanes.
    std::vector<core::Bytes> all;
    std::set<std::uint32_t> seqs;
    for (auto& v : sent)
      for (auto& pkt : v) {
        REQUIRE(pkt.size() > 8);
        seqs.insert(core::load_be32(pkt.data() + 4));
        all.push_back(std::move(pkt));
      }
    CHECK(all.size() == kWorkers * kPerWorker);
    CHECK(seqs.size() == all.size());

    // B's owner decrypts them (in sequence order, so the window takes all)
    // while B's control thread changes its SAD and reads the window's top.
    std::sort(all.begin(), all.end(), [](const core::Bytes& x, const core::Bytes& y) {
      return core::load_be32(x.data() + 4) < core::load_be32(y.data() + 4);
    });
    std::thread control_b([&] { churn(b, stop, reads_b, failed_b, esp); });
    std::size_t ok = 0;
    std::thread owner([&] {
      core::Packet p;
      for (const auto& pkt : all) {
        p.assign(pkt);
        const esp::Snapshot& snap = b.enter(0);
        if (b.process_inbound(snap, p) == Drop::kNone && p.span().size() == icmp.size()) ++ok;
      }
      b.leave(0);
    });
    owner.join();
    stop = true;
    control_a.join();
    control_b.join();
    CHECK(failed_a == 0);
    CHECK(failed_b == 0);
    CHECK(ok == all.size());
    std::uint64_t top = 0;
    b.for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa& in) {
      if (out.params().name == "lan") top = in.replay().top();
    });
    CHECK(top == all.size());
  }
}

TEST_CASE("data plane: two workers given the same inbound SA's packets never decrypt alongside",
          "[esp][dataplane][concurrency]") {
  esp::DataPlane a, b({}, 2);
  std::string why;
  REQUIRE(a.install(lan(true, "aes128gcm16"), why));
  REQUIRE(b.install(lan(false, "aes128gcm16"), why));
  const core::Bytes icmp = hex(kIcmp);
  std::vector<core::Bytes> pkts;
  core::Packet p;
  for (int i = 0; i < 3000; ++i) {
    p.assign(icmp);
    auto snap = a.snapshot();
    REQUIRE(a.process_outbound(*snap, p).action == esp::OutAction::kSend);
    pkts.emplace_back(p.span().begin(), p.span().end());
  }
  // Both workers get every packet (an attacker's copies on the other path):
  // each is accepted once; the other copy is a replay or found the SA busy.
  std::atomic<std::size_t> accepted{0}, replay{0}, contended{0}, other{0};
  auto worker = [&](unsigned r) {
    core::Packet q;
    for (const auto& pkt : pkts) {
      q.assign(pkt);
      const esp::Snapshot& snap = b.enter(r);
      switch (b.process_inbound(snap, q)) {
        case Drop::kNone: ++accepted; break;
        case Drop::kReplay: ++replay; break;
        case Drop::kContended: ++contended; break;
        default: ++other; break;
      }
    }
    b.leave(r);
  };
  std::thread t1(worker, 0u), t2(worker, 1u);
  t1.join();
  t2.join();
  CHECK(other == 0);
  CHECK(accepted + replay + contended == 2 * pkts.size());
  CHECK(accepted <= pkts.size());
  // A packet neither copy of which got in lost both to contention.
  CHECK(2 * (pkts.size() - accepted) <= contended);
}
