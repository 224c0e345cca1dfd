#include "tun/sockets.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <linux/filter.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ipsecgw::tun {

namespace {

socklen_t to_sockaddr(const core::IpAddress& a, std::uint16_t port, sockaddr_storage& ss) {
  std::memset(&ss, 0, sizeof ss);
  if (a.is_v4()) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    std::memcpy(&s->sin_addr, a.bytes().data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
  s->sin6_family = AF_INET6;
  s->sin6_port = htons(port);
  std::memcpy(&s->sin6_addr, a.bytes().data(), 16);
  return sizeof(sockaddr_in6);
}

void from_sockaddr(const sockaddr_storage& ss, core::IpAddress& a, std::uint16_t& port) {
  if (ss.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&ss);
    a = core::IpAddress::v4(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(&s->sin_addr), 4));
    port = ntohs(s->sin_port);
  } else {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&ss);
    a = core::IpAddress::v6(
        core::ByteSpan(reinterpret_cast<const std::uint8_t*>(&s->sin6_addr), 16));
    port = ntohs(s->sin6_port);
  }
}

constexpr std::size_t kMaxBatch = 64;
constexpr std::size_t kGroTrains = 8;            // trains per receive call
constexpr std::size_t kGroTrainBytes = 65536;    // the largest a train can be
constexpr std::size_t kGsoMaxSegments = 64;      // UDP_MAX_SEGMENTS of older kernels
constexpr std::size_t kGsoMaxBytes = 65000;      // a UDP datagram's payload, with room

bool set_mark(int fd, std::uint32_t mark, std::string& err) {
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    err = std::string("SO_MARK: ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<EspSocket> EspSocket::open(Kind kind, const core::IpAddress& local,
                                           std::uint16_t port, std::uint32_t fwmark,
                                           std::string& err, bool reuseport) {
  const int family = local.is_v4() ? AF_INET : AF_INET6;
  const int type = kind == Kind::kUdp ? SOCK_DGRAM : SOCK_RAW;
  const int proto = kind == Kind::kUdp ? IPPROTO_UDP : kind == Kind::kAh ? IPPROTO_AH : IPPROTO_ESP;
  int fd = ::socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
  if (fd < 0) {
    err = std::string("socket: ") + std::strerror(errno);
    return nullptr;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuseport && kind == Kind::kUdp && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    err = std::string("SO_REUSEPORT: ") + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // Receive: 16 MiB, what the kernel holds while a worker is off the CPU
  // (only what waits is allocated); send: 4 MiB.
  int rcvbuf = 16 << 20, sndbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf);
  if (!set_mark(fd, fwmark, err)) {
    ::close(fd);
    return nullptr;
  }
  if (kind == Kind::kAh) {
#ifndef IPV6_HDRINCL
#define IPV6_HDRINCL 36  // Linux 4.5
#endif
    const int r = family == AF_INET ? setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one)
                                    : setsockopt(fd, IPPROTO_IPV6, IPV6_HDRINCL, &one, sizeof one);
    if (r < 0) {
      err = std::string(family == AF_INET ? "IP_HDRINCL: " : "IPV6_HDRINCL: ") + std::strerror(errno);
      ::close(fd);
      return nullptr;
    }
  }
  sockaddr_storage ss;
  socklen_t sl = to_sockaddr(local, kind == Kind::kUdp ? port : 0, ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), sl) < 0) {
    err = "bind " + local.to_string() + (kind == Kind::kUdp ? ":" + std::to_string(port) : "") +
          ": " + std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  return std::unique_ptr<EspSocket>(new EspSocket(fd, kind, local));
}

EspSocket::~EspSocket() { ::close(fd_); }

bool EspSocket::steer_by_spi(unsigned n, std::string& err) {
  if (n < 2) return true;
  // The program sees the UDP payload (the kernel pulls the UDP header
  // first). A failed load (a datagram under four bytes) returns 0.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof code / sizeof code[0]), code};
  if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0) {
    err = std::string("SO_ATTACH_REUSEPORT_CBPF: ") + std::strerror(errno);
    return false;
  }
  return true;
}

