// child_rekey: Child SA rekey (RFC 7296 1.3.3, 2.8), both roles: a
// CREATE_CHILD_SA with REKEY_SA; the new SA is installed before the old one
// is deleted (child_delete, queued once the new SA is up). Simultaneous
// rekeys (2.8.1): the peer's, seen while ours runs, is noted on the SA and
// settled here when our response arrives.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class ChildRekey final : public Task {
 public:
  ChildRekey(IkeSa& sa, std::uint32_t spi_in) : sa_(sa), old_spi_in_(spi_in) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kChildRekey; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kCreateChildSa; }
  [[nodiscard]] std::unique_ptr<Task> adopt(IkeSa& successor) const override {
    return std::make_unique<ChildRekey>(successor, old_spi_in_);
  }

  TaskStatus build_i(OutMessage& m) override {
    ChildSa* ch = sa_.child_by_spi_in(old_spi_in_);
    if (!ch) return TaskStatus::kFailed;  // deleted meanwhile
    cc_ = ch->cfg;
    new_spi_in_ = sa_.new_child_spi();
    nonce_ = sa_.random_nonce();
    auto& pl = m.payloads;
    pl.push_back(notify(Notify::kRekeySa, {}, ch->transform.protocol_id(), u32_bytes(old_spi_in_)));
    if (cc_->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    SaPayload sa;
    std::uint8_t n = 1;
    const bool pfs = cc_->pfs();
    for (const auto& pr : cc_->proposals())
      sa.proposals.push_back(child_offer(pr, cc_->protocol(), n++, new_spi_in_, pfs));
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    pl.push_back(make(PayloadType::kNonce, nonce_));
    if (pfs) {
      std::string why;
      dh_ = DhKey::generate(cc_->proposals()[0].dh[0], why);
      if (!dh_) {
        ch->rekeying = false;
        return TaskStatus::kFailed;
      }
      pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(dh_->group()), dh_->public_value()})));
    }
    pl.push_back(make(PayloadType::kTsi, encode_ts(ch->local_ts)));
    pl.push_back(make(PayloadType::kTsr, encode_ts(ch->remote_ts)));
    ch->rekeying = true;
    info(kTag, sa_.tag(), ": rekeying Child SA ", ch->name, pfs ? " with PFS" : "");
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage& m) override {
    const Parsed& p = m.payloads;
    if (ChildSa* old = sa_.child_by_spi_in(old_spi_in_)) old->rekeying = false;
    if (const auto* err = p.first_error()) {
      warn(kTag, sa_.tag(), ": CREATE_CHILD_SA refused: ", notify_name(err->type), "; retrying in ",
           kRetry.count(), " s");
      return retry_later(m.now);
    }
    if (p.nonce.empty()) return retry_later(m.now);
    std::optional<SecureBytes> shared;
    if (dh_) {
      std::string why;
      if (!p.ke || !(shared = dh_->shared_secret(p.ke->data, why))) {
        warn(kTag, sa_.tag(), ": CREATE_CHILD_SA response without a usable KE");
        return retry_later(m.now);
      }
    }
    if (!sa_.child_from_response(*cc_, new_spi_in_, nonce_, p.nonce, p, m.now, shared ? &*shared : nullptr))
      return retry_later(m.now);
    ++sa_.counters().child_rekeyed;
    if (settle_collision(p.nonce)) return TaskStatus::kSuccess;
    // Make-before-break: the new SA is installed; now delete the old one.
    if (ChildSa* old = sa_.child_by_spi_in(old_spi_in_)) {
      old->replaced = true;
      sa_.tasks_.queue_child_delete({old_spi_in_});
    }
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage& m) override {
    request_ = m.payloads;
    return TaskStatus::kNeedMore;
  }

  TaskStatus build_r(OutMessage& m) override {
    const Parsed& p = *request_;
    const NotifyPayload* rk = p.find(Notify::kRekeySa);
    if (rk->spi.size() != 4) {
      m.payloads.push_back(notify(Notify::kInvalidSyntax));
      return TaskStatus::kFailed;
    }
    // A rekey names the SA by the sender's inbound SPI, our outbound one.
    const auto old_out = static_cast<std::uint32_t>(rk->spi[0] << 24 | rk->spi[1] << 16 | rk->spi[2] << 8 | rk->spi[3]);
    auto it = std::find_if(sa_.children_.begin(), sa_.children_.end(), [&](const ChildSa& c) {
      return c.spi_out == old_out && c.transform.protocol_id() == rk->protocol;
    });
    if (it == sa_.children_.end()) {
      // Already rekeyed and deleted (e.g. we won a collision): RFC 7296 2.25.
      m.payloads.push_back(notify(Notify::kChildSaNotFound, {}, rk->protocol, rk->spi));
      return TaskStatus::kFailed;
    }
    const std::uint32_t rekeyed_in = it->spi_in;
    const bool collision = it->rekeying;
    info(kTag, sa_.tag(), ": peer rekeys Child SA ", it->name, collision ? " while we rekey it too (collision)" : "");
    const Bytes nr = sa_.random_nonce();
    std::optional<std::uint32_t> new_in;
    auto pl = sa_.respond_child(p, p.nonce, nr, m.now, &new_in, IkeSa::ChildRequest::kRekey, &*it);
    if (pl.size() == 1 && pl[0].type == PayloadType::kNotify) {
      m.payloads = std::move(pl);
      return TaskStatus::kFailed;
    }
    if (collision && new_in) sa_.collisions_[rekeyed_in] = {p.nonce, nr, *new_in};
    if (new_in) {
      ++sa_.counters().child_rekeyed;
      // The peer deletes the old SA once it has our answer.
      if (ChildSa* old = sa_.child_by_spi_in(rekeyed_in)) old->replaced = true;
    }
    // SA first, then Nonce, as RFC 7296 1.3 lays the exchange out.
    for (auto& x : pl) {
      m.payloads.push_back(std::move(x));
      if (m.payloads.back().type == PayloadType::kSa) m.payloads.push_back(make(PayloadType::kNonce, nr));
    }
    return TaskStatus::kSuccess;
  }

 private:
  static constexpr std::chrono::seconds kRetry{30};

  // A failed rekey is tried again later, not at the next tick (the old SA
  // still works until its hard lifetime).
  TaskStatus retry_later(TimePoint now) {
    sa_.collisions_.erase(old_spi_in_);
    if (ChildSa* old = sa_.child_by_spi_in(old_spi_in_)) old->rekey_at = std::min(old->expire_at, now + kRetry);
    return TaskStatus::kFailed;
  }

  // Both ends rekeyed this child at once (RFC 7296 2.8.1). The SA made by
  // the exchange with the lowest of the four nonces is redundant, and the
  // end that initiated that exchange deletes it; the other end deletes the
  // old SA. True when the redundant SA was ours (and is being deleted).
  bool settle_collision(const Bytes& nr) {
    auto col = sa_.collisions_.find(old_spi_in_);
    if (col == sa_.collisions_.end()) return false;
    const IkeSa::Collision c = col->second;
    sa_.collisions_.erase(col);
    const Bytes& ours_min = nonce_less(nonce_, nr) ? nonce_ : nr;
    const Bytes& theirs_min = nonce_less(c.peer_ni, c.our_nr) ? c.peer_ni : c.our_nr;
    if (nonce_less(ours_min, theirs_min)) {
      info(kTag, sa_.tag(), ": rekey collision lost (lowest nonce is ours): deleting our redundant Child SA");
      ++sa_.counters().rekey_collisions_lost;
      if (ChildSa* old = sa_.child_by_spi_in(old_spi_in_)) old->rekey_at = TimePoint::max();  // the peer deletes it
      sa_.tasks_.queue_child_delete({new_spi_in_});
      return true;
    }
    info(kTag, sa_.tag(), ": rekey collision won: keeping our new Child SA");
    ++sa_.counters().rekey_collisions_won;
    return false;
  }

  IkeSa& sa_;
  std::uint32_t old_spi_in_;  // initiator: the SA being rekeyed
  const ChildConfig* cc_ = nullptr;
  std::uint32_t new_spi_in_ = 0;
  Bytes nonce_;
  std::unique_ptr<DhKey> dh_;
  std::optional<Parsed> request_;
};

}  // namespace

std::unique_ptr<Task> child_rekey_create(IkeSa& sa, std::uint32_t spi_in, bool /*initiator: spi_in != 0*/) {
  return std::make_unique<ChildRekey>(sa, spi_in);
}

}  // namespace ipsecgw::ike
