// The IKEv2 engine (RFC 7296). It takes datagrams and time in and gives
// datagrams, timer deadlines and SA installs out; sockets and timers live
// outside it (the gateway's control thread, or a test with a fake clock).
//
// One Engine serves every configured connection. It keeps IKE SAs by SPI,
// answers retransmitted requests from the cached response, retransmits its
// own requests with exponential back-off, and installs Child SAs through a
// core::SaInstaller (the ESP data plane in the gateway).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <tuple>
#include <vector>

#include "core/sa.hpp"
#include "ike/connection.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/message.hpp"

namespace ipsecgw::ike {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

struct Endpoint {
  core::IpAddress addr;
  std::uint16_t port = 500;
  bool operator==(const Endpoint&) const = default;
  [[nodiscard]] std::string to_string() const;
};

// A datagram in or out. On port 4500 `data` is the IKE message without the
// non-ESP marker; the socket layer adds and strips it.
struct Datagram {
  Endpoint local;
  Endpoint remote;
  Bytes data;
};

struct EngineCounters {
  std::uint64_t ike_established = 0;
  std::uint64_t ike_failed = 0;
  std::uint64_t auth_failed = 0;
  std::uint64_t child_installed = 0;
  std::uint64_t retransmits = 0;
  std::uint64_t cookies_sent = 0;
  std::uint64_t invalid_messages = 0;
  std::uint64_t dropped_messages = 0;
  std::uint64_t ike_rekeyed = 0;          // IKE SA rekeys completed, either role
  std::uint64_t child_rekeyed = 0;        // Child SA rekeys completed, either role
  // Simultaneous rekeys (RFC 7296 2.8.1, 2.8.2), counted at the end that
  // settles them: won keeps its own new SA, lost deletes it.
  std::uint64_t rekey_collisions_won = 0;
  std::uint64_t rekey_collisions_lost = 0;
  std::uint64_t ikev1_dropped = 0;  // IKEv1 datagrams for no ISAKMP SA, or of an exchange not spoken
  std::uint64_t ikev1_main_mode_done = 0;    // phase 1 (Main Mode) negotiations completed, either role
  std::uint64_t ikev1_main_mode_failed = 0;  // ... failed or refused (Aggressive Mode included)
  std::uint64_t ikev1_quick_mode_done = 0;   // Quick Mode negotiations completed, either role
  std::uint64_t ikev1_quick_mode_failed = 0;
  std::uint64_t state_bugs = 0;     // illegal IKE SA state changes (a bug if ever non-zero)
  // Budgets biting (EngineOptions): what unauthenticated peers were refused.
  std::uint64_t half_open_refused = 0;   // IKE_SA_INIT dropped: half-open SAs in total or from its address
  std::uint64_t cookies_rejected = 0;    // IKE_SA_INIT with a COOKIE that does not verify (stale, other address or port)
  std::uint64_t reassembly_refused = 0;  // IKE fragments dropped: reassembly budget
  std::uint64_t children_refused = 0;    // Child SA requests refused: max_children_per_ike_sa
  std::uint64_t log_suppressed = 0;      // log lines about unauthenticated input not written (rate limit)
};

// Keys of a new IKE SA, for a Wireshark key log (off unless set).
struct IkeKeyLog {
  std::uint64_t spi_i = 0, spi_r = 0;
  IkeTransform transform;
  ByteSpan sk_ei, sk_er, sk_ai, sk_ar;
};

struct EngineOptions {
  std::function<void(const IkeKeyLog&)> key_logger;
  // IKEv1: an ISAKMP SA's initiator cookie and encryption key (off unless set).
  std::function<void(std::uint64_t cky_i, ByteSpan enc_key)> ikev1_key_logger;
  std::chrono::milliseconds retransmit_base{1000};
  double retransmit_factor = 1.8;
  unsigned retransmit_tries = 5;
  std::size_t cookie_threshold = 64;  // half-open SAs before cookies are required
  // Budgets for what peers that have not authenticated can make the engine
  // hold or do; each is counted when it bites (EngineCounters).
  std::size_t max_half_open = 4096;            // half-open IKEv2 SAs in total
  std::size_t max_half_open_per_source = 64;   // ... from one IP address
  std::size_t max_reassembly_bytes = 1 << 20;  // RFC 7383 fragments held by SAs not yet authenticated
  std::size_t max_children_per_ike_sa = 64;    // Child SAs of one IKE SA, rekeys' new ones included
  std::chrono::seconds cookie_secret_life{300};  // COOKIE secrets rotate (RFC 7296 2.6)
  unsigned log_lines_per_second = 10;          // about unauthenticated input; the rest only counted
  std::size_t nonce_len = 32;
  bool initial_contact = true;  // send INITIAL_CONTACT in IKE_AUTH
  // Where SPIs, nonces, cookie secrets and rekey jitter come from; empty:
  // OpenSSL's DRBG (core::random_bytes). Tests inject a seeded generator so
  // that exchanges repeat exactly (time is already an input: `now`).
  // Diffie-Hellman private keys always come from OpenSSL.
  std::function<void(core::MutByteSpan)> random;
};

class IkeSa;
namespace v1 {
class Manager;
}

struct ReloadResult {
  std::vector<std::string> added, changed, removed, unchanged;
};
bool same_connection(const ConnectionConfig& a, const ConnectionConfig& b);

// What `ipsecgw status` shows.
struct ChildStatus {
  std::string name;   // installed SA name: connection/child/spi
  std::string child;  // configured child
  std::uint32_t spi_in = 0, spi_out = 0;
  std::string algorithms;
  std::string protocol = "esp";  // "esp" or "ah"
  std::string mode = "tunnel";   // "tunnel" or "transport"
  bool pfs = false;  // made with a DH exchange of its own (CREATE_CHILD_SA with KE)
  std::string local_ts, remote_ts;
  std::int64_t age_s = 0;
  std::int64_t rekey_in_s = -1;   // -1: never
  std::int64_t expire_in_s = -1;
};
struct IkeStatus {
  std::string connection;
  int version = 2;
  std::string state;
  bool initiator = false;
  std::uint64_t spi_i = 0, spi_r = 0;
  std::string local, remote;
  std::string local_id, remote_id;
  std::string algorithms;
  bool nat_local = false, nat_remote = false, udp_encap = false;
  std::int64_t age_s = 0;
  std::int64_t rekey_in_s = -1;
  std::vector<ChildStatus> children;
};

class Engine {
 public:
  Engine(std::vector<ConnectionConfig> conns, core::SaInstaller& installer,
         EngineOptions opt = {});
  ~Engine();