bool EspSocket::enable_offload(std::string& why) {
  if (kind_ != Kind::kUdp) return false;
  int zero = 0, one = 1;
  gso_ = setsockopt(fd_, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
  if (!gso_) why = std::string("UDP_SEGMENT: ") + std::strerror(errno);
  gro_ = setsockopt(fd_, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  if (!gro_) why += std::string(why.empty() ? "" : ", ") + "UDP_GRO: " + std::strerror(errno);
  if (gro_) gro_buf_.resize(kGroTrains * kGroTrainBytes);
  return gso_ && gro_;
}

std::size_t EspSocket::recv_gro(std::span<core::Packet*> pkts) {
  std::size_t out = 0;
  if (!pending()) {
    pend_.clear();
    pend_at_ = 0;
    mmsghdr msgs[kGroTrains];
    iovec iov[kGroTrains];
    sockaddr_storage from[kGroTrains];
    alignas(cmsghdr) char ctl[kGroTrains][CMSG_SPACE(sizeof(int))];
    for (std::size_t i = 0; i < kGroTrains; ++i) {
      iov[i] = {gro_buf_.data() + i * kGroTrainBytes, kGroTrainBytes};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
      msgs[i].msg_hdr.msg_control = ctl[i];
      msgs[i].msg_hdr.msg_controllen = sizeof ctl[i];
    }
    const int r = ::recvmmsg(fd_, msgs, kGroTrains, MSG_DONTWAIT, nullptr);
    for (int i = 0; i < r; ++i) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        rx_discarded_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Train t;
      t.off = static_cast<std::size_t>(i) * kGroTrainBytes;
      t.len = msgs[i].msg_len;
      t.seg = t.len;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
          int seg = 0;
          std::memcpy(&seg, CMSG_DATA(c), sizeof seg);
          if (seg > 0) t.seg = static_cast<std::size_t>(seg);
        }
      }
      from_sockaddr(from[i], t.peer, t.port);
      if (t.seg < t.len) gro_trains_.fetch_add(1, std::memory_order_relaxed);
      pend_.push_back(t);
    }
  }
  // Cut the trains into datagrams, as many as the batch has room for.
  while (out < pkts.size() && pend_at_ < pend_.size()) {
    Train& t = pend_[pend_at_];
    if (t.len == 0) {
      ++pend_at_;
      continue;
    }
    const std::size_t n = std::min(t.seg, t.len);
    core::Packet* p = pkts[out];
    p->reset();
    if (n <= core::Packet::kMaxData) {
      std::memcpy(p->recv_area().data(), gro_buf_.data() + t.off, n);
      p->len = n;
      p->peer = t.peer;
      p->peer_port = t.port;
      ++out;
    } else {
      rx_discarded_.fetch_add(1, std::memory_order_relaxed);  // larger than a packet buffer (a jumbo link)
    }
    t.off += n;
    t.len -= n;
  }
  return out;
}

