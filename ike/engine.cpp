#include "ike/engine.hpp"
#include "ike/message_rules.hpp"

#include <algorithm>
#include <cmath>

#include "core/log.hpp"
#include "ike/ikev1_manager.hpp"
#include "ike/proposals.hpp"

namespace ipsecgw::ike {

using core::log::debug;
using core::log::error;
using core::log::info;
using core::log::warn;

std::string Endpoint::to_string() const {
  return (addr.is_v4() ? addr.to_string() : "[" + addr.to_string() + "]") + ":" + std::to_string(port);
}

namespace {

constexpr const char* kTag = "ike";
constexpr std::uint16_t kMaxFragments = 64;

Payload make(PayloadType t, Bytes body) {
  Payload p;
  p.type = t;
  p.body = std::move(body);
  return p;
}
Payload notify(Notify type, Bytes data = {}, ProtocolId proto = ProtocolId::kNone, Bytes spi = {}) {
  NotifyPayload n;
  n.type = static_cast<std::uint16_t>(type);
  n.data = std::move(data);
  n.protocol = proto;
  n.spi = std::move(spi);
  return make(PayloadType::kNotify, encode_notify(n));
}
Bytes u32_bytes(std::uint32_t v) {
  Bytes b;
  core::ByteAppender{b}.u32(v);
  return b;
}

// A rekeyed IKE SA whose DELETE the peer never sends is removed after this.
constexpr auto kRekeyedLinger = std::chrono::seconds(60);

// "N(INITIAL_CONTACT), D, CP" for a log line about a message's contents.
std::string payload_list(const std::vector<Payload>& pl) {
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

bool decode_all(const std::vector<Payload>& payloads, Parsed& out, std::string& why) {
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
std::optional<core::IpRange> intersect(const core::IpRange& a, const core::IpRange& b) {
  if (a.lo.family() != b.lo.family()) return std::nullopt;
  core::IpRange r{std::max(a.lo, b.lo), std::min(a.hi, b.hi)};
  if (r.hi < r.lo) return std::nullopt;
  return r;
}

// Narrows the peer's selectors to ours (RFC 7296 2.9).
std::vector<TrafficSelector> narrow(const std::vector<TrafficSelector>& theirs,
                                    const std::vector<core::IpRange>& ours) {
  std::vector<TrafficSelector> out;
  for (const auto& t : theirs) {
    for (const auto& o : ours) {
      if (auto r = intersect({t.start, t.end}, o)) {
        TrafficSelector n = t;
        n.start = r->lo;
        n.end = r->hi;
        if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
      }
    }
  }
  return out;
}

std::vector<TrafficSelector> to_ts(const std::vector<core::IpRange>& ranges) {
  std::vector<TrafficSelector> out;
  for (const auto& r : ranges) {
    TrafficSelector t;
    t.start = r.lo;
    t.end = r.hi;
    out.push_back(t);
  }
  return out;
}

std::string ts_string(const std::vector<TrafficSelector>& ts) {
  std::string s;
  for (const auto& t : ts) s += (s.empty() ? "" : ",") + t.to_string();
  return s;
}

Bytes psk_auth(core::PrfAlg prf_alg, ByteSpan psk, ByteSpan first_msg, ByteSpan peer_nonce,
               ByteSpan sk_p, ByteSpan id_body) {
  static const char kPad[] = "Key Pad for IKEv2";
  const Bytes key = prf(prf_alg, psk, ByteSpan(reinterpret_cast<const std::uint8_t*>(kPad), 17));
  Bytes octets(first_msg.begin(), first_msg.end());
  octets.insert(octets.end(), peer_nonce.begin(), peer_nonce.end());
  const Bytes maced = prf(prf_alg, sk_p, id_body);
  octets.insert(octets.end(), maced.begin(), maced.end());
  return prf(prf_alg, key, octets);
}

}  // namespace

// ---------------------------------------------------------------------------

struct ChildSa {
  const ChildConfig* cfg = nullptr;
  std::string name;  // installed name: conn/child/spi_in
  std::uint32_t spi_in = 0;
  std::uint32_t spi_out = 0;
  core::EspTransform transform;
  std::vector<TrafficSelector> local_ts, remote_ts;
  TimePoint established;
  TimePoint rekey_at = TimePoint::max();
  TimePoint expire_at = TimePoint::max();
  bool rekeying = false;
  bool pfs = false;  // its keys include a fresh DH shared secret (RFC 7296 2.17)
};

// What an outstanding request of ours is about.
struct Pending {
  Exchange exchange = Exchange::kInformational;
  std::uint32_t message_id = 0;
  std::vector<Bytes> message;  // one datagram, or its RFC 7383 fragments
  TimePoint next_send;
  unsigned tries = 0;
  // CREATE_CHILD_SA context.
  const ChildConfig* child = nullptr;
  std::uint32_t new_spi_in = 0;
  std::uint32_t rekeyed_spi_in = 0;  // child being rekeyed, or 0
  Bytes nonce;
  std::unique_ptr<DhKey> dh;
  std::vector<std::uint32_t> deleting;  // our inbound SPIs announced in a DELETE
  bool delete_ike = false;
  bool dpd = false;
  TimePoint give_up = TimePoint::max();  // dpd_timeout for liveness checks
  std::uint64_t new_ike_spi = 0;  // IKE SA rekey: our SPI of the new SA
};

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
  void set_state(State to) {
    if (to == state_) return;
    if (!legal(state_, to)) {
      ++eng_.counters_.state_bugs;
      error(kTag, tag(), ": BUG: illegal state change ", state_name(state_), " -> ", state_name(to));
    } else {
      debug(kTag, tag(), ": ", state_name(state_), " -> ", state_name(to));
    }
    state_ = to;
  }
  // A new IKE SA made by a rekey starts established (RFC 7296 2.18).
  void adopt_established() {
    debug(kTag, tag(), ": born ESTABLISHED by a rekey");
    state_ = State::kEstablished;
  }

  // An initiator starts by sending IKE_SA_INIT, a responder by answering it.
  IkeSa(Engine& e, const ConnectionConfig& c, bool initiator) : eng_(e), conn_(c), initiator_(initiator) {
    if (!initiator) state_ = State::kInitDone;
  }

  Engine& eng_;
  const ConnectionConfig& conn_;
  bool initiator_;
  State state_ = State::kInitSent;
  std::uint64_t spi_i_ = 0, spi_r_ = 0;
  Endpoint local_, remote_;
  IkeTransform t_;
  std::unique_ptr<DhKey> dh_;
  Bytes ni_, nr_;
  Bytes init_i_, init_r_;  // the IKE_SA_INIT messages, for AUTH
  Bytes cookie_;
  IkeKeys keys_;
  std::unique_ptr<SkCipher> out_, in_;
  bool nat_local_ = false, nat_remote_ = false;
  std::uint32_t next_out_id_ = 0;   // our next request
  std::uint32_t next_in_id_ = 0;    // the peer's next request
  std::vector<Bytes> last_response_;
  std::uint32_t last_response_id_ = 0xffffffff;
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
  // Child SA rekey collisions (RFC 7296 2.8.1): for a child we are rekeying,
  // the nonces of the peer's simultaneous rekey and the SA it created.
  struct Collision {
    Bytes peer_ni, our_nr;
    std::uint32_t new_spi_in = 0;
  };
  std::map<std::uint32_t, Collision> collisions_;  // by the old SA's inbound SPI
  std::optional<Collision> ike_collision_;          // IKE SA rekey collision (2.8.2)
  std::uint64_t ike_collision_spi_ = 0;             // our SPI of the peer's new IKE SA
  std::optional<Pending> pending_;
  std::vector<ChildSa> children_;
  const ChildConfig* first_child_ = nullptr;
  std::uint32_t first_child_spi_ = 0;
  TimePoint created_, last_heard_;
  TimePoint rekey_at_ = TimePoint::max();
  unsigned invalid_ke_retries_ = 0;
  std::string peer_id_;

  [[nodiscard]] std::uint64_t our_spi() const { return initiator_ ? spi_i_ : spi_r_; }
  [[nodiscard]] bool encap() const { return nat_local_ || nat_remote_ || conn_.encap; }
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
  void send_raw(const std::vector<Bytes>& ms) {
    for (const auto& m : ms) eng_.send(local_, remote_, m);
  }

  // Sends a request of ours and keeps it for retransmission.
  void send_request(Pending p, TimePoint now) {
    p.next_send = now + eng_.opt_.retransmit_base;
    p.tries = 0;
    send_raw(p.message);
    pending_ = std::move(p);
  }

  std::vector<Bytes> sealed(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& inner) {
    if (peer_frag_ && conn_.fragment_size)
      return out_->seal_fragmented(header(x, response, id), inner, conn_.fragment_size);
    return {out_->seal(header(x, response, id), inner)};
  }

  void send_response(Exchange x, std::uint32_t id, const std::vector<Payload>& inner) {
    last_response_ = sealed(x, true, id, inner);
    last_response_id_ = id;
    send_raw(last_response_);
  }

  // ---- initiator: IKE_SA_INIT ----------------------------------------------------

  bool start_init(TimePoint now, std::string& why) {
    if (conn_.proposals.empty() || conn_.proposals[0].dh.empty()) {
      why = "no IKE proposal with a DH group";
      return false;
    }
    if (!dh_) {
      dh_ = DhKey::generate(conn_.proposals[0].dh[0], why);
      if (!dh_) return false;
    }
    if (ni_.empty()) {
      ni_.resize(eng_.opt_.nonce_len);
      eng_.random_bytes(ni_);
    }
    std::vector<Payload> pl;
    if (!cookie_.empty()) pl.push_back(notify(Notify::kCookie, cookie_));
    SaPayload sa;
    std::uint8_t n = 1;
    for (const auto& p : conn_.proposals) sa.proposals.push_back(ike_offer(p, n++));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(dh_->group()), dh_->public_value()})));
    pl.push_back(make(PayloadType::kNonce, ni_));
    pl.push_back(notify(Notify::kNatDetectionSourceIp, natd_hash(spi_i_, 0, local_.addr, local_.port)));
    pl.push_back(notify(Notify::kNatDetectionDestinationIp, natd_hash(spi_i_, 0, remote_.addr, remote_.port)));
    pl.push_back(notify(Notify::kIkev2FragmentationSupported));
    pl.push_back(notify(Notify::kSignatureHashAlgorithms, {0, 2, 0, 3, 0, 4}));
    Bytes msg = encode_plain(header(Exchange::kSaInit, false, 0), pl);
    init_i_ = msg;
    Pending p;
    p.exchange = Exchange::kSaInit;
    p.message_id = 0;
    p.message = {std::move(msg)};
    send_request(std::move(p), now);
    set_state(State::kInitSent);
    next_out_id_ = 1;
    info(kTag, tag(), ": initiating IKE_SA_INIT to ", remote_.to_string(), " (DH group ",
         static_cast<int>(dh_->group()), ")");
    return true;
  }

  void on_init_response(ByteSpan msg, const Header& h, const Parsed& p, TimePoint now) {
    if (const auto* ck = p.find(Notify::kCookie)) {
      if (ck->data.empty() || ck->data.size() > 64) return;
      info(kTag, tag(), ": responder asks for a COOKIE, retrying");
      cookie_ = ck->data;
      std::string why;
      start_init(now, why);
      return;
    }
    if (const auto* ike = p.find(Notify::kInvalidKePayload)) {
      if (ike->data.size() != 2 || ++invalid_ke_retries_ > 2) {
        fail("INVALID_KE_PAYLOAD without a usable group");
        return;
      }
      const auto g = static_cast<core::DhGroup>(ike->data[0] << 8 | ike->data[1]);
      bool offered = false;
      for (const auto& pr : conn_.proposals) offered |= std::find(pr.dh.begin(), pr.dh.end(), g) != pr.dh.end();
      if (!offered) {
        fail("peer asks for DH group " + std::to_string(static_cast<int>(g)) + ", which we did not offer");
        return;
      }
      info(kTag, tag(), ": INVALID_KE_PAYLOAD, retrying with DH group ", static_cast<int>(g));
      std::string why;
      dh_ = DhKey::generate(g, why);
      if (!dh_) {
        fail(why);
        return;
      }
      start_init(now, why);
      return;
    }
    if (const auto* err = p.first_error()) {
      fail("IKE_SA_INIT refused: " + notify_name(err->type));
      return;
    }
    if (!p.sa || !p.ke || p.nonce.empty()) {
      fail("IKE_SA_INIT response without SA, KE or Nonce");
      return;
    }
    auto choice = select_ike(conn_.proposals, *p.sa);
    if (!choice || p.sa->proposals.size() != 1) {
      fail("IKE_SA_INIT response chose a proposal we did not offer");
      return;
    }
    t_ = choice->t;
    if (static_cast<core::DhGroup>(p.ke->group) != dh_->group() || t_.dh != dh_->group()) {
      fail("IKE_SA_INIT response KE group does not match");
      return;
    }
    spi_r_ = h.spi_r;
    nr_ = p.nonce;
    init_r_.assign(msg.begin(), msg.end());
    peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
    check_natd(p, spi_i_, spi_r_);
    if (!derive(p.ke->data)) return;
    pending_.reset();
    send_auth(now);
  }

  void check_natd(const Parsed& p, std::uint64_t spi_i, std::uint64_t spi_r) {
    bool have_src = false, have_dst = false, src_match = false, dst_match = false;
    const Bytes src = natd_hash(spi_i, spi_r, remote_.addr, remote_.port);
    const Bytes dst = natd_hash(spi_i, spi_r, local_.addr, local_.port);
    for (const auto& n : p.notifies) {
      if (n.type == static_cast<std::uint16_t>(Notify::kNatDetectionSourceIp)) {
        have_src = true;
        src_match |= n.data == src;
      } else if (n.type == static_cast<std::uint16_t>(Notify::kNatDetectionDestinationIp)) {
        have_dst = true;
        dst_match |= n.data == dst;
      }
    }
    if (have_src && have_dst) {
      nat_remote_ = !src_match;
      nat_local_ = !dst_match;
      if (nat_local_ || nat_remote_)
        info(kTag, tag(), ": NAT detected (", nat_local_ ? "local" : "", nat_local_ && nat_remote_ ? " and " : "",
             nat_remote_ ? "remote" : "", "), using UDP encapsulation");
    }
  }

  bool derive(ByteSpan peer_ke) {
    std::string why;
    auto shared = dh_->shared_secret(peer_ke, why);
    if (!shared) {
      fail("Diffie-Hellman: " + why);
      return false;
    }
    keys_ = derive_ike_keys(t_, shared->span(), ni_, nr_, spi_i_, spi_r_);
    return make_ciphers();
  }

  bool make_ciphers() {
    if (eng_.opt_.key_logger)
      eng_.opt_.key_logger({spi_i_, spi_r_, t_, keys_.ei.span(), keys_.er.span(), keys_.ai.span(), keys_.ar.span()});
    const auto& e_out = initiator_ ? keys_.ei : keys_.er;
    const auto& a_out = initiator_ ? keys_.ai : keys_.ar;
    const auto& e_in = initiator_ ? keys_.er : keys_.ei;
    const auto& a_in = initiator_ ? keys_.ar : keys_.ai;
    out_ = SkCipher::create(t_, e_out.span(), a_out.span(), core::CipherDir::kEncrypt);
    in_ = SkCipher::create(t_, e_in.span(), a_in.span(), core::CipherDir::kDecrypt);
    if (!out_ || !in_) {
      fail("cannot set up IKE SA ciphers");
      return false;
    }
    return true;
  }

  IdPayload local_id() const {
    return id_from_string(conn_.local_id.empty() ? local_.addr.to_string() : conn_.local_id);
  }

  // ---- initiator: IKE_AUTH ------------------------------------------------------

  void send_auth(TimePoint now) {
    if (encap() && local_.port != core::kNattPort) {
      local_.port = core::kNattPort;
      remote_.port = core::kNattPort;
    }
    const IdPayload id = local_id();
    const Bytes id_body = encode_id(id);
    std::vector<Payload> pl;
    pl.push_back(make(PayloadType::kIdi, id_body));
    // INITIAL_CONTACT only when this is our only IKE SA with the peer (RFC
    // 7296 2.4): other connections to the same identity must survive.
    bool only = true;
    for (const auto& [spi, other] : eng_.sas_)
      only = only && (other.get() == this || other->state_ == State::kDead ||
                      !(other->remote_.addr == remote_.addr && other->conn_.remote_id == conn_.remote_id));
    if (eng_.opt_.initial_contact && only) pl.push_back(notify(Notify::kInitialContact));
    if (!conn_.remote_id.empty()) pl.push_back(make(PayloadType::kIdr, encode_id(id_from_string(conn_.remote_id))));
    pl.push_back(make(PayloadType::kAuth, encode_auth({AuthMethod::kPsk,
        psk_auth(t_.prf, conn_.psk.span(), init_i_, nr_, keys_.pi.span(), id_body)})));
    const ChildConfig* child = first_child_;
    if (child) {
      first_child_spi_ = eng_.new_child_spi();
      if (child->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
      pl.push_back(notify(Notify::kEspTfcPaddingNotSupported));
      SaPayload sa;
      std::uint8_t n = 1;
      for (const auto& pr : child->esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, first_child_spi_, false));
      pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
      pl.push_back(make(PayloadType::kTsi, encode_ts(to_ts(child->local_ts))));
      pl.push_back(make(PayloadType::kTsr, encode_ts(to_ts(child->remote_ts))));
    }
    Pending p;
    p.exchange = Exchange::kAuth;
    p.message_id = next_out_id_++;
    p.child = child;
    p.new_spi_in = first_child_spi_;
    p.message = sealed(Exchange::kAuth, false, p.message_id, pl);
    send_request(std::move(p), now);
    set_state(State::kAuthSent);
  }

  bool verify_peer(const Parsed& p, const IdPayload& id, ByteSpan id_body, ByteSpan first_msg,
                   ByteSpan my_nonce, const SecureBytes& sk_p) {
    if (!conn_.remote_id.empty() && !(id == id_from_string(conn_.remote_id))) {
      warn(kTag, tag(), ": peer identity '", id.to_string(), "' is not the configured '", conn_.remote_id, "'");
      return false;
    }
    if (!p.auth || p.auth->method != AuthMethod::kPsk) {
      warn(kTag, tag(), ": peer did not authenticate with a pre-shared key");
      return false;
    }
    const Bytes want = psk_auth(t_.prf, conn_.psk.span(), first_msg, my_nonce, sk_p.span(), id_body);
    if (!core::ct_equal(want, p.auth->data)) {
      warn(kTag, tag(), ": authentication of '", id.to_string(), "' failed: AUTH payload does not match (wrong pre-shared key?)");
      return false;
    }
    return true;
  }

  void on_auth_response(const Parsed& p, TimePoint now) {
    const Pending ctx = std::move(*pending_);
    pending_.reset();
    if (const auto* n = p.find(Notify::kAuthenticationFailed)) {
      (void)n;
      ++eng_.counters_.auth_failed;
      fail("peer says AUTHENTICATION_FAILED");
      return;
    }
    if (!p.idr || !p.auth) {
      if (const auto* err = p.first_error()) fail("IKE_AUTH refused: " + notify_name(err->type));
      else fail("IKE_AUTH response without IDr or AUTH");
      return;
    }
    if (!verify_peer(p, *p.idr, p.idr_body, init_r_, ni_, keys_.pr)) {
      ++eng_.counters_.auth_failed;
      fail("authentication of the responder failed");
      return;
    }
    peer_id_ = p.idr->to_string();
    established(now);
    if (ctx.child) {
      if (const auto* err = p.first_error()) {
        warn(kTag, tag(), ": Child SA ", ctx.child->name, " not created: ", notify_name(err->type));
        return;
      }
      child_from_response(ctx, p, now, nullptr);
    }
  }

  void established(TimePoint now) {
    set_state(State::kEstablished);
    last_heard_ = now;
    ++eng_.counters_.ike_established;
    if (conn_.rekey_time) rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
    info(kTag, tag(), ": IKE SA established with '", peer_id_, "' at ", remote_.to_string(), ", ",
         t_.name(), encap() ? ", UDP-encapsulated" : "");
  }

  // Installs a Child SA negotiated with us as the exchange's initiator.
  void child_from_response(const Pending& ctx, const Parsed& p, TimePoint now, const SecureBytes* pfs) {
    if (!p.sa || !p.tsi || !p.tsr) {
      warn(kTag, tag(), ": Child SA response without SA or TS");
      return;
    }
    auto c = select_esp(ctx.child->esp_proposals, *p.sa, pfs != nullptr);
    if (!c || p.sa->proposals.size() != 1) {
      warn(kTag, tag(), ": Child SA response chose a proposal we did not offer");
      return;
    }
    auto lts = narrow(*p.tsi, ctx.child->local_ts);
    auto rts = narrow(*p.tsr, ctx.child->remote_ts);
    if (lts.empty() || rts.empty()) {
      warn(kTag, tag(), ": Child SA response has selectors outside ours");
      return;
    }
    const Bytes& ni = ctx.nonce.empty() ? ni_ : ctx.nonce;
    const Bytes& nr = ctx.nonce.empty() ? nr_ : p.nonce;
    install_child(*ctx.child, c->t, ctx.new_spi_in, c->peer_spi, lts, rts, ni, nr, true, pfs, now);
  }

  // KEYMAT = prf+(SK_d, [g^ir |] Ni | Nr); the exchange initiator's outbound keys first.
  bool install_child(const ChildConfig& cc, const core::EspTransform& t, std::uint32_t spi_in,
                     std::uint32_t spi_out, const std::vector<TrafficSelector>& lts,
                     const std::vector<TrafficSelector>& rts, ByteSpan ni, ByteSpan nr,
                     bool exchange_initiator, const SecureBytes* pfs, TimePoint now) {
    Bytes seed;
    if (pfs) seed.assign(pfs->span().begin(), pfs->span().end());
    seed.insert(seed.end(), ni.begin(), ni.end());
    seed.insert(seed.end(), nr.begin(), nr.end());
    const std::size_t half = t.keymat_len();
    SecureBytes km = prf_plus(t_.prf, keys_.d.span(), seed, 2 * half);
    core::secure_wipe(seed.data(), seed.size());
    core::SaParams sp;
    sp.name = conn_.name + "/" + cc.name + "/" + core::hex32(spi_in);
    sp.protocol = core::IpsecProtocol::kEsp;
    sp.mode = cc.mode;
    sp.transform = t;
    sp.local_addr = local_.addr;
    sp.remote_addr = remote_.addr;
    sp.encap = encap() ? core::Encap::kUdp : core::Encap::kNone;
    sp.remote_port = encap() ? remote_.port : core::kNattPort;
    for (const auto& x : lts) sp.selectors.local.push_back({x.start, x.end});
    for (const auto& x : rts) sp.selectors.remote.push_back({x.start, x.end});
    sp.replay_window = cc.replay_window;
    sp.in.spi = spi_in;
    sp.out.spi = spi_out;
    sp.out.keymat = SecureBytes(km.subspan(exchange_initiator ? 0 : half, half));
    sp.in.keymat = SecureBytes(km.subspan(exchange_initiator ? half : 0, half));
    std::string why;
    const std::string name = sp.name;
    if (!eng_.installer_.install(std::move(sp), why)) {
      error(kTag, tag(), ": installing Child SA ", name, " failed: ", why);
      return false;
    }
    ChildSa ch;
    ch.cfg = &cc;
    ch.name = name;
    ch.spi_in = spi_in;
    ch.spi_out = spi_out;
    ch.transform = t;
    ch.local_ts = lts;
    ch.remote_ts = rts;
    ch.established = now;
    ch.pfs = pfs != nullptr;
    if (cc.rekey_time) {
      // Soft lifetime with up to 10% jitter, so both ends do not rekey at once.
      std::uint32_t r = 0;
      eng_.random_bytes({reinterpret_cast<std::uint8_t*>(&r), sizeof r});
      const auto jitter = std::chrono::milliseconds(r % (cc.rekey_time * 100 + 1));
      ch.rekey_at = now + std::chrono::seconds(cc.rekey_time) - jitter;
    }
    // The hard lifetime holds whatever the soft one is: life_time when set
    // (also with rekey_time 0), else rekey_time + 10%.
    if (const std::uint32_t life = cc.life_time ? cc.life_time : cc.rekey_time + cc.rekey_time / 10)
      ch.expire_at = now + std::chrono::seconds(life);
    children_.push_back(ch);
    eng_.acquiring_.erase(conn_.name + "/" + cc.name);
    ++eng_.counters_.child_installed;
    info(kTag, tag(), ": Child SA ", name, " installed: ", t.name(), ", SPIs in ", core::hex32(spi_in),
         " out ", core::hex32(spi_out), ", ", ts_string(lts), " === ", ts_string(rts), pfs ? ", PFS" : "");
    return true;
  }

  // ---- responder -------------------------------------------------------------------

  // IKE_SA_INIT request; `p` already checked for proposal and KE group.
  void respond_init(ByteSpan msg, const Parsed& p, const IkeChoice& choice, TimePoint now) {
    t_ = choice.t;
    ni_ = p.nonce;
    init_i_.assign(msg.begin(), msg.end());
    peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
    std::string why;
    dh_ = DhKey::generate(t_.dh, why);
    if (!dh_) {
      fail(why);
      return;
    }
    nr_.resize(eng_.opt_.nonce_len);
    eng_.random_bytes(nr_);
    check_natd(p, spi_i_, 0);
    std::vector<Payload> pl;
    SaPayload sa;
    sa.proposals.push_back(choice.reply);
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(t_.dh), dh_->public_value()})));
    pl.push_back(make(PayloadType::kNonce, nr_));
    pl.push_back(notify(Notify::kNatDetectionSourceIp, natd_hash(spi_i_, spi_r_, local_.addr, local_.port)));
    pl.push_back(notify(Notify::kNatDetectionDestinationIp, natd_hash(spi_i_, spi_r_, remote_.addr, remote_.port)));
    pl.push_back(notify(Notify::kIkev2FragmentationSupported));
    pl.push_back(notify(Notify::kSignatureHashAlgorithms, {0, 2, 0, 3, 0, 4}));
    Bytes out = encode_plain(header(Exchange::kSaInit, true, 0), pl);
    init_r_ = out;
    last_response_ = {out};
    last_response_id_ = 0;
    next_in_id_ = 1;
    set_state(State::kInitDone);
    created_ = now;
    send_raw(out);
    if (!derive(p.ke->data)) return;
    info(kTag, tag(), ": IKE_SA_INIT from ", remote_.to_string(), " answered, ", t_.name());
  }

  void on_auth_request(const Header& h, const Parsed& p, TimePoint now) {
    if (!p.idi || !p.auth) {
      send_response(Exchange::kAuth, h.message_id, {notify(Notify::kInvalidSyntax)});
      fail("IKE_AUTH request without IDi or AUTH");
      return;
    }
    if (!verify_peer(p, *p.idi, p.idi_body, init_i_, nr_, keys_.pi)) {
      ++eng_.counters_.auth_failed;
      send_response(Exchange::kAuth, h.message_id, {notify(Notify::kAuthenticationFailed)});
      fail("AUTHENTICATION_FAILED for '" + p.idi->to_string() + "' from " + remote_.to_string());
      return;
    }
    peer_id_ = p.idi->to_string();
    if (p.find(Notify::kInitialContact)) {
      // The peer starts afresh (RFC 7296 2.4): its older IKE SAs with us are
      // stale; remove them without sending DELETE.
      for (auto& [spi, other] : eng_.sas_) {
        if (other.get() == this || &other->conn_ != &conn_ || other->peer_id_ != peer_id_ ||
            other->state_ != State::kEstablished)
          continue;
        info(kTag, tag(), ": INITIAL_CONTACT from '", peer_id_, "': removing stale ", other->tag());
        other->remove_children();
        other->set_state(State::kDead);
        eng_.note_deadline(now);
      }
    }
    const IdPayload id = local_id();
    const Bytes id_body = encode_id(id);
    std::vector<Payload> pl;
    pl.push_back(make(PayloadType::kIdr, id_body));
    pl.push_back(make(PayloadType::kAuth, encode_auth({AuthMethod::kPsk,
        psk_auth(t_.prf, conn_.psk.span(), init_r_, ni_, keys_.pr.span(), id_body)})));
    established(now);
    if (p.sa && p.tsi && p.tsr) {
      auto child_pl = respond_child(p, ni_, nr_, nullptr, now);
      pl.insert(pl.end(), child_pl.begin(), child_pl.end());
    }
    send_response(Exchange::kAuth, h.message_id, pl);
  }

  // Picks the child config, proposal and selectors for a child request;
  // returns the response payloads (or an error notify).
  std::vector<Payload> respond_child(const Parsed& p, ByteSpan ni, ByteSpan nr, const DhKey* dh_for_ke,
                                     TimePoint now, std::uint32_t rekeyed_out = 0,
                                     std::optional<std::uint32_t>* spi_in_out = nullptr) {
    const bool transport = p.find(Notify::kUseTransportMode) != nullptr;
    for (const auto& cc : conn_.children) {
      if ((cc.mode == core::SaMode::kTransport) != transport) continue;
      auto lts = narrow(*p.tsr, cc.local_ts);
      auto rts = narrow(*p.tsi, cc.remote_ts);
      if (lts.empty() || rts.empty()) continue;
      auto choice = select_esp(cc.esp_proposals, *p.sa, p.ke.has_value());
      if (!choice) {
        warn(kTag, tag(), ": no acceptable ESP proposal for child ", cc.name);
        return {notify(Notify::kNoProposalChosen)};
      }
      std::unique_ptr<DhKey> dh;
      std::optional<SecureBytes> shared;
      if (p.ke) {
        if (!choice->dh || static_cast<core::DhGroup>(p.ke->group) != *choice->dh) {
          Bytes g;
          core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->dh ? *choice->dh : t_.dh));
          return {notify(Notify::kInvalidKePayload, g)};
        }
        std::string why;
        dh = DhKey::generate(*choice->dh, why);
        if (dh) shared = dh->shared_secret(p.ke->data, why);
        if (!shared) return {notify(Notify::kNoProposalChosen)};
      }
      (void)dh_for_ke;
      const std::uint32_t spi_in = eng_.new_child_spi();
      std::vector<Payload> pl;
      if (transport) pl.push_back(notify(Notify::kUseTransportMode));
      Proposal reply = choice->reply;
      reply.spi = u32_bytes(spi_in);
      SaPayload sa;
      sa.proposals.push_back(reply);
      Bytes my_nonce(nr.begin(), nr.end());
      if (!install_child(cc, choice->t, spi_in, choice->peer_spi, lts, rts, ni, my_nonce, false,
                         shared ? &*shared : nullptr, now))
        return {notify(Notify::kNoProposalChosen)};
      if (spi_in_out) *spi_in_out = spi_in;
      (void)rekeyed_out;
      pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
      if (p.ke) pl.push_back(make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()})));
      pl.push_back(make(PayloadType::kTsi, encode_ts(rts)));
      pl.push_back(make(PayloadType::kTsr, encode_ts(lts)));
      return pl;
    }
    warn(kTag, tag(), ": no child matches the proposed selectors ", ts_string(*p.tsi), " === ",
            ts_string(*p.tsr));
    return {notify(Notify::kTsUnacceptable)};
  }

  // ---- CREATE_CHILD_SA and INFORMATIONAL, as responder ---------------------

  void on_create_child_request(const Header& h, const Parsed& p, TimePoint now) {
    if (!p.sa || p.nonce.empty()) {
      send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
      return;
    }
    Bytes nr(eng_.opt_.nonce_len);
    eng_.random_bytes(nr);
    const bool ike_rekey = !p.sa->proposals.empty() && p.sa->proposals[0].protocol == ProtocolId::kIke;
    if (ike_rekey) {
      respond_ike_rekey(h, p, nr, now);
      return;
    }
    if (!p.tsi || !p.tsr) {
      send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
      return;
    }
    // A rekey names the SA by the sender's inbound SPI, our outbound one.
    std::uint32_t rekeyed_in = 0;
    bool collision = false;
    if (const auto* rk = p.find(Notify::kRekeySa)) {
      if (rk->spi.size() != 4) {
        send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidSyntax)});
        return;
      }
      const std::uint32_t old_out = static_cast<std::uint32_t>(rk->spi[0] << 24 | rk->spi[1] << 16 | rk->spi[2] << 8 | rk->spi[3]);
      auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_out == old_out; });
      if (it == children_.end()) {
        // Already rekeyed and deleted (e.g. we won a collision): RFC 7296 2.25.
        send_response(Exchange::kCreateChildSa, h.message_id,
                      {notify(Notify::kChildSaNotFound, {}, ProtocolId::kEsp, rk->spi)});
        return;
      }
      rekeyed_in = it->spi_in;
      collision = it->rekeying;
      info(kTag, tag(), ": peer rekeys Child SA ", it->name, collision ? " while we rekey it too (collision)" : "");
    }
    std::vector<Payload> pl{make(PayloadType::kNonce, nr)};
    std::optional<std::uint32_t> new_in;
    auto child_pl = respond_child(p, p.nonce, nr, nullptr, now, 0, &new_in);
    if (child_pl.size() == 1 && child_pl[0].type == PayloadType::kNotify) {
      send_response(Exchange::kCreateChildSa, h.message_id, child_pl);
      return;
    }
    if (collision && new_in) collisions_[rekeyed_in] = {p.nonce, nr, *new_in};
    if (rekeyed_in && new_in) ++eng_.counters_.child_rekeyed;
    // SA first, then Nonce, as RFC 7296 1.3 lays the exchange out.
    std::vector<Payload> out;
    for (auto& x : child_pl) {
      out.push_back(x);
      if (x.type == PayloadType::kSa) out.push_back(pl[0]);
    }
    send_response(Exchange::kCreateChildSa, h.message_id, out);
  }

  void respond_ike_rekey(const Header& h, const Parsed& p, const Bytes& nr, TimePoint now);

  void on_informational_request(const Header& h, const Parsed& p, TimePoint now) {
    std::vector<Payload> out;
    bool delete_ike = false;
    for (const auto& d : p.deletes) {
      if (d.protocol == ProtocolId::kIke) {
        delete_ike = true;
        continue;
      }
      std::vector<std::uint32_t> ours;
      for (auto spi : d.spis) {
        for (auto it = children_.begin(); it != children_.end(); ++it) {
          if (it->spi_out == spi) {
            info(kTag, tag(), ": peer deleted Child SA ", it->name);
            ours.push_back(it->spi_in);
            eng_.installer_.remove(it->name);
            children_.erase(it);
            break;
          }
        }
      }
      if (!ours.empty()) out.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, ours})));
    }
    send_response(Exchange::kInformational, h.message_id, out);
    last_heard_ = now;
    if (delete_ike) {
      info(kTag, tag(), ": peer deleted the IKE SA");
      remove_children();
      set_state(State::kDead);
    }
  }

  // ---- requests of ours after establishment ----------------------------------------

  void send_informational(std::vector<Payload> pl, TimePoint now, bool dpd, bool delete_ike,
                          std::vector<std::uint32_t> deleting = {}) {
    Pending p;
    p.exchange = Exchange::kInformational;
    p.message_id = next_out_id_++;
    p.dpd = dpd;
    if (dpd && conn_.dpd_timeout) p.give_up = now + std::chrono::seconds(conn_.dpd_timeout);
    p.delete_ike = delete_ike;
    p.deleting = std::move(deleting);
    p.message = sealed(Exchange::kInformational, false, p.message_id, pl);
    send_request(std::move(p), now);
  }

  // A further Child SA on this IKE SA (CREATE_CHILD_SA without REKEY_SA).
  bool create_child(const ChildConfig& cc, TimePoint now) {
    if (pending_ || state_ != State::kEstablished) return false;
    Pending p;
    p.exchange = Exchange::kCreateChildSa;
    p.message_id = next_out_id_++;
    p.child = &cc;
    p.new_spi_in = eng_.new_child_spi();
    p.nonce.resize(eng_.opt_.nonce_len);
    eng_.random_bytes(p.nonce);
    std::vector<Payload> pl;
    if (cc.mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    SaPayload sa;
    std::uint8_t n = 1;
    const bool pfs = !cc.esp_proposals.empty() && !cc.esp_proposals[0].dh.empty();
    for (const auto& pr : cc.esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, p.new_spi_in, pfs));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kNonce, p.nonce));
    if (pfs) {
      std::string why;
      p.dh = DhKey::generate(cc.esp_proposals[0].dh[0], why);
      if (!p.dh) return false;
      pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(p.dh->group()), p.dh->public_value()})));
    }
    pl.push_back(make(PayloadType::kTsi, encode_ts(to_ts(cc.local_ts))));
    pl.push_back(make(PayloadType::kTsr, encode_ts(to_ts(cc.remote_ts))));
    p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
    info(kTag, tag(), ": creating Child SA ", cc.name);
    send_request(std::move(p), now);
    return true;
  }

  void rekey_child(ChildSa& ch, TimePoint now) {
    Pending p;
    p.exchange = Exchange::kCreateChildSa;
    p.message_id = next_out_id_++;
    p.child = ch.cfg;
    p.new_spi_in = eng_.new_child_spi();
    p.rekeyed_spi_in = ch.spi_in;
    p.nonce.resize(eng_.opt_.nonce_len);
    eng_.random_bytes(p.nonce);
    std::vector<Payload> pl;
    pl.push_back(notify(Notify::kRekeySa, {}, ProtocolId::kEsp, u32_bytes(ch.spi_in)));
    if (ch.cfg->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    SaPayload sa;
    std::uint8_t n = 1;
    const bool pfs = !ch.cfg->esp_proposals.empty() && !ch.cfg->esp_proposals[0].dh.empty();
    for (const auto& pr : ch.cfg->esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, p.new_spi_in, pfs));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kNonce, p.nonce));
    if (pfs) {
      std::string why;
      p.dh = DhKey::generate(ch.cfg->esp_proposals[0].dh[0], why);
      if (!p.dh) return;
      pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(p.dh->group()), p.dh->public_value()})));
    }
    pl.push_back(make(PayloadType::kTsi, encode_ts(ch.local_ts)));
    pl.push_back(make(PayloadType::kTsr, encode_ts(ch.remote_ts)));
    p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
    ch.rekeying = true;
    info(kTag, tag(), ": rekeying Child SA ", ch.name, pfs ? " with PFS" : "");
    send_request(std::move(p), now);
  }

  // IKE SA rekey as initiator (RFC 7296 2.18): new SPI, nonce and KE in a
  // CREATE_CHILD_SA; the Child SAs move to the new SA, then the old one is
  // deleted.
  void rekey_ike(TimePoint now) {
    Pending p;
    p.exchange = Exchange::kCreateChildSa;
    p.message_id = next_out_id_++;
    p.new_ike_spi = eng_.new_spi();
    p.nonce.resize(eng_.opt_.nonce_len);
    eng_.random_bytes(p.nonce);
    std::string why;
    p.dh = DhKey::generate(t_.dh, why);
    if (!p.dh) return;
    Bytes spi;
    core::ByteAppender{spi}.u64(p.new_ike_spi);
    SaPayload sa;
    std::uint8_t n = 1;
    // The negotiated suite first, then the configured ones.
    core::Proposal cur;
    cur.enc = {t_.enc};
    if (!t_.aead()) cur.integ = {t_.integ};
    cur.prf = {t_.prf};
    cur.dh = {t_.dh};
    sa.proposals.push_back(ike_offer(cur, n++, spi));
    for (const auto& pr : conn_.proposals) {
      auto offer = ike_offer(pr, n, spi);
      if (offer.transforms == sa.proposals.front().transforms) continue;  // offered already
      sa.proposals.push_back(std::move(offer));
      ++n;
    }
    std::vector<Payload> pl{make(PayloadType::kSa, encode_sa(sa)), make(PayloadType::kNonce, p.nonce),
                            make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(t_.dh), p.dh->public_value()}))};
    p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
    rekey_at_ = TimePoint::max();
    info(kTag, tag(), ": rekeying the IKE SA");
    send_request(std::move(p), now);
  }

  void on_ike_rekey_response(Pending& ctx, const Parsed& p, TimePoint now) {
    if (const auto* err = p.first_error()) {
      warn(kTag, tag(), ": IKE SA rekey refused: ", notify_name(err->type), "; retrying in 60 s");
      rekey_at_ = now + std::chrono::seconds(60);
      return;
    }
    std::string why;
    if (!p.sa || p.sa->proposals.size() != 1 || p.sa->proposals[0].spi.size() != 8 || !p.ke ||
        p.nonce.empty()) {
      warn(kTag, tag(), ": IKE SA rekey response incomplete");
      return;
    }
    auto choice = select_ike(conn_.proposals, *p.sa);
    std::optional<SecureBytes> shared;
    if (!choice || choice->t.dh != ctx.dh->group() ||
        !(shared = ctx.dh->shared_secret(p.ke->data, why))) {
      warn(kTag, tag(), ": IKE SA rekey response unusable ", why);
      return;
    }
    std::uint64_t peer_spi = 0;
    for (auto b : p.sa->proposals[0].spi) peer_spi = peer_spi << 8 | b;
    auto sa = std::make_unique<IkeSa>(eng_, conn_, true);
    sa->spi_i_ = ctx.new_ike_spi;
    sa->spi_r_ = peer_spi;
    sa->local_ = local_;
    sa->remote_ = remote_;
    sa->t_ = choice->t;
    sa->ni_ = ctx.nonce;
    sa->nr_ = p.nonce;
    sa->nat_local_ = nat_local_;
    sa->nat_remote_ = nat_remote_;
    sa->keys_ = derive_ike_keys(sa->t_, shared->span(), sa->ni_, sa->nr_, sa->spi_i_, sa->spi_r_, &keys_.d);
    if (!sa->make_ciphers()) return;
    sa->peer_id_ = peer_id_;
    sa->created_ = now;
    sa->adopt_established();
    sa->last_heard_ = now;
    if (conn_.rekey_time) sa->rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
    const auto new_spi = sa->spi_i_;
    if (ike_collision_) {
      // Both ends rekeyed (RFC 7296 2.8.2): the new SA of the exchange with
      // the lowest nonce is redundant and its initiator deletes it; the
      // winner's initiator deletes the old SA.
      const Collision c = *ike_collision_;
      ike_collision_.reset();
      auto less = [](const Bytes& a, const Bytes& b) {
        return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
      };
      const Bytes& ours_min = less(ctx.nonce, p.nonce) ? ctx.nonce : p.nonce;
      const Bytes& theirs_min = less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
      auto peer_sa = eng_.sas_.find(ike_collision_spi_);
      if (less(ours_min, theirs_min) && peer_sa != eng_.sas_.end()) {
        info(kTag, tag(), ": IKE SA rekey collision lost: keeping the peer's new SA ", peer_sa->second->tag());
        ++eng_.counters_.rekey_collisions_lost;
        peer_sa->second->children_ = std::move(children_);
        children_.clear();
        peer_sa->second->rekey_at_ = conn_.rekey_time ? now + std::chrono::seconds(conn_.rekey_time) : TimePoint::max();
        eng_.note_deadline(peer_sa->second->deadline());
        IkeSa* mine = sa.get();
        sa->rekey_at_ = TimePoint::max();
        eng_.add_sa(std::move(sa), new_spi);
        mine->send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
        eng_.note_deadline(mine->deadline());
        set_state(State::kRekeyed);  // the peer deletes the old SA
        rekeyed_at_ = now;
        rekey_at_ = TimePoint::max();
        return;
      }
      info(kTag, tag(), ": IKE SA rekey collision won: keeping our new SA");
      ++eng_.counters_.rekey_collisions_won;
      if (peer_sa != eng_.sas_.end()) peer_sa->second->rekey_at_ = TimePoint::max();  // the peer deletes it
    }
    sa->children_ = std::move(children_);
    children_.clear();
    info(kTag, tag(), ": IKE SA rekeyed, now ", sa->tag(), " (", sa->children_.size(), " Child SAs moved)");
    ++eng_.counters_.ike_rekeyed;
    eng_.add_sa(std::move(sa), new_spi);
    send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
    set_state(State::kRekeyed);
    rekeyed_at_ = now;
  }

  void on_create_child_response(const Parsed& p, TimePoint now) {
    Pending ctx = std::move(*pending_);
    pending_.reset();
    if (ctx.new_ike_spi) {
      on_ike_rekey_response(ctx, p, now);
      return;
    }
    auto old = std::find_if(children_.begin(), children_.end(),
                            [&](const ChildSa& c) { return c.spi_in == ctx.rekeyed_spi_in; });
    if (old != children_.end()) old->rekeying = false;
    if (const auto* err = p.first_error()) {
      warn(kTag, tag(), ": CREATE_CHILD_SA refused: ", notify_name(err->type));
      return;
    }
    if (p.nonce.empty()) return;
    std::optional<SecureBytes> shared;
    if (ctx.dh) {
      std::string why;
      if (!p.ke || (shared = ctx.dh->shared_secret(p.ke->data, why), !shared)) {
        warn(kTag, tag(), ": CREATE_CHILD_SA response without a usable KE");
        return;
      }
    }
    Parsed q = p;
    const std::size_t before = children_.size();
    child_from_response(ctx, q, now, shared ? &*shared : nullptr);
    if (children_.size() == before) return;
    if (ctx.rekeyed_spi_in) ++eng_.counters_.child_rekeyed;
    if (auto col = collisions_.find(ctx.rekeyed_spi_in); col != collisions_.end()) {
      // Both ends rekeyed this child at once. The SA made by the exchange
      // with the lowest of the four nonces is redundant, and the end that
      // initiated that exchange deletes it; the other end deletes the old SA.
      const Collision c = col->second;
      collisions_.erase(col);
      auto less = [](const Bytes& a, const Bytes& b) {
        return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
      };
      const Bytes& ours_min = less(ctx.nonce, p.nonce) ? ctx.nonce : p.nonce;
      const Bytes& theirs_min = less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
      if (less(ours_min, theirs_min)) {
        info(kTag, tag(), ": rekey collision lost (lowest nonce is ours): deleting our redundant Child SA");
        ++eng_.counters_.rekey_collisions_lost;
        old = std::find_if(children_.begin(), children_.end(),
                           [&](const ChildSa& x) { return x.spi_in == ctx.rekeyed_spi_in; });
        if (old != children_.end()) old->rekey_at = TimePoint::max();  // the peer deletes it
        const std::uint32_t spi = ctx.new_spi_in;
        send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false, {spi});
        return;
      }
      info(kTag, tag(), ": rekey collision won: keeping our new Child SA");
      ++eng_.counters_.rekey_collisions_won;
    }
    // Make-before-break: the new SA is installed; now delete the old one.
    old = std::find_if(children_.begin(), children_.end(),
                       [&](const ChildSa& c) { return c.spi_in == ctx.rekeyed_spi_in; });
    if (old != children_.end()) {
      const std::uint32_t spi = old->spi_in;
      send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false, {spi});
    }
  }

  void on_informational_response(const Parsed& p, TimePoint now) {
    Pending ctx = std::move(*pending_);
    pending_.reset();
    last_heard_ = now;
    for (auto spi : ctx.deleting) {
      auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_in == spi; });
      if (it != children_.end()) {
        info(kTag, tag(), ": Child SA ", it->name, " deleted");
        eng_.installer_.remove(it->name);
        children_.erase(it);
      }
    }
    (void)p;
    if (ctx.delete_ike) {
      remove_children();
      set_state(State::kDead);
      info(kTag, tag(), ": IKE SA deleted");
    }
  }

  // ---- message entry -------------------------------------------------------------

  void on_message(const Datagram& d, const Header& h, TimePoint now) {
    // Follow the peer to port 4500 or to a new NAT mapping (RFC 7296 2.23),
    // only for authenticated messages (checked below before use).
    const bool response = h.is_response();
    if (h.exchange == Exchange::kSaInit) {
      if (!response || !pending_ || pending_->exchange != Exchange::kSaInit) return;
      Parsed p;
      std::vector<Payload> pl;
      std::string why;
      RuleViolation v;
      if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
          !check_payload_rules(h.exchange, true, pl, {}, v) || !decode_all(pl, p, why)) {
        ++eng_.counters_.invalid_messages;
        warn(kTag, tag(), ": bad IKE_SA_INIT response: ", why.empty() ? v.detail : why);
        return;
      }
      on_init_response(d.data, h, p, now);
      return;
    }
    if (!in_) return;
    if (response) {
      if (!pending_ || h.message_id != pending_->message_id) {
        ++eng_.counters_.dropped_messages;
        debug(kTag, tag(), ": response with unexpected message ID ", h.message_id);
        return;
      }
    } else {
      if (h.message_id + 1 == next_in_id_ && last_response_id_ == h.message_id && !last_response_.empty()) {
        // For a fragmented request, answer once (on its first fragment).
        if (h.next == PayloadType::kSkf && d.data.size() >= kHeaderLen + 8 &&
            (d.data[kHeaderLen + 4] << 8 | d.data[kHeaderLen + 5]) != 1)
          return;
        debug(kTag, tag(), ": retransmitted request ", h.message_id, ", resending our response");
        send_raw(last_response_);
        return;
      }
      if (h.message_id != next_in_id_) {
        ++eng_.counters_.dropped_messages;
        debug(kTag, tag(), ": request with message ID ", h.message_id, ", expected ", next_in_id_);
        return;
      }
    }
    std::vector<Payload> outer;
    std::string why;
    if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, outer, why) || outer.empty() ||
        (outer.back().type != PayloadType::kSk && outer.back().type != PayloadType::kSkf)) {
      ++eng_.counters_.invalid_messages;
      warn(kTag, tag(), ": bad ", to_string(h.exchange), ": ", why.empty() ? "no encrypted payload" : why);
      return;
    }
    const bool fragment = outer.back().type == PayloadType::kSkf;
    std::size_t sk_body = d.data.size() - outer.back().body.size();
    std::uint16_t frag_num = 0, frag_total = 0;
    if (fragment) {
      const auto& b = outer.back().body;
      if (b.size() < 4) {
        ++eng_.counters_.invalid_messages;
        return;
      }
      frag_num = static_cast<std::uint16_t>(b[0] << 8 | b[1]);
      frag_total = static_cast<std::uint16_t>(b[2] << 8 | b[3]);
      if (frag_num == 0 || frag_num > frag_total || frag_total > kMaxFragments) {
        ++eng_.counters_.invalid_messages;
        warn(kTag, tag(), ": bad fragment ", frag_num, "/", frag_total);
        return;
      }
      sk_body += 4;
    }
    auto plain = in_->open(d.data, sk_body, why);
    if (!plain) {
      ++eng_.counters_.invalid_messages;
      warn(kTag, tag(), ": ", to_string(h.exchange), " ", response ? "response" : "request", " dropped: ", why);
      return;
    }
    PayloadType first = outer.back().inner_first;
    if (fragment) {
      if (!frags_ || frags_->message_id != h.message_id || frags_->response != response ||
          frags_->parts.size() != frag_total) {
        frags_ = Reassembly{h.message_id, response, PayloadType::kNone, {}, 0, 0};
        frags_->parts.resize(frag_total);
      }
      auto& slot = frags_->parts[frag_num - 1];
      if (!slot) {
        frags_->bytes += plain->size();
        if (frags_->bytes > kMaxMessage * 4) {
          warn(kTag, tag(), ": reassembled message too large, dropped");
          frags_.reset();
          return;
        }
        slot = std::move(*plain);
        ++frags_->have;
        if (frag_num == 1) frags_->first = first;
      }
      if (frags_->have < frag_total) return;  // wait for the rest
      Bytes whole;
      for (auto& part : frags_->parts) whole.insert(whole.end(), part->begin(), part->end());
      first = frags_->first;
      frags_.reset();
      plain = std::move(whole);
      debug(kTag, tag(), ": reassembled ", frag_total, " fragments");
    }
    std::vector<Payload> inner;
    Parsed p;
    RuleViolation v;
    // Structure, then the exchange's payload rules, then each payload's own.
    if (!parse_chain(*plain, first, inner, why) || !check_payload_rules(h.exchange, response, outer, inner, v) ||
        !decode_all(inner, p, why)) {
      if (why.empty()) why = v.detail;
      ++eng_.counters_.invalid_messages;
      warn(kTag, tag(), ": malformed ", to_string(h.exchange), ": ", why);
      if (!response) {
        next_in_id_ = h.message_id + 1;
        send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
        // An IKE_AUTH that cannot be read ends the half-open SA now (RFC 7296
        // 2.21.2: the IKE SA is not created), not after its timeout.
        if (state_ == State::kInitDone) fail("malformed IKE_AUTH request: the half-open IKE SA is removed");
      }
      return;
    }
    if (!response && h.exchange != Exchange::kAuth &&
        (state_ == State::kInitDone || state_ == State::kInitSent || state_ == State::kAuthSent)) {
      // RFC 7296 1.4: nothing but IKE_AUTH before the initial exchanges end.
      ++eng_.counters_.dropped_messages;
      warn(kTag, tag(), ": ", to_string(h.exchange), " request ", h.message_id,
           " before IKE_AUTH completed, dropped; it carried ", payload_list(inner));
      return;
    }
    last_heard_ = now;
    if (d.remote != remote_ || d.local.port != local_.port) {
      info(kTag, tag(), ": peer moved from ", remote_.to_string(), " to ", d.remote.to_string());
      remote_ = d.remote;
      local_ = d.local;
    }
    if (response) {
      switch (pending_->exchange) {
        case Exchange::kAuth: on_auth_response(p, now); break;
        case Exchange::kCreateChildSa: on_create_child_response(p, now); break;
        case Exchange::kInformational: on_informational_response(p, now); break;
        default: break;
      }
      send_queued_delete(now);
      return;
    }
    next_in_id_ = h.message_id + 1;
    switch (h.exchange) {
      case Exchange::kAuth:
        if (initiator_ || state_ != State::kInitDone) {
          send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
          return;
        }
        on_auth_request(h, p, now);
        break;
      case Exchange::kCreateChildSa:
        if (state_ != State::kEstablished) {
          send_response(h.exchange, h.message_id, {notify(Notify::kTemporaryFailure)});
          return;
        }
        on_create_child_request(h, p, now);
        break;
      case Exchange::kInformational:
        on_informational_request(h, p, now);
        break;
      default:
        send_response(h.exchange, h.message_id, {notify(Notify::kInvalidSyntax)});
        break;
    }
  }

  // ---- timers ---------------------------------------------------------------------

  [[nodiscard]] TimePoint deadline() const {
    TimePoint t = TimePoint::max();
    if (pending_) t = std::min({t, pending_->next_send, pending_->give_up});
    if (state_ == State::kEstablished) {
      if (conn_.dpd_delay && !pending_) t = std::min(t, last_heard_ + std::chrono::seconds(conn_.dpd_delay));
      if (!pending_) t = std::min(t, rekey_at_);
      for (const auto& c : children_) {
        if (!c.rekeying) t = std::min(t, c.rekey_at);
        t = std::min(t, c.expire_at);
      }
    }
    if (state_ == State::kInitDone) t = std::min(t, created_ + std::chrono::seconds(30));
    if (state_ == State::kRekeyed && !pending_) t = std::min(t, rekeyed_at_ + kRekeyedLinger);
    return t;
  }

  void tick(TimePoint now) {
    if (pending_ && now >= pending_->give_up) {
      pending_.reset();
      peer_gone("no answer to the liveness check within dpd_timeout " +
                    std::to_string(conn_.dpd_timeout) + " s",
                now);
      return;
    }
    if (pending_ && now >= pending_->next_send) {
      if (pending_->tries + 1 >= eng_.opt_.retransmit_tries) {
        const auto x = pending_->exchange;
        pending_.reset();
        peer_gone(std::string("no response to ") + to_string(x) + " after " +
                      std::to_string(eng_.opt_.retransmit_tries) + " transmissions",
                  now);
        return;
      }
      ++pending_->tries;
      ++eng_.counters_.retransmits;
      const double f = std::pow(eng_.opt_.retransmit_factor, pending_->tries);
      pending_->next_send = now + std::chrono::duration_cast<Clock::duration>(eng_.opt_.retransmit_base * f);
      debug(kTag, tag(), ": retransmitting ", to_string(pending_->exchange), " (", pending_->tries, ")");
      send_raw(pending_->message);
    }
    if (state_ == State::kInitDone && now >= created_ + std::chrono::seconds(30)) {
      fail("half-open IKE SA timed out");
      return;
    }
    if (state_ == State::kRekeyed && !pending_ && now >= rekeyed_at_ + kRekeyedLinger) {
      info(kTag, tag(), ": the peer did not delete the rekeyed IKE SA; removed");
      remove_children();
      set_state(State::kDead);
      return;
    }
    if (state_ != State::kEstablished) return;
    for (auto it = children_.begin(); it != children_.end();) {
      if (now >= it->expire_at) {
        // RFC 7296 2.8: an SA past its lifetime is gone; tell the peer with a
        // DELETE when the window is free (else its own lifetime ends it).
        warn(kTag, tag(), ": Child SA ", it->name, " reached its hard lifetime, removed");
        const std::uint32_t spi = it->spi_in;
        eng_.installer_.remove(it->name);
        it = children_.erase(it);
        if (!pending_)
          send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {spi}}))}, now, false, false);
      } else {
        ++it;
      }
    }
    if (pending_) return;
    if (now >= rekey_at_) {
      rekey_ike(now);
      return;
    }
    for (auto& c : children_) {
      if (!c.rekeying && now >= c.rekey_at) {
        rekey_child(c, now);
        return;
      }
    }
    if (conn_.dpd_delay && now >= last_heard_ + std::chrono::seconds(conn_.dpd_delay)) {
      debug(kTag, tag(), ": liveness check");
      send_informational({}, now, true, false);
    }
  }

  void peer_gone(const std::string& why, TimePoint now) {
    (void)now;
    if (state_ == State::kRekeyed || state_ == State::kDeleting) {
      // Its DELETE went unanswered: it was on its way out anyway. Neither a
      // failure nor a reason to restart (a rekeyed SA's successor is up).
      info(kTag, tag(), ": ", why, "; ", state_name(state_), " IKE SA removed");
      remove_children();
      set_state(State::kDead);
      return;
    }
    warn(kTag, tag(), ": ", why, "; peer considered dead");
    // An SA that was up is restarted when a child says dpd_action "restart";
    // one that never came up has failed, like one keying try in swanctl.
    restart_wanted_ = state_ == State::kEstablished;
    if (!restart_wanted_) ++eng_.counters_.ike_failed;
    remove_children();
    set_state(State::kDead);
  }

  void remove_children() {
    for (const auto& c : children_) eng_.installer_.remove(c.name);
    children_.clear();
  }

  void fail(const std::string& why) {
    warn(kTag, tag(), ": ", why);
    ++eng_.counters_.ike_failed;
    remove_children();
    set_state(State::kDead);
  }

  // Deletes this IKE SA with an INFORMATIONAL DELETE (RFC 7296 1.4.1) as
  // soon as the window allows (2.3: one request outstanding): now, or once
  // the outstanding request is answered. An SA not yet established just ends.
  void request_delete(TimePoint now) {
    if (state_ != State::kEstablished || !out_) {
      remove_children();
      set_state(State::kDead);
      return;
    }
    if (pending_) {
      delete_queued_ = true;
      debug(kTag, tag(), ": DELETE waits for the outstanding ", to_string(pending_->exchange));
      return;
    }
    delete_queued_ = false;
    send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
    set_state(State::kDeleting);
  }
  // Ends this SA at once (its configuration is going away): a DELETE is
  // sent, unwaited, when the window is free; never a second request.
  void delete_now(TimePoint now) {
    if (state_ == State::kEstablished && out_) {
      if (pending_) {
        info(kTag, tag(), ": DELETE not sent, a ", to_string(pending_->exchange),
             " request is outstanding (RFC 7296 2.3); the peer finds out by its liveness checks");
      } else {
        send_raw(sealed(Exchange::kInformational, false, next_out_id_++,
                        {make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}));
        info(kTag, tag(), ": IKE SA deleted (DELETE sent)");
      }
    }
    (void)now;
    remove_children();
    set_state(State::kDead);
  }
  void send_queued_delete(TimePoint now) {
    if (delete_queued_ && !pending_ && state_ == State::kEstablished) request_delete(now);
  }
  // Still busy with a DELETE: queued, or sent and not answered.
  [[nodiscard]] bool deleting() const {
    return state_ != State::kDead && (delete_queued_ || (state_ == State::kDeleting && pending_));
  }

  bool delete_queued_ = false;
  TimePoint rekeyed_at_ = TimePoint::max();
  bool restart_wanted_ = false;
};

