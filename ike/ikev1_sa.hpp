// One ISAKMP SA (IKEv1 phase 1) and what hangs off it: the Main Mode task
// that makes it, Quick Mode tasks by message ID that make IPsec SA pairs,
// Informational exchanges (DELETE, notifies, RFC 3706 DPD), the IPsec SAs
// it installed, and its timers. Each exchange keeps its last message in and
// out ("flight"): a repeated peer message is answered with our last one
// (RFC 2408 5: retransmission is the receiver's cue), and the side that
// waits resends on the engine's retransmission schedule.
//
//   ikev1_sa.cpp                state, dispatch by exchange, timers, status
//   ikev1_sa_phase1.cpp         driving Main/Aggressive Mode, NAT-T float, what establishing sets off
//   ikev1_sa_quick.cpp          Quick Mode tasks by message ID, IPsec SA install
//   ikev1_sa_informational.cpp  DPD, notifies, DELETE
#pragma once

#include <deque>
#include <map>
#include <set>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_main_mode.hpp"
#include "ike/ikev1_manager.hpp"
#include "ike/ikev1_quick_mode.hpp"
#include "ike/retransmit.hpp"
#include "core/log.hpp"

namespace ipsecgw::ike::v1 {

using core::log::debug;
using core::log::error;
using core::log::info;
using core::log::warn;

inline constexpr const char* kTag = "ikev1";
// A finished Quick Mode is kept this long to answer a repeated message 2
// (its message 3 was lost); a half-open Main Mode responder this long.
inline constexpr auto kQuickLinger = std::chrono::seconds(30);
inline constexpr auto kReplacedDeleteDelay = std::chrono::seconds(2);
// An ISAKMP SA that reaches its lifetime while its successor's Main Mode is
// still under way is kept this much longer, once, so its IPsec SAs move to
// the successor instead of going down with it (with a short rekey_time the
// lifetime is less than a second past the rekey, less than one
// retransmission).
inline constexpr auto kExpiryGrace = std::chrono::seconds(10);
inline constexpr auto kHalfOpenLife = std::chrono::seconds(30);
// Quick Modes of one ISAKMP SA under way at once (both roles): beyond it a
// new one from the peer is dropped and counted (each holds a DH key with PFS).
inline constexpr std::size_t kMaxQuickModes = 32;
// The peer's message IDs remembered against replays (RFC 2408 5: unique).
inline constexpr std::size_t kRememberedMids = 256;
// After a rekey that did not happen, the next try.
inline constexpr auto kRekeyRetry = std::chrono::seconds(10);

inline IdPayload id_from(const std::string& s, const Endpoint& fallback) {
  IdPayload id;
  id.protocol = 17;
  id.port = 500;
  const std::string v = s.empty() ? fallback.addr.to_string() : s;
  if (auto a = core::IpAddress::parse(v)) {
    id.type = a->is_v4() ? IdType::kIpv4 : IdType::kIpv6;
    auto b = a->bytes();
    id.data.assign(b.begin(), b.end());
    return id;
  }
  id.type = v.find('@') != std::string::npos ? IdType::kUserFqdn : IdType::kFqdn;
  id.data.assign(v.begin(), v.end());
  return id;
}

inline TimePoint after(TimePoint now, std::uint32_t s) { return now + std::chrono::seconds(s); }

// The last message each way of one exchange.
struct Flight {
  Bytes last_in;                // the peer's last message, as received
  Bytes last_out;               // ours
  RetransmitSchedule schedule;  // running while we wait for the peer: resend last_out
  void sent(Bytes m, bool await, TimePoint now, const EngineOptions& o) {
    last_out = std::move(m);
    if (await) schedule.start(now, o);
    else schedule.stop();
  }
  [[nodiscard]] bool awaiting() const { return schedule.running(); }
};

struct Child {
  const ChildConfig* cfg = nullptr;
  std::string name;  // installed name: conn/child/spi_in
  std::uint32_t spi_in = 0, spi_out = 0;  // ESP's, or AH's for AH alone
  Phase2Suite suite;
  std::optional<Phase2Suite> ah;          // an AH+ESP bundle's AH SA
  std::uint32_t ah_spi_in = 0, ah_spi_out = 0;
  // What a DELETE names: each SA of the pair by its protocol (RFC 2408 3.15).
  [[nodiscard]] std::vector<RawPayload> deletes() const {
    std::vector<RawPayload> d{delete_esp({spi_in}, suite.protocol_id())};
    if (ah) d.push_back(delete_esp({ah_spi_in}, kProtoAh));
    return d;
  }
  [[nodiscard]] std::string algorithms() const { return suite.name() + (ah ? "+" + ah->name() : ""); }
  core::IpRange local_ts, remote_ts;
  TimePoint established;
  TimePoint rekey_at = TimePoint::max();
  TimePoint expire_at = TimePoint::max();
  bool rekeying = false;
  bool pfs = false;
  // A newer pair replaced it (a rekey, ours or the peer's): when it goes,
  // its inbound SPI stays a little (SaInstaller::remove_rekeyed).
  bool replaced = false;
};

class IsakmpSa {
 public:
  // kReplaced: a newer ISAKMP SA took its IPsec SAs (phase-1 rekey); it is
  // deleted right away. Nothing waits in IKEv1: a DELETE is not answered.
  enum class State { kMainMode, kEstablished, kDead };
  static const char* state_name(State s) noexcept;
  static bool legal(State from, State to) noexcept;

  IsakmpSa(Manager& m, const ConnectionConfig& c, bool initiator, Endpoint local, Endpoint remote, TimePoint now);
  ~IsakmpSa();

