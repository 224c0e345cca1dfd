// Liveness (RFC 7296 2.4): what follows when the peer is found dead.
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::peer_gone(const std::string& why, TimePoint now) {
  (void)now;
  if (state_ == State::kRekeyed || state_ == State::kDeleting) {
    // Its DELETE went unanswered: it was on its way out anyway. Neither a
    // failure nor a reason to restart (a rekeyed SA's successor is up).
    info(kTag, tag(), ": ", why, "; ", state_name(state_), " IKE SA removed");
    remove_children();
    set_state(State::kDead);
    return;
  }
  warn(kTag, tag(), ": ", why, "; peer considered dead");
  // An SA that was up is restarted when a child says dpd_action "restart";
  // one that never came up has failed, like one keying try in swanctl.
  restart_wanted_ = state_ == State::kEstablished;
  if (!restart_wanted_) ++eng_.counters_.ike_failed;
  remove_children();
  set_state(State::kDead);
}

}  // namespace ipsecgw::ike
