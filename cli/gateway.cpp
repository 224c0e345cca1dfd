// The gateway: setup (TUN, routes, sockets, the IKE engine, manual SAs), its
// threads (TX: TUN -> SPD -> ESP/AH -> sockets; RX: sockets -> ESP/AH ->
// TUN; the control thread), the statistics file and reload. Elsewhere:
// the IKE driver (gateway_ike.cpp), the control verbs' answers
// (gateway_control.cpp), the metrics endpoint (gateway_metrics.cpp).
#include "cli/gateway.hpp"

#include <poll.h>
#include <linux/capability.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "esp/natt.hpp"

namespace ipsecgw::cli {

bool drop_capabilities(std::string& why) {
  static constexpr int kKeep[] = {CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE};
  auto keep = [](int cap) {
    for (int k : kKeep)
      if (k == cap) return true;
    return false;
  };
  int last = CAP_LAST_CAP;
  if (std::ifstream f("/proc/sys/kernel/cap_last_cap"); f) f >> last;
  for (int cap = 0; cap <= last; ++cap) {
    if (keep(cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      why = std::string("PR_CAPBSET_DROP: ") + std::strerror(errno);
      return false;
    }
  }
  __user_cap_header_struct hdr{};
  hdr.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[2] = {};
  for (int k : kKeep) {
    data[k / 32].effective |= 1u << (k % 32);
    data[k / 32].permitted |= 1u << (k % 32);
  }
  if (::syscall(SYS_capset, &hdr, data) != 0) {
    why = std::string("capset: ") + std::strerror(errno);
    return false;
  }
  core::log::info("gateway", "capabilities dropped to CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE");
  return true;
}

namespace {

// The SPD's trap policies: one per child with start_action "trap".
std::vector<core::Policy> trap_policies(const std::vector<ike::ConnectionConfig>& conns) {
  std::vector<core::Policy> traps;
  for (const auto& c : conns) {
    for (const auto& ch : c.children) {
      if (ch.start_action != ike::StartAction::kTrap) continue;
      core::Policy p;
      p.name = c.name + "/" + ch.name;
      p.sel.local = ch.local_ts;
      p.sel.remote = ch.remote_ts;
      p.sel.proto = ch.ts_proto;
      p.sel.local_ports = ch.local_ports;
      p.sel.remote_ports = ch.remote_ports;
      traps.push_back(std::move(p));
    }
  }
  return traps;
}

void add_to(nlohmann::json& j, const core::TrafficCounters& c) {
  auto add = [&](const char* k, std::uint64_t v) { j[k] = j.value(k, std::uint64_t{0}) + v; };
  add("packets_out", c.out.packets.load());
  add("bytes_out", c.out.bytes.load());
  add("packets_in", c.in.packets.load());
  add("bytes_in", c.in.bytes.load());
  auto& drops = j["drops"];
  if (drops.is_null()) drops = nlohmann::json::object();
  for (std::size_t i = 1; i < core::kDropCount; ++i) {
    auto key = std::string(core::key_of(static_cast<core::Drop>(i)));
    drops[key] = drops.value(key, std::uint64_t{0}) + c.drops[i].load();
  }
}

}  // namespace

Gateway::Gateway(config::Config cfg, std::string stats_file)
    : cfg_(std::move(cfg)), stats_file_(std::move(stats_file)) {}

Gateway::~Gateway() {
  stop_ = true;
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  for (int fd : worker_wake_) ::close(fd);
}

bool Gateway::setup(std::string& err) {
  nworkers_ = cfg_.dataplane.workers ? cfg_.dataplane.workers : std::max(1u, std::thread::hardware_concurrency());
  nworkers_ = std::min(nworkers_, 64u);
  dp_ = std::make_unique<esp::DataPlane>(cfg_.policies, nworkers_);
  if (!cfg_.keylog.esp.empty() || !cfg_.keylog.ikev2.empty() || !cfg_.keylog.ikev1.empty() ||
      !cfg_.keylog.ah.empty()) {
    keylog_ = std::make_unique<KeyLog>(cfg_.keylog.esp, cfg_.keylog.ikev2, cfg_.keylog.ikev1, cfg_.keylog.ah);
    core::log::warn("gateway", "Wireshark key log enabled (the files hold secret keys):",
                    cfg_.keylog.esp.empty() ? "" : " ESP " + cfg_.keylog.esp,
                    cfg_.keylog.ikev2.empty() ? "" : " IKEv2 " + cfg_.keylog.ikev2,
                    cfg_.keylog.ikev1.empty() ? "" : " IKEv1 " + cfg_.keylog.ikev1,
                    cfg_.keylog.ah.empty() ? "" : " AH " + cfg_.keylog.ah);
  }
  tun_ = tun::LinuxTun::open(cfg_.tun.name, static_cast<int>(nworkers_), err, cfg_.dataplane.offload,
                             cfg_.dataplane.uso);
  if (tun_.empty()) return false;
  tun::LinkSetup::Options lo;
  lo.dev = tun_[0]->name();
  lo.mtu = cfg_.tun.mtu;
  lo.addresses = cfg_.tun.addresses;
  lo.routes = config::protected_routes(cfg_);
  lo.table = cfg_.tun.table;
  lo.fwmark = cfg_.tun.fwmark;
  lo.rule_priority = cfg_.tun.rule_priority;
  lo.txqueuelen = cfg_.tun.txqueuelen;
  if (tun_[0]->offload()) lo.gso_max_segs = kWorkerBatch;
  link_ = std::make_unique<tun::LinkSetup>(lo);
  if (!link_->apply(err)) return false;
  bypass_ = tun::BypassSocket::open(cfg_.tun.fwmark, err);
  if (!bypass_) return false;
  for (auto& sa : cfg_.manual) {
    const auto kind = socket_kind(sa);
    if (!socket_for(sa)) {
      auto s = tun::EspSocket::open(kind, sa.local_addr, cfg_.udp_encap.port, cfg_.tun.fwmark, err, nworkers_ > 1);
      if (!s) return false;
      sockets_.push_back(std::move(s));
    }
  }
  // IKE connections: port 500 for IKE, and both ESP sockets (raw and UDP
  // 4500, which also carries IKE after a NAT is found) on each local address,
  // since NAT detection decides the encapsulation at run time.
  for (const auto& c : cfg_.connections) {
    for (const auto& addr : c.local_addrs) {
      core::SaParams probe;
      probe.local_addr = addr;
      for (auto enc : {core::Encap::kUdp, core::Encap::kNone}) {
        probe.encap = enc;
        if (socket_for(probe)) continue;
        auto s = tun::EspSocket::open(enc == core::Encap::kUdp ? tun::EspSocket::Kind::kUdp
                                                               : tun::EspSocket::Kind::kRaw,
                                      addr, cfg_.udp_encap.port, cfg_.tun.fwmark, err, nworkers_ > 1);
        if (!s) return false;
        sockets_.push_back(std::move(s));
      }
      // AH (raw protocol 51) where a child of the connection may negotiate it.
      probe.protocol = core::IpsecProtocol::kAh;
      const bool ah = std::any_of(c.children.begin(), c.children.end(),
                                  [](const ike::ChildConfig& ch) { return !ch.ah_proposals.empty(); });
      if (ah && !socket_for(probe)) {
        auto s = tun::EspSocket::open(tun::EspSocket::Kind::kAh, addr, cfg_.udp_encap.port, cfg_.tun.fwmark, err);
        if (!s) return false;
        sockets_.push_back(std::move(s));
      }
      bool have = false;
      for (const auto& s : ike_sockets_) have |= s->local() == addr;
      if (!have) {
        auto s = tun::EspSocket::open(tun::EspSocket::Kind::kUdp, addr, c.local_port, cfg_.tun.fwmark, err);
        if (!s) return false;
        ike_sockets_.push_back(std::move(s));
      }
    }
    if (c.local_addrs.empty()) {
      err = "connection " + c.name + ": local_addrs is required";
      return false;
    }
  }
  // The other workers' UDP sockets, in worker order after worker 0's, and
  // the program that steers each datagram to the worker its SPI maps to.
  worker_udp_.resize(nworkers_);
  for (unsigned w = 1; w < nworkers_; ++w)
    for (const auto& s : sockets_) {
      if (s->kind() != tun::EspSocket::Kind::kUdp) continue;
      auto ws = tun::EspSocket::open(tun::EspSocket::Kind::kUdp, s->local(), cfg_.udp_encap.port, cfg_.tun.fwmark,
                                     err, true);
      if (!ws) return false;
      worker_udp_[w].push_back(std::move(ws));
    }
  for (const auto& s : sockets_)
    if (s->kind() == tun::EspSocket::Kind::kUdp && !s->steer_by_spi(nworkers_, err)) return false;
  if (cfg_.dataplane.offload) {
    std::string why;
    bool all = true;
    for (const auto& s : sockets_)
      if (s->kind() == tun::EspSocket::Kind::kUdp) all = s->enable_offload(why) && all;
    for (const auto& ws : worker_udp_)
      for (const auto& s : ws) all = s->enable_offload(why) && all;
    if (!all) core::log::warn("gateway", "UDP segmentation offload not (fully) available: ", why);
  }
  if (!cfg_.connections.empty()) {
    if (auto traps = trap_policies(cfg_.connections); !traps.empty()) dp_->set_trap_policies(std::move(traps));
    installer_ = std::make_unique<RecordingInstaller>(*dp_, keylog_.get());
    ike::EngineOptions opt = engine_options(cfg_.limits);
    ike_queue_cap_ = cfg_.limits.ike_queue;
    ike_queue_new_cap_ = cfg_.limits.ike_queue_new;
    if (keylog_ && keylog_->ike_enabled()) opt.key_logger = [this](const ike::IkeKeyLog& k) { keylog_->ike(k); };
    if (keylog_ && keylog_->ikev1_enabled())
      opt.ikev1_key_logger = [this](std::uint64_t cky_i, core::ByteSpan key) { keylog_->ikev1(cky_i, key); };
    engine_ = std::make_unique<ike::Engine>(std::move(cfg_.connections), *installer_, opt);
    cfg_.connections.clear();
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    err = "eventfd failed";
    return false;
  }
  // Hand-off between workers (an SA's packets are encrypted by its owner).
  // A one-way flow (UDP with no return traffic to steer it) may be read on
  // any queue: each worker's rings from the others together hold up to
  // kHandoffBytes of packets, enough to ride out the owner's absence from
  // a busy CPU (tens of ms at line rate). Slots are allocated at a ring's
  // first use.
  const std::size_t slot = static_cast<std::size_t>(cfg_.tun.mtu) + 64;
  std::size_t slots = 256;
  if (nworkers_ > 1)
    while (slots * 2 * slot * (nworkers_ - 1) <= kHandoffBytes) slots *= 2;
  for (unsigned w = 0; w < nworkers_; ++w) {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) {
      err = "eventfd failed";
      return false;
    }
    worker_wake_.push_back(fd);
  }
  for (unsigned i = 0; i < nworkers_ * nworkers_; ++i) {
    const bool self = i / nworkers_ == i % nworkers_;
    rings_.push_back(self ? nullptr : std::make_unique<core::SpscPacketRing>(slots, slot));
    // Inbound: the largest UDP payload a packet buffer takes.
    rx_rings_.push_back(self ? nullptr : std::make_unique<core::SpscPacketRing>(256, core::Packet::kMaxData));
  }
  for (auto& sa : cfg_.manual) {
    std::string why;
    std::string name = sa.name;
    if (keylog_) keylog_->esp(sa);
    if (!dp_->install(std::move(sa), why)) {
      err = "SA " + name + ": " + why;
      return false;
    }
  }
  cfg_.manual.clear();  // the keys now live only inside the SA crypto contexts
  return true;
}

// AH: raw protocol 51 with the IP header included (the ICV covers it); ESP:
// UDP 4500 or raw protocol 50.
tun::EspSocket::Kind Gateway::socket_kind(const core::SaParams& p) {
  if (p.protocol != core::IpsecProtocol::kEsp) return tun::EspSocket::Kind::kAh;  // AH, AH+ESP
  return p.encap == core::Encap::kUdp ? tun::EspSocket::Kind::kUdp : tun::EspSocket::Kind::kRaw;
}

tun::EspSocket* Gateway::socket_for(const core::SaParams& p) const {
  const auto kind = socket_kind(p);
  for (const auto& s : sockets_) {
    if (s->kind() == kind && s->local() == p.local_addr) return s.get();
  }
  return nullptr;
}

int Gateway::run() {
  started_ = std::chrono::steady_clock::now();
  std::string err;
  if (!setup(err)) {
    core::log::error("gateway", err);
    return 1;
  }
  const std::size_t nsas = dp_->sa_count();
  core::log::info("gateway", "up: ", tun_[0]->name(), ", ", sockets_.size(), " ESP socket",
                  sockets_.size() == 1 ? "" : "s", ", ", nsas, " SA", nsas == 1 ? "" : "s");
  io_ = std::make_unique<boost::asio::io_context>();
  boost::asio::io_context& io = *io_;
  SessionLimits control_limits{cfg_.limits.control_sessions, std::chrono::seconds(cfg_.limits.control_idle_s),
                               &gw_.control_sessions_refused, &gw_.accept_errors};
  control_ = std::make_unique<ControlServer>(
      io, cfg_.control.socket, cfg_.control.mode, [this](const nlohmann::json& r) { return handle_control(r); },
      control_limits);
  if (std::string cerr; !control_->open(cerr)) {
    core::log::warn("gateway", "no control socket: ", cerr);
    control_.reset();
  } else {
    core::log::info("gateway", "control socket ", cfg_.control.socket);
  }
  std::unique_ptr<boost::asio::ip::tcp::acceptor> metrics;
  if (!cfg_.metrics.listen.empty()) {
    const auto colon = cfg_.metrics.listen.rfind(':');
    std::string host = cfg_.metrics.listen.substr(0, colon);
    if (host.front() == '[') host = host.substr(1, host.size() - 2);
    const auto port = static_cast<unsigned short>(std::stoul(cfg_.metrics.listen.substr(colon + 1)));
    boost::system::error_code ec;
    metrics = std::make_unique<boost::asio::ip::tcp::acceptor>(io);
    const boost::asio::ip::tcp::endpoint ep(boost::asio::ip::make_address(host, ec), port);
    if (!ec) metrics->open(ep.protocol(), ec);
    if (!ec) metrics->set_option(boost::asio::ip::tcp::acceptor::reuse_address(true), ec);
    if (!ec) metrics->bind(ep, ec);
    if (!ec) metrics->listen(16, ec);
    if (ec) {
      core::log::warn("gateway", "metrics endpoint ", cfg_.metrics.listen, ": ", ec.message());
      metrics.reset();
    } else {
      core::log::info("gateway", "Prometheus metrics on http://", cfg_.metrics.listen, "/metrics");
      serve_metrics(*metrics);
    }
  }
  // Everything that needs privilege is open; keep only what running needs
  // (routes and marks, raw sockets, port 500 on reload), before any thread
  // starts, since capabilities are per thread.
  if (std::string why; !drop_capabilities(why)) core::log::warn("gateway", "capabilities not dropped: ", why);
  for (unsigned w = 0; w < nworkers_; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  core::log::info("gateway", nworkers_, " data-plane worker", nworkers_ == 1 ? "" : "s");
  for (std::size_t i = 0; i < 16; ++i) ike_pkts_.push_back(std::make_unique<core::Packet>());
  for (const auto& s : ike_sockets_) {
    ike_watch_.push_back(std::make_unique<boost::asio::posix::stream_descriptor>(io, s->fd()));
    watch_ike_socket(ike_watch_.size() - 1);
  }

  boost::asio::steady_timer ike_timer(io);
  std::function<void(const boost::system::error_code&)> on_ike_timer =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        engine_->tick(ike::Clock::now());
        after_engine();
      };
  rearm_ike_ = [&] {
    if (!engine_) return;
    auto next = engine_->next_deadline();
    ike_timer.expires_at(next ? std::min(*next, ike::Clock::now() + std::chrono::seconds(60))
                              : ike::Clock::now() + std::chrono::seconds(60));
    ike_timer.async_wait(on_ike_timer);
  };
  if (engine_) {
    engine_->start(ike::Clock::now());
    after_engine();
  }
  // Shutdown: poll until every DELETE is answered or the deadline passes.
  boost::asio::steady_timer shutdown_timer(io);
  ike::TimePoint shutdown_deadline{};
  std::function<void(const boost::system::error_code&)> on_shutdown_poll =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        if (engine_->shutdown_done() || ike::Clock::now() >= shutdown_deadline) {
          engine_->finish_shutdown();
          flush_ike();
          io.stop();
          return;
        }
        shutdown_timer.expires_after(std::chrono::milliseconds(20));
        shutdown_timer.async_wait(on_shutdown_poll);
      };
  boost::asio::signal_set signals(io, SIGINT, SIGTERM, SIGUSR1);
  signals.add(SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          const auto r = handle_control({{"verb", "reload"}});
          if (!r.value("ok", false)) core::log::warn("gateway", "SIGHUP: ", r.value("error", std::string("reload failed")));
          signals.async_wait(on_signal);
          return;
        }
        if (sig == SIGUSR1) {
          write_stats();
          core::log::info("gateway", "statistics: ", stats().dump());
          if (engine_)
            for (const auto& line : engine_->describe()) core::log::info("ike", line);
          signals.async_wait(on_signal);
          return;
        }
        core::log::info("gateway", "signal ", sig, ": shutting down");
        if (!engine_) {
          io.stop();
          return;
        }
        drain_ike();
        engine_->shutdown(ike::Clock::now());
        after_engine();
        // DELETEs wait for outstanding requests (one at a time, RFC 7296
        // 2.3) and for their answers: IKE keeps running for up to 2 s.
        shutdown_deadline = ike::Clock::now() + std::chrono::seconds(2);
        on_shutdown_poll({});
      };
  signals.async_wait(on_signal);

  boost::asio::steady_timer stats_timer(io);
  std::function<void(const boost::system::error_code&)> on_stats =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        if (engine_) {
          dp_->expire_rekeyed(esp::DataPlane::Clock::now());
          // Byte lifetimes of negotiated Child SAs.
          ike::Engine::ByteUsage usage;
          dp_->for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa& in) {
            usage.emplace(out.params().name, out.counters().out.bytes.load(std::memory_order_relaxed) +
                                                 in.counters().in.bytes.load(std::memory_order_relaxed));
          });
          engine_->bytes_used(usage, ike::Clock::now());
          after_engine();
        }
        write_stats();
        stats_timer.expires_after(std::chrono::seconds(1));
        stats_timer.async_wait(on_stats);
      };
  if (!stats_file_.empty() || engine_) on_stats({});

  boost::asio::steady_timer ka_timer(io);
  std::function<void(const boost::system::error_code&)> on_keepalive =
      [&](const boost::system::error_code& ec) {
        if (ec) return;
        send_keepalives();
        ka_timer.expires_after(std::chrono::seconds(cfg_.udp_encap.keepalive));
        ka_timer.async_wait(on_keepalive);
      };
  if (cfg_.udp_encap.keepalive > 0) on_keepalive({});

  io.run();
  // Every io object goes before the io_context does; the sockets keep
  // their descriptors.
  for (auto& d : ike_watch_) (void)d->release();
  ike_watch_.clear();
  if (control_) control_->close();
  control_.reset();
  if (metrics) metrics->close();
  metrics.reset();
  stop_ = true;
  for (auto& t : workers_) t.join();
  workers_.clear();
  write_stats();
  core::log::info("gateway", "final statistics: ", stats().dump());
  link_->cleanup();
  tun_.clear();
  core::log::info("gateway", "stopped");
  return 0;
}

