// child_create: a Child SA (RFC 7296 1.3.1, 2.17), both roles: in IKE_AUTH
// for the first one, by CREATE_CHILD_SA for more: proposals, traffic
// selector narrowing (2.9), optional PFS. KEYMAT and the install are the
// SA's (ikev2_child_sa.cpp), shared with child_rekey.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class ChildCreate final : public Task {
 public:
  ChildCreate(IkeSa& sa, const ChildConfig* cc) : sa_(sa), cc_(cc) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kChildCreate; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kCreateChildSa; }
  [[nodiscard]] const ChildConfig* child_config() const override { return cc_; }
  [[nodiscard]] std::unique_ptr<Task> adopt(IkeSa& successor) const override {
    if (!cc_) return nullptr;
    return std::make_unique<ChildCreate>(successor, cc_);
  }

  TaskStatus build_i(OutMessage& m) override {
    if (m.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    auto& pl = m.payloads;
    spi_in_ = sa_.new_child_spi();
    if (cc_->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    if (m.exchange == Exchange::kAuth) {
      // The first Child SA, keyed from the IKE_SA_INIT nonces, without PFS.
      in_auth_ = true;
      if (cc_->protocol() == core::IpsecProtocol::kEsp) pl.push_back(notify(Notify::kEspTfcPaddingNotSupported));
      pl.push_back(make(PayloadType::kSa, offer(false)));
    } else {
      if (sa_.state_ != IkeSa::State::kEstablished) return TaskStatus::kFailed;
      for (const auto& c : sa_.children_)
        if (c.cfg == cc_) return TaskStatus::kFailed;  // up meanwhile (the peer, or an earlier request)
      const bool pfs = cc_->pfs();
      nonce_ = sa_.random_nonce();
      pl.push_back(make(PayloadType::kSa, offer(pfs)));
      pl.push_back(make(PayloadType::kNonce, nonce_));
      if (pfs) {
        std::string why;
        dh_ = DhKey::generate(cc_->proposals()[0].dh[0], why);
        if (!dh_) return TaskStatus::kFailed;
        pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(dh_->group()), dh_->public_value()})));
      }
      info(kTag, sa_.tag(), ": creating Child SA ", cc_->name);
    }
    pl.push_back(make(PayloadType::kTsi, encode_ts(sa_.our_ts(*cc_, true))));
    pl.push_back(make(PayloadType::kTsr, encode_ts(sa_.our_ts(*cc_, false))));
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage& m) override {
    const Parsed& p = m.payloads;
    if (m.header.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    if (in_auth_) {
      if (const auto* err = p.first_error()) {
        warn(kTag, sa_.tag(), ": Child SA ", cc_->name, " not created: ", notify_name(err->type));
        return TaskStatus::kFailed;
      }
      return sa_.child_from_response(*cc_, spi_in_, sa_.ni_, sa_.nr_, p, m.now, nullptr) ? TaskStatus::kSuccess
                                                                                          : TaskStatus::kFailed;
    }
    if (const auto* err = p.first_error()) {
      warn(kTag, sa_.tag(), ": CREATE_CHILD_SA refused: ", notify_name(err->type));
      return TaskStatus::kFailed;
    }
    if (p.nonce.empty()) return TaskStatus::kFailed;
    std::optional<SecureBytes> shared;
    if (dh_) {
      std::string why;
      if (!p.ke || !(shared = dh_->shared_secret(p.ke->data, why))) {
        warn(kTag, sa_.tag(), ": CREATE_CHILD_SA response without a usable KE");
        return TaskStatus::kFailed;
      }
    }
    return sa_.child_from_response(*cc_, spi_in_, nonce_, p.nonce, p, m.now, shared ? &*shared : nullptr)
               ? TaskStatus::kSuccess
               : TaskStatus::kFailed;
  }

  TaskStatus process_r(const InMessage& m) override {
    if (m.header.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    request_ = m.payloads;
    return TaskStatus::kNeedMore;
  }

  TaskStatus build_r(OutMessage& m) override {
    if (m.exchange == Exchange::kSaInit) return TaskStatus::kNeedMore;
    const Parsed& p = *request_;
    if (m.exchange == Exchange::kAuth) {
      // After ike_auth: only for an authenticated peer that asked for one.
      if (sa_.state_ != IkeSa::State::kEstablished || !p.sa || !p.tsi || !p.tsr) return TaskStatus::kSuccess;
      auto pl = sa_.respond_child(p, sa_.ni_, sa_.nr_, m.now, nullptr, IkeSa::ChildRequest::kAuth);
      m.payloads.insert(m.payloads.end(), pl.begin(), pl.end());
      return TaskStatus::kSuccess;
    }
    const Bytes nr = sa_.random_nonce();
    auto pl = sa_.respond_child(p, p.nonce, nr, m.now, nullptr, IkeSa::ChildRequest::kCreate);
    if (pl.size() == 1 && pl[0].type == PayloadType::kNotify) {
      m.payloads = std::move(pl);
      return TaskStatus::kFailed;
    }
    // SA first, then Nonce, as RFC 7296 1.3 lays the exchange out.
    for (auto& x : pl) {
      m.payloads.push_back(std::move(x));
      if (m.payloads.back().type == PayloadType::kSa) m.payloads.push_back(make(PayloadType::kNonce, nr));
    }
    return TaskStatus::kSuccess;
  }

 private:
  Bytes offer(bool pfs) const {
    SaPayload sa;
    std::uint8_t n = 1;
    for (const auto& pr : cc_->proposals())
      sa.proposals.push_back(child_offer(pr, cc_->protocol(), n++, spi_in_, pfs));
    return encode_sa(sa);
  }

  IkeSa& sa_;
  const ChildConfig* cc_;  // ours; null for the responder
  std::uint32_t spi_in_ = 0;
  bool in_auth_ = false;
  Bytes nonce_;
  std::unique_ptr<DhKey> dh_;
  std::optional<Parsed> request_;
};

}  // namespace

std::unique_ptr<Task> child_create_create(IkeSa& sa, const ChildConfig* cc, bool /*initiator: cc says*/) {
  return std::make_unique<ChildCreate>(sa, cc);
}

}  // namespace ipsecgw::ike