std::size_t EspSocket::recv_batch(std::span<core::Packet*> pkts) {
  if (gro_) return recv_gro(pkts);
  mmsghdr msgs[kMaxBatch];
  iovec iov[kMaxBatch];
  sockaddr_storage from[kMaxBatch];
  const std::size_t n = std::min(pkts.size(), kMaxBatch);
  for (std::size_t i = 0; i < n; ++i) {
    pkts[i]->reset();
    auto area = pkts[i]->recv_area();
    iov[i] = {area.data(), area.size()};
    msgs[i] = {};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &from[i];
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
  }
  int r = ::recvmmsg(fd_, msgs, static_cast<unsigned>(n), MSG_DONTWAIT, nullptr);
  if (r <= 0) return 0;
  std::size_t out = 0;
  std::uint64_t discarded = 0;
  for (int i = 0; i < r; ++i) {
    core::Packet* p = pkts[static_cast<std::size_t>(i)];
    ++discarded;  // until taken below
    if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) continue;  // larger than any packet we take
    p->len = msgs[i].msg_len;
    from_sockaddr(from[i], p->peer, p->peer_port);
    if (kind_ == Kind::kAh && !local_.is_v4()) {
      // The kernel gives IPv6 raw sockets what follows the fixed header
      // (and has taken any extension headers before AH away): build the
      // header again from the addresses. Traffic class, flow label and hop
      // limit are outside the ICV.
      if (p->len > 0xffff || p->off < 40) continue;
      p->off -= 40;
      core::write_ip_header(p->data(), p->peer, local_, 51, p->len);
      p->len += 40;
    }
    if (kind_ == Kind::kRaw && local_.is_v4()) {
      // Raw IPv4 sockets deliver the IP header; IPv6 ones do not.
      if (p->len < 20) continue;
      std::size_t ihl = std::size_t{p->data()[0] & 0x0fu} * 4;
      if (ihl < 20 || ihl > p->len) continue;
      p->off += ihl;
      p->len -= ihl;
    }
    if (static_cast<std::size_t>(i) != out) std::swap(pkts[out], pkts[static_cast<std::size_t>(i)]);
    ++out;
    --discarded;
  }
  if (discarded) rx_discarded_.fetch_add(discarded, std::memory_order_relaxed);
  return out;
}

std::size_t EspSocket::send_batch(std::span<core::Packet* const> pkts) {
  return gso_ ? send_gso(pkts) : send_plain(pkts);
}

std::size_t EspSocket::send_gso(std::span<core::Packet* const> pkts) {
  // Runs of packets to one peer, all of one size but the last (no larger),
  // go as one datagram call with UDP_SEGMENT; the kernel (or the device)
  // cuts them again.
  mmsghdr msgs[kMaxBatch];
  iovec iov[kMaxBatch];
  sockaddr_storage to[kMaxBatch];
  alignas(cmsghdr) char ctl[kMaxBatch][CMSG_SPACE(sizeof(std::uint16_t))];
  std::size_t first_of[kMaxBatch + 1];
  std::size_t sent = 0, refused = 0;
  while (sent < pkts.size()) {
    std::size_t m = 0, k = 0;  // messages, packets (iovecs)
    const std::size_t base = sent;
    while (base + k < pkts.size() && m < kMaxBatch && k < kMaxBatch) {
      core::Packet* p = pkts[base + k];
      first_of[m] = k;
      const std::size_t size = p->len;
      std::size_t total = 0, count = 0;
      while (base + k < pkts.size() && k < kMaxBatch && count < kGsoMaxSegments) {
        core::Packet* q = pkts[base + k];
        if (count > 0 && (q->len > size || q->peer_port != p->peer_port || !(q->peer == p->peer) ||
                          total + q->len > kGsoMaxBytes))
          break;
        iov[k] = {q->data(), q->len};
        total += q->len;
        ++k;
        ++count;
        if (q->len < size) break;  // a shorter one ends the run
      }
      msgs[m] = {};
      msgs[m].msg_hdr.msg_iov = &iov[first_of[m]];
      msgs[m].msg_hdr.msg_iovlen = count;
      msgs[m].msg_hdr.msg_name = &to[m];
      msgs[m].msg_hdr.msg_namelen = to_sockaddr(p->peer, p->peer_port, to[m]);
      if (count > 1) {
        msgs[m].msg_hdr.msg_control = ctl[m];
        msgs[m].msg_hdr.msg_controllen = sizeof ctl[m];
        cmsghdr* c = CMSG_FIRSTHDR(&msgs[m].msg_hdr);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
        const auto seg = static_cast<std::uint16_t>(size);
        std::memcpy(CMSG_DATA(c), &seg, sizeof seg);
      }
      ++m;
    }
    first_of[m] = k;
    const int r = ::sendmmsg(fd_, msgs, static_cast<unsigned>(m), 0);
    if (r <= 0) {
      const std::size_t count = first_of[1] - first_of[0];
      if (count > 1 && (errno == EIO || errno == EOPNOTSUPP || errno == ENOPROTOOPT)) {
        // The device cannot take GSO (no checksum offload): one datagram
        // per packet from here on.
        gso_ = false;
        return sent - refused + send_plain(pkts.subspan(sent));
      }
      if (count > 1 && errno == EINVAL) {
        // This train is too large for its path (a small PMTU to one
        // peer): it goes packet by packet; GSO stays on for the others.
        const std::size_t ok = send_plain(pkts.subspan(sent, count));
        refused += count - ok;
        sent += count;
        continue;
      }
      sent += count;  // refused; the rest still go
      refused += count;
      continue;
    }
    for (int i = 0; i < r; ++i)
      if (first_of[i + 1] - first_of[i] > 1) gso_trains_.fetch_add(1, std::memory_order_relaxed);
    sent += first_of[static_cast<std::size_t>(r)];
  }
  return sent - refused;
}

