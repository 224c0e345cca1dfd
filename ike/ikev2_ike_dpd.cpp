// ike_dpd: liveness check (RFC 7296 2.4), both roles: an empty INFORMATIONAL
// request and its empty answer. Ours must be answered within dpd_timeout;
// what a dead peer means is the SA's (IkeSa::peer_gone, dpd_action).
#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {
namespace {

class IkeDpd final : public Task {
 public:
  explicit IkeDpd(IkeSa& sa) : sa_(sa) {}
  [[nodiscard]] TaskType type() const override { return TaskType::kIkeDpd; }
  [[nodiscard]] Exchange exchange() const override { return Exchange::kInformational; }
  [[nodiscard]] Clock::duration answer_within() const override {
    return std::chrono::seconds(sa_.conn_.dpd_timeout);
  }

  TaskStatus build_i(OutMessage&) override { return TaskStatus::kNeedMore; }
  TaskStatus process_i(const InMessage&) override { return TaskStatus::kSuccess; }
  TaskStatus process_r(const InMessage& m) override {
    if (!m.payloads.all.empty())
      debug(kTag, sa_.tag(), ": INFORMATIONAL carried ", payload_list(m.payloads.all), ", answered empty");
    return TaskStatus::kSuccess;
  }
  TaskStatus build_r(OutMessage&) override { return TaskStatus::kSuccess; }

 private:
  IkeSa& sa_;
};

}  // namespace

std::unique_ptr<Task> ike_dpd_create(IkeSa& sa, bool /*initiator: the methods called tell*/) {
  return std::make_unique<IkeDpd>(sa);
}

}  // namespace ipsecgw::ike
