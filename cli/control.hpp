// The control socket: a Unix stream socket (owner root, mode 0600 by
// default) speaking one JSON request per line and one JSON reply per line:
//
//   {"verb": "status"}                      -> {"ok": true, "result": {...}}
//   {"verb": "up", "name": "conn/child"}    -> {"ok": false, "error": "..."}
//
// The server runs on the gateway's control thread (Boost.Asio); a request
// larger than kMaxRequest, malformed JSON or an unknown verb gets an error
// reply and the connection is closed; the gateway goes on.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>

#include <functional>
#include <memory>
#include <string>

#include <utility>

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>

#include "core/log.hpp"



namespace ipsecgw::cli {

inline constexpr std::size_t kMaxRequest = 64 * 1024;

// What a local interface (control socket, metrics endpoint) lets its
// clients hold: sessions at once, and how long one may sit idle. A session
// over the budget is accepted and closed at once (counted); an accept error
// (EMFILE...) is counted and accepting resumes after a back-off, never stops.
struct SessionLimits {
  std::size_t max_sessions = 16;
  std::chrono::seconds idle{30};
  std::atomic<std::uint64_t>* refused = nullptr;
  std::atomic<std::uint64_t>* accept_errors = nullptr;
};

// Held by a session for its lifetime; releases its place in the budget.
using SessionTicket = std::shared_ptr<void>;

template <class Acceptor, class OnSession>
void accept_sessions(Acceptor& acc, SessionLimits lim, std::shared_ptr<std::size_t> live,
                     std::chrono::milliseconds delay, OnSession on) {
  acc.async_accept([&acc, lim, live, delay, on](const boost::system::error_code& ec, auto sock) {
    if (ec == boost::asio::error::operation_aborted || !acc.is_open()) return;
    if (ec) {
      if (lim.accept_errors) lim.accept_errors->fetch_add(1, std::memory_order_relaxed);
      static core::log::RateLimited limit(std::chrono::seconds(10));
      std::uint64_t suppressed = 0;
      if (limit.allow(suppressed)) core::log::warn("control", "accept failed: ", ec.message(), "; retrying");
      // The timer owns itself through its handler only, so that it never
      // outlives the io_context.
      const auto next = std::min(delay * 2, std::chrono::milliseconds(2000));
      auto t = std::make_shared<boost::asio::steady_timer>(acc.get_executor());
      t->expires_after(delay);
      t->async_wait([&acc, lim, live, t, next, on](const boost::system::error_code& e) {
        if (!e && acc.is_open()) accept_sessions(acc, lim, live, next, on);
      });
      return;
    }
    if (*live >= lim.max_sessions) {
      if (lim.refused) lim.refused->fetch_add(1, std::memory_order_relaxed);
      boost::system::error_code ignored;
      sock.close(ignored);
    } else {
      ++*live;
      on(std::move(sock), SessionTicket(nullptr, [live](void*) { --*live; }));
    }
    accept_sessions(acc, lim, live, std::chrono::milliseconds(50), on);
  });
}

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  ControlServer(boost::asio::io_context& io, std::string path, unsigned mode, Handler handler,
                SessionLimits limits = {});
  ~ControlServer();
  bool open(std::string& err);
  void close();
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// Client side: sends one request, waits for the reply (bounded by a
// timeout). Returns false with a reason when the gateway cannot be reached.
bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json& reply,
                     std::string& err);

}  // namespace ipsecgw::cli
