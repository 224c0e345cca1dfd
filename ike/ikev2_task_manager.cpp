// The IKEv2 task manager: message IDs, the window of one, retransmission, the
// response cache, and which tasks build and read each message.
#include "ike/ikev2_task_manager.hpp"

#include "ike/ikev2_sa.hpp"
#include "ike/ikev2_tasks.hpp"

namespace ipsecgw::ike {

TaskManager::TaskManager(IkeSa& sa) : sa_(sa) {}
TaskManager::~TaskManager() = default;

// ---- queueing ----------------------------------------------------------------------

void TaskManager::queue_ike(const ChildConfig* first_child) {
  // The initial exchanges run as one group: IKE_SA_INIT, then IKE_AUTH
  // with the first Child SA (RFC 7296 1.2).
  active_.push_back(ike_init_create(sa_, true));
  active_.push_back(ike_auth_create(sa_, true));
  if (first_child) active_.push_back(child_create_create(sa_, first_child, true));
}

void TaskManager::queue_child(const ChildConfig& cc) {
  auto same = [&](const std::unique_ptr<Task>& t) { return t->type() == TaskType::kChildCreate && t->child_config() == &cc; };
  if (std::any_of(queued_.begin(), queued_.end(), same) || std::any_of(active_.begin(), active_.end(), same)) return;
  queued_.push_back(child_create_create(sa_, &cc, true));
}

void TaskManager::adopt_queued(TaskManager& from) {
  // An operator's DELETE of the old SA was meant for the IKE SA as such.
  if (from.has(TaskType::kIkeDelete)) queue_ike_delete();
  for (auto it = from.queued_.begin(); it != from.queued_.end();) {
    if (auto t = (*it)->adopt(sa_)) {
      queued_.push_back(std::move(t));
      it = from.queued_.erase(it);
    } else {
      ++it;
    }
  }
}

void TaskManager::queue_child_rekey(std::uint32_t spi_in) {
  queued_.push_back(child_rekey_create(sa_, spi_in, true));
}

void TaskManager::queue_child_delete(std::vector<std::uint32_t> spis_in, bool already_removed) {
  queued_.push_back(child_delete_create(sa_, std::move(spis_in), already_removed, nullptr));
}

void TaskManager::queue_child_delete(const ChildConfig& cc) {
  queued_.push_back(child_delete_create(sa_, {}, false, &cc));
}

void TaskManager::queue_ike_rekey() { queued_.push_back(ike_rekey_create(sa_, true)); }

void TaskManager::queue_ike_delete() {
  if (has(TaskType::kIkeDelete)) return;
  queued_.push_front(ike_delete_create(sa_, true));
}

void TaskManager::queue_dpd() { queued_.push_back(ike_dpd_create(sa_, true)); }

bool TaskManager::has(TaskType t) const {
  auto is = [t](const std::unique_ptr<Task>& x) { return x->type() == t; };
  return std::any_of(queued_.begin(), queued_.end(), is) || std::any_of(active_.begin(), active_.end(), is);
}

bool TaskManager::active(TaskType t) const {
  return std::any_of(active_.begin(), active_.end(), [t](const std::unique_ptr<Task>& x) { return x->type() == t; });
}

std::optional<Exchange> TaskManager::outstanding() const {
  if (!outstanding_) return std::nullopt;
  return outstanding_->exchange;
}

void TaskManager::flush() {
  queued_.clear();
  active_.clear();
  passive_.clear();
  outstanding_.reset();
}

// ---- our requests ------------------------------------------------------------------

void TaskManager::initiate(TimePoint now) {
  while (!outstanding_ && sa_.state_ != IkeSa::State::kDead) {
    if (active_.empty()) {
      if (queued_.empty()) return;
      active_.push_back(std::move(queued_.front()));
      queued_.pop_front();
    }
    send_next(now);
  }
}

Exchange TaskManager::next_exchange() const {
  if (!sa_.keyed()) return Exchange::kSaInit;
  if (sa_.state_ == IkeSa::State::kInitSent || sa_.state_ == IkeSa::State::kAuthSent) return Exchange::kAuth;
  return active_.front()->exchange();
}

std::vector<Bytes> TaskManager::encode(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& pl) {
  if (x == Exchange::kSaInit) return {encode_plain(sa_.header(x, response, id), pl)};
  return sa_.sealed(x, response, id, pl);
}

void TaskManager::send_next(TimePoint now) {
  const Exchange x = next_exchange();
  OutMessage m{x, {}, now};
  Clock::duration within = Clock::duration::zero();
  for (auto it = active_.begin(); it != active_.end();) {
    const TaskStatus st = (*it)->build_i(m);
    if (sa_.state_ == IkeSa::State::kDead) {
      flush();
      return;
    }
    if (st != TaskStatus::kNeedMore) {
      it = active_.erase(it);  // nothing to ask after all (its SA went away meanwhile)
      continue;
    }
    const auto w = (*it)->answer_within();
    if (w != Clock::duration::zero() && (within == Clock::duration::zero() || w < within)) within = w;
    ++it;
  }
  if (active_.empty()) return;
  std::uint32_t id = 0;
  if (x == Exchange::kSaInit) next_out_id_ = 1;  // a retry after COOKIE or INVALID_KE is message 0 again
  else id = next_out_id_++;
  Outstanding o;
  o.exchange = x;
  o.message_id = id;
  o.datagrams = encode(x, false, id, m.payloads);
  o.schedule.start(now, sa_.opt());
  if (within != Clock::duration::zero()) o.give_up = now + within;
  for (auto& t : active_) t->sent(x, o.datagrams);
  sa_.send_raw(o.datagrams);
  outstanding_ = std::move(o);
}

bool TaskManager::send_unanswered(Exchange x, const std::vector<Payload>& pl) {
  if (outstanding_ || !sa_.keyed()) return false;
  sa_.send_raw(sa_.sealed(x, false, next_out_id_++, pl));
  return true;
}

void TaskManager::process_response(const InMessage& m) {
  auto waiting = std::move(outstanding_);
  outstanding_.reset();
  bool first = true;
  for (auto it = active_.begin(); it != active_.end(); first = false) {
    const TaskStatus st = (*it)->process_i(m);
    if (sa_.state_ == IkeSa::State::kDead) {
      flush();
      return;
    }
    if (st == TaskStatus::kIgnore && first) {
      outstanding_ = std::move(waiting);  // still waiting for the real answer
      return;
    }
    it = st == TaskStatus::kNeedMore ? std::next(it) : active_.erase(it);
  }
  initiate(m.now);  // the same tasks' next exchange, or the next queued task
}

// ---- the peer's requests ----------------------------------------------------------

bool TaskManager::admit(const Datagram& d, const Header& h) {
  if (h.is_response()) {
    if (!outstanding_ || h.message_id != outstanding_->message_id || h.exchange != outstanding_->exchange) {
      ++sa_.counters().dropped_messages;
      debug(kTag, sa_.tag(), ": response with unexpected message ID ", h.message_id);
      return false;
    }
    return true;
  }
  // For a fragmented request, its first fragment stands for it.
  const bool later_fragment = h.next == PayloadType::kSkf && d.data.size() >= kHeaderLen + 8 &&
                              (d.data[kHeaderLen + 4] << 8 | d.data[kHeaderLen + 5]) != 1;
  if (h.message_id + 1 == next_in_id_ && last_response_id_ == h.message_id && !last_response_.empty()) {
    if (later_fragment) return false;
    if (!core::ct_equal(request_digest(d.data), last_request_digest_)) {
      ++sa_.counters().dropped_messages;
      debug(kTag, sa_.tag(), ": message ID ", h.message_id, " again, but not a repeat of that request; dropped");
      return false;
    }
    debug(kTag, sa_.tag(), ": retransmitted request ", h.message_id, ", resending our response");
    sa_.send_raw(last_response_);
    return false;
  }
  if (h.message_id != next_in_id_) {
    ++sa_.counters().dropped_messages;
    debug(kTag, sa_.tag(), ": request with message ID ", h.message_id, ", expected ", next_in_id_);
    return false;
  }
  if (!later_fragment) current_request_digest_ = request_digest(d.data);
  return true;
}

Bytes TaskManager::request_digest(ByteSpan datagram) {
  static const std::uint8_t kLabel[] = {'r', 'e', 'q'};
  return prf(core::PrfAlg::kHmacSha256, kLabel, datagram);
}

void TaskManager::respond(Exchange x, std::uint32_t id, const std::vector<Payload>& pl) {
  last_request_digest_ = current_request_digest_;
  last_response_ = encode(x, true, id, pl);
  last_response_id_ = id;
  sa_.send_raw(last_response_);
}

void TaskManager::reject_request(const Header& h, Notify n) {
  next_in_id_ = h.message_id + 1;
  respond(h.exchange, h.message_id, {notify(n)});
}

void TaskManager::resend_response() {
  if (!last_response_.empty()) sa_.send_raw(last_response_);
}

bool TaskManager::create_passive(const InMessage& m, Notify& refuse) {
  const Parsed& p = m.payloads;
  refuse = Notify::kInvalidSyntax;
  switch (m.header.exchange) {
    case Exchange::kSaInit:
      passive_.push_back(ike_init_create(sa_, false));
      passive_.push_back(ike_auth_create(sa_, false));
      passive_.push_back(child_create_create(sa_, nullptr, false));
      return true;
    case Exchange::kAuth:
      return false;  // only once, after IKE_SA_INIT (the tasks are still here then)
    case Exchange::kCreateChildSa:
      if (sa_.state_ != IkeSa::State::kEstablished) {
        refuse = Notify::kTemporaryFailure;
        return false;
      }
      if (!p.sa || p.nonce.empty()) return false;
      if (!p.sa->proposals.empty() && p.sa->proposals[0].protocol == ProtocolId::kIke) {
        passive_.push_back(ike_rekey_create(sa_, false));
        return true;
      }
      if (!p.tsi || !p.tsr) return false;
      if (p.find(Notify::kRekeySa)) passive_.push_back(child_rekey_create(sa_, 0, false));
      else passive_.push_back(child_create_create(sa_, nullptr, false));
      return true;
    case Exchange::kInformational: {
      bool ike = false, child = false;
      for (const auto& d : p.deletes) (d.protocol == ProtocolId::kIke ? ike : child) = true;
      if (child) passive_.push_back(child_delete_create(sa_, {}, false, nullptr));
      if (ike) passive_.push_back(ike_delete_create(sa_, false));
      if (!ike && !child) passive_.push_back(ike_dpd_create(sa_, false));
      return true;
    }
    default:
      return false;
  }
}

void TaskManager::process_request(const InMessage& m) {
  const Header& h = m.header;
  next_in_id_ = h.message_id + 1;
  // The initial group's passive tasks carry over from IKE_SA_INIT to
  // IKE_AUTH; every other request makes its own.
  if (h.exchange != Exchange::kAuth) passive_.clear();
  Notify refuse{};
  if (passive_.empty() && !create_passive(m, refuse)) {
    respond(h.exchange, h.message_id, {notify(refuse)});
    return;
  }
  std::vector<bool> done(passive_.size(), false);
  for (std::size_t i = 0; i < passive_.size(); ++i) done[i] = passive_[i]->process_r(m) != TaskStatus::kNeedMore;
  OutMessage out{h.exchange, {}, m.now};
  for (std::size_t i = 0; i < passive_.size(); ++i)
    if (!done[i]) done[i] = passive_[i]->build_r(out) != TaskStatus::kNeedMore;
  // Every request is answered, also one that ended the SA (its DELETE, a
  // failed authentication): the keys are still here until the SA goes.
  respond(h.exchange, h.message_id, out.payloads);
  for (auto& t : passive_) t->sent(h.exchange, last_response_);
  for (std::size_t i = passive_.size(); i-- > 0;)
    if (done[i]) passive_.erase(passive_.begin() + static_cast<std::ptrdiff_t>(i));
  if (sa_.state_ == IkeSa::State::kDead) {
    flush();
    return;
  }
  initiate(m.now);
}

// ---- timers -------------------------------------------------------------------------

TimePoint TaskManager::deadline() const {
  if (!outstanding_) return TimePoint::max();
  return std::min(outstanding_->schedule.next(), outstanding_->give_up);
}

void TaskManager::tick(TimePoint now) {
  if (!outstanding_) return;
  if (now >= outstanding_->give_up) {
    outstanding_.reset();
    active_.clear();
    sa_.peer_gone("no answer to the liveness check within dpd_timeout " + std::to_string(sa_.conn_.dpd_timeout) +
                      " s",
                  now);
    return;
  }
  switch (outstanding_->schedule.poll(now, sa_.opt())) {
    case RetransmitSchedule::Due::kNotYet:
      return;
    case RetransmitSchedule::Due::kResend:
      ++sa_.counters().retransmits;
      debug(kTag, sa_.tag(), ": retransmitting ", to_string(outstanding_->exchange), " (",
            outstanding_->schedule.tries(), ")");
      sa_.send_raw(outstanding_->datagrams);
      return;
    case RetransmitSchedule::Due::kGiveUp: {
      const auto x = outstanding_->exchange;
      outstanding_.reset();
      active_.clear();
      sa_.peer_gone(std::string("no response to ") + to_string(x) + " after " +
                        std::to_string(sa_.opt().retransmit_tries) + " transmissions",
                    now);
      return;
    }
  }
}

}  // namespace ipsecgw::ike
