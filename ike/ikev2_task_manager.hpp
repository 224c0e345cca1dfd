// The task manager of one IKEv2 SA (after strongSwan's task_manager_v2): it
// owns the message IDs and the window of one request (RFC 7296 2.3), our
// outstanding request with its retransmission, the cached response to the
// peer's last request, and the tasks:
//
//   queued   what the SA asked for (queue_*), not yet started;
//   active   ours, in the exchange under way (the initial group spans
//            IKE_SA_INIT and IKE_AUTH);
//   passive  the peer's, made from each request by its exchange and payloads.
//
// A request of ours is built by the active tasks in turn (build_i), its
// response read by them in turn (process_i); a request of the peer's is read
// by the passive tasks (process_r) and answered with what they build
// (build_r). Only one request of ours is ever outstanding: a DELETE asked for
// while another exchange runs waits for it.
//
// Engine thread only. Owned by its IkeSa; the tasks hold a reference to it.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "ike/connection.hpp"
#include "ike/ikev2_task.hpp"
#include "ike/retransmit.hpp"

namespace ipsecgw::ike {

class IkeSa;

class TaskManager {
 public:
  explicit TaskManager(IkeSa& sa);
  ~TaskManager();
  TaskManager(const TaskManager&) = delete;
  TaskManager& operator=(const TaskManager&) = delete;

  // ---- what the IKE SA asks for ------------------------------------------------
  // IKE_SA_INIT and IKE_AUTH, with the first Child SA if `first_child`.
  void queue_ike(const ChildConfig* first_child);
  // Not twice for one config while one is queued or under way.
  void queue_child(const ChildConfig& cc);
  void queue_child_rekey(std::uint32_t spi_in);
  // Deletes our Child SAs with inbound SPIs `spis_in` (those still there
  // when the request is built; removed when the peer answers), or tells the
  // peer of SAs `already_removed` (past their hard lifetime).
  void queue_child_delete(std::vector<std::uint32_t> spis_in, bool already_removed = false);
  // Deletes every Child SA of `cc` there is when the request is built (an
  // operator's `down conn/child`: a rekey under way may have replaced it).
  void queue_child_delete(const ChildConfig& cc);
  void queue_ike_rekey();
  // Jumps ahead of other queued tasks; a second one is not queued.
  void queue_ike_delete();
  void queue_dpd();
  // Takes over what the old IKE SA had queued for its Child SAs, now ours
  // (RFC 7296 2.18; strongSwan's adopt_child_tasks), and a DELETE asked for.
  void adopt_queued(TaskManager& from);
  // Starts the next exchange if the window is free and a task waits.
  void initiate(TimePoint now);

  // ---- messages from the peer --------------------------------------------------
  // Message IDs of a message for this SA, checked before it is decrypted:
  // false when it is not for the tasks (unexpected, or a retransmitted
  // request, answered here from the cached response).
  [[nodiscard]] bool admit(const Datagram& d, const Header& h);
  void process_response(const InMessage& m);
  void process_request(const InMessage& m);
  // A request no task may see (unreadable): answered with `n` alone.
  void reject_request(const Header& h, Notify n);
  // Sends the cached response again (a repeated IKE_SA_INIT).
  void resend_response();

  // ---- state -----------------------------------------------------------------------
  // Nothing outstanding and nothing queued.
  [[nodiscard]] bool idle() const { return !outstanding_ && active_.empty() && queued_.empty(); }
  // A task of this type is queued or under way.
  [[nodiscard]] bool has(TaskType t) const;
  [[nodiscard]] bool active(TaskType t) const;
  [[nodiscard]] std::optional<Exchange> outstanding() const;
  // Sends one request that is not waited for (a DELETE when the SA's
  // configuration goes away), if the window is free; false otherwise.
  bool send_unanswered(Exchange x, const std::vector<Payload>& pl);
  // Drops every task (the SA is ending).
  void flush();

  [[nodiscard]] TimePoint deadline() const;
  // Retransmission; tells the SA (peer_gone) when the peer never answers.
  void tick(TimePoint now);

 private:
  struct Outstanding {
    Exchange exchange = Exchange::kInformational;
    std::uint32_t message_id = 0;
    std::vector<Bytes> datagrams;  // one, or its RFC 7383 fragments
    RetransmitSchedule schedule;
    TimePoint give_up = TimePoint::max();
  };

  void activate();
  void send_next(TimePoint now);
  [[nodiscard]] Exchange next_exchange() const;
  // The peer's tasks for a request, or the notify that refuses it.
  bool create_passive(const InMessage& m, Notify& refuse);
  std::vector<Bytes> encode(Exchange x, bool response, std::uint32_t id, const std::vector<Payload>& pl);
  void respond(Exchange x, std::uint32_t id, const std::vector<Payload>& pl);
  static Bytes request_digest(ByteSpan datagram);

  IkeSa& sa_;
  std::deque<std::unique_ptr<Task>> queued_;
  std::vector<std::unique_ptr<Task>> active_, passive_;
  std::optional<Outstanding> outstanding_;
  std::uint32_t next_out_id_ = 0;  // our next request
  std::uint32_t next_in_id_ = 0;   // the peer's next request
  std::vector<Bytes> last_response_;
  std::uint32_t last_response_id_ = 0xffffffff;
  // Digests of the request the cached response answers, and of the one
  // being read (its first datagram or fragment): only a true repeat of the
  // request gets the response again.
  Bytes last_request_digest_, current_request_digest_;
};

}  // namespace ipsecgw::ike