// IKE SA rekey as responder (RFC 7296 2.18): a new IKE SA with fresh SPIs
// and keys from the old SK_d; the Child SAs move to it.
void IkeSa::respond_ike_rekey(const Header& h, const Parsed& p, const Bytes& nr, TimePoint now) {
  auto choice = select_ike(conn_.proposals, *p.sa);
  if (!choice || !p.ke || p.sa->proposals[0].spi.size() != 8) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kNoProposalChosen)});
    return;
  }
  if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
    Bytes g;
    core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kInvalidKePayload, g)});
    return;
  }
  std::string why;
  auto dh = DhKey::generate(choice->t.dh, why);
  auto shared = dh ? dh->shared_secret(p.ke->data, why) : std::nullopt;
  if (!shared) {
    send_response(Exchange::kCreateChildSa, h.message_id, {notify(Notify::kNoProposalChosen)});
    return;
  }
  const auto& tp = p.sa->proposals[0];
  std::uint64_t peer_spi = 0;
  for (auto b : tp.spi) peer_spi = peer_spi << 8 | b;
  auto sa = std::make_unique<IkeSa>(eng_, conn_, false);
  sa->spi_i_ = peer_spi;
  sa->spi_r_ = eng_.new_spi();
  sa->local_ = local_;
  sa->remote_ = remote_;
  sa->t_ = choice->t;
  sa->ni_ = p.nonce;
  sa->nr_ = nr;
  sa->nat_local_ = nat_local_;
  sa->nat_remote_ = nat_remote_;
  sa->keys_ = derive_ike_keys(sa->t_, shared->span(), sa->ni_, sa->nr_, sa->spi_i_, sa->spi_r_, &keys_.d);
  if (!sa->make_ciphers()) return;
  Proposal reply = choice->reply;
  core::ByteAppender{reply.spi}.u64(sa->spi_r_);
  SaPayload out_sa;
  out_sa.proposals.push_back(reply);
  send_response(Exchange::kCreateChildSa, h.message_id,
                {make(PayloadType::kSa, encode_sa(out_sa)), make(PayloadType::kNonce, nr),
                 make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()}))});
  sa->peer_id_ = peer_id_;
  sa->created_ = now;
  sa->adopt_established();
  sa->last_heard_ = now;
  if (conn_.rekey_time) sa->rekey_at_ = now + std::chrono::seconds(conn_.rekey_time);
  const auto new_spi = sa->spi_r_;
  if (pending_ && pending_->new_ike_spi) {
    // We are rekeying this IKE SA too (RFC 7296 2.8.2): decide which new SA
    // survives when our own exchange completes; the Child SAs stay here
    // until then.
    ike_collision_ = Collision{p.nonce, nr, 0};
    ike_collision_spi_ = new_spi;
    sa->rekey_at_ = TimePoint::max();
    info(kTag, tag(), ": IKE SA rekey collision: the peer rekeys it while we do");
  } else {
    sa->children_ = std::move(children_);
    children_.clear();
    info(kTag, tag(), ": IKE SA rekeyed by the peer, now ", sa->tag(), " (", sa->children_.size(),
         " Child SAs moved)");
    ++eng_.counters_.ike_rekeyed;
    // The old SA stays until the peer deletes it, no longer established.
    set_state(State::kRekeyed);
    rekeyed_at_ = now;
  }
  eng_.add_sa(std::move(sa), new_spi);
}

