// Drop reasons and per-SA / global traffic counters.
//
// Counters are relaxed atomics: written by data-plane workers, read by the
// control plane for statistics. No ordering is implied between counters.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string_view>

namespace ipsecgw::core {

enum class Drop : std::uint8_t {
  kNone = 0,
  kBadSpi,          // no inbound SA for this SPI
  kReplay,          // duplicate or left of the anti-replay window
  kAuthFailed,      // ICV or AEAD tag did not verify
  kBadPadding,      // padding or pad length wrong after decryption
  kPolicyMismatch,  // decrypted packet outside the SA's selectors
  kMalformed,       // truncated, misaligned, bad inner header
  kSeqExhausted,    // outbound sequence number space used up (rekey needed)
  kNoPolicy,        // outbound packet matched no policy (default deny)
  kDiscardPolicy,   // outbound packet matched a discard policy
  kNoSa,            // protect policy without an installed SA
  kTooBig,          // would not fit the buffer after encapsulation
  kSendFailed,      // the socket refused it
  kDummy,           // next header 59: TFC dummy packet, dropped by design
  kContended,       // another worker was decrypting with the same inbound SA
  kCount,
};

std::string_view to_string(Drop d) noexcept;
// The stable, machine-readable name (for JSON and metrics).
std::string_view key_of(Drop d) noexcept;

inline constexpr std::size_t kDropCount = static_cast<std::size_t>(Drop::kCount);

struct DirectionCounters {
  std::atomic<std::uint64_t> packets{0};
  std::atomic<std::uint64_t> bytes{0};  // inner (cleartext) bytes
  void add(std::uint64_t n) noexcept {
    packets.fetch_add(1, std::memory_order_relaxed);
    bytes.fetch_add(n, std::memory_order_relaxed);
  }
};

struct TrafficCounters {
  DirectionCounters out;
  DirectionCounters in;
  std::array<std::atomic<std::uint64_t>, kDropCount> drops{};

  void drop(Drop d) noexcept {
    drops[static_cast<std::size_t>(d)].fetch_add(1, std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint64_t dropped(Drop d) const noexcept {
    return drops[static_cast<std::size_t>(d)].load(std::memory_order_relaxed);
  }
};

}  // namespace ipsecgw::core
