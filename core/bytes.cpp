#include "core/bytes.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace ipsecgw::core {

bool ByteReader::take(std::size_t n, const std::uint8_t*& p) noexcept {
  if (failed_ || n > data_.size() - pos_) {
    failed_ = true;
    return false;
  }
  p = data_.data() + pos_;
  pos_ += n;
  return true;
}

bool ByteReader::read_u8(std::uint8_t& out) noexcept {
  const std::uint8_t* p = nullptr;
  if (!take(1, p)) return false;
  out = *p;
  return true;
}
bool ByteReader::read_u16(std::uint16_t& out) noexcept {
  const std::uint8_t* p = nullptr;
  if (!take(2, p)) return false;
  out = load_be16(p);
  return true;
}
bool ByteReader::read_u32(std::uint32_t& out) noexcept {
  const std::uint8_t* p = nullptr;
  if (!take(4, p)) return false;
  out = load_be32(p);
  return true;
}
bool ByteReader::read_u64(std::uint64_t& out) noexcept {
  const std::uint8_t* p = nullptr;
  if (!take(8, p)) return false;
  out = load_be64(p);
  return true;
}
bool ByteReader::read_bytes(std::size_t n, ByteSpan& out) noexcept {
  const std::uint8_t* p = nullptr;
  if (!take(n, p)) return false;
  out = ByteSpan(p, n);
  return true;
}
bool ByteReader::skip(std::size_t n) noexcept {
  const std::uint8_t* p = nullptr;
  return take(n, p);
}

std::uint8_t* ByteWriter::take(std::size_t n) noexcept {
  if (failed_ || n > out_.size() - pos_) {
    failed_ = true;
    return nullptr;
  }
  std::uint8_t* p = out_.data() + pos_;
  pos_ += n;
  return p;
}
bool ByteWriter::write_u8(std::uint8_t v) noexcept {
  auto* p = take(1);
  if (p) *p = v;
  return p != nullptr;
}
bool ByteWriter::write_u16(std::uint16_t v) noexcept {
  auto* p = take(2);
  if (p) store_be16(p, v);
  return p != nullptr;
}
bool ByteWriter::write_u32(std::uint32_t v) noexcept {
  auto* p = take(4);
  if (p) store_be32(p, v);
  return p != nullptr;
}
bool ByteWriter::write_u64(std::uint64_t v) noexcept {
  auto* p = take(8);
  if (p) store_be64(p, v);
  return p != nullptr;
}
bool ByteWriter::write_bytes(ByteSpan v) noexcept {
  auto* p = take(v.size());
  if (p && !v.empty()) std::copy(v.begin(), v.end(), p);
  return p != nullptr;
}

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::optional<Bytes> from_hex(std::string_view hex) {
  if (hex.size() >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X')) {
    hex.remove_prefix(2);
  }
  Bytes out;
  out.reserve(hex.size() / 2);
  int hi = -1;
  for (char c : hex) {
    if (c == ':' || std::isspace(static_cast<unsigned char>(c))) {
      if (hi >= 0) return std::nullopt;  // separator inside a byte
      continue;
    }
    int v = hex_value(c);
    if (v < 0) return std::nullopt;
    if (hi < 0) {
      hi = v;
    } else {
      out.push_back(static_cast<std::uint8_t>((hi << 4) | v));
      hi = -1;
    }
  }
  if (hi >= 0) return std::nullopt;
  return out;
}

std::string hex32(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}
std::string hex64(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}
std::string spi_hex(std::uint32_t spi) { return "0x" + hex32(spi); }

std::string to_hex(ByteSpan data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(data.size() * 2);
  for (auto b : data) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xf]);
  }
  return s;
}

bool ct_equal(ByteSpan a, ByteSpan b) noexcept {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void secure_wipe(void* p, std::size_t n) noexcept {
  if (p && n) OPENSSL_cleanse(p, n);
}

SecureBytes& SecureBytes::operator=(SecureBytes&& o) noexcept {
  if (this != &o) {
    wipe();
    data_ = std::move(o.data_);
    o.data_.clear();
  }
  return *this;
}

void SecureBytes::wipe() noexcept { secure_wipe(data_.data(), data_.size()); }

}  // namespace ipsecgw::core

#include "core/packet.hpp"

namespace ipsecgw::core {
void Packet::assign(ByteSpan bytes) noexcept {
  reset();
  len = std::min(bytes.size(), kMaxData);
  std::copy_n(bytes.begin(), len, buf.begin() + static_cast<std::ptrdiff_t>(off));
}
}  // namespace ipsecgw::core