// ---------------------------------------------------------------------------

Engine::Engine(std::vector<ConnectionConfig> conns, core::SaInstaller& installer, EngineOptions opt)
    : installer_(installer), opt_(opt), cookie_secret_(32) {
  for (auto& c : conns) conns_.push_back(std::make_unique<ConnectionConfig>(std::move(c)));
  random_bytes(cookie_secret_.mut_span());
  v1_ = std::make_unique<v1::Manager>(v1::Host{
      installer_, opt_, counters_,
      [this](const Endpoint& l, const Endpoint& r, Bytes b) { send(l, r, std::move(b)); },
      [this](core::MutByteSpan out) { random_bytes(out); },
      [this] { return new_child_spi(); },
      [this](const Endpoint& l, const Endpoint& r) { return find_connection_for(l, r, 1); },
      [this](const std::string& key) { acquiring_.erase(key); }});
}

const ConnectionConfig* Engine::find_connection(const std::string& name) const {
  for (const auto& x : conns_)
    if (x->name == name) return x.get();
  return nullptr;
}

Engine::~Engine() = default;

void Engine::random_bytes(core::MutByteSpan out) {
  if (opt_.random) opt_.random(out);
  else core::random_bytes(out);
}

std::uint64_t Engine::new_spi() {
  std::uint64_t s = 0;
  while (s == 0 || sas_.count(s)) random_bytes({reinterpret_cast<std::uint8_t*>(&s), sizeof s});
  return s;
}

