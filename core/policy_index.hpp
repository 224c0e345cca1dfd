// A policy index that answers "the first policy, in rank order, that
// matches this packet" without walking every policy, and that a control
// plane can change one policy at a time while workers read it, at a cost
// that does not grow with the number of policies.
//
// Lookup (after the Linux xfrm policy hash): every policy is filed under the
// prefix that covers each of its remote (destination) ranges, in the shard
// that prefix hashes to. A packet is looked up once per prefix length in
// use (typically one to three: /32 hosts, /24 networks, /0), each a hash
// and a binary search; among the policies filed under those prefixes the
// one with the lowest rank whose full selectors match wins. The cost grows
// with the number of prefix lengths in use and the logarithm of a shard's
// size, not with the number of policies.
//
// Updates: the index is a fixed array of shards, each a sorted vector
// shared between copies. Copying an index copies the array of pointers;
// insert and erase copy the one shard they change, unless that shard was
// made in the caller's current epoch (after its last publication: no
// published copy can hold it), when it is changed in place. So a published
// index is never touched, and a change costs about (kShards + policies /
// kShards) pointer copies. The epoch is the owner's count of publications.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/ip.hpp"
#include "core/spd.hpp"

namespace ipsecgw::core {

inline const Policy& policy_of(const Policy& p) noexcept { return p; }

// E is Policy or a type for which policy_of(const E&) returns its Policy.
template <class E>
class PolicyIndex {
 public:
  using Ptr = std::shared_ptr<const E>;
  static constexpr std::size_t kShards = 256;

  PolicyIndex() {
    for (auto& s : shards_) s = empty_shard();
  }

  // Files `e` under each of its remote ranges with this rank (lower first).
  // A policy without remote ranges never matches and is not filed.
  void insert(Ptr e, std::uint64_t rank, std::uint64_t epoch) {
    for (const auto& r : policy_of(*e).sel.remote) {
      const Key k = key_of(r);
      auto& s = writable(shard_of(k), epoch);
      const Row row{k, rank, e};
      s.insert(std::upper_bound(s.begin(), s.end(), row, row_less), row);
      count(k, +1);
    }
    ++size_;
  }

  // Removes every row of `e` (by identity). False when it was not filed.
  bool erase(const E* e, std::uint64_t epoch) {
    bool found = false;
    for (const auto& r : policy_of(*e).sel.remote) {
      const Key k = key_of(r);
      const std::size_t i = shard_of(k);
      const auto& ro = shards_[i]->rows;
      auto [lo, hi] = std::equal_range(ro.begin(), ro.end(), Row{k, 0, nullptr}, key_less);
      auto it = std::find_if(lo, hi, [e](const Row& row) { return row.e.get() == e; });
      if (it == hi) continue;
      const auto pos = it - ro.begin();
      auto& s = writable(i, epoch);
      s.erase(s.begin() + pos);
      count(k, -1);
      found = true;
    }
    if (found) --size_;
    return found;
  }

  // The lowest-ranked policy matching a packet read from TUN, or nullptr.
  [[nodiscard]] const E* lookup(const PacketInfo& p) const noexcept {
    const E* best = nullptr;
    std::uint64_t best_rank = UINT64_MAX;
    const auto& used = p.dst.is_v4() ? used4_ : used6_;
    for (std::size_t w = 0; w < used.size(); ++w) {
      for (std::uint64_t bits = used[w]; bits != 0; bits &= bits - 1) {
        const auto len = static_cast<unsigned>(w * 64 + static_cast<std::size_t>(__builtin_ctzll(bits)));
        probe(p, len, best, best_rank);
      }
    }
    return best;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  // Every policy filed, once per remote range, in no particular order.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& s : shards_)
      for (const auto& row : s->rows) f(*row.e);
  }

 private:
  struct Key {
    std::array<std::uint8_t, 16> net{};
    Family family = Family::V4;
    std::uint8_t plen = 0;
    auto operator<=>(const Key&) const = default;
  };
  struct Row {
    Key key;
    std::uint64_t rank;
    Ptr e;
  };
  struct Shard {
    std::uint64_t epoch = UINT64_MAX;  // made in this epoch of the owner's
    std::vector<Row> rows;
  };
  static bool key_less(const Row& a, const Row& b) noexcept { return a.key < b.key; }
  static bool row_less(const Row& a, const Row& b) noexcept {
    return a.key != b.key ? a.key < b.key : a.rank < b.rank;
  }

