#include "esp/replay.hpp"

#include <algorithm>

namespace ipsecgw::esp {

ReplayWindow::ReplayWindow(std::uint32_t size) : size_(size) {
  if (size_ > 0) words_.assign((size_ + 63) / 64 + 1, 0);
}

std::uint64_t ReplayWindow::infer(std::uint32_t seq_lo, bool esn) const noexcept {
  if (!esn) return seq_lo;
  // RFC 4303 A.2. Without a window, half the space decides.
  const std::uint64_t w = size_ > 0 ? size_ : (std::uint64_t{1} << 31);
  const std::uint64_t top = own_top();
  const auto th = static_cast<std::uint32_t>(top >> 32);
  const auto tl = static_cast<std::uint32_t>(top);
  std::uint32_t hi = th;
  if (tl >= w - 1) {
    // Case A: the window lies within one subspace.
    if (seq_lo < tl - (w - 1)) hi = th + 1;
  } else {
    // Case B: the window spans two subspaces.
    const auto bottom = static_cast<std::uint32_t>(tl - (w - 1));  // wraps
    if (seq_lo >= bottom && th > 0) hi = th - 1;
  }
  return (std::uint64_t{hi} << 32) | seq_lo;
}

bool ReplayWindow::test_bit(std::uint64_t seq) const noexcept {
  const std::uint64_t bits = words_.size() * 64;
  const std::uint64_t idx = seq % bits;
  return (words_[idx / 64] >> (idx % 64)) & 1u;
}

bool ReplayWindow::check(std::uint64_t seq) const noexcept {
  if (size_ == 0) return true;
  if (seq == 0) return false;  // never sent (RFC 4303 3.3.3)
  const std::uint64_t top = own_top();
  if (seq > top) return true;
  if (top - seq >= size_) return false;
  return !test_bit(seq);
}

bool ReplayWindow::update(std::uint64_t seq) noexcept {
  if (size_ == 0) {
    if (seq > own_top()) set_top(seq);
    return true;
  }
  if (!check(seq)) return false;
  const std::uint64_t nwords = words_.size();
  if (const std::uint64_t top = own_top(); seq > top) {
    const std::uint64_t first = top / 64 + 1;
    const std::uint64_t last = seq / 64;
    if (last >= first) {
      const std::uint64_t n = std::min<std::uint64_t>(last - first + 1, nwords);
      for (std::uint64_t i = 0; i < n; ++i) words_[(first + i) % nwords] = 0;
    }
    set_top(seq);
  }
  const std::uint64_t idx = seq % (nwords * 64);
  words_[idx / 64] |= std::uint64_t{1} << (idx % 64);
  return true;
}

}  // namespace ipsecgw::esp
