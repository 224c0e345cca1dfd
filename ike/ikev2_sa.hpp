// The IKEv2 side of the engine, inside: one IKE SA (RFC 7296) and what its
// tasks share. `IkeSa` owns the SA's state (changed only through set_state),
// its keys, endpoints and Child SAs, and reads each encrypted message (SK
// and RFC 7383 SKF, checked against its exchange's payload rules) before
// handing it to its task manager (ikev2_task_manager.hpp), which runs the
// exchanges as tasks (ikev2_tasks.hpp, one per file). The SA names no task:
// it asks the manager to queue_ike, queue_child_rekey, queue_dpd, ...
//
//   ikev2_sa.cpp        the SA: reading messages, state, timers, dead peers
//   ikev2_child_sa.cpp  Child SA install, KEYMAT, selection for a request
//
// Internal to ike/: the Engine (engine.hpp) is the public face.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "ike/ikev2_task_manager.hpp"
#include "ike/message_rules.hpp"
#include "ike/proposals.hpp"

namespace ipsecgw::ike {

using core::log::debug;
using core::log::error;
using core::log::info;
using core::log::warn;

inline constexpr const char* kTag = "ike";
inline constexpr std::uint16_t kMaxFragments = 64;

inline Payload make(PayloadType t, Bytes body) {
  Payload p;
  p.type = t;
  p.body = std::move(body);
  return p;
}
inline Payload notify(Notify type, Bytes data = {}, ProtocolId proto = ProtocolId::kNone, Bytes spi = {}) {
  NotifyPayload n;
  n.type = static_cast<std::uint16_t>(type);
  n.data = std::move(data);
  n.protocol = proto;
  n.spi = std::move(spi);
  return make(PayloadType::kNotify, encode_notify(n));
}
inline Bytes u32_bytes(std::uint32_t v) {
  Bytes b;
  core::ByteAppender{b}.u32(v);
  return b;
}

// A rekeyed IKE SA whose DELETE the peer never sends is removed after this.
inline constexpr auto kRekeyedLinger = std::chrono::seconds(60);

// "N(INITIAL_CONTACT), D, CP" for a log line about a message's contents.
inline std::string payload_list(const std::vector<Payload>& pl) {
  std::string s;
  for (const auto& p : pl) {
    if (!s.empty()) s += ", ";
    switch (p.type) {
      case PayloadType::kNotify: {
        std::string why;
        auto n = decode_notify(p.body, why);
        s += n ? "N(" + notify_name(n->type) + ")" : "N(?)";
        break;
      }
      case PayloadType::kDelete: s += "D"; break;
      case PayloadType::kSa: s += "SA"; break;
      case PayloadType::kKe: s += "KE"; break;
      case PayloadType::kNonce: s += "No"; break;
      case PayloadType::kTsi: s += "TSi"; break;
      case PayloadType::kTsr: s += "TSr"; break;
      case PayloadType::kCp: s += "CP"; break;
      case PayloadType::kVendor: s += "V"; break;
      default: s += "payload " + std::to_string(static_cast<int>(p.type)); break;
    }
  }
  return s.empty() ? "no payload" : s;
}

// Everything found in a decoded message, by type.
struct Parsed {
  std::vector<Payload> all;
  std::optional<SaPayload> sa;
  std::optional<KePayload> ke;
  Bytes nonce;
  std::optional<IdPayload> idi, idr;
  Bytes idi_body, idr_body;
  std::optional<AuthPayload> auth;
  std::optional<std::vector<TrafficSelector>> tsi, tsr;
  std::vector<NotifyPayload> notifies;
  std::vector<DeletePayload> deletes;

