#include <catch2/catch.hpp>

#include "esp/replay.hpp"

using ipsecgw::esp::ReplayWindow;

TEST_CASE("replay window: duplicates, old, reordering", "[esp][replay]") {
  ReplayWindow w(64);
  CHECK_FALSE(w.check(0));
  CHECK(w.update(1));
  CHECK_FALSE(w.update(1));
  CHECK(w.update(5));
  CHECK(w.update(3));  // out of order but inside the window
  CHECK_FALSE(w.check(3));
  CHECK(w.update(100));
  CHECK_FALSE(w.check(36));  // 100 - 36 = 64: left of the window
  CHECK(w.check(37));
  CHECK(w.update(37));
  CHECK_FALSE(w.check(37));
}

TEST_CASE("replay window: large jumps clear old bits", "[esp][replay]") {
  ReplayWindow w(128);
  for (std::uint64_t s = 1; s <= 200; ++s) REQUIRE(w.update(s));
  CHECK(w.update(200 + 10000));
  // Nothing from the old range is mistaken for seen in the new window.
  for (std::uint64_t s = 10200 - 127; s < 10200; ++s) CHECK(w.check(s));
}

TEST_CASE("replay window sizes from 1 to 4096 and beyond", "[esp][replay]") {
  for (std::uint32_t size : {2u, 32u, 64u, 65u, 1000u, 4096u, 65536u}) {
    ReplayWindow w(size);
    REQUIRE(w.update(size + 10));
    CHECK(w.check(11));               // exactly the left edge
    CHECK_FALSE(w.check(10));         // just outside
    CHECK(w.update(11));
    CHECK_FALSE(w.update(11));
  }
}

TEST_CASE("replay window of one accepts only increasing numbers", "[esp][replay]") {
  ReplayWindow w(1);
  CHECK(w.update(5));
  CHECK_FALSE(w.check(5));
  CHECK_FALSE(w.check(4));
  CHECK(w.update(6));
}

TEST_CASE("replay disabled accepts everything", "[esp][replay]") {
  ReplayWindow w(0);
  CHECK(w.update(5));
  CHECK(w.update(5));
  CHECK(w.check(1));
}

TEST_CASE("ESN inference across the 2^32 boundary (RFC 4303 A.2)", "[esp][replay][esn]") {
  ReplayWindow w(64);
  const std::uint64_t near = 0xffffffffULL - 10;
  REQUIRE(w.update(near));
  // Low bits just past the wrap belong to the next subspace.
  CHECK(w.infer(5, true) == (1ULL << 32) + 5);
  CHECK(w.infer(0xfffffff0u, true) == 0xfffffff0ULL);
  REQUIRE(w.update((1ULL << 32) + 5));
  // After the wrap a late packet from the old subspace is still placed there.
  CHECK(w.infer(0xfffffff8u, true) == 0xfffffff8ULL);
  CHECK(w.check(0xfffffff8ULL));
  CHECK(w.infer(7, false) == 7);
}
