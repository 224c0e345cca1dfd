// Linux TUN (/dev/net/tun, IFF_TUN | IFF_NO_PI), optionally multi-queue:
// open() returns one LinuxTun per queue, so that each data-plane worker owns
// a queue and the kernel spreads flows across them.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "tun/device.hpp"
#include "tun/offload.hpp"

namespace ipsecgw::tun {

class LinuxTun : public Device {
 public:
  // Creates the device `name` (or attaches to an existing persistent one).
  // `offload`: with virtio-net headers (IFF_VNET_HDR) and TSO/checksum
  // offload (TUNSETOFFLOAD), so that reads may give TCP super-packets (cut
  // here into segments) and writes coalesce TCP segments (GRO); and, where
  // the kernel has USO (6.2 and later), UDP the same way. Where the kernel
  // refuses an offload the device works without it (logged).
  static std::vector<std::unique_ptr<LinuxTun>> open(const std::string& name, int queues,
                                                     std::string& err, bool offload = false, bool uso = true);
  ~LinuxTun() override;
  LinuxTun(const LinuxTun&) = delete;
  LinuxTun& operator=(const LinuxTun&) = delete;

  std::size_t read_batch(std::span<core::Packet*> pkts) override;
  std::size_t write_batch(std::span<core::Packet* const> pkts) override;
  [[nodiscard]] int fd() const override { return fd_; }
  [[nodiscard]] const std::string& name() const { return name_; }
  // A super-packet read but not yet handed over (the last batch was full):
  // read_batch() must be called again before waiting for the descriptor.
  [[nodiscard]] bool pending() const noexcept { return pending_ != 0; }
  [[nodiscard]] bool offload() const noexcept { return vnet_; }
  [[nodiscard]] bool uso() const noexcept { return uso_.load(std::memory_order_relaxed); }
  struct Stats {
    std::atomic<std::uint64_t> super_packets{0};  // TSO packets read and cut
    std::atomic<std::uint64_t> segments{0};       // ... into this many
    std::atomic<std::uint64_t> coalesced{0};      // GRO packets written
    std::atomic<std::uint64_t> coalesced_segments{0};
    std::atomic<std::uint64_t> coalesced_udp{0};     // of them, UDP (GSO_UDP_L4)
    std::atomic<std::uint64_t> coalesce_refused{0};  // runs the kernel refused, written one by one
    std::atomic<std::uint64_t> bad_offload{0};    // unusable virtio-net headers, dropped
  };
  [[nodiscard]] const Stats& stats() const noexcept { return stats_; }

 private:
  LinuxTun(int fd, std::string name, bool vnet);
  int fd_;
  std::string name_;
  bool vnet_ = false;
  // UDP runs are written as GSO_UDP_L4 super-packets (off again should the
  // kernel refuse one; read by the control thread for statistics).
  std::atomic<bool> uso_{false};
  std::vector<std::uint8_t> rbuf_;  // a virtio-net header and up to 64 KiB
  std::size_t pending_ = 0;         // bytes in rbuf_ not yet cut into packets
  Coalescer gro_;
  Stats stats_;
};

// Link and routing setup for the TUN device. Routes to the protected remote
// networks go into their own table, selected by a rule for every packet that
// does not carry ipsecgw's firewall mark (as wg-quick does). ipsecgw marks
// its own ESP/UDP and bypass sockets, so they follow the main table and never
// loop back into the tunnel. Everything added is removed by cleanup() (also
// run by the destructor).
class LinkSetup {
 public:
  struct Options {
    std::string dev;
    int mtu = 1400;
    std::vector<std::string> addresses;  // "10.1.0.1/24"
    std::vector<core::Route> routes;
    std::uint32_t table = 4500;
    std::uint32_t fwmark = 0x4500;
    std::uint32_t rule_priority = 10000;
    // The device's transmit queue length (what the kernel queues for us
    // to read); 0: left as it is.
    std::uint32_t txqueuelen = 0;
    // With TSO on the device: at most this many segments in a super-packet
    // (the reader's batch), so TCP over a tiny MSS never sends one too big
    // to cut at once. 0: left as it is.
    unsigned gso_max_segs = 0;
  };
  explicit LinkSetup(Options o) : o_(std::move(o)) {}
  ~LinkSetup() { cleanup(); }
  LinkSetup(const LinkSetup&) = delete;
  LinkSetup& operator=(const LinkSetup&) = delete;

  bool apply(std::string& err);
  void cleanup();
  // Makes the routes via the device exactly `routes` (reload): adds the new
  // ones, removes those no longer wanted.
  bool set_routes(const std::vector<core::Route>& routes, std::string& err);

 private:
  Options o_;
  bool rules_added_ = false;
  std::vector<core::Route> routes_added_;
};

// Runs `ip ARGS...` (iproute2) without a shell; false and a message on failure.
bool run_ip(const std::vector<std::string>& args, std::string& err, bool quiet = false);

}  // namespace ipsecgw::tun
