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
  ChildDelete(IkeSa& sa, std::vector<std::uint32_t> spis) : sa_(sa), spis_(std::move(spis)) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kChildDelete; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kInformational; }

  TaskStatus build_i(OutMessage& m) override {
    m.payloads.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, spis_})));
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage&) override {
    for (auto spi : spis_) sa_.remove_child(spi, "deleted");
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage& m) override {
    for (const auto& d : m.payloads.deletes) {
      if (d.protocol == ProtocolId::kIke) continue;
      std::vector<std::uint32_t> ours;
      for (auto spi : d.spis) {
        auto it = std::find_if(sa_.children_.begin(), sa_.children_.end(),
                               [&](const ChildSa& c) { return c.spi_out == spi; });
        if (it == sa_.children_.end()) continue;
        info(kTag, sa_.tag(), ": peer deleted Child SA ", it->name);
        ours.push_back(it->spi_in);
        sa_.remove_child(it->spi_in, nullptr);
      }
      if (!ours.empty()) answer_.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, ours})));
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
  std::vector<Payload> answer_;
};

}  // namespace

std::unique_ptr<Task> child_delete_create(IkeSa& sa, std::vector<std::uint32_t> spis_in, bool /*initiator*/) {
  return std::make_unique<ChildDelete>(sa, std::move(spis_in));
}

}  // namespace ipsecgw::ike