std::size_t EspSocket::send_plain(std::span<core::Packet* const> pkts) {
  mmsghdr msgs[kMaxBatch];
  iovec iov[kMaxBatch];
  sockaddr_storage to[kMaxBatch];
  std::size_t sent = 0, refused = 0;
  while (sent < pkts.size()) {
    const std::size_t n = std::min(pkts.size() - sent, kMaxBatch);
    for (std::size_t i = 0; i < n; ++i) {
      core::Packet* p = pkts[sent + i];
      iov[i] = {p->data(), p->len};
      msgs[i] = {};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &to[i];
      msgs[i].msg_hdr.msg_namelen = to_sockaddr(p->peer, kind_ == Kind::kUdp ? p->peer_port : 0, to[i]);
    }
    int r = ::sendmmsg(fd_, msgs, static_cast<unsigned>(n), 0);
    if (r <= 0) {
      // Skip the packet the kernel refused (e.g. no route, too big for a
      // header-included send) and go on; the caller counts it.
      ++sent;
      ++refused;
      continue;
    }
    sent += static_cast<std::size_t>(r);
  }
  return sent - refused;
}

bool EspSocket::send_to(core::ByteSpan data, const core::IpAddress& dst, std::uint16_t port) {
  sockaddr_storage ss;
  socklen_t sl = to_sockaddr(dst, kind_ == Kind::kUdp ? port : 0, ss);
  return ::sendto(fd_, data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss), sl) ==
         static_cast<ssize_t>(data.size());
}

std::unique_ptr<BypassSocket> BypassSocket::open(std::uint32_t fwmark, std::string& err) {
  int fd4 = ::socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  int fd6 = ::socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (fd4 < 0 || fd6 < 0) {
    err = std::string("raw socket: ") + std::strerror(errno);
    if (fd4 >= 0) ::close(fd4);
    if (fd6 >= 0) ::close(fd6);
    return nullptr;
  }
  if (!set_mark(fd4, fwmark, err) || !set_mark(fd6, fwmark, err)) {
    ::close(fd4);
    ::close(fd6);
    return nullptr;
  }
  return std::unique_ptr<BypassSocket>(new BypassSocket(fd4, fd6));
}

BypassSocket::~BypassSocket() {
  ::close(fd4_);
  ::close(fd6_);
}

bool BypassSocket::send(core::ByteSpan pkt) {
  core::PacketInfo info;
  if (core::parse_ip_packet(pkt, info) != core::IpParseError::kNone) return false;
  sockaddr_storage ss;
  socklen_t sl = to_sockaddr(info.dst, 0, ss);
  int fd = info.family == core::Family::V4 ? fd4_ : fd6_;
  return ::sendto(fd, pkt.data(), info.total_len, 0, reinterpret_cast<sockaddr*>(&ss), sl) ==
         static_cast<ssize_t>(info.total_len);
}

}  // namespace ipsecgw::tun
