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
// The control plane (manual keys, the IKE engine) calls install()/remove()
// on its own thread. Each change (or batch of changes) publishes a new
// immutable Snapshot atomically; workers load the current snapshot once per
// batch and never lock. SA objects are shared between snapshots, so
// counters, sequence numbers and replay windows survive unrelated changes.
// A snapshot shares every part a change leaves alone with the one before
// (the SPD tiers and the SAD are sharded copy-on-write structures), so
// publishing after one change costs the same with ten SAs or 100,000.
#pragma once

#include <atomic>
#include <array>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/counters.hpp"
#include "core/log.hpp"
#include "core/packet.hpp"
#include "core/sa.hpp"
#include "core/policy_index.hpp"
#include "core/spd.hpp"
#include "esp/esp_sa.hpp"

namespace ipsecgw::esp {

// A policy of the data plane's SPD and, for one that protects, its SA (none
// yet: packets are dropped as "no SA"; a trap policy has none).
struct PolicyEntry {
  core::Policy policy;
  std::shared_ptr<OutboundSa> sa;
};
inline const core::Policy& policy_of(const PolicyEntry& e) noexcept { return e.policy; }
using PolicyTier = core::PolicyIndex<PolicyEntry>;

// Inbound SAs by SPI: kShards sorted vectors, copied one at a time.
class InboundSad {
 public:
  static constexpr std::size_t kShards = 256;
  InboundSad();
  [[nodiscard]] InboundSa* find(std::uint32_t spi) const noexcept;
  void insert(std::uint32_t spi, std::shared_ptr<InboundSa> sa, std::uint64_t epoch);
  void erase(std::uint32_t spi, std::uint64_t epoch);
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  using Row = std::pair<std::uint32_t, std::shared_ptr<InboundSa>>;
  struct Shard {
    std::uint64_t epoch = UINT64_MAX;
    std::vector<Row> rows;  // by SPI
  };
  std::vector<Row>& writable(std::uint32_t spi, std::uint64_t epoch);
  std::array<std::shared_ptr<const Shard>, kShards> shards_;
  std::size_t size_ = 0;
};

// What the workers see. The SPD is looked up tier by tier; the first tier
// with a match decides: the configuration's policies (in their order), each
// installed SA's own selectors (newest first, standby SAs last), trap
// policies, then the bypass policies of narrowed transport SAs.
struct Snapshot {
  std::shared_ptr<const PolicyTier> configured, sas, traps, clear;
  std::shared_ptr<const InboundSad> inbound;
  [[nodiscard]] const PolicyEntry* lookup(const core::PacketInfo& p) const noexcept;
  [[nodiscard]] InboundSa* find_inbound(std::uint32_t spi) const noexcept { return inbound->find(spi); }
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
  // `lanes`: how many workers encrypt (each outbound SA gets a set of
  // crypto contexts per worker; process_outbound's `lane` picks one).
  explicit DataPlane(std::vector<core::StaticPolicy> policies = {}, unsigned lanes = 1);

  bool install(core::SaParams params, std::string& why) override;
  bool remove(const std::string& name) override;
  // The SA stops sending now; its inbound half stays in the SAD until
  // expire_rekeyed() runs at or after now + core::kRekeyedInboundDelay. It
  // is no longer listed (for_each_sa, sa_count), but its counters still
  // count in retired() until it goes.
  using Clock = std::chrono::steady_clock;
  bool remove_rekeyed(const std::string& name) override { return remove_rekeyed(name, Clock::now()); }
  bool remove_rekeyed(const std::string& name, Clock::time_point now);
  // Removes the inbound halves whose delay has passed (the control thread,
  // once a second).
  void expire_rekeyed(Clock::time_point now);
  bool update_path(const std::string& name, const core::SaPath& path) override;

  // Between begin_batch() and end_batch() installs and removals are not
  // published one by one; end_batch() publishes one snapshot for all of
  // them (the control plane handling a burst of IKE messages).
  void begin_batch();
  void end_batch();
  // Trap policies, looked up after every installed SA's own policy (so an
  // installed SA wins); their names are "connection/child".
  void set_trap_policies(std::vector<core::Policy> traps);