void Gateway::send_keepalives() {
  static const std::uint8_t kKeepalive[1] = {esp::kKeepaliveByte};
  dp_->for_each_sa([&](const esp::OutboundSa& sa, const esp::InboundSa&) {
    const auto& p = sa.params();
    if (p.encap != core::Encap::kUdp) return;
    if (auto* s = socket_for(p); s && s->send_to(kKeepalive, p.remote_addr, p.remote_port)) {
      gw_.keepalives_sent.fetch_add(1, std::memory_order_relaxed);
    }
  });
}

nlohmann::json Gateway::stats() {
  nlohmann::json j;
  nlohmann::json totals = nlohmann::json::object();
  add_to(totals, dp_->global());
  add_to(totals, dp_->retired());
  nlohmann::json sas = nlohmann::json::array();
  dp_->for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa& in) {
    const auto& p = out.params();
    nlohmann::json s = nlohmann::json::object();
    s["name"] = p.name;
    s["spi_out"] = core::spi_hex(p.out.spi);
    s["spi_in"] = core::spi_hex(p.in.spi);
    if (p.protocol != core::IpsecProtocol::kEsp) s["ah"] = p.ah.name();
    if (p.protocol != core::IpsecProtocol::kAh) s["esp"] = p.transform.name();
    if (p.protocol == core::IpsecProtocol::kAhEsp) {
      s["ah_spi_out"] = core::spi_hex(p.ah_out.spi);
      s["ah_spi_in"] = core::spi_hex(p.ah_in.spi);
    }
    s["mode"] = p.mode == core::SaMode::kTunnel ? "tunnel" : "transport";
    s["encap"] = p.encap == core::Encap::kUdp ? "udp" : "none";
    s["local_addr"] = p.local_addr.to_string();
    s["remote_addr"] = p.remote_addr.to_string();
    s["selectors"] = p.selectors.to_string();
    add_to(s, out.counters());
    add_to(totals, out.counters());
    add_to(s, in.counters());
    add_to(totals, in.counters());
    s["replay_window"] = in.replay().size();
    s["highest_seq_in"] = in.replay().top();
    s["next_seq_out"] = out.next_seq();
    sas.push_back(s);
  });
  j["active_sas"] = sas.size();
  if (engine_) j["ike"] = ike_stats();
  j["totals"] = totals;
  j["sas"] = sas;
  j["keepalives_sent"] = gw_.keepalives_sent.load();
  j["keepalives_received"] = gw_.keepalives_received.load();
  j["ike_ignored"] = gw_.ike_ignored.load();
  j["bypassed"] = gw_.bypassed.load();
  j["tun_write_failed"] = gw_.tun_write_failed.load();
  {
    // The data plane's shape and what the offloads did.
    nlohmann::json d;
    d["workers"] = nworkers_;
    d["tun_offload"] = !tun_.empty() && tun_[0]->offload();
    d["tun_uso"] = !tun_.empty() && tun_[0]->uso();
    std::uint64_t super = 0, segs = 0, co = 0, co_segs = 0, co_udp = 0, co_refused = 0, bad = 0, gso = 0, gro = 0, discarded = 0;
    for (const auto& t : tun_) {
      const auto& st = t->stats();
      super += st.super_packets.load(std::memory_order_relaxed);
      segs += st.segments.load(std::memory_order_relaxed);
      co += st.coalesced.load(std::memory_order_relaxed);
      co_segs += st.coalesced_segments.load(std::memory_order_relaxed);
      co_udp += st.coalesced_udp.load(std::memory_order_relaxed);
      co_refused += st.coalesce_refused.load(std::memory_order_relaxed);
      bad += st.bad_offload.load(std::memory_order_relaxed);
    }
    auto add_sock = [&](const tun::EspSocket& s) {
      gso += s.gso_trains();
      gro += s.gro_trains();
      discarded += s.rx_discarded();
    };
    for (const auto& s : sockets_) add_sock(*s);
    for (const auto& ws : worker_udp_)
      for (const auto& s : ws) add_sock(*s);
    d["tun_super_packets"] = super;
    d["tun_segments"] = segs;
    d["tun_coalesced"] = co;
    d["tun_coalesced_segments"] = co_segs;
    d["tun_coalesced_udp"] = co_udp;
    d["tun_coalesce_refused"] = co_refused;
    d["tun_bad_offload"] = bad;
    d["udp_gso_trains"] = gso;
    d["udp_gro_trains"] = gro;
    d["socket_rx_discarded"] = discarded;
    d["handoffs"] = gw_.handoffs.load();
    d["handoff_full"] = gw_.handoff_full.load();
    j["dataplane"] = d;
  }
  j["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::steady_clock::now() - started_)
                      .count();
  return j;
}