std::uint32_t Engine::new_child_spi() {
  std::uint32_t s = 0;
  while (s < 256) random_bytes({reinterpret_cast<std::uint8_t*>(&s), sizeof s});
  return s;
}

void Engine::send(const Endpoint& local, const Endpoint& remote, Bytes data) {
  out_.push_back({local, remote, std::move(data)});
}

std::vector<Datagram> Engine::take_output() {
  std::vector<Datagram> o;
  o.swap(out_);
  return o;
}

void Engine::start(TimePoint now) {
  for (const auto& cp : conns_) start_connection(*cp, now);
}

void Engine::start_connection(const ConnectionConfig& c, TimePoint now) {
  {
    for (const auto& ch : c.children) {
      if (ch.start_action == StartAction::kStart) {
        std::string why;
        if (!initiate(c.name, ch.name, now, why)) error(kTag, c.name, ": cannot initiate: ", why);
        break;
      }
    }
  }
}

bool Engine::initiate(const std::string& name, const std::string& child, TimePoint now, std::string& why) {
  const ConnectionConfig* c = find_connection(name);
  if (!c) {
    why = "no connection named '" + name + "'";
    return false;
  }
  if (c->version == 1) return v1_->initiate(*c, child, now, why);
  if (c->local_addrs.empty() || c->remote_addrs.empty()) {
    why = "initiating needs local_addrs and remote_addrs";
    return false;
  }
  auto sa = std::make_unique<IkeSa>(*this, *c, true);
  sa->spi_i_ = new_spi();
  sa->local_ = {c->local_addrs[0], c->local_port};
  sa->remote_ = {c->remote_addrs[0], c->remote_port};
  if (c->encap) {
    sa->local_.port = core::kNattPort;
    sa->remote_.port = core::kNattPort;
  }
  sa->created_ = now;
  for (const auto& ch : c->children)
    if (child.empty() || ch.name == child) {
      sa->first_child_ = &ch;
      break;
    }
  if (!sa->start_init(now, why)) return false;
  const auto spi = sa->spi_i_;
  add_sa(std::move(sa), spi);
  return true;
}