  [[nodiscard]] const NotifyPayload* find(Notify t) const {
    for (const auto& n : notifies)
      if (n.type == static_cast<std::uint16_t>(t)) return &n;
    return nullptr;
  }
  [[nodiscard]] const NotifyPayload* first_error() const {
    for (const auto& n : notifies)
      if (is_error(n.type)) return &n;
    return nullptr;
  }
};

inline bool decode_all(const std::vector<Payload>& payloads, Parsed& out, std::string& why) {
  for (const auto& p : payloads) {
    switch (p.type) {
      case PayloadType::kSa:
        out.sa = decode_sa(p.body, why);
        if (!out.sa) return false;
        break;
      case PayloadType::kKe:
        out.ke = decode_ke(p.body, why);
        if (!out.ke) return false;
        break;
      case PayloadType::kNonce:
        if (p.body.size() < 16 || p.body.size() > 256) {
          why = "Nonce: " + std::to_string(p.body.size()) + " bytes (16 to 256 allowed)";
          return false;
        }
        out.nonce = p.body;
        break;
      case PayloadType::kIdi:
        out.idi = decode_id(p.body, why);
        out.idi_body = p.body;
        if (!out.idi) return false;
        break;
      case PayloadType::kIdr:
        out.idr = decode_id(p.body, why);
        out.idr_body = p.body;
        if (!out.idr) return false;
        break;
      case PayloadType::kAuth:
        out.auth = decode_auth(p.body, why);
        if (!out.auth) return false;
        break;
      case PayloadType::kTsi:
        out.tsi = decode_ts(p.body, why);
        if (!out.tsi) return false;
        break;
      case PayloadType::kTsr:
        out.tsr = decode_ts(p.body, why);
        if (!out.tsr) return false;
        break;
      case PayloadType::kNotify: {
        auto n = decode_notify(p.body, why);
        if (!n) return false;
        out.notifies.push_back(std::move(*n));
        break;
      }
      case PayloadType::kDelete: {
        auto d = decode_delete(p.body, why);
        if (!d) return false;
        out.deletes.push_back(std::move(*d));
        break;
      }
      default:
        break;
    }
  }
  out.all = payloads;
  return true;
}

// Intersection of two ranges of one family, if any.
inline std::optional<core::IpRange> intersect(const core::IpRange& a, const core::IpRange& b) {
  if (a.lo.family() != b.lo.family()) return std::nullopt;
  core::IpRange r{std::max(a.lo, b.lo), std::min(a.hi, b.hi)};
  if (r.hi < r.lo) return std::nullopt;
  return r;
}

// The intersection of two selectors (addresses, protocol, ports), if any.
inline std::optional<TrafficSelector> intersect(const TrafficSelector& a, const TrafficSelector& b) {
  auto r = intersect(core::IpRange{a.start, a.end}, core::IpRange{b.start, b.end});
  if (!r) return std::nullopt;
  if (a.ip_proto && b.ip_proto && a.ip_proto != b.ip_proto) return std::nullopt;
  TrafficSelector n;
  n.ip_proto = a.ip_proto ? a.ip_proto : b.ip_proto;
  n.start_port = std::max(a.start_port, b.start_port);
  n.end_port = std::min(a.end_port, b.end_port);
  if (n.start_port > n.end_port) return std::nullopt;  // also OPAQUE (65535-0) against ranges
  n.start = r->lo;
  n.end = r->hi;
  return n;
}

// Narrows the peer's selectors to ours (RFC 7296 2.9). The data plane takes
// one protocol and port range per side, so what differs from the first
// intersection in those is left out (narrowed away, as 2.9 allows).
inline std::vector<TrafficSelector> narrow(const std::vector<TrafficSelector>& theirs,
                                           const std::vector<TrafficSelector>& ours) {
  std::vector<TrafficSelector> out;
  for (const auto& t : theirs) {
    for (const auto& o : ours) {
      auto n = intersect(t, o);
      if (!n) continue;
      if (!out.empty() && (n->ip_proto != out[0].ip_proto || n->start_port != out[0].start_port ||
                           n->end_port != out[0].end_port))
        continue;
      if (std::find(out.begin(), out.end(), *n) == out.end()) out.push_back(*n);
    }
  }
  return out;
}

// One protocol on both sides, and ports only with a protocol (RFC 7296
// 3.13.1: with protocol 0 the port range is 0-65535).
inline bool ts_pair_ok(const std::vector<TrafficSelector>& l, const std::vector<TrafficSelector>& r) {
  const auto lp = l.front().ip_proto, rp = r.front().ip_proto;
  if (lp && rp && lp != rp) return false;
  if (lp || rp) return true;
  for (const auto* v : {&l, &r})
    for (const auto& t : *v)
      if (t.start_port != 0 || t.end_port != 65535) return false;
  return true;
}

// A child's selectors for one side: its ranges, or `self` (the address IKE
// runs on, "dynamic") when it has none, with its protocol and ports.
inline std::vector<TrafficSelector> child_ts(const ChildConfig& cc, bool local, const core::IpAddress& self) {
  const auto& ranges = local ? cc.local_ts : cc.remote_ts;
  const auto& ports = local ? cc.local_ports : cc.remote_ports;
  std::vector<TrafficSelector> out;
  auto add = [&](const core::IpAddress& lo, const core::IpAddress& hi) {
    TrafficSelector t;
    t.ip_proto = cc.ts_proto;
    t.start_port = ports.lo;
    t.end_port = ports.hi;
    t.start = lo;
    t.end = hi;
    out.push_back(t);
  };
  if (ranges.empty()) add(self, self);
  for (const auto& r : ranges) add(r.lo, r.hi);
  return out;
}

inline std::vector<TrafficSelector> to_ts(const std::vector<core::IpRange>& ranges) {
  std::vector<TrafficSelector> out;
  for (const auto& r : ranges) {
    TrafficSelector t;
    t.start = r.lo;
    t.end = r.hi;
    out.push_back(t);
  }
  return out;
}

inline std::string ts_string(const std::vector<TrafficSelector>& ts) {
  std::string s;
  for (const auto& t : ts) s += (s.empty() ? "" : ",") + t.to_string();
  return s;
}

inline Bytes psk_auth(core::PrfAlg prf_alg, ByteSpan psk, ByteSpan first_msg, ByteSpan peer_nonce,
               ByteSpan sk_p, ByteSpan id_body) {
  static const char kPad[] = "Key Pad for IKEv2";
  // prf(PSK, "Key Pad for IKEv2") is as good as the PSK: wiped after use.
  Bytes key = prf(prf_alg, psk, ByteSpan(reinterpret_cast<const std::uint8_t*>(kPad), 17));
  Bytes octets(first_msg.begin(), first_msg.end());
  octets.insert(octets.end(), peer_nonce.begin(), peer_nonce.end());
  const Bytes maced = prf(prf_alg, sk_p, id_body);
  octets.insert(octets.end(), maced.begin(), maced.end());
  Bytes auth = prf(prf_alg, key, octets);
  core::secure_wipe(key.data(), key.size());
  return auth;
}

// ---------------------------------------------------------------------------

struct ChildSa {
  const ChildConfig* cfg = nullptr;
  std::string name;  // installed name: conn/child/spi_in
  std::uint32_t spi_in = 0;
  std::uint32_t spi_out = 0;
  ChildSuite transform;
  core::SaMode mode = core::SaMode::kTunnel;  // as negotiated (a transport request may end in tunnel mode)
  std::vector<TrafficSelector> local_ts, remote_ts;
  TimePoint established;
  TimePoint rekey_at = TimePoint::max();
  TimePoint expire_at = TimePoint::max();
  bool rekeying = false;
  bool pfs = false;  // its keys include a fresh DH shared secret (RFC 7296 2.17)
  // A rekey replaced it: when it goes, its inbound SPI stays a little, for
  // what the peer sent before it switched (SaInstaller::remove_rekeyed).
  bool replaced = false;
};

// The lowest of two nonces decides a simultaneous rekey (RFC 7296 2.8.1, 2.8.2).
inline bool nonce_less(const Bytes& a, const Bytes& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
}

class IkeSa {
 public:
  // kRekeyed: replaced by a new IKE SA (RFC 7296 2.18), its Child SAs moved
  // there; it only waits for its DELETE exchange to finish.
  enum class State { kInitSent, kAuthSent, kInitDone, kEstablished, kDeleting, kRekeyed, kDead };
  static const char* state_name(State s) noexcept {
    static const char* names[] = {"INIT_SENT", "AUTH_SENT", "INIT_DONE", "ESTABLISHED", "DELETING", "REKEYED", "DEAD"};
    return names[static_cast<int>(s)];
  }
  static bool legal(State from, State to) noexcept {
    switch (from) {
      case State::kInitSent: return to == State::kInitSent || to == State::kAuthSent || to == State::kDead;
      case State::kAuthSent: return to == State::kEstablished || to == State::kDead;
      case State::kInitDone: return to == State::kEstablished || to == State::kDead;
      case State::kEstablished: return to == State::kDeleting || to == State::kRekeyed || to == State::kDead;
      case State::kDeleting: case State::kRekeyed: return to == State::kDead;
      case State::kDead: return false;
    }
    return false;
  }
  // Every state change goes through here (OpenIKED's habit): logged, and an
  // illegal one is a counted bug (the change still happens, so that the SA
  // ends rather than hangs).
  void set_state(State to);
  // A new IKE SA made by a rekey starts established (RFC 7296 2.18).
  void adopt_established() {
    debug(kTag, tag(), ": born ESTABLISHED by a rekey");
    state_ = State::kEstablished;
  }

