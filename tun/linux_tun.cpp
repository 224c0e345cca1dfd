#include "tun/linux_tun.hpp"

#include <algorithm>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.hpp"

extern char** environ;

namespace ipsecgw::tun {

namespace {
// linux/if_tun.h of kernel 6.2 (Debian 12's headers are 6.1).
constexpr unsigned kTunUso4 = 0x20, kTunUso6 = 0x40;
}  // namespace

LinuxTun::LinuxTun(int fd, std::string name, bool vnet) : fd_(fd), name_(std::move(name)), vnet_(vnet) {
  if (vnet_) rbuf_.resize(sizeof(VirtioNetHdr) + 65536);
}

std::vector<std::unique_ptr<LinuxTun>> LinuxTun::open(const std::string& name, int queues,
                                                      std::string& err, bool offload, bool want_uso) {
  std::vector<std::unique_ptr<LinuxTun>> out;
  if (name.empty() || name.size() >= IFNAMSIZ) {
    err = "TUN name must be 1 to " + std::to_string(IFNAMSIZ - 1) + " characters";
    return out;
  }
  bool uso = false;  // the device takes UDP segmentation offload (set on queue 0)
  for (int q = 0; q < queues; ++q) {
    int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      err = std::string("open /dev/net/tun: ") + std::strerror(errno);
      out.clear();
      return out;
    }
    ifreq ifr{};
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    if (queues > 1) ifr.ifr_flags |= IFF_MULTI_QUEUE;
    if (offload) ifr.ifr_flags |= IFF_VNET_HDR;
    std::memcpy(ifr.ifr_name, name.c_str(), name.size());
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      err = "TUNSETIFF " + name + ": " + std::strerror(errno);
      ::close(fd);
      out.clear();
      return out;
    }
    bool vnet = offload;
    if (offload && q == 0) {
      int hdr = sizeof(VirtioNetHdr);
      const unsigned features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 || ioctl(fd, TUNSETOFFLOAD, features) < 0) {
        core::log::warn("tun", name, ": the kernel refused TSO/checksum offload (", std::strerror(errno),
                        "): one packet per read and write");
        (void)ioctl(fd, TUNSETOFFLOAD, 0u);
      } else if (!want_uso) {
        core::log::info("tun", name, ": TSO and checksum offload on (virtio-net headers); USO off (dataplane.uso)");
      } else if (ioctl(fd, TUNSETOFFLOAD, features | kTunUso4 | kTunUso6) == 0) {
        uso = true;
        core::log::info("tun", name, ": TSO, USO and checksum offload on (virtio-net headers)");
      } else {
        core::log::info("tun", name, ": TSO and checksum offload on (virtio-net headers); USO refused (",
                        std::strerror(errno), ", kernel before 6.2): UDP one datagram per write");
      }
    }
    out.emplace_back(new LinuxTun(fd, ifr.ifr_name, vnet));
    out.back()->uso_.store(uso, std::memory_order_relaxed);
  }
  return out;
}

LinuxTun::~LinuxTun() {
  if (fd_ >= 0) ::close(fd_);
}

