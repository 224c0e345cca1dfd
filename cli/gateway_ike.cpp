// The gateway's IKE driver: datagrams from the sockets into two queues (for
// existing SAs, and for new ones, budgeted), the engine run on the control
// thread, and what it sends and installs.
#include "cli/gateway.hpp"

#include <boost/asio.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "esp/natt.hpp"

namespace ipsecgw::cli {

namespace {
// A datagram that would start a new IKE SA: IKEv2 IKE_SA_INIT request with
// no responder SPI, or IKEv1 with no responder cookie (Main or Aggressive
// Mode message 1). Anything else names an SA (or is garbage that the engine
// drops after a map lookup).
bool starts_new_sa(const core::Bytes& m) {
  if (m.size() < 28) return false;
  bool zero_r = true;
  for (std::size_t i = 8; i < 16; ++i) zero_r = zero_r && m[i] == 0;
  if (!zero_r) return false;
  if ((m[17] >> 4) == 1) return true;
  return m[18] == 34 && !(m[19] & 0x20);
}
}  // namespace

ike::EngineOptions Gateway::engine_options(const config::LimitsConfig& l) {
  ike::EngineOptions o;
  o.cookie_threshold = l.cookie_threshold;
  o.max_half_open = l.half_open;
  o.max_half_open_per_source = l.half_open_per_source;
  o.max_reassembly_bytes = l.reassembly_bytes;
  o.max_children_per_ike_sa = l.children_per_ike_sa;
  o.log_lines_per_second = l.log_lines_per_second;
  return o;
}

void Gateway::queue_ike(ike::Datagram d) {
  const bool fresh = starts_new_sa(d.data);
  {
    std::lock_guard<std::mutex> lock(ike_mutex_);
    auto& q = fresh ? ike_queue_new_ : ike_queue_;
    if (q.size() >= (fresh ? ike_queue_new_cap_ : ike_queue_cap_).load(std::memory_order_relaxed)) {
      (fresh ? gw_.ike_queue_new_full : gw_.ike_queue_full).fetch_add(1, std::memory_order_relaxed);
      return;
    }
    q.push_back(std::move(d));
    if (ike_drain_posted_) return;  // one drain at a time takes all there is
    ike_drain_posted_ = true;
  }
  boost::asio::post(*io_, [this] {
    drain_ike();
    after_engine();
  });
}

// IKE on port 500 is read here, on the control thread, not by a worker.
void Gateway::watch_ike_socket(std::size_t i) {
  ike_watch_[i]->async_wait(boost::asio::posix::stream_descriptor::wait_read, [this, i](const boost::system::error_code& ec) {
    if (ec) return;
    tun::EspSocket& sock = *ike_sockets_[i];
    std::vector<core::Packet*> pkts;
    for (auto& p : ike_pkts_) pkts.push_back(p.get());
    const std::size_t n = sock.recv_batch(pkts);
    for (std::size_t k = 0; k < n; ++k) {
      const auto sp = pkts[k]->span();
      queue_ike({{sock.local(), 500}, {pkts[k]->peer, pkts[k]->peer_port}, core::Bytes(sp.begin(), sp.end())});
    }
    watch_ike_socket(i);
  });
}

void Gateway::drain_ike() {
  // Everything for existing SAs; then a bounded number of new ones, the
  // rest in a later turn of the control thread (timers and control
  // requests run in between).
  static constexpr std::size_t kNewPerTurn = 32;
  std::deque<ike::Datagram> known, fresh;
  bool more = false;
  {
    std::lock_guard<std::mutex> lock(ike_mutex_);
    known.swap(ike_queue_);
    for (std::size_t i = 0; i < kNewPerTurn && !ike_queue_new_.empty(); ++i) {
      fresh.push_back(std::move(ike_queue_new_.front()));
      ike_queue_new_.pop_front();
    }
    more = !ike_queue_new_.empty();
    ike_drain_posted_ = more;
  }
  dp_->begin_batch();
  const auto now = ike::Clock::now();
  for (auto& d : known) engine_->receive(d, now);
  for (auto& d : fresh) engine_->receive(d, ike::Clock::now());
  dp_->end_batch();
  if (more)
    boost::asio::post(*io_, [this] {
      drain_ike();
      after_engine();
    });
}

void Gateway::flush_ike() {
  static const std::uint8_t kMarker[4] = {0, 0, 0, 0};
  for (auto& d : engine_->take_output()) {
    bool sent = false;
    if (d.local.port == cfg_.udp_encap.port) {
      core::Bytes framed(kMarker, kMarker + 4);
      framed.insert(framed.end(), d.data.begin(), d.data.end());
      for (const auto& s : sockets_)
        if (s->kind() == tun::EspSocket::Kind::kUdp && s->local() == d.local.addr)
          sent = s->send_to(framed, d.remote.addr, d.remote.port);
    } else {
      for (const auto& s : ike_sockets_)
        if (s->local() == d.local.addr) sent = s->send_to(d.data, d.remote.addr, d.remote.port);
    }
    if (!sent) {
      // A COOKIE or refusal to a spoofed, unroutable source fails at packet
      // rate under a flood: counted, logged now and then.
      gw_.ike_send_failed.fetch_add(1, std::memory_order_relaxed);
      static core::log::RateLimited limit(std::chrono::seconds(10));
      std::uint64_t suppressed = 0;
      if (limit.allow(suppressed))
        core::log::warn("gateway", "IKE message to ", d.remote.to_string(), " not sent",
                        suppressed ? " (and " + std::to_string(suppressed) + " more)" : std::string());
    }
  }
}

// The engine's counters for `stats`; asked for when wanted (its SA counts
// walk every SA), on the control thread like everything that uses the engine.
nlohmann::json Gateway::ike_stats() const {
  const auto& c = engine_->counters();
  nlohmann::json j;
  j["ike_sas"] = engine_->ike_sa_count();
  j["child_sas"] = engine_->child_sa_count();
  j["established"] = c.ike_established;
  j["failed"] = c.ike_failed;
  j["auth_failed"] = c.auth_failed;
  j["child_installed"] = c.child_installed;
  j["retransmits"] = c.retransmits;
  j["cookies_sent"] = c.cookies_sent;
  j["invalid_messages"] = c.invalid_messages;
  j["ike_rekeyed"] = c.ike_rekeyed;
  j["child_rekeyed"] = c.child_rekeyed;
  j["rekey_collisions_won"] = c.rekey_collisions_won;
  j["rekey_collisions_lost"] = c.rekey_collisions_lost;
  j["ikev1_dropped"] = c.ikev1_dropped;
  j["ikev1_main_mode_done"] = c.ikev1_main_mode_done;
  j["ikev1_main_mode_failed"] = c.ikev1_main_mode_failed;
  j["ikev1_quick_mode_done"] = c.ikev1_quick_mode_done;
  j["ikev1_quick_mode_failed"] = c.ikev1_quick_mode_failed;
  j["state_bugs"] = c.state_bugs;
  j["half_open"] = engine_->half_open_count();
  j["reassembly_bytes"] = engine_->reassembly_bytes();
  j["half_open_refused"] = c.half_open_refused;
  j["cookies_rejected"] = c.cookies_rejected;
  j["reassembly_refused"] = c.reassembly_refused;
  j["children_refused"] = c.children_refused;
  j["log_suppressed"] = c.log_suppressed;
  return j;
}

void Gateway::after_engine() {
  flush_ike();
  // Release packets held for trap policies whose Child SA is now installed.
  std::vector<std::string> installed;
  installed.swap(installer_->installed);
  if (!installed.empty()) {
    std::lock_guard<std::mutex> lock(held_mutex_);
    bool any = false;
    for (const auto& full : installed) {
      const auto key = full.substr(0, full.rfind('/'));
      auto it = held_.find(key);
      if (it == held_.end()) continue;
      for (auto& b : it->second) reinject_.push_back(std::move(b));
      any = any || !it->second.empty();
      held_.erase(it);
    }
    if (any) {
      std::uint64_t v = 1;
      (void)::write(wake_fd_, &v, sizeof v);
    }
  }
  if (rearm_ike_) rearm_ike_();
}

}  // namespace ipsecgw::cli
