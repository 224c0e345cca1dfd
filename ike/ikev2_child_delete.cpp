// child_delete: INFORMATIONAL with DELETE of Child SAs (RFC 7296 1.4.1), both
// roles. Ours names our inbound SPIs and removes those SAs when the peer
// answers (an SA past its hard lifetime is already gone: the peer is told).
// The peer's names its inbound SPIs, our outbound ones; we remove those and
// answer with our inbound SPIs of the same SAs.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class ChildDelete final : public Task {
 public:
  ChildDelete(IkeSa& sa, std::vector<std::uint32_t> spis, bool already_removed, const ChildConfig* cc)
      : sa_(sa), spis_(std::move(spis)), already_removed_(already_removed), cc_(cc) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kChildDelete; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kInformational; }
  [[nodiscard]] std::unique_ptr<Task> adopt(IkeSa& successor) const override {
    return std::make_unique<ChildDelete>(successor, spis_, already_removed_, cc_);
  }

  TaskStatus build_i(OutMessage& m) override {
    // What is still there now: a rekey or the peer may have been first.
    if (cc_) {
      for (const auto& c : sa_.children_)
        if (c.cfg == cc_) spis_.push_back(c.spi_in);
    } else if (!already_removed_) {
      std::erase_if(spis_, [&](std::uint32_t spi) { return !sa_.child_by_spi_in(spi); });
    }
    if (spis_.empty()) return TaskStatus::kFailed;  // nothing left to delete
    // One Delete payload per protocol (RFC 7296 3.11); an SA removed
    // already (its hard lifetime) is looked up among the AH ones removed.
    std::vector<std::uint32_t> esp, ah;
    for (auto spi : spis_) {
      const ChildSa* c = sa_.child_by_spi_in(spi);
      ((c && c->transform.is_ah()) || (!c && sa_.removed_ah(spi)) ? ah : esp).push_back(spi);
    }
    if (!esp.empty()) m.payloads.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, esp})));
    if (!ah.empty()) m.payloads.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kAh, ah})));
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage&) override {
    // An operator's down (by child) removes at once, rekeyed or not.
    for (auto spi : spis_) sa_.remove_child(spi, "deleted", cc_ == nullptr);
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage& m) override {
    for (const auto& d : m.payloads.deletes) {
      if (d.protocol != ProtocolId::kEsp && d.protocol != ProtocolId::kAh) continue;
      std::vector<std::uint32_t> ours;
      for (auto spi : d.spis) {
        auto it = std::find_if(sa_.children_.begin(), sa_.children_.end(), [&](const ChildSa& c) {
          return c.spi_out == spi && c.transform.protocol_id() == d.protocol;
        });
        if (it == sa_.children_.end()) continue;
        info(kTag, sa_.tag(), ": peer deleted Child SA ", it->name);
        ours.push_back(it->spi_in);
        sa_.remove_child(it->spi_in, nullptr);
      }
      if (!ours.empty()) answer_.push_back(make(PayloadType::kDelete, encode_delete({d.protocol, ours})));
    }
    return TaskStatus::kNeedMore;
  }

  TaskStatus build_r(OutMessage& m) override {
    m.payloads.insert(m.payloads.end(), answer_.begin(), answer_.end());
    return TaskStatus::kSuccess;
  }

 private:
  IkeSa& sa_;
  std::vector<std::uint32_t> spis_;  // initiator: our inbound SPIs
  bool already_removed_ = false;
  const ChildConfig* cc_ = nullptr;
  std::vector<Payload> answer_;
};

}  // namespace

std::unique_ptr<Task> child_delete_create(IkeSa& sa, std::vector<std::uint32_t> spis_in, bool already_removed,
                                          const ChildConfig* cc) {
  return std::make_unique<ChildDelete>(sa, std::move(spis_in), already_removed, cc);
}

}  // namespace ipsecgw::ike
