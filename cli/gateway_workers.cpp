// The gateway's data-plane workers. Worker w owns TUN queue w and, on each
// local address, UDP socket w of a SO_REUSEPORT group steered by SPI (so
// every inbound SA has exactly one worker: the one its SPI maps to);
// worker 0 also owns the raw ESP and AH sockets (the kernel gives every raw
// socket a copy, so one reads them) and re-injects packets held for trap
// policies. Each worker:
//   TUN queue -> SPD -> the SA's owner? -> ESP/AH -> sockets
//                           \-> not this worker: its hand-off ring, where
//                                the owner takes it up (SPD again, then ESP)
//   its sockets -> ESP/AH -> its TUN queue (any queue may be written);
// An outbound SA is encrypted by its owner only, so its sequence numbers
// leave in order; every worker still has its own crypto lane of each SA,
// so a packet that meets a changed snapshot on the owner is safe too.
// IKE messages on port 4500 are handed to the control thread's queues.
// The snapshot is taken once per batch (DataPlane::enter: no lock, no
// reference count) and let go before waiting (leave); nothing on this path
// locks.
#include "cli/gateway.hpp"

#include <utility>
#include <poll.h>
#include <unistd.h>

#include <boost/asio.hpp>

#include "core/log.hpp"
#include "esp/natt.hpp"

