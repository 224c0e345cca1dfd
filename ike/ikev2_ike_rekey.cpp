// ike_rekey: IKE SA rekey (RFC 7296 1.3.2, 2.18), both roles: a
// CREATE_CHILD_SA with new SPIs, nonces and KE; the new IKE SA is keyed from
// the old SK_d, the Child SAs move to it, and the old SA is deleted
// (ike_delete, queued here). Simultaneous rekeys (2.8.2) are settled when
// our own response arrives.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class IkeRekey final : public Task {
 public:
  explicit IkeRekey(IkeSa& sa) : sa_(sa) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kIkeRekey; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kCreateChildSa; }

  TaskStatus build_i(OutMessage& m) override {
    new_spi_ = sa_.new_spi();
    nonce_ = sa_.random_nonce();
    std::string why;
    dh_ = DhKey::generate(sa_.t_.dh, why);
    if (!dh_) return TaskStatus::kFailed;
    Bytes spi;
    core::ByteAppender{spi}.u64(new_spi_);
    SaPayload sa;
    std::uint8_t n = 1;
    // The negotiated suite first, then the configured ones.
    core::Proposal cur;
    cur.enc = {sa_.t_.enc};
    if (!sa_.t_.aead()) cur.integ = {sa_.t_.integ};
    cur.prf = {sa_.t_.prf};
    cur.dh = {sa_.t_.dh};
    sa.proposals.push_back(ike_offer(cur, n++, spi));
    for (const auto& pr : sa_.conn_.proposals) {
      auto offer = ike_offer(pr, n, spi);
      if (offer.transforms == sa.proposals.front().transforms) continue;  // offered already
      sa.proposals.push_back(std::move(offer));
      ++n;
    }
    m.payloads = {make(PayloadType::kSa, encode_sa(sa)), make(PayloadType::kNonce, nonce_),
                  make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(sa_.t_.dh), dh_->public_value()}))};
    sa_.rekey_at_ = TimePoint::max();
    info(kTag, sa_.tag(), ": rekeying the IKE SA");
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage& m) override {
    const Parsed& p = m.payloads;
    if (const auto* err = p.first_error()) {
      warn(kTag, sa_.tag(), ": IKE SA rekey refused: ", notify_name(err->type), "; retrying in 60 s");
      return retry_later(m.now);
    }
    std::string why;
    if (!p.sa || p.sa->proposals.size() != 1 || p.sa->proposals[0].spi.size() != 8 || !p.ke || p.nonce.empty()) {
      warn(kTag, sa_.tag(), ": IKE SA rekey response incomplete; retrying in 60 s");
      return retry_later(m.now);
    }
    auto choice = select_ike(sa_.conn_.proposals, *p.sa);
    std::optional<SecureBytes> shared;
    if (!choice || choice->t.dh != dh_->group() || !(shared = dh_->shared_secret(p.ke->data, why))) {
      warn(kTag, sa_.tag(), ": IKE SA rekey response unusable ", why, "; retrying in 60 s");
      return retry_later(m.now);
    }
    auto sa = successor(true, new_spi_, spi_of(p.sa->proposals[0]), choice->t, nonce_, p.nonce, *shared, m.now);
    if (!sa) return TaskStatus::kFailed;
    if (sa_.ike_collision_ && lost_collision(sa, p.nonce, m.now)) return TaskStatus::kSuccess;
    sa->children_ = std::move(sa_.children_);
    sa_.children_.clear();
    sa->tasks_.adopt_queued(sa_.tasks_);
    info(kTag, sa_.tag(), ": IKE SA rekeyed, now ", sa->tag(), " (", sa->children_.size(), " Child SAs moved)");
    ++sa_.counters().ike_rekeyed;
    IkeSa* next = sa.get();
    sa_.add_sa(std::move(sa), new_spi_);
    next->tasks_.initiate(m.now);
    sa_.note_deadline(next->deadline());
    retire(m.now);
    sa_.tasks_.queue_ike_delete();
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage& m) override {
    request_ = m.payloads;
    return TaskStatus::kNeedMore;
  }

  // The new IKE SA gets fresh SPIs and keys from the old SK_d; the Child
  // SAs move to it (RFC 7296 2.18).
  TaskStatus build_r(OutMessage& m) override {
    const Parsed& p = *request_;
    auto refuse = [&](Notify n, Bytes data = {}) {
      m.payloads = {notify(n, std::move(data))};
      return TaskStatus::kFailed;
    };
    auto choice = select_ike(sa_.conn_.proposals, *p.sa);
    if (!choice || !p.ke || p.sa->proposals[0].spi.size() != 8) return refuse(Notify::kNoProposalChosen);
    if (static_cast<core::DhGroup>(p.ke->group) != choice->t.dh) {
      Bytes g;
      core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->t.dh));
      return refuse(Notify::kInvalidKePayload, std::move(g));
    }
    std::string why;
    auto dh = DhKey::generate(choice->t.dh, why);
    auto shared = dh ? dh->shared_secret(p.ke->data, why) : std::nullopt;
    if (!shared) return refuse(Notify::kNoProposalChosen);
    const Bytes nr = sa_.random_nonce();
    const std::uint64_t our_spi = sa_.new_spi();
    auto sa = successor(false, spi_of(p.sa->proposals[0]), our_spi, choice->t, p.nonce, nr, *shared, m.now);
    if (!sa) return refuse(Notify::kNoProposalChosen);
    Proposal reply = choice->reply;
    core::ByteAppender{reply.spi}.u64(our_spi);
    SaPayload out_sa;
    out_sa.proposals.push_back(reply);
    m.payloads = {make(PayloadType::kSa, encode_sa(out_sa)), make(PayloadType::kNonce, nr),
                  make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()}))};
    if (sa_.tasks_.active(TaskType::kIkeRekey)) {
      // We are rekeying this IKE SA too (RFC 7296 2.8.2): which new SA
      // survives is decided when our own exchange completes; the Child SAs
      // stay here until then.
      sa_.ike_collision_ = IkeSa::Collision{p.nonce, nr, 0};
      sa_.ike_collision_spi_ = our_spi;
      sa->rekey_at_ = TimePoint::max();
      info(kTag, sa_.tag(), ": IKE SA rekey collision: the peer rekeys it while we do");
    } else {
      sa->children_ = std::move(sa_.children_);
      sa_.children_.clear();
      sa->tasks_.adopt_queued(sa_.tasks_);
      info(kTag, sa_.tag(), ": IKE SA rekeyed by the peer, now ", sa->tag(), " (", sa->children_.size(),
           " Child SAs moved)");
      ++sa_.counters().ike_rekeyed;
      retire(m.now);  // it stays until the peer deletes it, no longer established
    }
    IkeSa* next = sa.get();
    sa_.add_sa(std::move(sa), our_spi);
    next->tasks_.initiate(m.now);
    sa_.note_deadline(next->deadline());
    return TaskStatus::kSuccess;
  }

 private:
  TaskStatus retry_later(TimePoint now) {
    sa_.rekey_at_ = now + std::chrono::seconds(60);
    sa_.ike_collision_.reset();
    return TaskStatus::kFailed;
  }

  static std::uint64_t spi_of(const Proposal& p) {
    std::uint64_t spi = 0;
    for (auto b : p.spi) spi = spi << 8 | b;
    return spi;
  }

  // The new IKE SA, established from the start, `initiator` of its rekey.
  std::unique_ptr<IkeSa> successor(bool initiator, std::uint64_t spi_i, std::uint64_t spi_r, const IkeTransform& t,
                                   const Bytes& ni, const Bytes& nr, const SecureBytes& shared, TimePoint now) {
    auto sa = std::make_unique<IkeSa>(sa_.eng_, sa_.conn_, initiator);
    sa->spi_i_ = spi_i;
    sa->spi_r_ = spi_r;
    sa->local_ = sa_.local_;
    sa->remote_ = sa_.remote_;
    sa->t_ = t;
    sa->ni_ = ni;
    sa->nr_ = nr;
    sa->nat_local_ = sa_.nat_local_;
    sa->nat_remote_ = sa_.nat_remote_;
    sa->peer_frag_ = sa_.peer_frag_;
    sa->keys_ = derive_ike_keys(t, shared.span(), ni, nr, spi_i, spi_r, &sa_.keys_.d);
    if (!sa->make_ciphers()) return nullptr;
    sa->peer_id_ = sa_.peer_id_;
    sa->created_ = now;
    sa->adopt_established();
    sa->last_heard_ = now;
    if (sa_.conn_.rekey_time) sa->rekey_at_ = now + std::chrono::seconds(sa_.conn_.rekey_time);
    return sa;
  }

  void retire(TimePoint now) {
    sa_.set_state(IkeSa::State::kRekeyed);
    sa_.rekeyed_at_ = now;
  }

  // Both ends rekeyed (RFC 7296 2.8.2): the new SA of the exchange with the
  // lowest nonce is redundant and its initiator deletes it; the winner's
  // initiator deletes the old SA. True when ours was redundant (the Child
  // SAs then go to the peer's new SA, ours is deleted, the old one waits
  // for the peer's DELETE).
  bool lost_collision(std::unique_ptr<IkeSa>& mine, const Bytes& nr, TimePoint now) {
    const IkeSa::Collision c = *sa_.ike_collision_;
    sa_.ike_collision_.reset();
    const Bytes& ours_min = nonce_less(nonce_, nr) ? nonce_ : nr;
    const Bytes& theirs_min = nonce_less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
    IkeSa* peers = sa_.find_sa(sa_.ike_collision_spi_);
    if (nonce_less(ours_min, theirs_min) && peers) {
      info(kTag, sa_.tag(), ": IKE SA rekey collision lost: keeping the peer's new SA ", peers->tag());
      ++sa_.counters().rekey_collisions_lost;
      peers->children_ = std::move(sa_.children_);
      sa_.children_.clear();
      peers->tasks_.adopt_queued(sa_.tasks_);
      peers->tasks_.initiate(now);
      peers->rekey_at_ = sa_.conn_.rekey_time ? now + std::chrono::seconds(sa_.conn_.rekey_time) : TimePoint::max();
      sa_.note_deadline(peers->deadline());
      mine->rekey_at_ = TimePoint::max();
      IkeSa* redundant = mine.get();
      sa_.add_sa(std::move(mine), new_spi_);
      redundant->tasks_.queue_ike_delete();
      redundant->tasks_.initiate(now);
      sa_.note_deadline(redundant->deadline());
      retire(now);  // the peer deletes the old SA
      sa_.rekey_at_ = TimePoint::max();
      return true;
    }
    info(kTag, sa_.tag(), ": IKE SA rekey collision won: keeping our new SA");
    ++sa_.counters().rekey_collisions_won;
    if (peers) peers->rekey_at_ = TimePoint::max();  // the peer deletes it
    return false;
  }

  IkeSa& sa_;
  std::uint64_t new_spi_ = 0;  // initiator: our SPI of the new SA
  Bytes nonce_;
  std::unique_ptr<DhKey> dh_;
  std::optional<Parsed> request_;
};

}  // namespace

std::unique_ptr<Task> ike_rekey_create(IkeSa& sa, bool /*initiator: the methods called tell*/) {
  return std::make_unique<IkeRekey>(sa);
}

}  // namespace ipsecgw::ike
