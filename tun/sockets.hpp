// Sockets that carry ESP: UDP (RFC 3948, port 4500 by default, shared with
// IKE through the non-ESP marker) and raw IP protocol 50; and the raw socket
// that sends bypass traffic in the clear. All carry ipsecgw's firewall mark
// so that they are routed around the tunnel (see LinkSetup).
//
// Batched: recv_batch uses recvmmsg, send_batch sendmmsg. Thread-safe in the
// way the kernel's socket calls are; each worker keeps its own batch arrays.
#pragma once

#include <memory>
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
  int fd_;
  Kind kind_;
  core::IpAddress local_;
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