const ConnectionConfig* Engine::find_connection_for(const Endpoint& local, const Endpoint& remote,
                                                    int version) const {
  const ConnectionConfig* any = nullptr;
  for (const auto& cp : conns_) {
    const auto& c = *cp;
    if (c.version != 0 && c.version != version) continue;
    const bool local_ok = c.local_addrs.empty() ||
        std::find(c.local_addrs.begin(), c.local_addrs.end(), local.addr) != c.local_addrs.end();
    if (!local_ok) continue;
    if (std::find(c.remote_addrs.begin(), c.remote_addrs.end(), remote.addr) != c.remote_addrs.end())
      return &c;
    if (c.remote_addrs.empty() && !any) any = &c;
  }
  return any;
}

Bytes Engine::cookie_for(const Datagram& d, std::uint64_t spi_i, ByteSpan ni) const {
  // RFC 7296 2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>)
  Bytes in(ni.begin(), ni.end());
  core::ByteAppender a{in};
  a.bytes(d.remote.addr.bytes());
  a.u64(spi_i);
  Bytes c{0};
  Bytes mac = prf(core::PrfAlg::kHmacSha256, cookie_secret_.span(), in);
  c.insert(c.end(), mac.begin(), mac.end());
  return c;
}

void Engine::handle_sa_init_request(const Datagram& d, const Header& h, TimePoint now) {
  // Half-open SAs, pruned of those that moved on; a retransmitted
  // IKE_SA_INIT is answered from its half-open SA.
  for (auto it = half_open_.begin(); it != half_open_.end();) {
    auto sa = sas_.find(it->second);
    if (sa == sas_.end() || sa->second->state_ != IkeSa::State::kInitDone) it = half_open_.erase(it);
    else ++it;
  }
  if (auto it = half_open_.find(h.spi_i); it != half_open_.end()) {
    const auto& sa = sas_.at(it->second);
    if (sa->remote_ == d.remote) {
      send(d.local, d.remote, sa->init_r_);
      return;
    }
  }
  Parsed p;
  std::vector<Payload> pl;
  std::string why;
  auto reply_plain = [&](std::vector<Payload> payloads) {
    Header r;
    r.spi_i = h.spi_i;
    r.spi_r = 0;
    r.exchange = Exchange::kSaInit;
    r.flags = kFlagResponse;
    send(d.local, d.remote, encode_plain(r, payloads));
  };
  RuleViolation v;
  if (!parse_chain(ByteSpan(d.data).subspan(kHeaderLen), h.next, pl, why) ||
      !check_payload_rules(Exchange::kSaInit, false, pl, {}, v) || !decode_all(pl, p, why)) {
    if (why.empty()) why = v.detail;
    ++counters_.invalid_messages;
    warn(kTag, "bad IKE_SA_INIT from ", d.remote.to_string(), ": ", why);
    return;
  }
  if (!p.sa || !p.ke || p.nonce.empty()) {
    ++counters_.invalid_messages;
    warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), " without SA, KE or Nonce");
    return;
  }
  const ConnectionConfig* c = find_connection_for(d.local, d.remote, 2);
  if (!c) {
    warn(kTag, "IKE_SA_INIT from ", d.remote.to_string(), ": no connection configured for it");
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  // Cookies when too many SAs are half open (RFC 7296 2.6).
  if (half_open_.size() >= opt_.cookie_threshold) {
    const Bytes want = cookie_for(d, h.spi_i, p.nonce);
    const auto* ck = p.find(Notify::kCookie);
    if (!ck || !core::ct_equal(ck->data, want)) {
      ++counters_.cookies_sent;
      reply_plain({notify(Notify::kCookie, want)});
      return;
    }
  }
  auto choice = select_ike(c->proposals, *p.sa);
  if (!choice) {
    warn(kTag, c->name, ": no acceptable IKE proposal from ", d.remote.to_string());
    reply_plain({notify(Notify::kNoProposalChosen)});
    ++counters_.ike_failed;
    return;
  }
  if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
    Bytes g;
    core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
    info(kTag, c->name, ": KE for group ", p.ke->group, " from ", d.remote.to_string(),
         ", asking for group ", static_cast<int>(choice->t.dh));
    reply_plain({notify(Notify::kInvalidKePayload, g)});
    return;
  }
  auto sa = std::make_unique<IkeSa>(*this, *c, false);
  sa->spi_i_ = h.spi_i;
  sa->spi_r_ = new_spi();
  sa->local_ = d.local;
  sa->remote_ = d.remote;
  sa->respond_init(d.data, p, *choice, now);
  if (sa->state_ != IkeSa::State::kDead) {
    half_open_[sa->spi_i_] = sa->spi_r_;
    const auto spi = sa->spi_r_;
    add_sa(std::move(sa), spi);
  }
}

