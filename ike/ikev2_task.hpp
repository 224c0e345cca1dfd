// An IKEv2 exchange task (after strongSwan's task_t): one piece of protocol
// that adds payloads to a message and reads them from the answer, for either
// role. The task manager (ikev2_task_manager.hpp) runs them; the IKE SA never
// names one.
//
//   initiator: build_i(request) ... process_i(response)
//   responder: process_r(request) ... build_r(response)
//
// kNeedMore keeps a task for the IKE SA's next exchange (IKE_SA_INIT is
// followed by IKE_AUTH, and ike_auth and the first child_create take part in
// both); kSuccess and kFailed end it. A task that finds the IKE SA unusable
// says so through the SA (IkeSa::fail), never by throwing.
//
// Tasks run on the engine's thread only and hold a reference to their IKE SA,
// which owns the task manager, which owns them.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "ike/connection.hpp"
#include "ike/message.hpp"

namespace ipsecgw::ike {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

struct Parsed;
class IkeSa;

enum class TaskType { kIkeInit, kIkeAuth, kChildCreate, kChildRekey, kChildDelete, kIkeRekey, kIkeDelete, kIkeDpd };

inline const char* task_name(TaskType t) noexcept {
  static const char* names[] = {"ike_init",  "ike_auth",  "child_create", "child_rekey",
                                "child_delete", "ike_rekey", "ike_delete", "ike_dpd"};
  return names[static_cast<int>(t)];
}

// kIgnore (process_i only): the response is not one this task can use (a
// malformed COOKIE); the request stays outstanding on its schedule.
enum class TaskStatus { kNeedMore, kSuccess, kFailed, kIgnore };

// A message that arrived for the IKE SA, decrypted, reassembled and checked
// against its exchange's payload rules (message_rules) before any task sees it.
struct InMessage {
  const Header& header;
  const Parsed& payloads;
  ByteSpan raw;  // the datagram as received (the IKE_SA_INIT messages are signed in AUTH)
  TimePoint now;
};

// A message being assembled: each task appends its payloads in turn.
struct OutMessage {
  Exchange exchange;
  std::vector<Payload> payloads;
  TimePoint now;
};

class Task {
 public:
  virtual ~Task() = default;
  [[nodiscard]] virtual TaskType type() const = 0;
  // The exchange this task's request travels in once the IKE SA is up
  // (before, the manager runs IKE_SA_INIT, then IKE_AUTH).
  [[nodiscard]] virtual Exchange exchange() const = 0;

  virtual TaskStatus build_i(OutMessage& request) = 0;
  virtual TaskStatus process_i(const InMessage& response) = 0;
  virtual TaskStatus process_r(const InMessage& request) = 0;
  virtual TaskStatus build_r(OutMessage& response) = 0;

  // The message this task took part in, as encoded for the wire (one
  // datagram, or its RFC 7383 fragments).
  virtual void sent(Exchange, const std::vector<Bytes>&) {}
  // A task of the IKE SA being replaced (RFC 7296 2.18), recreated for its
  // successor, which takes over the Child SAs; null: it ends with the old SA.
  [[nodiscard]] virtual std::unique_ptr<Task> adopt(IkeSa&) const { return nullptr; }
  // The child config this task is about, if any.
  [[nodiscard]] virtual const ChildConfig* child_config() const { return nullptr; }
  // How long the peer has to answer this task's request before it counts as
  // dead; zero leaves it to the retransmission schedule (a liveness check
  // uses dpd_timeout).
  [[nodiscard]] virtual Clock::duration answer_within() const { return Clock::duration::zero(); }
};

}  // namespace ipsecgw::ike