  // Initiator: Main Mode message 1.
  bool start(TimePoint now, bool initial_contact, std::string& why);
  // Children to set up once phase 1 is done (initiator).
  void queue_child(const ChildConfig* cc) { queued_.push_back(cc); }
  void receive(const Datagram& d, const Header& h, TimePoint now);
  void tick(TimePoint now);
  [[nodiscard]] TimePoint deadline() const;

  // A Quick Mode for `cc`; `rekeys`: our inbound SPI of the SA it replaces.
  bool start_quick(const ChildConfig& cc, TimePoint now, std::uint32_t rekeys = 0);
  // Sends DELETE for every IPsec SA and for this ISAKMP SA, removes them.
  void delete_all(TimePoint now, const std::string& why);
  // DELETE for one IPsec SA pair (by our inbound SPI), removed.
  // `rekeyed`: a new pair replaced it (its inbound SPI stays a little).
  void delete_child(std::uint32_t spi_in, const std::string& why, bool rekeyed = false);
  // Removes IPsec SAs whose peer-chosen (outbound) SPI the peer deleted.
  bool remove_by_peer_spi(std::uint32_t spi_out, std::uint8_t protocol);
  // Takes over `from`'s IPsec SAs (it is being replaced or deleted).
  void adopt_children(IsakmpSa& from);
  void remove_children();
  // Same connection, address and authenticated peer identity.
  [[nodiscard]] bool same_peer(const IsakmpSa& o) const;

  [[nodiscard]] IkeStatus status(TimePoint now) const;
  [[nodiscard]] std::string tag() const;

  Manager& mgr_;
  const ConnectionConfig& conn_;
  const bool initiator_;
  State state_ = State::kMainMode;
  Endpoint local_, remote_;
  const Endpoint first_seen_;  // the peer when this SA began (half-open budgets count by it)
  std::uint64_t cky_i_ = 0, cky_r_ = 0;
  std::unique_ptr<MainMode> mm_;
  Flight mm_flight_;
  Phase1Sa p1_;  // after Main Mode
  std::vector<Child> children_;
  std::vector<const ChildConfig*> queued_;
  TimePoint created_, established_at_{}, last_heard_;
  TimePoint rekey_at_ = TimePoint::max(), expire_at_ = TimePoint::max();
  bool rekeying_ = false;         // a successor's Main Mode is under way
  // Replaced by our phase-1 rekey: its IPsec SAs moved to the successor;
  // it is deleted at this time (kReplacedDeleteDelay after the successor
  // came up), not at once: strongSwan adopts the IPsec SAs into the new
  // ISAKMP SA in a step of its own after answering Main Mode, and a DELETE
  // of the old one that overtakes that step takes the IPsec SAs with it.
  TimePoint delete_at_ = TimePoint::max();
  std::string delete_why_;
  bool restart_wanted_ = false;   // dpd_action restart after the peer was found dead
  std::uint64_t replaces_ = 0;    // cky_i of the SA this one rekeys
  bool expiry_extended_ = false;  // kExpiryGrace granted (once)
  bool aggressive_ = false;       // made by Aggressive Mode

 private:
  friend class Manager;
  struct QuickTask {
    std::unique_ptr<QuickMode> qm;
    const ChildConfig* child = nullptr;
    Flight flight;
    std::uint32_t rekeys = 0;       // our inbound SPI of the SA being rekeyed
    TimePoint done_at = TimePoint::max();  // finished; kept a while to answer repeats
  };

  void set_state(State to);
  void send(const Bytes& m);
  void on_main_mode(const Datagram& d, const Header& h, TimePoint now);
  void on_quick_mode(const Datagram& d, const Header& h, TimePoint now);
  void on_informational(const Datagram& d, const Header& h, TimePoint now);
  void established(TimePoint now);
  void quick_done(QuickTask& t, TimePoint now);
  static bool initiator_of(const QuickTask& t);
  // Ends a Quick Mode task: its IV chain goes, a child it was rekeying may be rekeyed again.
  std::map<std::uint32_t, QuickTask>::iterator drop_quick(std::map<std::uint32_t, QuickTask>::iterator it,
                                                          TimePoint now);
  bool install(const QuickTask& t, TimePoint now);
  void phase1_failed(const std::string& why, Notify n, bool tell_peer, TimePoint now);
  // A phase-1 message that does not decrypt or verify: counted and said once.
  void suspect_auth(const std::string& why, TimePoint now);
  void peer_dead(const std::string& why, TimePoint now);
  void informational(const std::vector<RawPayload>& payloads);
  QuickModeConfig quick_config(const ChildConfig& cc) const;
  MainModeConfig main_config(bool initial_contact) const;
  [[nodiscard]] bool nat() const { return p1_.nat_local || p1_.nat_remote; }
  void update_endpoint(const Datagram& d);

  std::map<std::uint32_t, QuickTask> quick_;  // by message ID
  void remember_peer_mid(std::uint32_t mid);  // RFC 2408 5: the peer's message IDs are unique
  std::set<std::uint32_t> peer_mids_;        // the peer's message IDs seen (replay check)
  std::deque<std::uint32_t> peer_mid_order_;  // ... oldest first, to bound them
  std::uint32_t dpd_acked_ = 0;               // the last R-U-THERE sequence number acknowledged
  bool auth_suspected_ = false;   // a phase-1 message did not decrypt or verify (said once)
  bool failure_counted_ = false;  // this SA's failure is already in the counters
  // RFC 3706: our sequence number, and since when an R-U-THERE of ours is unanswered.
  std::uint32_t dpd_seq_ = 0;
  TimePoint dpd_sent_ = TimePoint::max();
  TimePoint dpd_next_ = TimePoint::max();
};

}  // namespace ipsecgw::ike::v1