  // An initiator starts by queueing IKE_SA_INIT (tasks_.queue_ike), a
  // responder by answering it (tasks_.process_request).
  IkeSa(Engine& e, const ConnectionConfig& c, bool initiator) : eng_(e), conn_(c), initiator_(initiator), tasks_(*this) {
    if (!initiator) state_ = State::kInitDone;
  }
  ~IkeSa();
  IkeSa(const IkeSa&) = delete;
  IkeSa& operator=(const IkeSa&) = delete;

  Engine& eng_;
  const ConnectionConfig& conn_;
  bool initiator_;
  State state_ = State::kInitSent;
  std::uint64_t spi_i_ = 0, spi_r_ = 0;
  Endpoint local_, remote_;
  IkeTransform t_;
  Bytes ni_, nr_;  // the IKE_SA_INIT nonces (AUTH, the first Child SA's KEYMAT)
  IkeKeys keys_;
  std::unique_ptr<SkCipher> out_, in_;
  bool nat_local_ = false, nat_remote_ = false;
  bool peer_frag_ = false;  // peer sent IKEV2_FRAGMENTATION_SUPPORTED
  // RFC 7383 reassembly of the message being received.
  struct Reassembly {
    std::uint32_t message_id = 0;
    bool response = false;
    PayloadType first = PayloadType::kNone;
    std::vector<std::optional<Bytes>> parts;
    std::size_t have = 0;
    std::size_t bytes = 0;
  };
  std::optional<Reassembly> frags_;
  // Rekey collisions (RFC 7296 2.8.1), noted by the peer's rekey (passive
  // task) and settled by ours when its response arrives: for a child we are
  // rekeying, the nonces of the peer's simultaneous rekey and the SA it made.
  struct Collision {
    Bytes peer_ni, our_nr;
    std::uint32_t new_spi_in = 0;
  };
  std::map<std::uint32_t, Collision> collisions_;  // by the old SA's inbound SPI
  std::optional<Collision> ike_collision_;          // IKE SA rekey collision (2.8.2)
  std::uint64_t ike_collision_spi_ = 0;             // our SPI of the peer's new IKE SA
  std::vector<ChildSa> children_;
  TimePoint created_, last_heard_;
  TimePoint rekey_at_ = TimePoint::max();
  std::string peer_id_;
  TimePoint rekeyed_at_ = TimePoint::max();
  bool restart_wanted_ = false;
  // Responder: counted as half open by the engine, under the peer's address
  // and port of its IKE_SA_INIT, until it leaves INIT_DONE.
  bool half_open_ = false;
  core::IpAddress remote_addr_at_init_;
  std::uint16_t remote_port_at_init_ = 0;
  std::size_t held_fragment_bytes_ = 0;  // of frags_, counted in the engine's reassembly budget before auth
  TaskManager tasks_;

