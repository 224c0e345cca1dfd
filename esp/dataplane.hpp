// The data plane's view of the SPD and SAD, and the sans-I/O packet pipeline.
//
//   TUN --read--> process_outbound: parse IP, SPD lookup (first match)
//         protect -> OutboundSa::encapsulate -> socket (UDP 4500 or raw ESP)
//         bypass  -> sent in the clear;  discard / no policy -> dropped
//   socket --recv--> (UDP: classify marker/keepalive/ESP) process_inbound:
//         SPI lookup -> InboundSa::decapsulate (replay, ICV, padding,
//         inner header, selectors) -> TUN
//   AH socket --recv--> process_inbound_ah: the whole IP packet (the ICV
//         covers its header), SPI lookup -> InboundSa::decapsulate -> TUN
//
// The control plane (manual keys now, IKE next) calls install()/remove() on
// its own thread. Each change builds a new immutable Snapshot and publishes
// it atomically; workers load the current snapshot once per batch and never
// lock. SA objects are shared between snapshots, so counters, sequence
// numbers and replay windows survive unrelated changes.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/counters.hpp"
#include "core/log.hpp"
#include "core/packet.hpp"
#include "core/sa.hpp"
#include "core/spd.hpp"
#include "esp/esp_sa.hpp"

namespace ipsecgw::esp {

struct Snapshot {
  core::Spd spd;
  std::vector<std::shared_ptr<OutboundSa>> outbound;  // Policy::sa_index
  std::unordered_map<std::uint32_t, std::shared_ptr<InboundSa>> inbound;
};

enum class OutAction : std::uint8_t { kSend, kBypass, kDrop, kAcquire };

struct OutDecision {
  OutAction action = OutAction::kDrop;
  core::Drop reason = core::Drop::kNone;
  OutboundSa* sa = nullptr;            // for kSend
  const core::Policy* policy = nullptr;  // for kAcquire: the trap policy
};

class DataPlane : public core::SaInstaller {
 public:
  explicit DataPlane(std::vector<core::StaticPolicy> policies = {});

  bool install(core::SaParams params, std::string& why) override;
  bool remove(const std::string& name) override;
  bool update_path(const std::string& name, const core::SaPath& path) override;

  // Between begin_batch() and end_batch() installs and removals are not
  // published one by one; end_batch() publishes one snapshot for all of
  // them (the control plane handling a burst of IKE messages).
  void begin_batch();
  void end_batch();
  // Trap policies, looked up after every installed SA's own policy (so an
  // installed SA wins); their names are "connection/child".
  void set_trap_policies(std::vector<core::Policy> traps);

  [[nodiscard]] std::shared_ptr<const Snapshot> snapshot() const noexcept {
    return current_.load(std::memory_order_acquire);
  }

  // Worker side; noexcept, never blocks.
  OutDecision process_outbound(const Snapshot& s, core::Packet& pkt) noexcept;
  core::Drop process_inbound(const Snapshot& s, core::Packet& pkt) noexcept;
  // An AH packet as the AH socket delivers it: the whole IP packet.
  core::Drop process_inbound_ah(const Snapshot& s, core::Packet& pkt) noexcept;
  // Counts a drop that belongs to no SA (bad SPI, malformed outer packet).
  void count_global(core::Drop d) noexcept { global_.drop(d); }

  // Counters not tied to an SA.
  [[nodiscard]] const core::TrafficCounters& global() const noexcept { return global_; }
  // Counters of SAs already removed. An SA that a worker may still hold (in
  // an older snapshot) is summed once no snapshot refers to it any more.
  const core::TrafficCounters& retired();

 private:
  void publish();  // with mutex_ held; deferred while batching
  void publish_now();
  bool batching_ = false;
  std::vector<core::Policy> traps_;
  bool dirty_ = false;
  std::unordered_map<std::uint32_t, std::string> spi_owner_;  // inbound SPI -> SA name
  void log_drop(core::Drop d, const char* where, std::uint32_t spi, const core::IpAddress& from);

  std::mutex mutex_;  // control plane only
  std::vector<core::StaticPolicy> static_policies_;
  struct Installed {
    std::shared_ptr<OutboundSa> out;
    std::shared_ptr<InboundSa> in;
    std::uint64_t order = 0;  // install sequence
    bool standby = false;     // SaParams::standby
  };
  std::uint64_t installs_ = 0;
  std::map<std::string, Installed> sas_;
  std::vector<Installed> retiring_;
  // Outbound SAs replaced by update_path(): a worker may still send on one
  // from an older snapshot; dropped once only this list holds them.
  std::vector<std::shared_ptr<OutboundSa>> superseded_;
  void retire(Installed sa);     // with mutex_ held
  void fold_retired();           // with mutex_ held
  std::atomic<std::shared_ptr<const Snapshot>> current_;
  core::TrafficCounters global_;
  core::TrafficCounters retired_;
  core::log::RateLimited drop_log_;
};

}  // namespace ipsecgw::esp