  void probe(const PacketInfo& p, unsigned len, const E*& best, std::uint64_t& best_rank) const noexcept {
    const Key k = masked(p.dst, len);
    const auto& s = shards_[shard_of(k)]->rows;
    auto it = std::lower_bound(s.begin(), s.end(), Row{k, 0, nullptr}, key_less);
    for (; it != s.end() && it->key == k && it->rank < best_rank; ++it) {
      const Policy& pol = policy_of(*it->e);
      if (pol.whole_packets && p.fragment) continue;
      if (!pol.sel.matches_outbound(p)) continue;
      best = it->e.get();
      best_rank = it->rank;
      break;  // rows of one key are in rank order
    }
  }

  static std::shared_ptr<const Shard> empty_shard() {
    static const auto empty = std::make_shared<const Shard>();
    return empty;
  }
  // The rows of shard `i`, copied first unless made in this epoch.
  std::vector<Row>& writable(std::size_t i, std::uint64_t epoch) {
    if (shards_[i]->epoch != epoch) {
      auto copy = std::make_shared<Shard>(*shards_[i]);
      copy->epoch = epoch;
      shards_[i] = copy;
      return copy->rows;
    }
    // Made in this epoch by this index (an empty or published shard never
    // has the current epoch): no other holder can see it.
    return const_cast<Shard&>(*shards_[i]).rows;
  }
  void count(const Key& k, int delta) noexcept {
    auto& n = (k.family == Family::V4 ? len4_ : len6_)[k.plen];
    n = static_cast<std::uint32_t>(static_cast<int>(n) + delta);
    auto& used = k.family == Family::V4 ? used4_ : used6_;
    const std::uint64_t bit = std::uint64_t{1} << (k.plen % 64);
    if (n != 0) used[k.plen / 64] |= bit;
    else used[k.plen / 64] &= ~bit;
  }

  static Key masked(const IpAddress& a, unsigned len) noexcept {
    Key k;
    k.family = a.family();
    k.plen = static_cast<std::uint8_t>(len);
    const auto b = a.bytes();
    for (std::size_t i = 0; i < b.size(); ++i) {
      const unsigned bit = static_cast<unsigned>(i) * 8;
      if (len >= bit + 8) {
        k.net[i] = b[i];
      } else if (len > bit) {
        k.net[i] = static_cast<std::uint8_t>(b[i] & (0xff << (8 - (len - bit))));
      }
    }
    return k;
  }
  // The longest prefix that covers the whole range.
  static Key key_of(const IpRange& r) noexcept {
    const auto lo = r.lo.bytes(), hi = r.hi.bytes();
    unsigned len = 0;
    while (len < lo.size() * 8) {
      const std::size_t byte = len / 8;
      const unsigned mask = 0x80u >> (len % 8);
      if ((lo[byte] & mask) != (hi[byte] & mask)) break;
      ++len;
    }
    return masked(r.lo, len);
  }
  static std::size_t shard_of(const Key& k) noexcept {
    std::uint64_t h = 1469598103934665603ull ^ k.plen;  // FNV-1a
    for (auto b : k.net) h = (h ^ b) * 1099511628211ull;
    return static_cast<std::size_t>(h ^ (h >> 29)) % kShards;
  }
  std::array<std::shared_ptr<const Shard>, kShards> shards_;
  std::array<std::uint32_t, 129> len4_{}, len6_{};  // rows per prefix length
  std::array<std::uint64_t, 3> used4_{}, used6_{};  // prefix lengths with rows
  std::size_t size_ = 0;
};

// An ordered SPD (RFC 4301 4.4.1): the first policy added that matches a
// packet decides; looked up through a PolicyIndex. Built once; moved, never
// copied (copies would share shards that add() changes in place).
class Spd {
 public:
  Spd() = default;
  Spd(const Spd&) = delete;
  Spd& operator=(const Spd&) = delete;
  Spd(Spd&&) = default;
  Spd& operator=(Spd&&) = default;
  void add(Policy p) { index_.insert(std::make_shared<const Policy>(std::move(p)), next_rank_++, 0); }
  // First matching policy for a packet read from TUN, or nullptr (no policy:
  // the packet is discarded, RFC 4301 5.1 default deny).
  [[nodiscard]] const Policy* lookup_outbound(const PacketInfo& p) const noexcept { return index_.lookup(p); }
  [[nodiscard]] std::size_t size() const noexcept { return index_.size(); }

 private:
  PolicyIndex<Policy> index_;
  std::uint64_t next_rank_ = 0;
};

}  // namespace ipsecgw::core