  // Starts connections whose children have start_action "start".
  void start(TimePoint now);
  // Initiates one connection (and its first child, or the named one).
  bool initiate(const std::string& conn, const std::string& child, TimePoint now,
                std::string& why);
  // A packet matched a trap policy of this connection/child and no SA is up:
  // set it up (a new IKE SA, or a CREATE_CHILD_SA on an established one).
  // Repeated acquires while one is under way are ignored.
  void acquire(const std::string& conn, const std::string& child, TimePoint now);
  // Bytes an installed Child SA has carried (both directions), reported by
  // the data plane's owner; drives rekey_bytes and life_bytes.
  void bytes_used(const std::string& sa_name, std::uint64_t bytes, TimePoint now);
  // The same for many Child SAs at once (by SA name), in one pass over the
  // SAs: what the gateway reports every second, whatever their number.
  using ByteUsage = std::unordered_map<std::string, std::uint64_t>;
  void bytes_used(const ByteUsage& usage, TimePoint now);
  // A datagram for the engine.
  void receive(const Datagram& d, TimePoint now);
  // Runs due timers (retransmission, DPD, rekey, expiry).
  void tick(TimePoint now);
  // Starts deleting every IKE SA: a DELETE is sent now, or, where a request
  // is outstanding, once it is answered (RFC 7296 2.3). Keep feeding
  // datagrams and ticks until shutdown_done(), or give up, then call
  // finish_shutdown(), which removes what is left.
  void shutdown(TimePoint now);
  [[nodiscard]] bool shutdown_done() const;
  void finish_shutdown();

  // Deletes the IKE SA of a connection (child empty) or one of its Child
  // SAs, sending DELETE; false with a reason when there is nothing to delete.
  bool terminate(const std::string& conn, const std::string& child, TimePoint now, std::string& why);
  [[nodiscard]] std::vector<IkeStatus> status(TimePoint now) const;

  std::vector<Datagram> take_output();
  [[nodiscard]] std::optional<TimePoint> next_deadline() const;
  [[nodiscard]] const EngineCounters& counters() const noexcept { return counters_; }
  [[nodiscard]] std::size_t ike_sa_count() const noexcept;
  [[nodiscard]] std::size_t child_sa_count() const noexcept;
  // Half-open IKEv2 SAs (responder, IKE_SA_INIT answered, IKE_AUTH not yet).
  [[nodiscard]] std::size_t half_open_count() const noexcept { return half_open_.size(); }
  // Bytes of IKE fragments held by SAs that have not authenticated.
  [[nodiscard]] std::size_t reassembly_bytes() const noexcept { return reassembly_bytes_; }
  // One line per IKE SA and Child SA, for logs and tests.
  [[nodiscard]] std::vector<std::string> describe() const;
  [[nodiscard]] bool established(const std::string& conn) const;

