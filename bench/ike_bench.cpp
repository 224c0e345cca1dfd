// IKEv2 setup-rate driver: an initiator built on ipsecgw's own engine that
// opens IKE SAs (IKE_SA_INIT + IKE_AUTH with PSK and one Child SA) against a
// responder as fast as the responder answers, with a bounded number in
// flight, and prints the rate. The same driver runs against ipsecgw and
// against strongSwan (bench/ike_setup_rate.sh), so the ratio compares the
// responders.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/log.hpp"
#include "ike/engine.hpp"

using namespace ipsecgw;

namespace {
struct CountingInstaller : core::SaInstaller {
  std::size_t installed = 0;
  bool install(core::SaParams, std::string&) override {
    ++installed;
    return true;
  }
  bool remove(const std::string&) override { return true; }
  bool update_path(const std::string&, const core::SaPath&) override { return true; }
};

int udp_socket(const core::IpAddress& a, std::uint16_t port) {
  const int fam = a.is_v4() ? AF_INET : AF_INET6;
  int fd = ::socket(fam, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (a.is_v4()) {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    std::memcpy(&s4->sin_addr, a.bytes().data(), 4);
    len = sizeof *s4;
  } else {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    std::memcpy(&s6->sin6_addr, a.bytes().data(), 16);
    len = sizeof *s6;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_to(int fd, const core::Bytes& data, const ike::Endpoint& to) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (to.addr.is_v4()) {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(to.port);
    std::memcpy(&s4->sin_addr, to.addr.bytes().data(), 4);
    len = sizeof *s4;
  } else {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(to.port);
    std::memcpy(&s6->sin6_addr, to.addr.bytes().data(), 16);
    len = sizeof *s6;
  }
  (void)::sendto(fd, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"IKE setup-rate driver (IKEv2, or IKEv1 Main Mode + Quick Mode)"};
  std::string local = "198.51.100.1", remote = "198.51.100.2", psk = "bench secret";
  std::string local_id = "client.example", remote_id = "server.example";
  std::string proposal = "aes128gcm16-prfsha256-x25519", esp = "aes128gcm16";
  std::size_t count = 500, window = 16;
  double timeout_s = 120;
  int version = 2;
  app.add_option("--local", local);
  app.add_option("--remote", remote);
  app.add_option("--psk", psk);
  app.add_option("--local-id", local_id);
  app.add_option("--remote-id", remote_id);
  app.add_option("--proposal", proposal);
  app.add_option("--esp", esp);
  app.add_option("--count", count, "IKE SAs to set up");
  app.add_option("--window", window, "IKE SAs in flight at once");
  app.add_option("--timeout", timeout_s);
  app.add_option("--version", version, "2: IKE_SA_INIT + IKE_AUTH; 1: Main Mode + Quick Mode")->check(CLI::IsMember({1, 2}));
  CLI11_PARSE(app, argc, argv);
  core::log::set_level(core::log::Level::kError);

  ike::ConnectionConfig c;
  c.name = "bench";
  c.local_addrs = {*core::IpAddress::parse(local)};
  c.remote_addrs = {*core::IpAddress::parse(remote)};
  c.local_id = local_id;
  c.remote_id = remote_id;
  std::string bad;
  c.proposals = {*core::parse_proposal(proposal, bad)};
  c.psk = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(psk.data()), psk.size()));
  c.rekey_time = 0;
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse("10.1.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse("10.2.0.0/24")};
  ch.esp_proposals = {*core::parse_proposal(esp, bad)};
  ch.rekey_time = 0;
  c.children.push_back(std::move(ch));
  c.version = version;
  const auto la = c.local_addrs[0];
  std::vector<ike::ConnectionConfig> v;
  // IKEv1 runs further Quick Modes on an ISAKMP SA that is up, so each
  // setup gets a connection of its own (same peer, same settings).
  const std::size_t conns = version == 1 ? count : 1;
  for (std::size_t i = 0; i < conns; ++i) {
    ike::ConnectionConfig x;
    x.name = version == 1 ? "bench-" + std::to_string(i) : "bench";
    x.version = c.version;
    x.local_addrs = c.local_addrs;
    x.remote_addrs = c.remote_addrs;
    x.local_id = c.local_id;
    x.remote_id = c.remote_id;
    x.proposals = c.proposals;
    x.psk = c.psk.clone();
    x.rekey_time = 0;
    x.children = c.children;
    v.push_back(std::move(x));
  }
  CountingInstaller inst;
  ike::EngineOptions opt;
  opt.retransmit_base = std::chrono::milliseconds(2000);
  // Every SA here has the same identities; INITIAL_CONTACT would make a
  // responder tear down the others (strongSwan does), which is not the work
  // being measured.
  opt.initial_contact = false;
  ike::Engine engine(std::move(v), inst, opt);

  const int fd500 = udp_socket(la, 500), fd4500 = udp_socket(la, 4500);
  if (fd500 < 0 || fd4500 < 0) {
    std::perror("bind");
    return 1;
  }
  auto flush = [&] {
    for (auto& d : engine.take_output()) {
      if (d.local.port == 4500) {
        core::Bytes framed(4, 0);
        framed.insert(framed.end(), d.data.begin(), d.data.end());
        send_to(fd4500, framed, d.remote);
      } else {
        send_to(fd500, d.data, d.remote);
      }
    }
  };
  std::size_t started = 0;
  const auto t0 = ike::Clock::now();
  const auto deadline = t0 + std::chrono::duration_cast<ike::Clock::duration>(std::chrono::duration<double>(timeout_s));
  std::uint8_t buf[65536];
  pollfd pfds[2] = {{fd500, POLLIN, 0}, {fd4500, POLLIN, 0}};
  while (true) {
    const auto& k = engine.counters();
    // IKEv1: a setup is done with its Quick Mode (the IPsec SA pair).
    const std::size_t done = version == 1 ? k.ikev1_quick_mode_done + k.ikev1_quick_mode_failed + k.ikev1_main_mode_failed
                                          : k.ike_established + k.ike_failed;
    if (done >= count || ike::Clock::now() > deadline) break;
    while (started < count && started - done < window) {
      std::string why;
      const std::string name = version == 1 ? "bench-" + std::to_string(started) : "bench";
      if (!engine.initiate(name, "lan", ike::Clock::now(), why)) {
        std::fprintf(stderr, "initiate: %s\n", why.c_str());
        return 1;
      }
      ++started;
    }
    flush();
    ::poll(pfds, 2, 5);
    for (int i = 0; i < 2; ++i) {
      while (true) {
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        const ssize_t n = ::recvfrom(pfds[i].fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&ss), &sl);
        if (n <= 0) break;
        ike::Datagram d;
        d.local = {la, static_cast<std::uint16_t>(i == 0 ? 500 : 4500)};
        if (ss.ss_family == AF_INET) {
          auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
          d.remote = {core::IpAddress::v4({reinterpret_cast<std::uint8_t*>(&s4->sin_addr), 4}), ntohs(s4->sin_port)};
        } else {
          auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
          d.remote = {core::IpAddress::v6({reinterpret_cast<std::uint8_t*>(&s6->sin6_addr), 16}), ntohs(s6->sin6_port)};
        }
        std::size_t off = 0;
        if (i == 1) {
          if (n < 4 || std::memcmp(buf, "\0\0\0\0", 4) != 0) continue;  // ESP or keepalive
          off = 4;
        }
        d.data.assign(buf + off, buf + n);
        engine.receive(d, ike::Clock::now());
      }
    }
    engine.tick(ike::Clock::now());
  }
  flush();
  const double secs = std::chrono::duration<double>(ike::Clock::now() - t0).count();
  const auto& k = engine.counters();
  const auto ok = version == 1 ? k.ikev1_quick_mode_done : k.ike_established;
  const auto failed = version == 1 ? k.ikev1_main_mode_failed + k.ikev1_quick_mode_failed : k.ike_failed;
  std::printf("{\"established\": %llu, \"failed\": %llu, \"children\": %zu, \"seconds\": %.3f, \"rate\": %.1f, \"retransmits\": %llu}\n",
              static_cast<unsigned long long>(ok), static_cast<unsigned long long>(failed),
              inst.installed, secs, static_cast<double>(ok) / secs,
              static_cast<unsigned long long>(k.retransmits));
  ::close(fd500);
  ::close(fd4500);
  return ok == count ? 0 : 1;
}
