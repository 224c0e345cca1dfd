// Bounds-checked byte reading and writing, hex, secure buffers.
//
// ByteReader follows QUICHE's QuicheDataReader: every read reports success,
// a reader that failed once stays failed, and nothing is read past the span.
// Used by every parser of untrusted bytes (ESP, UDP encapsulation, IKE).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ipsecgw::core {

using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;
using MutByteSpan = std::span<std::uint8_t>;

inline std::uint16_t load_be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
inline std::uint32_t load_be32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
         (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}
inline std::uint64_t load_be64(const std::uint8_t* p) noexcept {
  return (std::uint64_t{load_be32(p)} << 32) | load_be32(p + 4);
}
inline void store_be16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
inline void store_be32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}
inline void store_be64(std::uint8_t* p, std::uint64_t v) noexcept {
  store_be32(p, static_cast<std::uint32_t>(v >> 32));
  store_be32(p + 4, static_cast<std::uint32_t>(v));
}

class ByteReader {
 public:
  explicit ByteReader(ByteSpan data) noexcept : data_(data) {}

  bool read_u8(std::uint8_t& out) noexcept;
  bool read_u16(std::uint16_t& out) noexcept;
  bool read_u32(std::uint32_t& out) noexcept;
  bool read_u64(std::uint64_t& out) noexcept;
  // On success `out` views the next n bytes of the underlying buffer.
  bool read_bytes(std::size_t n, ByteSpan& out) noexcept;
  bool skip(std::size_t n) noexcept;

  [[nodiscard]] bool failed() const noexcept { return failed_; }
  [[nodiscard]] std::size_t offset() const noexcept { return pos_; }
  [[nodiscard]] std::size_t remaining() const noexcept {
    return failed_ ? 0 : data_.size() - pos_;
  }
  [[nodiscard]] ByteSpan rest() const noexcept {
    return failed_ ? ByteSpan{} : data_.subspan(pos_);
  }

 private:
  bool take(std::size_t n, const std::uint8_t*& p) noexcept;
  ByteSpan data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

class ByteWriter {
 public:
  explicit ByteWriter(MutByteSpan out) noexcept : out_(out) {}
  bool write_u8(std::uint8_t v) noexcept;
  bool write_u16(std::uint16_t v) noexcept;
  bool write_u32(std::uint32_t v) noexcept;
  bool write_u64(std::uint64_t v) noexcept;
  bool write_bytes(ByteSpan v) noexcept;
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  [[nodiscard]] std::size_t written() const noexcept { return pos_; }

 private:
  std::uint8_t* take(std::size_t n) noexcept;
  MutByteSpan out_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

// The control plane's writer: appends big-endian values to a growing buffer
// (IKE encoding). The data path writes into fixed buffers with ByteWriter.
struct ByteAppender {
  Bytes& b;
  void u8(std::uint8_t v) { b.push_back(v); }
  void u16(std::uint16_t v) {
    b.push_back(static_cast<std::uint8_t>(v >> 8));
    b.push_back(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void bytes(ByteSpan s) { b.insert(b.end(), s.begin(), s.end()); }
};

// Fixed-width lower-case hex: hex32 gives 8 digits, hex64 16 (IKE SPIs);
// spi_hex gives "0x" and 8 digits, the form logs and JSON use for ESP SPIs.
std::string hex32(std::uint32_t v);
std::string hex64(std::uint64_t v);
std::string spi_hex(std::uint32_t spi);

// Accepts "0x" prefix, and ':' or whitespace between byte pairs.
std::optional<Bytes> from_hex(std::string_view hex);
std::string to_hex(ByteSpan data);

// Constant-time equality (CRYPTO_memcmp); false when sizes differ.
bool ct_equal(ByteSpan a, ByteSpan b) noexcept;

// Overwrites memory in a way the compiler cannot elide (OPENSSL_cleanse).
void secure_wipe(void* p, std::size_t n) noexcept;

// An allocator that wipes memory before giving it back, so that no copy of
// key material outlives its owner (also across a vector's reallocation).
// `release_observer`, null in the gateway, lets a test look at the memory
// after the wipe and before it is freed.
template <class T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() noexcept = default;
  template <class U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept {
    secure_wipe(p, n * sizeof(T));
    if (release_observer) release_observer(p, n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const WipingAllocator<U>&) const noexcept { return true; }
  static inline void (*release_observer)(const void*, std::size_t) = nullptr;
};

// Key material: wiped when destroyed, moved-from or reassigned; never copied
// implicitly, never printed.
class SecureBytes {
 public:
  SecureBytes() = default;
  explicit SecureBytes(ByteSpan data) : data_(data.begin(), data.end()) {}
  explicit SecureBytes(std::size_t n) : data_(n, 0) {}
  ~SecureBytes() { wipe(); }
  SecureBytes(SecureBytes&& o) noexcept : data_(std::move(o.data_)) { o.data_.clear(); }
  SecureBytes& operator=(SecureBytes&& o) noexcept;
  SecureBytes(const SecureBytes&) = delete;
  SecureBytes& operator=(const SecureBytes&) = delete;
  [[nodiscard]] SecureBytes clone() const { return SecureBytes(span()); }

  [[nodiscard]] ByteSpan span() const noexcept { return data_; }
  [[nodiscard]] MutByteSpan mut_span() noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return data_.size(); }
  [[nodiscard]] bool empty() const noexcept { return data_.empty(); }
  [[nodiscard]] ByteSpan first(std::size_t n) const noexcept { return span().first(n); }
  [[nodiscard]] ByteSpan subspan(std::size_t off, std::size_t n) const noexcept {
    return span().subspan(off, n);
  }

 private:
  void wipe() noexcept;
  std::vector<std::uint8_t, WipingAllocator<std::uint8_t>> data_;
};

}  // namespace ipsecgw::core
