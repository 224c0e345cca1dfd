// The packet I/O edge: TUN devices and the sockets ESP travels on.
//
// Device is the small interface the data plane reads cleartext from and
// writes cleartext to, in batches; LinuxTun implements it on /dev/net/tun
// (one object per queue of a multi-queue device) and FakeTun in memory for
// tests. A later utun implementation for macOS goes behind the same interface.
#pragma once

#include <cstddef>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "core/packet.hpp"

namespace ipsecgw::tun {

class Device {
 public:
  virtual ~Device() = default;
  // Reads up to pkts.size() packets without blocking; returns how many.
  virtual std::size_t read_batch(std::span<core::Packet*> pkts) = 0;
  // Writes the packets; returns how many were accepted.
  virtual std::size_t write_batch(std::span<core::Packet* const> pkts) = 0;
  // A file descriptor to poll for readability, or -1.
  [[nodiscard]] virtual int fd() const = 0;
};

// In-memory device: inject() queues packets for read_batch; written packets
// are kept for take_written().
class FakeTun : public Device {
 public:
  void inject(core::ByteSpan packet);
  std::vector<core::Bytes> take_written();
  std::size_t read_batch(std::span<core::Packet*> pkts) override;
  std::size_t write_batch(std::span<core::Packet* const> pkts) override;
  [[nodiscard]] int fd() const override { return -1; }

 private:
  std::mutex mutex_;
  std::deque<core::Bytes> to_read_;
  std::vector<core::Bytes> written_;
};

}  // namespace ipsecgw::tun