  // ---- what the tasks share, below them -------------------------------------------

  [[nodiscard]] std::uint64_t our_spi() const { return initiator_ ? spi_i_ : spi_r_; }
  [[nodiscard]] bool encap() const { return nat_local_ || nat_remote_ || conn_.encap; }
  [[nodiscard]] bool keyed() const { return in_ && out_; }
  [[nodiscard]] std::string tag() const { return conn_.name + "[" + core::hex64(our_spi()) + "]"; }

  Header header(Exchange x, bool response, std::uint32_t id) const {
    Header h;
    h.spi_i = spi_i_;
    h.spi_r = spi_r_;
    h.exchange = x;
    h.flags = static_cast<std::uint8_t>((initiator_ ? kFlagInitiator : 0) | (response ? kFlagResponse : 0));
    h.message_id = id;
    return h;
  }
  void send_raw(Bytes m) { eng_.send(local_, remote_, std::move(m)); }
  void send_raw(const std::vector<Bytes>& ms);
  // Encrypted (SK), or RFC 7383 fragments (SKF) when both ends allow them.
  std::vector<Bytes> sealed(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& inner);

  // The engine, as the tasks need it.
  EngineCounters& counters() { return eng_.counters_; }
  [[nodiscard]] const EngineOptions& opt() const { return eng_.opt_; }
  void random_bytes(core::MutByteSpan out) { eng_.random_bytes(out); }
  Bytes random_nonce() {
    Bytes n(eng_.opt_.nonce_len);
    eng_.random_bytes(n);
    return n;
  }
  std::uint32_t new_child_spi() { return eng_.new_child_spi(); }
  std::uint64_t new_spi() { return eng_.new_spi(); }
  [[nodiscard]] std::map<std::uint64_t, std::unique_ptr<IkeSa>>& all_sas() { return eng_.sas_; }
  IkeSa* find_sa(std::uint64_t our_spi) {
    auto it = eng_.sas_.find(our_spi);
    return it == eng_.sas_.end() ? nullptr : it->second.get();
  }
  void add_sa(std::unique_ptr<IkeSa> sa, std::uint64_t our_spi) { eng_.add_sa(std::move(sa), our_spi); }
  void note_deadline(TimePoint t) { eng_.note_deadline(t); }

