// A bounded single-producer single-consumer ring of packets, copied in and
// out of fixed slots: how one data-plane worker hands a packet to the worker
// that owns its outbound SA. Lock-free: the producer publishes a slot with a
// release store of the tail, the consumer frees it with a release store of
// the head; each reads the other's index with acquire. Full: push() refuses
// (the caller counts the drop).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/packet.hpp"

namespace ipsecgw::core {

class SpscPacketRing {
 public:
  // `slots` is rounded up to a power of two; `slot_bytes` is the largest
  // packet it carries.
  // The slots are allocated at the first push (by the producer, before
  // the release store that shows the consumer anything), so rings between
  // workers that never hand each other packets cost nothing.
  SpscPacketRing(std::size_t slots, std::size_t slot_bytes) : slot_bytes_(slot_bytes) {
    std::size_t n = 1;
    while (n < slots) n <<= 1;
    mask_ = n - 1;
  }
  SpscPacketRing(const SpscPacketRing&) = delete;
  SpscPacketRing& operator=(const SpscPacketRing&) = delete;

  // Producer: copies the packet in; false when full or too large.
  bool push(const Packet& p) noexcept {
    const std::size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_.load(std::memory_order_acquire) > mask_ || p.len > slot_bytes_) return false;
    if (data_.empty()) {
      lens_.assign(mask_ + 1, 0);
      peers_.assign(mask_ + 1, {});
      ports_.assign(mask_ + 1, 0);
      data_.assign((mask_ + 1) * slot_bytes_, 0);
    }
    const std::size_t i = tail & mask_;
    std::memcpy(data_.data() + i * slot_bytes_, p.data(), p.len);
    lens_[i] = p.len;
    peers_[i] = p.peer;
    ports_[i] = p.peer_port;
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }
  // Consumer: copies the oldest packet into `p` (at its default offset);
  // false when empty.
  bool pop(Packet& p) noexcept {
    const std::size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_.load(std::memory_order_acquire)) return false;
    const std::size_t i = head & mask_;
    p.reset();
    std::memcpy(p.recv_area().data(), data_.data() + i * slot_bytes_, lens_[i]);
    p.len = lens_[i];
    p.peer = peers_[i];
    p.peer_port = ports_[i];
    head_.store(head + 1, std::memory_order_release);
    return true;
  }
  [[nodiscard]] bool empty() const noexcept {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }

 private:
  std::size_t slot_bytes_;
  std::size_t mask_ = 0;
  std::vector<std::size_t> lens_;
  std::vector<IpAddress> peers_;  // where an inbound packet came from
  std::vector<std::uint16_t> ports_;
  std::vector<std::uint8_t> data_;
  alignas(64) std::atomic<std::size_t> head_{0};  // consumer's
  alignas(64) std::atomic<std::size_t> tail_{0};  // producer's
};

}  // namespace ipsecgw::core
