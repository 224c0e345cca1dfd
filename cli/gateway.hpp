// The running gateway: TUN device, sockets, data-plane workers and the
// control plane, composed from a validated configuration.
//
// Threads:
//   - the control thread runs a Boost.Asio io_context: signals, timers,
//     statistics, the control and metrics sockets, the IKE engine and its
//     port 500 sockets; it installs SAs into the DataPlane;
//   - `dataplane.workers` data-plane workers (cli/gateway_workers.cpp), one
//     per TUN queue, each with its own UDP socket of a SO_REUSEPORT group
//     steered by SPI: worker w encrypts what its queue gives it (with its
//     own crypto lane of each outbound SA) and decrypts the inbound SAs
//     whose SPI maps to it (each inbound SA and its replay window has one
//     owner); worker 0 also reads the raw ESP and AH sockets.
// Workers read the DataPlane snapshot once per batch and never wait on the
// control thread. Files: setup, run and statistics (gateway.cpp), workers
// (gateway_workers.cpp), the IKE driver (gateway_ike.cpp), control verbs
// (gateway_control.cpp), metrics (gateway_metrics.cpp).
#pragma once

#include <atomic>
#include <functional>
#include <deque>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/control.hpp"
#include "cli/keylog.hpp"
#include "core/spsc_ring.hpp"
#include "config/config.hpp"
#include "esp/dataplane.hpp"
#include "ike/engine.hpp"
#include "tun/linux_tun.hpp"
#include "tun/sockets.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace ipsecgw::cli {

// Drops every capability but CAP_NET_ADMIN, CAP_NET_RAW and
// CAP_NET_BIND_SERVICE from the bounding, permitted and effective sets.
bool drop_capabilities(std::string& why);

// Packets a data-plane worker takes at once: room for a TSO super-packet's
// segments (the TUN device's gso_max_segs is set to it).
inline constexpr unsigned kWorkerBatch = 128;
// What the hand-off rings into one worker hold at most, in slot bytes
// (at least 256 packets a ring): 4 MiB, 2,048 packets at MTU 1400.
inline constexpr std::size_t kHandoffBytes = std::size_t{4} << 20;

struct GatewayCounters {
  std::atomic<std::uint64_t> keepalives_received{0};
  std::atomic<std::uint64_t> keepalives_sent{0};
  std::atomic<std::uint64_t> ike_ignored{0};
  std::atomic<std::uint64_t> ike_queue_full{0};      // dropped: queue for existing SAs full
  std::atomic<std::uint64_t> ike_queue_new_full{0};  // dropped: queue for new SAs full
  std::atomic<std::uint64_t> control_sessions_refused{0};  // control_sessions reached
  std::atomic<std::uint64_t> metrics_sessions_refused{0};  // metrics_sessions reached
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> ike_send_failed{0};  // IKE datagrams the socket would not send             // accept() failed (EMFILE...); retried with back-off
  std::atomic<std::uint64_t> bypassed{0};
  std::atomic<std::uint64_t> tun_write_failed{0};
  std::atomic<std::uint64_t> handoffs{0};      // packets handed to the worker that owns their SA
  std::atomic<std::uint64_t> handoff_full{0};  // a packet for another worker's SA found its ring full
};

class Gateway {
 public:
  Gateway(config::Config cfg, std::string stats_file);
  ~Gateway();
  // Sets everything up and runs until SIGINT/SIGTERM. Returns the exit code.
  int run();
  // Statistics as JSON (also what --stats-file holds).
  [[nodiscard]] nlohmann::json stats();
  // A control-socket request (see cli/control.hpp); runs on the control thread.
  nlohmann::json handle_control(const nlohmann::json& req);
  // Where the configuration came from, for reload.
  void set_config_path(std::string p) { config_path_ = std::move(p); }
  // Re-reads the configuration: connections added, changed and removed take
  // effect, untouched ones keep their SAs; routes follow.
  nlohmann::json reload();
  // The Prometheus text page (the same counters as `stats`, and
  // per-connection gauges).
  std::string prometheus();