  // NAT detection (RFC 7296 2.23) from the peer's NAT_DETECTION_* notifies.
  void check_natd(const Parsed& p, std::uint64_t spi_i, std::uint64_t spi_r);
  // SKEYSEED and the SK keys from our DH key and the peer's KE (RFC 7296 2.14).
  bool derive(const DhKey& dh, ByteSpan peer_ke);
  bool make_ciphers();
  IdPayload local_id() const {
    return id_from_string(conn_.local_id.empty() ? local_.addr.to_string() : conn_.local_id);
  }
  void established(TimePoint now);

  // Child SAs (ikev2_child_sa.cpp): KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr),
  // the exchange initiator's outbound keys first (RFC 7296 2.17).
  bool install_child(const ChildConfig& cc, const ChildSuite& t, core::SaMode mode, std::uint32_t spi_in,
                     std::uint32_t spi_out, const std::vector<TrafficSelector>& lts,
                     const std::vector<TrafficSelector>& rts, ByteSpan ni, ByteSpan nr,
                     bool exchange_initiator, const SecureBytes* pfs, TimePoint now);
  // Installs the Child SA of `cc` the peer answered our request with; false
  // (logged) when the answer does not fit what we offered.
  bool child_from_response(const ChildConfig& cc, std::uint32_t spi_in, ByteSpan ni, ByteSpan nr,
                           const Parsed& p, TimePoint now, const SecureBytes* pfs);
  // Picks the child config, proposal and selectors for the peer's request,
  // installs the Child SA and returns the response payloads (or one error
  // notify); `spi_in_out` gets the new inbound SPI.
  // kAuth: the first Child SA, in IKE_AUTH (no KE there); kRekey: one that
  // replaces an SA (REKEY_SA).
  enum class ChildRequest { kAuth, kCreate, kRekey };
  // `rekeyed`: the SA a rekey replaces (its child config and mode are kept).
  std::vector<Payload> respond_child(const Parsed& p, ByteSpan ni, ByteSpan nr, TimePoint now,
                                     std::optional<std::uint32_t>* spi_in_out, ChildRequest kind,
                                     const ChildSa* rekeyed = nullptr);
  // AH SPIs of ours removed lately, for the Delete payload's protocol (the
  // SA is gone when a lifetime's DELETE is sent); a few dozen at most.
  void note_removed_ah(std::uint32_t spi_in) {
    if (removed_ah_.size() >= 64) removed_ah_.erase(removed_ah_.begin());
    removed_ah_.push_back(spi_in);
  }
  [[nodiscard]] bool removed_ah(std::uint32_t spi_in) const {
    return std::find(removed_ah_.begin(), removed_ah_.end(), spi_in) != removed_ah_.end();
  }
  std::vector<std::uint32_t> removed_ah_;
  // Transport mode's selectors: the two hosts (a NATed peer's private
  // address replaced by the one we see); false when they are not.
  bool transport_selectors(std::vector<TrafficSelector>& lts, std::vector<TrafficSelector>& rts) const;
  // Our selectors for a child, "dynamic" ones as our and the peer's IKE address.
  [[nodiscard]] std::vector<TrafficSelector> our_ts(const ChildConfig& cc, bool local) const {
    return child_ts(cc, local, local ? local_.addr : remote_.addr);
  }
  ChildSa* child_by_spi_in(std::uint32_t spi);
  // Removes our Child SA with this inbound SPI from the data plane, logged
  // with `why` unless null; false if none.
  // `linger`: a child a rekey replaced keeps its inbound SPI a little
  // (SaInstaller::remove_rekeyed); false for an operator's down.
  bool remove_child(std::uint32_t spi_in, const char* why, bool linger = true);