void Engine::receive(const Datagram& d, TimePoint now) {
  std::string why;
  auto h = parse_header(d.data, why);
  if (!h) {
    ++counters_.invalid_messages;
    debug(kTag, "datagram from ", d.remote.to_string(), " dropped: ", why);
    return;
  }
  if ((h->version >> 4) == 1) {
    v1_->receive(d, now);
    if (auto t = v1_->next_deadline()) note_deadline(*t);
    return;
  }
  if ((h->version >> 4) != 2) {
    ++counters_.invalid_messages;
    debug(kTag, "IKE version ", h->version >> 4, " message from ", d.remote.to_string(), " dropped");
    return;
  }
  if (h->exchange == Exchange::kSaInit && !h->is_response() && h->spi_r == 0) {
    if (h->message_id != 0) return;
    handle_sa_init_request(d, *h, now);
  } else {
    // The sender's I flag says which SPI is ours.
    const std::uint64_t ours = h->from_initiator() ? h->spi_r : h->spi_i;
    auto it = sas_.find(ours);
    if (it == sas_.end() || (h->from_initiator() && it->second->initiator_) ||
        (!h->from_initiator() && !it->second->initiator_)) {
      ++counters_.dropped_messages;
      debug(kTag, "message for unknown IKE SA ", core::hex64(ours), " from ", d.remote.to_string());
      return;
    }
    it->second->on_message(d, *h, now);
    // Only the SA that got the message can have died of it.
    if (it->second->state_ == IkeSa::State::kDead) sas_.erase(it);
    else note_deadline(it->second->deadline());
  }
}