 private:
  bool setup(std::string& err);
  void worker_loop(unsigned w);
  tun::EspSocket* socket_for(const core::SaParams& p) const;
  // The socket worker w sends an SA's packets on (its own UDP socket).
  tun::EspSocket* tx_socket(const core::SaParams& p, unsigned w) const;
  void watch_ike_socket(std::size_t i);  // port 500, on the control thread
  static tun::EspSocket::Kind socket_kind(const core::SaParams& p);
  void write_stats();
  nlohmann::json control_status();
  nlohmann::json control_sa();
  nlohmann::json control_stats();
  void serve_metrics(boost::asio::ip::tcp::acceptor& acc);
  void send_keepalives();
  // IKE: datagrams from the RX worker are queued and handled on the control
  // thread, which owns the engine; output goes out through the sockets.
  void queue_ike(ike::Datagram d);
  void drain_ike();
  static ike::EngineOptions engine_options(const config::LimitsConfig& l);
  void flush_ike();
  [[nodiscard]] nlohmann::json ike_stats() const;
  void arm_ike_timer();
  void after_engine();  // flush IKE output, release held packets, re-arm the timer
  void queue_acquire(std::vector<std::pair<std::string, core::Bytes>> pkts);

  // Records the names of installed SAs, so that packets held for a trap
  // policy are released once its Child SA is up.
  struct RecordingInstaller : core::SaInstaller {
    RecordingInstaller(esp::DataPlane& d, KeyLog* k) : dp(d), keylog(k) {}
    bool install(core::SaParams p, std::string& why) override {
      std::string name = p.name;
      if (keylog) keylog->esp(p);
      if (!dp.install(std::move(p), why)) return false;
      installed.push_back(std::move(name));
      return true;
    }
    bool remove(const std::string& name) override { return dp.remove(name); }
    bool remove_rekeyed(const std::string& name) override { return dp.remove_rekeyed(name); }
    bool update_path(const std::string& name, const core::SaPath& path) override { return dp.update_path(name, path); }
    esp::DataPlane& dp;
    KeyLog* keylog;
    std::vector<std::string> installed;
  };
  static constexpr std::size_t kMaxHeld = 32;

  config::Config cfg_;
  std::string stats_file_;
  std::string config_path_;
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<esp::DataPlane> dp_;
  std::vector<std::unique_ptr<tun::LinuxTun>> tun_;
  std::unique_ptr<tun::LinkSetup> link_;
  std::vector<std::unique_ptr<tun::EspSocket>> sockets_;  // worker 0's, and the raw ones
  unsigned nworkers_ = 1;
  std::vector<std::vector<std::unique_ptr<tun::EspSocket>>> worker_udp_;  // [w]: worker w's UDP sockets (w >= 1)
  // Hand-off rings: [src * nworkers_ + dst] carries packets worker src read
  // for an SA that worker dst owns; worker_wake_[dst] (eventfd) wakes it.
  std::vector<std::unique_ptr<core::SpscPacketRing>> rings_;
  // The same for ESP received in UDP: the kernel's GRO trains are steered
  // by their first packet's SPI, so a train from a peer with several SAs
  // may hold another worker's; [src * nworkers_ + dst] carries those.
  std::vector<std::unique_ptr<core::SpscPacketRing>> rx_rings_;
  std::vector<int> worker_wake_;
  std::vector<std::unique_ptr<boost::asio::posix::stream_descriptor>> ike_watch_;
  std::vector<std::unique_ptr<core::Packet>> ike_pkts_;  // the control thread's receive buffers
  std::unique_ptr<tun::BypassSocket> bypass_;
  std::vector<std::unique_ptr<tun::EspSocket>> ike_sockets_;  // UDP port 500
  std::unique_ptr<KeyLog> keylog_;
  std::unique_ptr<RecordingInstaller> installer_;
  std::unique_ptr<ike::Engine> engine_;
  int wake_fd_ = -1;  // eventfd: wakes the TX worker for re-injected packets
  std::mutex held_mutex_;
  std::map<std::string, std::vector<core::Bytes>> held_;  // by "connection/child"
  std::deque<core::Bytes> reinject_;
  std::unique_ptr<boost::asio::io_context> io_;
  std::function<void()> rearm_ike_;
  // IKE datagrams from the RX worker for the engine (control thread). Those
  // for existing SAs go first and have their own budget; those that would
  // start a new SA (IKE_SA_INIT, Main/Aggressive Mode message 1) are taken
  // a bounded number per turn, so a flood of them never delays the DPD,
  // rekey and DELETE messages of established SAs.
  std::mutex ike_mutex_;
  std::deque<ike::Datagram> ike_queue_;      // for existing SAs
  std::deque<ike::Datagram> ike_queue_new_;  // that would make a new SA
  bool ike_drain_posted_ = false;            // under ike_mutex_
  std::atomic<std::size_t> ike_queue_cap_{4096}, ike_queue_new_cap_{256};  // limits, set at start and reload
  std::atomic<bool> stop_{false};
  std::vector<std::thread> workers_;
  GatewayCounters gw_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace ipsecgw::cli
