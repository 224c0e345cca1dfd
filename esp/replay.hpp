// Anti-replay window (RFC 4303 3.4.3, Appendix A) with ESN inference.
//
// Single owner: the worker that processes the inbound SA checks and updates
// it; nothing else may. The highest sequence number is also published for
// the control thread (`sa`, statistics): top() may be called from any
// thread and sees a value the owner stored (an atomic, stored with release
// and read with acquire; the owner's own reads are relaxed).
// The bitmap is a ring of 64-bit words (as in RFC 6479), so advancing the
// window costs at most one word clear per 64 sequence numbers skipped.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace ipsecgw::esp {

class ReplayWindow {
 public:
  // size 0 disables replay checking (every authentic packet is accepted).
  explicit ReplayWindow(std::uint32_t size);

  // The full sequence number a packet with these low 32 bits most likely has
  // (RFC 4303 Appendix A.2). Without ESN the high half is always zero.
  [[nodiscard]] std::uint64_t infer(std::uint32_t seq_lo, bool esn) const noexcept;
  // True when `seq` may be accepted: not seen and not left of the window.
  [[nodiscard]] bool check(std::uint64_t seq) const noexcept;
  // Records an authenticated packet; false if it is (now) a replay.
  bool update(std::uint64_t seq) noexcept;

  [[nodiscard]] std::uint64_t top() const noexcept { return top_.load(std::memory_order_acquire); }
  [[nodiscard]] std::uint32_t size() const noexcept { return size_; }

 private:
  [[nodiscard]] bool test_bit(std::uint64_t seq) const noexcept;
  std::uint32_t size_;
  [[nodiscard]] std::uint64_t own_top() const noexcept { return top_.load(std::memory_order_relaxed); }
  void set_top(std::uint64_t v) noexcept { top_.store(v, std::memory_order_release); }
  std::atomic<std::uint64_t> top_{0};  // highest authenticated sequence number
  std::vector<std::uint64_t> words_;
};

}  // namespace ipsecgw::esp
