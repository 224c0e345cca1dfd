// The IKEv1 side of the engine: ISAKMP SAs keyed by their cookies, each
// driven by its exchange tasks (Main Mode, Quick Mode by message ID,
// Informational with DELETE and RFC 3706 DPD). The Engine owns one Manager
// and hands it every datagram whose ISAKMP header says version 1, plus the
// calls (initiate, tick, status, ...) for connections with "version": 1.
//
// Sans-I/O like the IKEv2 engine: datagrams and time in; datagrams,
// deadlines and SA installs out, through the Host the Engine provides. What
// both versions share is there once: the installer, the options
// (retransmission schedule, randomness), the counters, the SPI source.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ike/engine.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

class IsakmpSa;

struct Host {
  core::SaInstaller& installer;
  const EngineOptions& opt;
  EngineCounters& counters;
  std::function<void(const Endpoint& local, const Endpoint& remote, Bytes data)> send;
  std::function<void(core::MutByteSpan)> random;
  std::function<std::uint32_t()> new_child_spi;
  // The connection (version 1 or 0) for a new ISAKMP SA from this peer.
  std::function<const ConnectionConfig*(const Endpoint& local, const Endpoint& remote)> find_connection;
  // A Child SA of conn/child is up: a pending acquire is satisfied.
  std::function<void(const std::string& conn_child)> child_up;
  // The engine's rate limit for log lines about unauthenticated input
  // (EngineOptions::log_lines_per_second, shared with IKEv2; the lines it
  // refuses are counted in log_suppressed).
  std::function<bool(TimePoint now)> log_allowed;
};

// ISAKMP SAs still in Main or Aggressive Mode have the budgets of IKEv2's
// half-open SAs (EngineOptions::max_half_open in total, and
// max_half_open_per_source from one address, counted apart from IKEv2's):
// a new one beyond them is dropped and counted in half_open_refused (each
// costs a DH key and ~2 KB).

class Manager {
 public:
  explicit Manager(Host host);
  ~Manager();

  void receive(const Datagram& d, TimePoint now);
  // Starts the child (or the connection's first child when empty) on an
  // established ISAKMP SA of the connection, or a new Main Mode first.
  bool initiate(const ConnectionConfig& c, const std::string& child, TimePoint now, std::string& why);
  // A trap policy matched: like initiate, quiet when already under way.
  void acquire(const ConnectionConfig& c, const ChildConfig& cc, TimePoint now);
  void tick(TimePoint now);
  // Byte counts by SA name (Engine::ByteUsage); one pass over the SAs. True
  // when a timer became due (a rekey or a DELETE to send).
  bool bytes_used(const std::unordered_map<std::string, std::uint64_t>& usage, TimePoint now);
  // DELETE for every SA of the connection (all when null), then gone: IKEv1
  // deletes are not acknowledged, so nothing is left to wait for.
  void delete_all(const ConnectionConfig* c, TimePoint now);
  bool terminate(const ConnectionConfig& c, const std::string& child, TimePoint now, std::string& why);

  [[nodiscard]] std::optional<TimePoint> next_deadline() const;
  [[nodiscard]] std::vector<IkeStatus> status(TimePoint now) const;
  [[nodiscard]] std::vector<std::string> describe() const;
  [[nodiscard]] std::size_t sa_count() const noexcept;
  [[nodiscard]] std::size_t child_count() const noexcept;
  [[nodiscard]] bool established(const std::string& conn) const;

 private:
  friend class IsakmpSa;
  IsakmpSa* find(const Header& h, const Datagram& d);
  IsakmpSa* established_sa(const ConnectionConfig& c) const;
  IsakmpSa* start_main_mode(const ConnectionConfig& c, TimePoint now, bool initial_contact, std::string& why);
  void refuse(const Datagram& d, const Header& h, Notify n, const std::string& why, TimePoint now);
  void remove_dead();
  // The successor of `old`: a newer established ISAKMP SA with the same
  // connection and peer, which takes over its IPsec SAs.
  IsakmpSa* successor(const IsakmpSa& old) const;
  void restart(const ConnectionConfig& c, TimePoint now);
  // Rate limit for log lines about unauthenticated input: 10 a second.
  bool log_allowed(TimePoint now);

  Host host_;
  std::multimap<std::uint64_t, std::unique_ptr<IsakmpSa>> sas_;  // by the initiator's cookie
  std::size_t half_open_ = 0;   // ISAKMP SAs in Main/Aggressive Mode (kept by IsakmpSa)
  std::map<core::IpAddress, std::size_t> half_open_by_source_;  // responders among them, by peer address
  void half_open_changed(const IsakmpSa& sa, int delta);
};

}  // namespace ipsecgw::ike::v1