namespace ipsecgw::cli {

namespace {
constexpr std::size_t kBatch = kWorkerBatch;
constexpr int kPollMs = 200;  // how quickly a worker notices stop_
}  // namespace

tun::EspSocket* Gateway::tx_socket(const core::SaParams& p, unsigned w) const {
  if (w > 0 && socket_kind(p) == tun::EspSocket::Kind::kUdp) {
    for (const auto& s : worker_udp_[w])
      if (s->local() == p.local_addr) return s.get();
  }
  return socket_for(p);
}

void Gateway::worker_loop(unsigned w) {
  std::vector<std::unique_ptr<core::Packet>> storage;
  std::vector<core::Packet*> pkts;
  for (std::size_t i = 0; i < kBatch; ++i) {
    storage.push_back(std::make_unique<core::Packet>());
    pkts.push_back(storage.back().get());
  }
  tun::LinuxTun& dev = *tun_[w];
  // What this worker reads: its TUN queue, its sockets, and (worker 0) the
  // wake-up for re-injected packets.
  std::vector<tun::EspSocket*> rx;
  if (w == 0) {
    for (const auto& s : sockets_) rx.push_back(s.get());
  } else {
    for (const auto& s : worker_udp_[w]) rx.push_back(s.get());
  }
  std::vector<pollfd> pfds;
  pfds.push_back({dev.fd(), POLLIN, 0});
  pfds.push_back({w == 0 ? wake_fd_ : -1, POLLIN, 0});
  pfds.push_back({worker_wake_[w], POLLIN, 0});
  constexpr std::size_t kRxAt = 3;
  for (auto* s : rx) pfds.push_back({s->fd(), POLLIN, 0});
  std::uint64_t woken = 0;  // bit per worker handed packets in this batch
  // Outbound packets grouped by the socket that sends them.
  std::vector<tun::EspSocket*> out_socks;
  std::vector<std::vector<core::Packet*>> per_socket;
  std::vector<std::pair<std::string, core::Bytes>> acquired;
  std::vector<core::Packet*> to_tun;
  core::log::RateLimited ike_log(std::chrono::seconds(10));

  // Wakes the workers whose bits are set (eventfd; the one that pushed to
  // their hand-off rings, or this one when its rings hold more).
  std::uint64_t handed_n = 0;  // packets handed over, added to gw_.handoffs when waking
  auto wake = [&](std::uint64_t bits) {
    if (handed_n) gw_.handoffs.fetch_add(std::exchange(handed_n, 0), std::memory_order_relaxed);
    for (unsigned o = 0; o < nworkers_; ++o) {
      if (!(bits & (std::uint64_t{1} << o))) continue;
      const std::uint64_t one = 1;
      (void)::write(worker_wake_[o], &one, sizeof one);
    }
  };
  // One batch from each ring into this worker; more left wakes it again at
  // once, so that busy producers never starve its own queue and sockets.
  auto drain = [&](std::vector<std::unique_ptr<core::SpscPacketRing>>& rings, auto&& handle) {
    for (unsigned src = 0; src < nworkers_; ++src) {
      if (src == w) continue;
      core::SpscPacketRing& ring = *rings[src * nworkers_ + w];
      std::size_t n = 0;
      while (n < pkts.size() && ring.pop(*pkts[n])) ++n;
      if (n) handle(n);
      if (!ring.empty()) wake(std::uint64_t{1} << w);
    }
  };
  // `handed`: the packets came from another worker's ring; they are sealed
  // here whoever owns their SA now (no second hand-off).
  auto outbound = [&](std::size_t n, bool handed) {
    const esp::Snapshot& snap = dp_->enter(w);
    for (auto& group : per_socket) group.clear();
    acquired.clear();
    woken = 0;
    for (std::size_t i = 0; i < n; ++i) {
      core::Packet* p = pkts[i];
      esp::OutDecision d = dp_->classify_outbound(snap, *p);
      if (d.action == esp::OutAction::kBypass) {
        if (bypass_->send(p->span())) {
          gw_.bypassed.fetch_add(1, std::memory_order_relaxed);
        } else {
          dp_->count_global(core::Drop::kSendFailed);
        }
        continue;
      }
      if (d.action == esp::OutAction::kAcquire) {
        const auto sp = p->span();
        acquired.emplace_back(d.policy->name, core::Bytes(sp.begin(), sp.end()));
        continue;
      }
      if (d.action != esp::OutAction::kSend) continue;
      if (const unsigned owner = d.sa->owner(); !handed && owner != w && owner < nworkers_) {
        if (rings_[w * nworkers_ + owner]->push(*p)) {
          woken |= std::uint64_t{1} << owner;
          ++handed_n;
        } else {
          gw_.handoff_full.fetch_add(1, std::memory_order_relaxed);
          dp_->count_global(core::Drop::kSendFailed);
        }
        continue;
      }
      d = dp_->seal_outbound(d, *p, w);
      if (d.action != esp::OutAction::kSend) continue;
      const auto& params = d.sa->params();
      p->peer = params.remote_addr;
      p->peer_port = params.remote_port;
      tun::EspSocket* s = tx_socket(params, w);
      if (!s) {
        dp_->count_global(core::Drop::kSendFailed);  // no socket of its kind on its address
        continue;
      }
      std::size_t k = 0;
      while (k < out_socks.size() && out_socks[k] != s) ++k;
      if (k == out_socks.size()) {
        out_socks.push_back(s);
        per_socket.emplace_back();
      }
      per_socket[k].push_back(p);
    }
    for (std::size_t k = 0; k < out_socks.size(); ++k) {
      if (per_socket[k].empty()) continue;
      const std::size_t sent = out_socks[k]->send_batch(per_socket[k]);
      for (std::size_t i = sent; i < per_socket[k].size(); ++i) dp_->count_global(core::Drop::kSendFailed);
    }
    if (!acquired.empty()) queue_acquire(std::move(acquired));
    wake(woken);
  };
  // Packets other workers handed over for the SAs this one owns.
  auto take_handed = [&] { drain(rings_, [&](std::size_t n) { outbound(n, true); }); };

  std::uint64_t woken_rx = 0;  // bit per worker handed received ESP
  auto flush_to_tun = [&] {
    if (!to_tun.empty()) {
      const std::size_t written = dev.write_batch(to_tun);
      gw_.tun_write_failed.fetch_add(to_tun.size() - written, std::memory_order_relaxed);
    }
    wake(woken_rx);
    woken_rx = 0;
  };
  auto inbound = [&](tun::EspSocket& sock) {
    const std::size_t n = sock.recv_batch(pkts);
    if (n == 0) return;
    const esp::Snapshot& snap = dp_->enter(w);
    to_tun.clear();
    for (std::size_t i = 0; i < n; ++i) {
      core::Packet* p = pkts[i];
      if (sock.kind() == tun::EspSocket::Kind::kUdp) {
        const auto c = esp::classify_udp(p->span());
        if (c.kind == esp::UdpKind::kKeepalive) {
          gw_.keepalives_received.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (c.kind == esp::UdpKind::kIke && engine_) {
          queue_ike({{sock.local(), cfg_.udp_encap.port}, {p->peer, p->peer_port},
                     core::Bytes(c.payload.begin(), c.payload.end())});
          continue;
        }
        if (c.kind == esp::UdpKind::kIke) {
          gw_.ike_ignored.fetch_add(1, std::memory_order_relaxed);
          std::uint64_t suppressed = 0;
          if (ike_log.allow(suppressed)) {
            core::log::warn("gateway", "IKE message from ", p->peer.to_string(),
                            " ignored: no IKE connection is configured");
          }
          continue;
        }
        if (c.kind == esp::UdpKind::kMalformed) {
          dp_->count_global(core::Drop::kMalformed);
          continue;
        }
      }
      if (sock.kind() == tun::EspSocket::Kind::kUdp && nworkers_ > 1 && p->len >= 4) {
        // Another worker's SA, in a GRO train steered by another SPI.
        const unsigned owner = core::load_be32(p->data()) % nworkers_;
        if (owner != w) {
          if (rx_rings_[w * nworkers_ + owner]->push(*p)) {
            woken_rx |= std::uint64_t{1} << owner;
            ++handed_n;
          } else {
            gw_.handoff_full.fetch_add(1, std::memory_order_relaxed);
          }
          continue;
        }
      }
      const core::Drop d =
          sock.kind() == tun::EspSocket::Kind::kAh
              ? dp_->process_inbound_ah(snap, *p)
              : dp_->process_inbound(snap, *p,
                                     sock.kind() == tun::EspSocket::Kind::kUdp ? esp::DataPlane::Via::kUdp
                                                                               : esp::DataPlane::Via::kRaw);
      if (d == core::Drop::kNone) to_tun.push_back(p);
    }
    flush_to_tun();
  };
  // ESP in UDP other workers received for the SAs this one owns.
  auto take_handed_rx = [&] {
    drain(rx_rings_, [&](std::size_t n) {
      const esp::Snapshot& snap = dp_->enter(w);
      to_tun.clear();
      for (std::size_t i = 0; i < n; ++i)
        if (dp_->process_inbound(snap, *pkts[i], esp::DataPlane::Via::kUdp) == core::Drop::kNone)
          to_tun.push_back(pkts[i]);
      flush_to_tun();
    });
  };

  while (!stop_.load(std::memory_order_relaxed)) {
    dp_->leave(w);  // holds no snapshot while it waits
    if (::poll(pfds.data(), pfds.size(), kPollMs) <= 0) continue;
    if (pfds[1].revents & POLLIN) {
      // Packets held for a trap policy whose SA is now up.
      std::uint64_t v = 0;
      (void)::read(wake_fd_, &v, sizeof v);
      std::size_t n = 0;
      {
        std::lock_guard<std::mutex> lock(held_mutex_);
        while (n < pkts.size() && !reinject_.empty()) {
          pkts[n++]->assign(reinject_.front());
          reinject_.pop_front();
        }
        if (!reinject_.empty()) {
          v = 1;
          (void)::write(wake_fd_, &v, sizeof v);
        }
      }
      if (n) outbound(n, false);
    }
    if (pfds[2].revents & POLLIN) {
      std::uint64_t v = 0;
      (void)::read(worker_wake_[w], &v, sizeof v);
    }
    if (nworkers_ > 1) {
      take_handed();
      take_handed_rx();
    }
    if (pfds[0].revents & POLLIN) {
      do {
        if (const std::size_t n = dev.read_batch(pkts)) outbound(n, false);
      } while (dev.pending());  // the rest of a super-packet
    }
    for (std::size_t k = 0; k < rx.size(); ++k) {
      if (!(pfds[k + kRxAt].revents & POLLIN)) continue;
      do {
        inbound(*rx[k]);
      } while (rx[k]->pending());  // the rest of the trains received (UDP GRO)
    }
  }
  dp_->leave(w);
}

void Gateway::queue_acquire(std::vector<std::pair<std::string, core::Bytes>> pkts) {
  {
    std::lock_guard<std::mutex> lock(held_mutex_);
    for (auto& [name, bytes] : pkts) {
      auto& q = held_[name];
      if (q.size() >= kMaxHeld) {
        dp_->count_global(core::Drop::kNoSa);  // held queue full: the oldest stay
        continue;
      }
      q.push_back(std::move(bytes));
    }
  }
  std::vector<std::string> names;
  for (auto& [name, bytes] : pkts) names.push_back(name);
  boost::asio::post(*io_, [this, names = std::move(names)] {
    for (const auto& name : names) {
      const auto slash = name.find('/');
      engine_->acquire(name.substr(0, slash), name.substr(slash + 1), ike::Clock::now());
    }
    after_engine();
  });
}

}  // namespace ipsecgw::cli
