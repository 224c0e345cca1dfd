// The hand-off ring between data-plane workers: order, bounds, and one
// producer and one consumer thread at once (ThreadSanitizer runs [concurrency]).
#include <catch2/catch.hpp>

#include <thread>
#include <vector>

#include "core/spsc_ring.hpp"

using namespace ipsecgw;

namespace {
core::Packet numbered(std::uint32_t n, std::size_t len) {
  core::Packet p;
  std::vector<std::uint8_t> b(len, static_cast<std::uint8_t>(n));
  for (std::size_t i = 0; i < 4 && i < len; ++i) b[i] = static_cast<std::uint8_t>(n >> (24 - 8 * i));
  p.assign(core::ByteSpan(b.data(), b.size()));
  p.peer = *core::IpAddress::parse("192.0.2.7");
  p.peer_port = static_cast<std::uint16_t>(n);
  return p;
}
std::uint32_t number(const core::Packet& p) { return core::load_be32(p.data()); }
}  // namespace

TEST_CASE("SPSC ring: first in, first out; full and oversized refused; slots reused", "[core][spsc]") {
  core::SpscPacketRing ring(3, 100);  // rounded up to 4 slots
  core::Packet out;
  CHECK(ring.empty());
  CHECK_FALSE(ring.pop(out));
  for (std::uint32_t i = 0; i < 4; ++i) REQUIRE(ring.push(numbered(i, 60 + i)));
  CHECK_FALSE(ring.push(numbered(9, 60)));  // full
  REQUIRE(ring.pop(out));
  CHECK(number(out) == 0);
  CHECK(out.len == 60);
  CHECK(out.peer.to_string() == "192.0.2.7");
  CHECK(out.peer_port == 0);
  CHECK_FALSE(ring.push(numbered(5, 101)));  // larger than a slot
  REQUIRE(ring.push(numbered(4, 100)));       // the freed slot, at its size limit
  for (std::uint32_t i = 1; i <= 4; ++i) {
    REQUIRE(ring.pop(out));
    CHECK(number(out) == i);
    CHECK(out.len == (i == 4 ? 100u : 60u + i));
    CHECK(out.peer_port == i);
  }
  CHECK(ring.empty());
  CHECK_FALSE(ring.pop(out));
}

TEST_CASE("SPSC ring: a producer and a consumer thread, every packet once and in order", "[core][spsc][concurrency]") {
  core::SpscPacketRing ring(64, 256);
  constexpr std::uint32_t kCount = 200000;
  std::thread producer([&] {
    for (std::uint32_t i = 0; i < kCount;) {
      if (ring.push(numbered(i, 16 + i % 200))) ++i;
    }
  });
  // Checked here, in this thread (Catch2 assertions are not thread-safe).
  std::uint32_t next = 0, wrong = 0;
  core::Packet out;
  while (next < kCount) {
    if (!ring.pop(out)) continue;
    if (number(out) != next || out.len != 16 + next % 200 || out.data()[out.len - 1] != static_cast<std::uint8_t>(next))
      ++wrong;
    ++next;
  }
  producer.join();
  CHECK(wrong == 0);
  CHECK(ring.empty());
}
