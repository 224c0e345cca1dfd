// ike_delete: INFORMATIONAL with DELETE of the IKE SA (RFC 7296 1.4.1), both
// roles. The task manager sends it only when no other request of ours is
// outstanding (2.3); the SA ends when the peer answers, or when it asks.
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class IkeDelete final : public Task {
 public:
  explicit IkeDelete(IkeSa& sa) : sa_(sa) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kIkeDelete; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kInformational; }

  TaskStatus build_i(OutMessage& m) override {
    m.payloads.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}})));
    // A rekeyed SA stays REKEYED; an established one is now on its way out.
    if (sa_.state_ == IkeSa::State::kEstablished) sa_.set_state(IkeSa::State::kDeleting);
    return TaskStatus::kNeedMore;
  }

  TaskStatus process_i(const InMessage&) override {
    sa_.remove_children();
    sa_.set_state(IkeSa::State::kDead);
    info(kTag, sa_.tag(), ": IKE SA deleted");
    return TaskStatus::kSuccess;
  }

  TaskStatus process_r(const InMessage&) override { return TaskStatus::kNeedMore; }

  // The (empty) answer goes out with the keys still here; then the SA ends.
  TaskStatus build_r(OutMessage&) override {
    info(kTag, sa_.tag(), ": peer deleted the IKE SA");
    sa_.remove_children();
    sa_.set_state(IkeSa::State::kDead);
    return TaskStatus::kSuccess;
  }

 private:
  IkeSa& sa_;
};

}  // namespace

std::unique_ptr<Task> ike_delete_create(IkeSa& sa, bool /*initiator: the methods called tell*/) {
  return std::make_unique<IkeDelete>(sa);
}

}  // namespace ipsecgw::ike