void Engine::bytes_used(const std::string& sa_name, std::uint64_t bytes, TimePoint now) {
  bool found = false;
  v1_->bytes_used(sa_name, bytes, now, found);
  if (found) {
    note_deadline(now);
    return;
  }
  for (auto& [spi, sa] : sas_) {
    for (auto it = sa->children_.begin(); it != sa->children_.end(); ++it) {
      if (it->name != sa_name) continue;
      const auto& cc = *it->cfg;
      if (cc.life_bytes && bytes >= cc.life_bytes) {
        warn(kTag, sa->tag(), ": Child SA ", it->name, " reached life_bytes (", bytes, "), removed");
        installer_.remove(it->name);
        sa->children_.erase(it);
      } else if (cc.rekey_bytes && bytes >= cc.rekey_bytes && !it->rekeying && it->rekey_at > now) {
        info(kTag, sa->tag(), ": Child SA ", it->name, " reached rekey_bytes (", bytes, ")");
        it->rekey_at = now;  // the next tick rekeys it
        note_deadline(now);
      }
      return;
    }
  }
}

bool same_connection(const ConnectionConfig& a, const ConnectionConfig& b) {
  return a.name == b.name && a.version == b.version && a.local_addrs == b.local_addrs &&
         a.remote_addrs == b.remote_addrs && a.local_id == b.local_id && a.remote_id == b.remote_id &&
         a.proposals == b.proposals && a.encap == b.encap && a.dpd_delay == b.dpd_delay &&
         a.dpd_timeout == b.dpd_timeout && a.rekey_time == b.rekey_time && a.reauth_time == b.reauth_time &&
         a.fragment_size == b.fragment_size && a.aggressive == b.aggressive && a.local_port == b.local_port && a.remote_port == b.remote_port &&
         a.children == b.children && core::ct_equal(a.psk.span(), b.psk.span());
}