  // The current snapshot, kept alive by the pointer (tests, tools, the
  // control thread). Takes a mutex: not for the workers.
  [[nodiscard]] std::shared_ptr<const Snapshot> snapshot() const {
    std::lock_guard lock(snap_mutex_);
    return owned_;
  }
  // Workers: quiescent-state-based reclamation, no lock, no reference
  // count. enter(r) says reader r holds nothing from an earlier snapshot
  // and returns the current one, valid until its next enter() or leave();
  // leave(r) says it holds nothing (before it blocks in poll). A replaced
  // snapshot is freed once every reader has entered after the replacement
  // or left. `r` < the `lanes` given at construction.
  const Snapshot& enter(unsigned r) noexcept {
    const std::uint64_t e = pub_epoch_.load(std::memory_order_seq_cst);
    readers_[r].seen.store(e, std::memory_order_seq_cst);
    return *live_.load(std::memory_order_seq_cst);
  }
  void leave(unsigned r) noexcept { readers_[r].seen.store(kOffline, std::memory_order_seq_cst); }

  // Worker side; noexcept, never blocks.
  OutDecision process_outbound(const Snapshot& s, core::Packet& pkt, unsigned lane = 0) noexcept;
  // The same in two steps, so that a worker can hand a packet to its SA's
  // owner in between: classify (parse, SPD; kSend names the SA, nothing
  // encrypted yet), then seal (encapsulate with `lane`).
  OutDecision classify_outbound(const Snapshot& s, core::Packet& pkt) noexcept;
  OutDecision seal_outbound(const OutDecision& d, core::Packet& pkt, unsigned lane) noexcept;
  // `via`: the socket it came on. An SA takes ESP only as it was set up to
  // (in UDP or raw): a copy on the other transport goes to another worker
  // (worker 0 reads raw ESP), and is refused as an unknown SPI.
  enum class Via : std::uint8_t { kAny, kUdp, kRaw };
  core::Drop process_inbound(const Snapshot& s, core::Packet& pkt, Via via = Via::kAny) noexcept;
  // An AH packet as the AH socket delivers it: the whole IP packet.
  core::Drop process_inbound_ah(const Snapshot& s, core::Packet& pkt) noexcept;
  // Counts a drop that belongs to no SA (bad SPI, malformed outer packet).
  void count_global(core::Drop d) noexcept { global_.drop(d); }

  // Counters not tied to an SA.
  [[nodiscard]] const core::TrafficCounters& global() const noexcept { return global_; }
  // Counters of SAs already removed: those no snapshot refers to any more,
  // summed once, plus what the others (still held by a worker, or a
  // rekeyed SA's inbound half) have counted so far.
  const core::TrafficCounters& retired();

  // Control side: every installed SA's two directions, in name order (for
  // statistics, keepalives and byte lifetimes), under the control mutex.
  template <class F>
  void for_each_sa(F&& f) {
    std::lock_guard lock(mutex_);
    for (const auto& [name, sa] : sas_) f(*sa.out, *sa.in);
  }
  [[nodiscard]] std::size_t sa_count() {
    std::lock_guard lock(mutex_);
    return sas_.size();
  }

 private:
  void publish();  // with mutex_ held; deferred while batching
  void publish_now();
  bool batching_ = false;
  bool dirty_ = false;
  std::unordered_map<std::uint32_t, std::string> spi_owner_;  // inbound SPI -> SA name
  void log_drop(core::Drop d, const char* where, std::uint32_t spi, const core::IpAddress& from);