std::size_t LinuxTun::read_batch(std::span<core::Packet*> pkts) {
  std::size_t n = 0;
  if (!vnet_) {
    while (n < pkts.size()) {
      core::Packet* p = pkts[n];
      p->reset();
      auto area = p->recv_area();
      ssize_t r = ::read(fd_, area.data(), area.size());
      if (r <= 0) break;  // EAGAIN: nothing more now
      p->len = static_cast<std::size_t>(r);
      ++n;
    }
    return n;
  }
  constexpr std::size_t kHdr = sizeof(VirtioNetHdr);
  while (n < pkts.size()) {
    if (pending_ == 0) {
      const ssize_t r = ::read(fd_, rbuf_.data(), rbuf_.size());
      if (r <= 0) break;
      pending_ = static_cast<std::size_t>(r);
    }
    VirtioNetHdr h;
    if (pending_ <= kHdr) {
      pending_ = 0;
      stats_.bad_offload.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    std::memcpy(&h, rbuf_.data(), kHdr);
    const core::ByteSpan pkt(rbuf_.data() + kHdr, pending_ - kHdr);
    const std::size_t need = segments_needed(h, pkt);
    if (need > pkts.size() - n && n > 0) break;  // the next call, with a fresh batch
    pending_ = 0;
    SegmentError e;
    const std::size_t k = segment(h, pkt, pkts.subspan(n), e);
    if (k == 0) {
      stats_.bad_offload.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (h.gso_type != VirtioNetHdr::kGsoNone) {
      stats_.super_packets.fetch_add(1, std::memory_order_relaxed);
      stats_.segments.fetch_add(k, std::memory_order_relaxed);
    }
    n += k;
  }
  return n;
}

std::size_t LinuxTun::write_batch(std::span<core::Packet* const> pkts) {
  std::size_t n = 0;
  if (!vnet_) {
    for (auto* p : pkts) {
      if (::write(fd_, p->data(), p->len) == static_cast<ssize_t>(p->len)) ++n;
    }
    return n;
  }
  static const VirtioNetHdr kPlain{};
  std::vector<iovec> iov;
  for (const auto& g : gro_.plan(pkts, uso_.load(std::memory_order_relaxed))) {
    const auto members = gro_.members(g);
    iov.clear();
    iov.push_back({const_cast<VirtioNetHdr*>(g.count > 1 ? &g.hdr : &kPlain), sizeof(VirtioNetHdr)});
    core::Packet* first = pkts[members[0]];
    iov.push_back({first->data(), first->len});
    std::size_t total = sizeof(VirtioNetHdr) + first->len;
    for (std::size_t k = 1; k < g.count; ++k) {
      core::Packet* p = pkts[members[k]];
      iov.push_back({p->data() + g.hdr.hdr_len, p->len - g.hdr.hdr_len});
      total += p->len - g.hdr.hdr_len;
    }
    if (::writev(fd_, iov.data(), static_cast<int>(iov.size())) == static_cast<ssize_t>(total)) {
      n += g.count;
      if (g.count > 1) {
        stats_.coalesced.fetch_add(1, std::memory_order_relaxed);
        stats_.coalesced_segments.fetch_add(g.count, std::memory_order_relaxed);
        if (g.hdr.gso_type == VirtioNetHdr::kGsoUdpL4) stats_.coalesced_udp.fetch_add(1, std::memory_order_relaxed);
      }
      continue;
    }
    if (g.count == 1) continue;
    // The kernel refused the super-packet (some kernels accept the offload
    // and then refuse GSO writes): its packets one by one, as they came.
    const int e = errno;
    stats_.coalesce_refused.fetch_add(1, std::memory_order_relaxed);
    Coalescer::restore(g, *first);
    if (g.hdr.gso_type == VirtioNetHdr::kGsoUdpL4 && e == EINVAL && uso_.load(std::memory_order_relaxed)) {
      uso_.store(false, std::memory_order_relaxed);
      core::log::warn("tun", name_, ": the kernel refused a UDP super-packet (", std::strerror(e),
                      "): USO off for this queue, one datagram per write");
    }
    for (std::size_t k = 0; k < g.count; ++k) {
      core::Packet* p = pkts[members[k]];
      const iovec one[2] = {{const_cast<VirtioNetHdr*>(&kPlain), sizeof(VirtioNetHdr)}, {p->data(), p->len}};
      if (::writev(fd_, one, 2) == static_cast<ssize_t>(sizeof(VirtioNetHdr) + p->len)) ++n;
    }
  }
  return n;
}

bool run_ip(const std::vector<std::string>& args, std::string& err, bool quiet) {
  std::vector<char*> argv;
  std::string prog = "ip";
  argv.push_back(prog.data());
  std::vector<std::string> copy = args;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (quiet) {
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "ip", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  std::string cmd = "ip";
  for (const auto& a : args) cmd += " " + a;
  if (rc != 0) {
    err = cmd + ": " + std::strerror(rc);
    return false;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    err = cmd + ": failed";
    return false;
  }
  core::log::debug("tun", cmd);
  return true;
}

namespace {
bool link_ioctl(const std::string& dev, unsigned long req, ifreq& ifr, std::string& err) {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  std::memcpy(ifr.ifr_name, dev.c_str(), std::min(dev.size(), std::size_t{IFNAMSIZ - 1}));
  bool ok = ioctl(s, req, &ifr) == 0;
  if (!ok) err = dev + ": " + std::strerror(errno);
  ::close(s);
  return ok;
}
}  // namespace

namespace {
// ip route ACTION DST dev DEV table T [src SRC]
std::vector<std::string> route_args(const char* action, const core::Route& r, const std::string& dev,
                                    const std::string& table) {
  std::vector<std::string> a{"route", action, r.dst.to_string(), "dev", dev, "table", table};
  if (r.src) {
    a.push_back("src");
    a.push_back(r.src->to_string());
  }
  return a;
}
}  // namespace

bool LinkSetup::apply(std::string& err) {
  ifreq ifr{};
  ifr.ifr_mtu = o_.mtu;
  if (!link_ioctl(o_.dev, SIOCSIFMTU, ifr, err)) return false;
  if (o_.txqueuelen) {
    ifr = ifreq{};
    ifr.ifr_qlen = static_cast<int>(o_.txqueuelen);
    if (!link_ioctl(o_.dev, SIOCSIFTXQLEN, ifr, err)) return false;
  }
  for (const auto& a : o_.addresses) {
    if (!run_ip({"addr", "replace", a, "dev", o_.dev}, err)) return false;
  }
  if (o_.gso_max_segs) {
    std::string why;
    if (!run_ip({"link", "set", "dev", o_.dev, "gso_max_segs", std::to_string(o_.gso_max_segs)}, why, true))
      core::log::warn("tun", o_.dev, ": gso_max_segs not set (", why, "): super-packets of more segments are dropped");
  }
  ifr = ifreq{};
  if (!link_ioctl(o_.dev, SIOCGIFFLAGS, ifr, err)) return false;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (!link_ioctl(o_.dev, SIOCSIFFLAGS, ifr, err)) return false;

  const std::string table = std::to_string(o_.table);
  const std::string mark = std::to_string(o_.fwmark);
  const std::string pref = std::to_string(o_.rule_priority);
  for (const char* fam : {"-4", "-6"}) {
    std::string ignored;
    run_ip({fam, "rule", "del", "not", "fwmark", mark, "table", table, "pref", pref}, ignored, true);
    if (!run_ip({fam, "rule", "add", "not", "fwmark", mark, "table", table, "pref", pref}, err)) {
      return false;
    }
  }
  rules_added_ = true;
  for (const auto& r : o_.routes) {
    if (!run_ip(route_args("replace", r, o_.dev, table), err)) return false;
    routes_added_.push_back(r);
  }
  return true;
}

bool LinkSetup::set_routes(const std::vector<core::Route>& routes, std::string& err) {
  const std::string table = std::to_string(o_.table);
  auto same = [](const core::Route& a, const core::Route& b) { return a == b; };
  bool ok = true;
  for (auto it = routes_added_.begin(); it != routes_added_.end();) {
    if (std::none_of(routes.begin(), routes.end(), [&](const core::Route& r) { return same(r, *it); })) {
      std::string ignored;
      run_ip({"route", "del", it->dst.to_string(), "dev", o_.dev, "table", table}, ignored, true);
      it = routes_added_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& r : routes) {
    if (std::any_of(routes_added_.begin(), routes_added_.end(), [&](const core::Route& x) { return same(r, x); }))
      continue;
    if (!run_ip(route_args("replace", r, o_.dev, table), err)) {
      ok = false;
      continue;
    }
    routes_added_.push_back(r);
  }
  return ok;
}

void LinkSetup::cleanup() {
  std::string ignored;
  const std::string table = std::to_string(o_.table);
  for (const auto& r : routes_added_) {
    run_ip({"route", "del", r.dst.to_string(), "dev", o_.dev, "table", table}, ignored, true);
  }
  routes_added_.clear();
  if (rules_added_) {
    for (const char* fam : {"-4", "-6"}) {
      run_ip({fam, "rule", "del", "not", "fwmark", std::to_string(o_.fwmark), "table", table,
              "pref", std::to_string(o_.rule_priority)},
             ignored, true);
    }
    rules_added_ = false;
  }
}

}  // namespace ipsecgw::tun
