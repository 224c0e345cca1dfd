// Sockets that carry ESP: UDP (RFC 3948, port 4500 by default, shared with
// IKE through the non-ESP marker) and raw IP protocol 50; and the raw socket
// that sends bypass traffic in the clear. All carry ipsecgw's firewall mark
// so that they are routed around the tunnel (see LinkSetup).
//
// Batched: recv_batch uses recvmmsg, send_batch sendmmsg. Thread-safe in the
// way the kernel's socket calls are; each worker keeps its own batch arrays.
#pragma once

#include <atomic>
#include <memory>
#include <vector>
#include <span>
#include <string>

#include "core/packet.hpp"

namespace ipsecgw::tun {

class EspSocket {
 public:
  // kAh: raw IP protocol 51 with the IP header included both ways (AH's ICV
  // covers it): sends whole packets as built, receives whole packets (IPv6:
  // the fixed header rebuilt from the addresses, since the kernel hands over
  // only what follows it).
  enum class Kind : std::uint8_t { kUdp, kRaw, kAh };
  // `reuseport` (kUdp): one of a group of sockets on the same address and
  // port, one per data-plane worker (SO_REUSEPORT); open them in worker
  // order, then steer_by_spi() on the first.
  static std::unique_ptr<EspSocket> open(Kind kind, const core::IpAddress& local,
                                         std::uint16_t port, std::uint32_t fwmark,
                                         std::string& err, bool reuseport = false);
  // For the first socket of a reuseport group of `n`: every datagram goes
  // to the socket (worker) SPI mod n, read from its first four bytes (a
  // classic BPF program, SO_ATTACH_REUSEPORT_CBPF), so one SA's inbound
  // packets always reach one worker whatever address and port the peer
  // uses; IKE (non-ESP marker: SPI 0) and keepalives go to the first.
  bool steer_by_spi(unsigned n, std::string& err);
  ~EspSocket();
  EspSocket(const EspSocket&) = delete;
  EspSocket& operator=(const EspSocket&) = delete;

  // kUdp: UDP GSO on send (a train of ESP packets of one size to one peer
  // in one datagram call, UDP_SEGMENT) and GRO on receive (UDP_GRO: the
  // kernel hands over trains, cut here into packets). False, with the
  // reason, when the kernel has neither; the socket then works without.
  bool enable_offload(std::string& why);
  [[nodiscard]] bool offload() const noexcept { return gso_ || gro_; }
  // Trains of more than one datagram sent with UDP_SEGMENT and received
  // with UDP_GRO.
  [[nodiscard]] std::uint64_t gso_trains() const noexcept { return gso_trains_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t gro_trains() const noexcept { return gro_trains_.load(std::memory_order_relaxed); }
  // Datagrams discarded before the data plane saw them: truncated (larger
  // than the receive buffer), a GRO segment larger than a packet buffer, a
  // raw IPv4 header or an IPv6 AH packet that cannot be taken apart.
  [[nodiscard]] std::uint64_t rx_discarded() const noexcept { return rx_discarded_.load(std::memory_order_relaxed); }
  // Received datagrams not yet handed over (the last batch was full):
  // recv_batch() must be called again before waiting for the descriptor.
  [[nodiscard]] bool pending() const noexcept { return pend_at_ < pend_.size(); }

  // Receives without blocking. Each packet holds the UDP payload (kUdp) or
  // the ESP packet with any IPv4 header removed (kRaw); peer and peer_port
  // say where it came from.
  std::size_t recv_batch(std::span<core::Packet*> pkts);
  // Sends each packet's bytes to its peer / peer_port; returns how many the
  // kernel took (a refused one is skipped, the rest still go).
  std::size_t send_batch(std::span<core::Packet* const> pkts);
  bool send_to(core::ByteSpan data, const core::IpAddress& dst, std::uint16_t port);

  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] Kind kind() const { return kind_; }
  [[nodiscard]] const core::IpAddress& local() const { return local_; }

 private:
  EspSocket(int fd, Kind k, core::IpAddress local) : fd_(fd), kind_(k), local_(local) {}
  std::size_t send_plain(std::span<core::Packet* const> pkts);
  std::size_t send_gso(std::span<core::Packet* const> pkts);
  std::size_t recv_gro(std::span<core::Packet*> pkts);
  int fd_;
  Kind kind_;
  core::IpAddress local_;
  bool gso_ = false, gro_ = false;
  // GRO: trains received, cut into packets as batches have room.
  struct Train {
    std::size_t off = 0, len = 0, seg = 0;  // in gro_buf_; datagram size
    core::IpAddress peer;
    std::uint16_t port = 0;
  };
  std::atomic<std::uint64_t> gso_trains_{0}, gro_trains_{0}, rx_discarded_{0};
  std::vector<std::uint8_t> gro_buf_;
  std::vector<Train> pend_;
  std::size_t pend_at_ = 0;
};

// Sends whole IP packets (header included) in the clear, for bypass policies.
class BypassSocket {
 public:
  static std::unique_ptr<BypassSocket> open(std::uint32_t fwmark, std::string& err);
  ~BypassSocket();
  BypassSocket(const BypassSocket&) = delete;
  BypassSocket& operator=(const BypassSocket&) = delete;
  bool send(core::ByteSpan ip_packet);

 private:
  BypassSocket(int fd4, int fd6) : fd4_(fd4), fd6_(fd6) {}
  int fd4_;
  int fd6_;
};

}  // namespace ipsecgw::tun