  // ---- message entry and timers ----------------------------------------------------

  void on_message(const Datagram& d, const Header& h, TimePoint now);
  [[nodiscard]] TimePoint deadline() const;
  void tick(TimePoint now);

  void peer_gone(const std::string& why, TimePoint now);
  void remove_children();
  void fail(const std::string& why);

  // Deletes this IKE SA with an INFORMATIONAL DELETE (RFC 7296 1.4.1) as
  // soon as the window allows (2.3: one request outstanding): now, or once
  // the outstanding request is answered. An SA not yet established just ends.
  void request_delete(TimePoint now);
  // Ends this SA at once (its configuration is going away): a DELETE is
  // sent, unwaited, when the window is free; never a second request.
  void delete_now(TimePoint now);
  // Still busy with a DELETE: queued, or sent and not answered.
  [[nodiscard]] bool deleting() const { return state_ != State::kDead && tasks_.has(TaskType::kIkeDelete); }

  // The peer has authenticated (IKE_AUTH done, or born of a rekey).
  [[nodiscard]] bool authenticated() const;

 private:
  // Reads an encrypted message (SK or SKF, reassembling fragments); false
  // when it is not (yet) to be processed.
  bool open(const Datagram& d, const Header& h, TimePoint now, std::vector<Payload>& outer, Bytes& plain,
            PayloadType& first);
  void drop_fragments();
  void follow_peer(const Datagram& d, const Header& h);
  // Lines about what an unauthenticated peer sent are rate-limited.
  bool may_log(TimePoint now);
};

}  // namespace ipsecgw::ike