ReloadResult Engine::reload(std::vector<ConnectionConfig> next, TimePoint now) {
  ReloadResult r;
  std::vector<std::unique_ptr<ConnectionConfig>> kept;
  std::vector<const ConnectionConfig*> to_start;
  // Tear down the SAs of connections that are gone or changed.
  auto tear_down = [&](const ConnectionConfig* c) {
    v1_->delete_all(c, now);
    for (auto& [spi, sa] : sas_) {
      if (&sa->conn_ != c) continue;
      sa->delete_now(now);  // its configuration goes away with the reload
      sa->set_state(IkeSa::State::kDead);
    }
    remove_dead();
    for (auto it = acquiring_.begin(); it != acquiring_.end();)
      it = it->first.rfind(c->name + "/", 0) == 0 ? acquiring_.erase(it) : std::next(it);
  };
  for (auto& old : conns_) {
    auto it = std::find_if(next.begin(), next.end(), [&](const ConnectionConfig& n) { return n.name == old->name; });
    if (it == next.end()) {
      info(kTag, old->name, ": removed by reload");
      tear_down(old.get());
      r.removed.push_back(old->name);
    } else if (same_connection(*old, *it)) {
      r.unchanged.push_back(old->name);
      kept.push_back(std::move(old));
      next.erase(it);
    } else {
      info(kTag, old->name, ": changed by reload; re-establishing");
      tear_down(old.get());
      r.changed.push_back(old->name);
      kept.push_back(std::make_unique<ConnectionConfig>(std::move(*it)));
      to_start.push_back(kept.back().get());
      next.erase(it);
    }
  }
  for (auto& n : next) {
    info(kTag, n.name, ": added by reload");
    r.added.push_back(n.name);
    kept.push_back(std::make_unique<ConnectionConfig>(std::move(n)));
    to_start.push_back(kept.back().get());
  }
  conns_ = std::move(kept);
  for (const auto* c : to_start) start_connection(*c, now);
  return r;
}

void Engine::acquire(const std::string& conn, const std::string& child, TimePoint now) {
  const std::string key = conn + "/" + child;
  if (auto it = acquiring_.find(key); it != acquiring_.end() && now - it->second < std::chrono::seconds(10)) return;
  const ChildConfig* cc = nullptr;
  for (const auto& c : conns_)
    if (c->name == conn)
      for (const auto& ch : c->children)
        if (ch.name == child) cc = &ch;
  if (!cc) return;
  acquiring_[key] = now;
  info(kTag, key, ": acquire for a packet matching the trap policy");
  if (const auto* c = find_connection(conn); c && c->version == 1) {
    v1_->acquire(*c, *cc, now);
    if (auto t = v1_->next_deadline()) note_deadline(*t);
    return;
  }
  for (auto& [spi, sa] : sas_) {
    if (sa->conn_.name != conn) continue;
    if (sa->state_ == IkeSa::State::kEstablished) {
      for (const auto& c : sa->children_)
        if (c.cfg == cc) return;  // already up
      if (!sa->create_child(*cc, now)) acquiring_.erase(key);  // busy: the next packet retries
      note_deadline(sa->deadline());
      return;
    }
    if (sa->state_ == IkeSa::State::kInitSent || sa->state_ == IkeSa::State::kAuthSent) return;
  }
  std::string why;
  if (!initiate(conn, child, now, why)) {
    warn(kTag, key, ": cannot initiate: ", why);
    acquiring_.erase(key);
  }
}

void Engine::add_sa(std::unique_ptr<IkeSa> sa, std::uint64_t our_spi) {
  note_deadline(sa->deadline());
  sas_[our_spi] = std::move(sa);
}

void Engine::tick(TimePoint now) {
  v1_->tick(now);
  std::vector<IkeSa*> due;
  for (auto& [spi, sa] : sas_)
    if (sa->deadline() <= now) due.push_back(sa.get());
  for (auto* sa : due) sa->tick(now);
  // Restart connections whose peer went away, when configured to.
  std::vector<std::pair<std::string, std::string>> restart;
  for (auto& [spi, sa] : sas_) {
    if (sa->state_ == IkeSa::State::kDead && sa->restart_wanted_ && sa->initiator_) {
      for (const auto& ch : sa->conn_.children)
        if (ch.dpd_action == DpdAction::kRestart) {
          restart.emplace_back(sa->conn_.name, ch.name);
          break;
        }
    }
  }
  remove_dead();
  cached_deadline_ = TimePoint::max();
  for (const auto& [spi, sa] : sas_) cached_deadline_ = std::min(cached_deadline_, sa->deadline());
  for (const auto& [c, ch] : restart) {
    std::string why;
    info(kTag, c, ": restarting");
    initiate(c, ch, now, why);
  }
}

void Engine::shutdown(TimePoint now) {
  v1_->delete_all(nullptr, now);
  for (auto& [spi, sa] : sas_) sa->request_delete(now);
  remove_dead();
  note_deadline(now);
}

bool Engine::shutdown_done() const {
  for (const auto& [spi, sa] : sas_)
    if (sa->deleting()) return false;
  return true;
}

void Engine::finish_shutdown() {
  v1_->delete_all(nullptr, TimePoint{});
  for (auto& [spi, sa] : sas_) {
    if (sa->deleting()) info(kTag, sa->tag(), ": no answer to its DELETE before shutdown");
    sa->remove_children();
    sa->set_state(IkeSa::State::kDead);
  }
  remove_dead();
}

void Engine::remove_dead() {
  for (auto it = sas_.begin(); it != sas_.end();) {
    if (it->second->state_ == IkeSa::State::kDead) it = sas_.erase(it);
    else ++it;
  }
}

std::optional<TimePoint> Engine::next_deadline() const {
  TimePoint t = cached_deadline_;
  if (auto v = v1_->next_deadline()) t = std::min(t, *v);
  if (t == TimePoint::max()) return std::nullopt;
  return t;
}

std::size_t Engine::ike_sa_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [spi, sa] : sas_) n += sa->state_ == IkeSa::State::kEstablished;
  return n + v1_->sa_count();
}

std::size_t Engine::child_sa_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [spi, sa] : sas_) n += sa->children_.size();
  return n + v1_->child_count();
}

bool Engine::established(const std::string& conn) const {
  if (v1_->established(conn)) return true;
  for (const auto& [spi, sa] : sas_)
    if (sa->conn_.name == conn && sa->state_ == IkeSa::State::kEstablished) return true;
  return false;
}

bool Engine::terminate(const std::string& conn, const std::string& child, TimePoint now, std::string& why) {
  if (const auto* c = find_connection(conn); c && c->version == 1) return v1_->terminate(*c, child, now, why);
  for (auto& [spi, sa] : sas_) {
    if (sa->conn_.name != conn || sa->state_ != IkeSa::State::kEstablished) continue;
    if (child.empty()) {
      sa->request_delete(now);  // now, or once the outstanding request is answered
      info(kTag, sa->tag(), ": deleting the IKE SA (requested)");
      note_deadline(now);
      return true;
    }
    for (const auto& c : sa->children_) {
      if (c.cfg->name != child) continue;
      if (sa->pending_) {
        why = "the IKE SA is busy with another exchange; try again";
        return false;
      }
      sa->send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, {c.spi_in}}))}, now,
                             false, false, {c.spi_in});
      info(kTag, sa->tag(), ": deleting Child SA ", c.name, " (requested)");
      note_deadline(sa->deadline());
      return true;
    }
  }
  why = child.empty() ? "no established IKE SA for '" + conn + "'"
                      : "no Child SA '" + child + "' in an established IKE SA of '" + conn + "'";
  return false;
}

std::vector<IkeStatus> Engine::status(TimePoint now) const {
  static const char* states[] = {"CONNECTING", "AUTHENTICATING", "HALF_OPEN", "ESTABLISHED", "DELETING", "REKEYED", "DEAD"};
  auto secs = [&](TimePoint t) -> std::int64_t {
    if (t == TimePoint::max()) return -1;
    return std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(t - now).count());
  };
  std::vector<IkeStatus> out;
  for (const auto& [spi, sa] : sas_) {
    IkeStatus st;
    st.connection = sa->conn_.name;
    st.state = states[static_cast<int>(sa->state_)];
    st.initiator = sa->initiator_;
    st.spi_i = sa->spi_i_;
    st.spi_r = sa->spi_r_;
    st.local = sa->local_.to_string();
    st.remote = sa->remote_.to_string();
    st.local_id = sa->local_id().to_string();
    st.remote_id = sa->peer_id_;
    st.algorithms = sa->out_ ? sa->t_.name() : "";
    st.nat_local = sa->nat_local_;
    st.nat_remote = sa->nat_remote_;
    st.udp_encap = sa->encap();
    st.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - sa->created_).count();
    st.rekey_in_s = secs(sa->rekey_at_);
    for (const auto& c : sa->children_) {
      ChildStatus cs;
      cs.name = c.name;
      cs.child = c.cfg->name;
      cs.spi_in = c.spi_in;
      cs.spi_out = c.spi_out;
      cs.algorithms = c.transform.name();
      cs.pfs = c.pfs;
      cs.local_ts = ts_string(c.local_ts);
      cs.remote_ts = ts_string(c.remote_ts);
      cs.age_s = std::chrono::duration_cast<std::chrono::seconds>(now - c.established).count();
      cs.rekey_in_s = c.rekeying ? 0 : secs(c.rekey_at);
      cs.expire_in_s = secs(c.expire_at);
      st.children.push_back(std::move(cs));
    }
    out.push_back(std::move(st));
  }
  for (auto& st : v1_->status(now)) out.push_back(std::move(st));
  return out;
}

std::vector<std::string> Engine::describe() const {
  std::vector<std::string> out;
  for (const auto& [spi, sa] : sas_) {
    out.push_back(sa->tag() + " " + IkeSa::state_name(sa->state_) + " " + sa->local_.to_string() +
                  " <-> " + sa->remote_.to_string() + " " + sa->t_.name());
    for (const auto& c : sa->children_) {
      out.push_back("  " + c.name + " " + c.transform.name() + " in " + core::hex32(c.spi_in) + " out " +
                    core::hex32(c.spi_out) + " " + ts_string(c.local_ts) + " === " + ts_string(c.remote_ts));
    }
  }
  for (auto& l : v1_->describe()) out.push_back(std::move(l));
  return out;
}

}  // namespace ipsecgw::ike
