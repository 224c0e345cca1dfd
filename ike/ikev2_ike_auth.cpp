// ike_auth: IKE_AUTH (RFC 7296 1.2, 2.15) with pre-shared keys, both roles:
// identities, AUTH over the IKE_SA_INIT messages (kept here as they pass),
// INITIAL_CONTACT (2.4). The first Child SA is child_create's part of the
// same messages. Certificates plug in here, beside the PSK method.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class IkeAuth final : public Task {
 public:
  IkeAuth(IkeSa& sa, bool initiator) : sa_(sa), initiator_(initiator) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kIkeAuth; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kAuth; }

  void sent(Exchange x, const std::vector<Bytes>& dg) override {
    if (x != Exchange::kSaInit || dg.empty()) return;
    (initiator_ ? init_i_ : init_r_) = dg.front();
  }

  TaskStatus build_i(OutMessage& m) override {
    if (m.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    if (sa_.encap() && sa_.local_.port != core::kNattPort) {
      // RFC 7296 2.23: after NAT detection, on to port 4500.
      sa_.local_.port = core::kNattPort;
      sa_.remote_.port = core::kNattPort;
    }
    const auto& c = sa_.conn_;
    const Bytes id_body = encode_id(sa_.local_id());
    auto& pl = m.payloads;
    pl.push_back(make(PayloadType::kIdi, id_body));
    if (sa_.opt().initial_contact && only_sa_with_peer()) pl.push_back(notify(Notify::kInitialContact));
    if (!c.remote_id.empty()) pl.push_back(make(PayloadType::kIdr, encode_id(id_from_string(c.remote_id))));
    pl.push_back(make(PayloadType::kAuth, encode_auth({AuthMethod::kPsk, psk_auth(sa_.t_.prf, c.psk.span(), init_i_,
                                                                               sa_.nr_, sa_.keys_.pi.span(), id_body)})));
    sa_.set_state(IkeSa::State::kAuthSent);
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage& m) override {
    const Parsed& p = m.payloads;
    if (m.header.exchange == Exchange::kSaInit) {
      if (sa_.keyed()) init_r_.assign(m.raw.begin(), m.raw.end());  // not for a COOKIE or INVALID_KE answer
      return TaskStatus::kNeedMore;
    }
    if (p.find(Notify::kAuthenticationFailed)) {
      ++sa_.counters().auth_failed;
      sa_.fail("peer says AUTHENTICATION_FAILED");
      return TaskStatus::kFailed;
    }
    if (!p.idr || !p.auth) {
      if (const auto* err = p.first_error()) sa_.fail("IKE_AUTH refused: " + notify_name(err->type));
      else sa_.fail("IKE_AUTH response without IDr or AUTH");
      return TaskStatus::kFailed;
    }
    if (!verify_peer(p, *p.idr, p.idr_body, init_r_, sa_.ni_, sa_.keys_.pr)) {
      ++sa_.counters().auth_failed;
      sa_.fail("authentication of the responder failed");
      return TaskStatus::kFailed;
    }
    sa_.peer_id_ = p.idr->to_string();
    sa_.established(m.now);
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage& m) override {
    if (m.header.exchange == Exchange::kSaInit) {
      init_i_.assign(m.raw.begin(), m.raw.end());
      return TaskStatus::kNeedMore;
    }
    const Parsed& p = m.payloads;
    if (!p.idi || !p.auth) {
      refuse_ = Notify::kInvalidSyntax;
      why_ = "IKE_AUTH request without IDi or AUTH";
      return TaskStatus::kNeedMore;
    }
    if (!verify_peer(p, *p.idi, p.idi_body, init_i_, sa_.nr_, sa_.keys_.pi)) {
      ++sa_.counters().auth_failed;
      refuse_ = Notify::kAuthenticationFailed;
      why_ = "AUTHENTICATION_FAILED for '" + p.idi->to_string() + "' from " + sa_.remote_.to_string();
      return TaskStatus::kNeedMore;
    }
    sa_.peer_id_ = p.idi->to_string();
    if (p.find(Notify::kInitialContact)) drop_stale_sas(m.now);
    // Up before the first Child SA (child_create, next) is made.
    sa_.established(m.now);
    return TaskStatus::kNeedMore;
  }

  TaskStatus build_r(OutMessage& m) override {
    if (m.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    if (refuse_) {
      m.payloads.push_back(notify(*refuse_));
      sa_.fail(why_);
      return TaskStatus::kFailed;
    }
    const Bytes id_body = encode_id(sa_.local_id());
    m.payloads.push_back(make(PayloadType::kIdr, id_body));
    m.payloads.push_back(make(PayloadType::kAuth,
                              encode_auth({AuthMethod::kPsk, psk_auth(sa_.t_.prf, sa_.conn_.psk.span(), init_r_,
                                                                      sa_.ni_, sa_.keys_.pr.span(), id_body)})));
    return TaskStatus::kSuccess;
  }

 private:
  bool verify_peer(const Parsed& p, const IdPayload& id, ByteSpan id_body, ByteSpan first_msg, ByteSpan my_nonce,
                   const SecureBytes& sk_p) {
    const auto& c = sa_.conn_;
    if (!c.remote_id.empty() && !(id == id_from_string(c.remote_id))) {
      warn(kTag, sa_.tag(), ": peer identity '", id.to_string(), "' is not the configured '", c.remote_id, "'");
      return false;
    }
    if (!p.auth || p.auth->method != AuthMethod::kPsk) {
      warn(kTag, sa_.tag(), ": peer did not authenticate with a pre-shared key");
      return false;
    }
    const Bytes want = psk_auth(sa_.t_.prf, c.psk.span(), first_msg, my_nonce, sk_p.span(), id_body);
    if (!core::ct_equal(want, p.auth->data)) {
      warn(kTag, sa_.tag(), ": authentication of '", id.to_string(),
           "' failed: AUTH payload does not match (wrong pre-shared key?)");
      return false;
    }
    return true;
  }

  // INITIAL_CONTACT only when this is our only IKE SA with the peer (RFC
  // 7296 2.4): other connections to the same identity must survive.
  bool only_sa_with_peer() {
    for (const auto& [spi, other] : sa_.all_sas()) {
      if (other.get() == &sa_ || other->state_ == IkeSa::State::kDead) continue;
      if (other->remote_.addr == sa_.remote_.addr && other->conn_.remote_id == sa_.conn_.remote_id) return false;
    }
    return true;
  }

  // The peer starts afresh (RFC 7296 2.4): its older IKE SAs with us are
  // stale; removed without DELETE. Only those of the same connection and
  // authenticated identity.
  void drop_stale_sas(TimePoint now) {
    for (auto& [spi, other] : sa_.all_sas()) {
      if (other.get() == &sa_ || &other->conn_ != &sa_.conn_ || other->peer_id_ != sa_.peer_id_ ||
          other->state_ != IkeSa::State::kEstablished)
        continue;
      // Where the connection takes any identity that knows the PSK, the
      // identity proves little: only SAs from the same address are stale.
      if (sa_.conn_.remote_id.empty() && !(other->remote_.addr == sa_.remote_.addr)) continue;
      info(kTag, sa_.tag(), ": INITIAL_CONTACT from '", sa_.peer_id_, "': removing stale ", other->tag());
      other->remove_children();
      other->set_state(IkeSa::State::kDead);
      sa_.note_deadline(now);
    }
  }

  IkeSa& sa_;
  bool initiator_;
  Bytes init_i_, init_r_;  // the IKE_SA_INIT request and response, as sent
  std::optional<Notify> refuse_;
  std::string why_;
};

}  // namespace

std::unique_ptr<Task> ike_auth_create(IkeSa& sa, bool initiator) { return std::make_unique<IkeAuth>(sa, initiator); }

}  // namespace ipsecgw::ike
