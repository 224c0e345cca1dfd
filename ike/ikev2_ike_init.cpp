// ike_init: IKE_SA_INIT (RFC 7296 1.2), both roles: proposals, KE, nonces,
// NAT detection (2.23), COOKIE (2.6) and INVALID_KE_PAYLOAD (1.3), then
// SKEYSEED and the SK keys. Admission of a new request (COOKIE under load,
// a connection for the peer) is the engine's, before an SA exists.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class IkeInit final : public Task {
 public:
  explicit IkeInit(IkeSa& sa) : sa_(sa) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kIkeInit; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kSaInit; }

  TaskStatus build_i(OutMessage& m) override {
    const auto& c = sa_.conn_;
    if (c.proposals.empty() || c.proposals[0].dh.empty()) {
      sa_.fail("no IKE proposal with a DH group");
      return TaskStatus::kFailed;
    }
    std::string why;
    if (!dh_) dh_ = DhKey::generate(c.proposals[0].dh[0], why);
    if (!dh_) {
      sa_.fail("Diffie-Hellman: " + why);
      return TaskStatus::kFailed;
    }
    if (sa_.ni_.empty()) sa_.ni_ = sa_.random_nonce();
    auto& pl = m.payloads;
    if (!cookie_.empty()) pl.push_back(notify(Notify::kCookie, cookie_));
    SaPayload sa;
    std::uint8_t n = 1;
    for (const auto& p : c.proposals) sa.proposals.push_back(ike_offer(p, n++));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(dh_->group()), dh_->public_value()})));
    pl.push_back(make(PayloadType::kNonce, sa_.ni_));
    add_common(pl, 0);
    sa_.set_state(IkeSa::State::kInitSent);
    info(kTag, sa_.tag(), ": initiating IKE_SA_INIT to ", sa_.remote_.to_string(), " (DH group ",
         static_cast<int>(dh_->group()), ")");
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage& m) override {
    const Parsed& p = m.payloads;
    if (const auto* ck = p.find(Notify::kCookie)) {
      if (ck->data.empty() || ck->data.size() > 64) return TaskStatus::kIgnore;  // RFC 7296 2.6: 1 to 64 octets
      if (++cookie_rounds_ > 3) {
        sa_.fail("responder keeps asking for a COOKIE");
        return TaskStatus::kFailed;
      }
      info(kTag, sa_.tag(), ": responder asks for a COOKIE, retrying");
      cookie_ = ck->data;
      return TaskStatus::kNeedMore;  // IKE_SA_INIT again
    }
    if (const auto* ike = p.find(Notify::kInvalidKePayload)) return retry_group(*ike);
    if (const auto* err = p.first_error()) {
      sa_.fail("IKE_SA_INIT refused: " + notify_name(err->type));
      return TaskStatus::kFailed;
    }
    if (!p.sa || !p.ke || p.nonce.empty()) {
      sa_.fail("IKE_SA_INIT response without SA, KE or Nonce");
      return TaskStatus::kFailed;
    }
    auto choice = select_ike(sa_.conn_.proposals, *p.sa);
    if (!choice || p.sa->proposals.size() != 1) {
      sa_.fail("IKE_SA_INIT response chose a proposal we did not offer");
      return TaskStatus::kFailed;
    }
    sa_.t_ = choice->t;
    if (static_cast<core::DhGroup>(p.ke->group) != dh_->group() || sa_.t_.dh != dh_->group()) {
      sa_.fail("IKE_SA_INIT response KE group does not match");
      return TaskStatus::kFailed;
    }
    sa_.spi_r_ = m.header.spi_r;
    sa_.nr_ = p.nonce;
    sa_.peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
    sa_.check_natd(p, sa_.spi_i_, sa_.spi_r_);
    if (!sa_.derive(*dh_, p.ke->data)) return TaskStatus::kFailed;
    dh_.reset();
    return TaskStatus::kSuccess;
  }

  // The engine admitted the request (a connection, the proposal, the KE group).
  TaskStatus process_r(const InMessage& m) override {
    const Parsed& p = m.payloads;
    auto choice = p.sa ? select_ike(sa_.conn_.proposals, *p.sa) : std::nullopt;
    std::string why;
    if (!choice || !p.ke || p.nonce.empty() || !(dh_ = DhKey::generate(choice->t.dh, why))) {
      refused_ = true;
      return TaskStatus::kNeedMore;
    }
    sa_.t_ = choice->t;
    reply_ = choice->reply;
    sa_.ni_ = p.nonce;
    sa_.peer_frag_ = p.find(Notify::kIkev2FragmentationSupported) != nullptr;
    sa_.nr_ = sa_.random_nonce();
    sa_.check_natd(p, sa_.spi_i_, 0);
    peer_ke_ = p.ke->data;
    return TaskStatus::kNeedMore;
  }

  TaskStatus build_r(OutMessage& m) override {
    auto& pl = m.payloads;
    if (refused_) {
      pl.push_back(notify(Notify::kNoProposalChosen));
      sa_.fail("IKE_SA_INIT from " + sa_.remote_.to_string() + " refused");
      return TaskStatus::kFailed;
    }
    SaPayload sa;
    sa.proposals.push_back(reply_);
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(sa_.t_.dh), dh_->public_value()})));
    pl.push_back(make(PayloadType::kNonce, sa_.nr_));
    add_common(pl, sa_.spi_r_);
    sa_.set_state(IkeSa::State::kInitDone);
    if (!sa_.derive(*dh_, peer_ke_)) return TaskStatus::kFailed;
    dh_.reset();
    info(kTag, sa_.tag(), ": IKE_SA_INIT from ", sa_.remote_.to_string(), " answered, ", sa_.t_.name());
    return TaskStatus::kSuccess;
  }

 private:
  // NAT detection (RFC 7296 2.23), fragmentation (RFC 7383) and the hash
  // algorithms for signatures (RFC 7427), in both messages.
  void add_common(std::vector<Payload>& pl, std::uint64_t spi_r) {
    pl.push_back(notify(Notify::kNatDetectionSourceIp,
                        natd_hash(sa_.spi_i_, spi_r, sa_.local_.addr, sa_.local_.port)));
    pl.push_back(notify(Notify::kNatDetectionDestinationIp,
                        natd_hash(sa_.spi_i_, spi_r, sa_.remote_.addr, sa_.remote_.port)));
    pl.push_back(notify(Notify::kIkev2FragmentationSupported));
    pl.push_back(notify(Notify::kSignatureHashAlgorithms, {0, 2, 0, 3, 0, 4}));
  }

  // INVALID_KE_PAYLOAD (RFC 7296 1.3): once more with the group the
  // responder names, if we offered it.
  TaskStatus retry_group(const NotifyPayload& n) {
    if (n.data.size() != 2 || ++invalid_ke_retries_ > 2) {
      sa_.fail("INVALID_KE_PAYLOAD without a usable group");
      return TaskStatus::kFailed;
    }
    const auto g = static_cast<core::DhGroup>(n.data[0] << 8 | n.data[1]);
    bool offered = false;
    for (const auto& pr : sa_.conn_.proposals) offered |= std::find(pr.dh.begin(), pr.dh.end(), g) != pr.dh.end();
    if (!offered) {
      sa_.fail("peer asks for DH group " + std::to_string(static_cast<int>(g)) + ", which we did not offer");
      return TaskStatus::kFailed;
    }
    info(kTag, sa_.tag(), ": INVALID_KE_PAYLOAD, retrying with DH group ", static_cast<int>(g));
    std::string why;
    dh_ = DhKey::generate(g, why);
    if (!dh_) {
      sa_.fail(why);
      return TaskStatus::kFailed;
    }
    return TaskStatus::kNeedMore;
  }

  IkeSa& sa_;
  std::unique_ptr<DhKey> dh_;
  Bytes cookie_;
  unsigned invalid_ke_retries_ = 0;
  unsigned cookie_rounds_ = 0;
  // Responder.
  bool refused_ = false;
  Proposal reply_;
  Bytes peer_ke_;
};

}  // namespace

std::unique_ptr<Task> ike_init_create(IkeSa& sa, bool /*initiator: the methods called tell*/) {
  return std::make_unique<IkeInit>(sa);
}

}  // namespace ipsecgw::ike
