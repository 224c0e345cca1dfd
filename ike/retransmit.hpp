// When to send our last request again, for both IKE versions: after
// retransmit_base, then with the delay growing by retransmit_factor, until
// retransmit_tries transmissions went unanswered (RFC 7296 2.1; RFC 2408
// leaves the schedule to the implementation, so IKEv1 uses the same one).
#pragma once

#include <chrono>
#include <cmath>

#include "ike/engine.hpp"

namespace ipsecgw::ike {

class RetransmitSchedule {
 public:
  enum class Due { kNotYet, kResend, kGiveUp };

  // The first transmission went out now.
  void start(TimePoint now, const EngineOptions& o) {
    tries_ = 0;
    next_ = now + o.retransmit_base;
  }
  void stop() { next_ = TimePoint::max(); }
  [[nodiscard]] bool running() const { return next_ != TimePoint::max(); }
  [[nodiscard]] TimePoint next() const { return next_; }
  [[nodiscard]] unsigned tries() const { return tries_; }

  // kResend: send again now (the next time is already set); kGiveUp: the
  // last transmission went unanswered (the schedule stops).
  Due poll(TimePoint now, const EngineOptions& o) {
    if (!running() || now < next_) return Due::kNotYet;
    if (tries_ + 1 >= o.retransmit_tries) {
      stop();
      return Due::kGiveUp;
    }
    ++tries_;
    const double k = std::pow(o.retransmit_factor, tries_);
    next_ = now + std::chrono::duration_cast<Clock::duration>(o.retransmit_base * k);
    return Due::kResend;
  }

 private:
  TimePoint next_ = TimePoint::max();
  unsigned tries_ = 0;
};

}  // namespace ipsecgw::ike
