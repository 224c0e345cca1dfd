// INFORMATIONAL exchanges (RFC 7296 1.4): DELETE of Child SAs and of the IKE
// SA, both roles, within the window of one request (2.3).
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::request_delete(TimePoint now) {
  if (state_ != State::kEstablished || !out_) {
    remove_children();
    set_state(State::kDead);
    return;
  }
  if (pending_) {
    delete_queued_ = true;
    debug(kTag, tag(), ": DELETE waits for the outstanding ", to_string(pending_->exchange));
    return;
  }
  delete_queued_ = false;
  send_informational({make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}, now, false, true);
  set_state(State::kDeleting);
}

void IkeSa::delete_now(TimePoint now) {
  if (state_ == State::kEstablished && out_) {
    if (pending_) {
      info(kTag, tag(), ": DELETE not sent, a ", to_string(pending_->exchange),
           " request is outstanding (RFC 7296 2.3); the peer finds out by its liveness checks");
    } else {
      send_raw(sealed(Exchange::kInformational, false, next_out_id_++,
                      {make(PayloadType::kDelete, encode_delete({ProtocolId::kIke, {}}))}));
      info(kTag, tag(), ": IKE SA deleted (DELETE sent)");
    }
  }
  (void)now;
  remove_children();
  set_state(State::kDead);
}

void IkeSa::send_queued_delete(TimePoint now) {
  if (delete_queued_ && !pending_ && state_ == State::kEstablished) request_delete(now);
}

void IkeSa::on_informational_request(const Header& h, const Parsed& p, TimePoint now) {
  std::vector<Payload> out;
  bool delete_ike = false;
  for (const auto& d : p.deletes) {
    if (d.protocol == ProtocolId::kIke) {
      delete_ike = true;
      continue;
    }
    std::vector<std::uint32_t> ours;
    for (auto spi : d.spis) {
      for (auto it = children_.begin(); it != children_.end(); ++it) {
        if (it->spi_out == spi) {
          info(kTag, tag(), ": peer deleted Child SA ", it->name);
          ours.push_back(it->spi_in);
          eng_.installer_.remove(it->name);
          children_.erase(it);
          break;
        }
      }
    }
    if (!ours.empty()) out.push_back(make(PayloadType::kDelete, encode_delete({ProtocolId::kEsp, ours})));
  }
  send_response(Exchange::kInformational, h.message_id, out);
  last_heard_ = now;
  if (delete_ike) {
    info(kTag, tag(), ": peer deleted the IKE SA");
    remove_children();
    set_state(State::kDead);
  }
}

void IkeSa::send_informational(std::vector<Payload> pl, TimePoint now, bool dpd, bool delete_ike,
                        std::vector<std::uint32_t> deleting) {
  Pending p;
  p.exchange = Exchange::kInformational;
  p.message_id = next_out_id_++;
  p.dpd = dpd;
  if (dpd && conn_.dpd_timeout) p.give_up = now + std::chrono::seconds(conn_.dpd_timeout);
  p.delete_ike = delete_ike;
  p.deleting = std::move(deleting);
  p.message = sealed(Exchange::kInformational, false, p.message_id, pl);
  send_request(std::move(p), now);
}

void IkeSa::on_informational_response(const Parsed& p, TimePoint now) {
  Pending ctx = std::move(*pending_);
  pending_.reset();
  last_heard_ = now;
  for (auto spi : ctx.deleting) {
    auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_in == spi; });
    if (it != children_.end()) {
      info(kTag, tag(), ": Child SA ", it->name, " deleted");
      eng_.installer_.remove(it->name);
      children_.erase(it);
    }
  }
  (void)p;
  if (ctx.delete_ike) {
    remove_children();
    set_state(State::kDead);
    info(kTag, tag(), ": IKE SA deleted");
  }
}

}  // namespace ipsecgw::ike
