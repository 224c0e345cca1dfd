#include <catch2/catch.hpp>

#include "core/bytes.hpp"

using namespace ipsecgw::core;

TEST_CASE("ByteReader reads big-endian fields and fails sticky", "[core][bytes]") {
  const std::uint8_t data[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07};
  ByteReader r(data);
  std::uint16_t a = 0;
  std::uint32_t b = 0;
  REQUIRE(r.read_u16(a));
  CHECK(a == 0x0102);
  REQUIRE(r.read_u32(b));
  CHECK(b == 0x03040506);
  std::uint16_t c = 0;
  CHECK_FALSE(r.read_u16(c));  // only one byte left
  CHECK(r.failed());
  std::uint8_t d = 0;
  CHECK_FALSE(r.read_u8(d));  // stays failed even though a byte remains
  CHECK(r.remaining() == 0);
}

TEST_CASE("ByteReader truncation at every offset", "[core][bytes][truncation]") {
  const std::uint8_t full[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  for (std::size_t n = 0; n < sizeof full; ++n) {
    ByteReader r(ByteSpan(full, n));
    std::uint64_t v64 = 0;
    std::uint32_t v32 = 0;
    std::uint16_t v16 = 0;
    std::uint8_t v8 = 0;
    bool ok = r.read_u64(v64) && r.read_u32(v32) && r.read_u16(v16) && r.read_u8(v8);
    CHECK(ok == (n >= 15));
    CHECK(r.failed() == !ok);
  }
}

TEST_CASE("ByteWriter refuses to overflow", "[core][bytes]") {
  std::uint8_t buf[5] = {};
  ByteWriter w(buf);
  CHECK(w.write_u32(0xdeadbeef));
  CHECK_FALSE(w.write_u16(1));
  CHECK(w.failed());
  CHECK(buf[0] == 0xde);
  CHECK(buf[4] == 0);
}

TEST_CASE("hex round trip and bad input", "[core][bytes]") {
  auto b = from_hex("0x00:ff 10ab");
  REQUIRE(b);
  CHECK(to_hex(*b) == "00ff10ab");
  CHECK_FALSE(from_hex("abc"));
  CHECK_FALSE(from_hex("zz"));
  CHECK_FALSE(from_hex("a:b"));
}

TEST_CASE("constant-time compare", "[core][bytes]") {
  const std::uint8_t a[] = {1, 2, 3};
  const std::uint8_t b[] = {1, 2, 4};
  CHECK(ct_equal(a, a));
  CHECK_FALSE(ct_equal(a, b));
  CHECK_FALSE(ct_equal(ByteSpan(a, 2), a));
}

namespace {
// What each buffer held when SecureBytes gave it back (after the wipe,
// before it was freed: the memory is still owned then, so reading it is legal).
std::vector<Bytes>* g_released = nullptr;
void record_release(const void* p, std::size_t n) {
  if (g_released) g_released->emplace_back(static_cast<const std::uint8_t*>(p), static_cast<const std::uint8_t*>(p) + n);
}
struct ReleaseLog {
  std::vector<Bytes> released;
  ReleaseLog() {
    g_released = &released;
    WipingAllocator<std::uint8_t>::release_observer = record_release;
  }
  ~ReleaseLog() {
    WipingAllocator<std::uint8_t>::release_observer = nullptr;
    g_released = nullptr;
  }
};
}  // namespace

TEST_CASE("SecureBytes wipes on move-assignment", "[core][bytes]") {
  const std::uint8_t k[] = {9, 9, 9};
  const std::uint8_t other[] = {7, 7, 7, 7};
  ReleaseLog log;
  {
    SecureBytes s(k);
    SecureBytes t(other);
    t = std::move(s);  // t's old buffer {7,7,7,7} is given back here
    REQUIRE(log.released.size() == 1);
    CHECK(log.released[0] == Bytes(4, 0));  // wiped before it was freed
    CHECK(s.empty());                       // the moved-from one holds nothing
    CHECK(ct_equal(t.span(), k));
  }
  // At scope end t's buffer ({9,9,9}) goes back wiped too; s had none.
  REQUIRE(log.released.size() == 2);
  CHECK(log.released[1] == Bytes(3, 0));
}