  [[nodiscard]] std::vector<const ConnectionConfig*> connections() const {
    std::vector<const ConnectionConfig*> v;
    for (const auto& c : conns_) v.push_back(c.get());
    return v;
  }
  // Takes the budgets of `o` (not its callbacks): a reload's new limits.
  void set_budgets(const EngineOptions& o);
  // Applies a new set of connections: removed and changed ones lose their
  // SAs (DELETE sent), changed and new ones start per their start_action,
  // untouched ones keep their SAs.
  ReloadResult reload(std::vector<ConnectionConfig> next, TimePoint now);

 private:
  friend class IkeSa;
  void random_bytes(core::MutByteSpan out);
  // A connection for a new IKE SA from this peer speaking `version` (1 or 2).
  const ConnectionConfig* find_connection_for(const Endpoint& local, const Endpoint& remote, int version) const;
  void send(const Endpoint& local, const Endpoint& remote, Bytes data);
  std::uint64_t new_spi();
  std::uint32_t new_child_spi();
  void handle_sa_init_request(const Datagram& d, const Header& h, TimePoint now);
  void remove_dead();
  void add_sa(std::unique_ptr<IkeSa> sa, std::uint64_t our_spi);
  // An SA's deadline may have moved earlier. With its SPI, the SA's timer
  // entry; without (spi 0), a pass over every SA then.
  void note_deadline(TimePoint t, std::uint64_t spi = 0);
  // IKEv1's deadlines: its manager is ticked every time anyway.
  void note_v1_deadline(TimePoint t) { cached_deadline_ = std::min(cached_deadline_, t); }
  // RFC 7296 2.6: <version> | HMAC(secret of that version, Ni | IPi | port | SPIi);
  // the secret rotates every cookie_secret_life, the one before stays valid.
  Bytes cookie_for(const Datagram& d, std::uint64_t spi_i, ByteSpan ni, std::uint8_t version) const;
  bool cookie_valid(const Datagram& d, std::uint64_t spi_i, ByteSpan ni, ByteSpan cookie) const;
  void rotate_cookie_secret(TimePoint now);
  // Unauthenticated input is logged at most log_lines_per_second.
  bool log_allowed(TimePoint now);
  // Forgets the half-open bookkeeping of an SA that left INIT_DONE.
  void settle_half_open(IkeSa& sa);

  void start_connection(const ConnectionConfig& c, TimePoint now);
  std::vector<std::unique_ptr<ConnectionConfig>> conns_;  // stable addresses: SAs point into them
  core::SaInstaller& installer_;
  EngineOptions opt_;
  std::map<std::uint64_t, std::unique_ptr<IkeSa>> sas_;  // by our SPI
  IkeSa* last_initiated_ = nullptr;  // set by initiate(), for start_connection
  // Responder: half-open SAs by the peer's SPIi, address and port (a flood
  // reusing one SPIi from many ports counts each), and how many per address.
  using HalfOpenKey = std::tuple<std::uint64_t, core::IpAddress, std::uint16_t>;
  std::map<HalfOpenKey, std::uint64_t> half_open_;  // -> our SPI
  std::map<core::IpAddress, std::size_t> half_open_by_addr_;
  std::size_t reassembly_bytes_ = 0;  // kept by the IKE SAs (IkeSa::open)
  TimePoint log_window_{};
  TimePoint now_{};  // of the receive() or tick() under way
  unsigned log_budget_ = 0;
  // A lower bound of the next SA deadline: the earliest timer entry.
  TimePoint cached_deadline_ = TimePoint::max();
  // Timer entries (when, our SPI), earliest first, so that a tick costs
  // the SAs that are due, not all of them. An entry may be stale (the SA's
  // deadline moved later, or the SA is gone): a tick that pops one files
  // the SA's current deadline again. A pass over every SA comes when asked
  // (full_pass_at_: a note without an SA) and at least every kFullTickEvery.
  using Timer = std::pair<TimePoint, std::uint64_t>;
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::unordered_map<std::uint64_t, TimePoint> scheduled_;  // our SPI -> its earliest entry
  TimePoint last_full_tick_{};
  TimePoint full_pass_at_ = TimePoint::max();
  static constexpr std::chrono::seconds kFullTickEvery{10};
  std::map<std::string, TimePoint> acquiring_;  // "conn/child" -> when asked
  std::vector<Datagram> out_;
  EngineCounters counters_;
  core::SecureBytes cookie_secret_, cookie_secret_prev_;
  std::uint8_t cookie_version_ = 0;
  TimePoint cookie_rotated_{};
  std::unique_ptr<v1::Manager> v1_;  // IKEv1: ISAKMP SAs and their exchanges
  const ConnectionConfig* find_connection(const std::string& name) const;
};

}  // namespace ipsecgw::ike