  unsigned lanes_ = 1;
  std::mutex mutex_;  // control plane only
  std::vector<core::StaticPolicy> static_policies_;
  struct Installed {
    std::shared_ptr<OutboundSa> out;
    std::shared_ptr<InboundSa> in;
    std::uint64_t order = 0;  // install sequence
    bool standby = false;     // SaParams::standby
    std::uint32_t in_key = 0;  // its key in the SAD
    std::shared_ptr<const PolicyEntry> policy, clear;  // in the sas and clear tiers
    std::uint64_t rank = 0;                            // of both
  };
  // Policies with the same selectors shadow each other: only the best
  // ranked is filed in a tier (the rest could never match first), the others
  // wait here, by selectors then rank, for their turn. So 10,000 SAs with
  // one pair of selectors (rekeys, standby paths, a benchmark) cost a
  // publication no more than one.
  class Shadows {
   public:
    void insert(PolicyTier& t, std::shared_ptr<const PolicyEntry> e, std::uint64_t rank, std::uint64_t epoch);
    void erase(PolicyTier& t, const PolicyEntry* e, std::uint64_t rank, std::uint64_t epoch);

   private:
    static std::string key(const PolicyEntry& e);
    std::unordered_map<std::string, std::map<std::uint64_t, std::shared_ptr<const PolicyEntry>>> groups_;
  };
  Shadows sas_shadows_, clear_shadows_;
  // The next snapshot, changed in place between publications: each tier and
  // the SAD are copied at their first change after a publication (epoch_
  // counts publications), then changed where they are.
  struct Next {
    std::shared_ptr<PolicyTier> configured, sas, traps, clear;
    std::shared_ptr<InboundSad> inbound;
    std::uint64_t sas_epoch = UINT64_MAX, clear_epoch = UINT64_MAX, inbound_epoch = UINT64_MAX;
  };
  Next next_;
  std::uint64_t epoch_ = 0;
  PolicyTier& sas_tier();
  PolicyTier& clear_tier();
  InboundSad& sad();
  void add_policies(const std::string& name, Installed& sa);    // with mutex_ held
  void drop_policies(Installed& sa);                            // with mutex_ held
  void rebuild_configured();                                    // with mutex_ held
  std::set<std::string> configured_sa_names_;  // SAs that configured policies name
  std::uint64_t installs_ = 0;
  std::map<std::string, Installed> sas_;
  std::vector<Installed> retiring_;
  // Rekeyed SAs whose inbound half is still in the SAD, until the time given.
  // In the order removed (so by time); spi_owner_ and the SAD still name them.
  std::vector<std::pair<Clock::time_point, Installed>> rekeyed_;
  static constexpr std::size_t kMaxRekeyed = 4096;
  std::vector<std::pair<Clock::time_point, Installed>>::iterator find_rekeyed(const std::string& name);
  void drop_rekeyed(std::vector<std::pair<Clock::time_point, Installed>>::iterator r);  // with mutex_ held
  // Outbound SAs replaced by update_path(): a worker may still send on one
  // from an older snapshot; dropped once only this list holds them.
  std::vector<std::shared_ptr<OutboundSa>> superseded_;
  void retire(Installed sa);     // with mutex_ held
  void fold_retired();           // with mutex_ held
  // Publication: live_ is what enter() gives; owned_ owns it (and is what
  // snapshot() copies, under snap_mutex_); replaced snapshots wait in
  // replaced_ with the epoch of their replacement until no reader can hold
  // them (reclaim(), with mutex_ held).
  static constexpr std::uint64_t kOffline = UINT64_MAX;
  struct alignas(64) Reader {
    std::atomic<std::uint64_t> seen{kOffline};
  };
  std::unique_ptr<Reader[]> readers_;
  std::atomic<const Snapshot*> live_{nullptr};
  std::atomic<std::uint64_t> pub_epoch_{1};
  mutable std::mutex snap_mutex_;
  std::shared_ptr<const Snapshot> owned_;
  std::vector<std::pair<std::uint64_t, std::shared_ptr<const Snapshot>>> replaced_;
  void reclaim();
  core::TrafficCounters global_;
  core::TrafficCounters retired_;
  core::TrafficCounters retired_view_;  // retired_ and what is still counting
  core::log::RateLimited drop_log_;
};

}  // namespace ipsecgw::esp