void Gateway::write_stats() {
  if (stats_file_.empty() || !dp_) return;
  const std::string tmp = stats_file_ + ".tmp";
  {
    std::ofstream f(tmp);
    f << stats().dump(2) << "\n";
  }
  std::rename(tmp.c_str(), stats_file_.c_str());
}

nlohmann::json Gateway::reload() {
  if (config_path_.empty()) return {{"ok", false}, {"error", "the configuration file is not known"}};
  auto loaded = config::load_config_file(config_path_);
  if (!loaded.config) {
    std::string why = config_path_ + " has errors, nothing changed:";
    for (const auto& e : loaded.errors) why += " " + e.to_string() + ";";
    core::log::warn("gateway", "reload: ", why);
    return {{"ok", false}, {"error", why}};
  }
  config::Config& next = *loaded.config;
  if (!engine_ && !next.connections.empty())
    return {{"ok", false}, {"error", "this gateway started without IKE connections; restart it to add some"}};
  // Every local address must already have its sockets (they are shared with
  // the data-plane workers and fixed at start).
  for (const auto& c : next.connections) {
    for (const auto& a : c.local_addrs) {
      core::SaParams probe;
      probe.local_addr = a;
      probe.encap = core::Encap::kUdp;
      bool ike500 = false;
      for (const auto& s : ike_sockets_) ike500 |= s->local() == a;
      if (!socket_for(probe) || !ike500)
        return {{"ok", false}, {"error", "connection " + c.name + " uses local address " + a.to_string() +
                                             ", which this gateway has no socket for; restart it"}};
      probe.protocol = core::IpsecProtocol::kAh;
      for (const auto& ch : c.children)
        if (!ch.ah_proposals.empty() && !socket_for(probe))
          return {{"ok", false}, {"error", "child " + c.name + "/" + ch.name + " negotiates AH on " + a.to_string() +
                                               ", which this gateway has no AH socket for; restart it"}};
    }
  }
  std::vector<std::string> notes;
  if (next.tun.name != cfg_.tun.name || next.tun.mtu != cfg_.tun.mtu ||
      next.tun.txqueuelen != cfg_.tun.txqueuelen || next.udp_encap.port != cfg_.udp_encap.port)
    notes.push_back("tun and udp_encap changes take effect at the next restart");
  if (next.dataplane.workers != cfg_.dataplane.workers || next.dataplane.offload != cfg_.dataplane.offload ||
      next.dataplane.uso != cfg_.dataplane.uso)
    notes.push_back("dataplane changes take effect at the next restart");
  core::log::Level level;
  if (core::log::parse_level(next.log_level, level) && next.log_level != cfg_.log_level) {
    core::log::set_level(level);
    cfg_.log_level = next.log_level;
  }
  std::string err;
  auto routes = config::protected_routes(next);
  if (!link_->set_routes(routes, err)) notes.push_back("routes: " + err);
  nlohmann::json result;
  if (next.limits.control_sessions != cfg_.limits.control_sessions ||
      next.limits.metrics_sessions != cfg_.limits.metrics_sessions ||
      next.limits.control_idle_s != cfg_.limits.control_idle_s)
    notes.push_back("limits.control_sessions, metrics_sessions and control_idle_s take effect at the next restart");
  cfg_.limits = next.limits;  // queues and the engine's budgets now
  ike_queue_cap_ = cfg_.limits.ike_queue;
  ike_queue_new_cap_ = cfg_.limits.ike_queue_new;
  if (engine_) {
    engine_->set_budgets(engine_options(cfg_.limits));
    dp_->set_trap_policies(trap_policies(next.connections));
    const auto r = engine_->reload(std::move(next.connections), ike::Clock::now());
    after_engine();
    result = {{"added", r.added}, {"changed", r.changed}, {"removed", r.removed}, {"unchanged", r.unchanged}};
  }
  result["notes"] = notes;
  core::log::info("gateway", "reloaded ", config_path_, ": ", result.dump());
  return {{"ok", true}, {"result", result}};
}

}  // namespace ipsecgw::cli
