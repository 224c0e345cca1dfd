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

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace boost::asio {
class io_context;
}

namespace ipsecgw::cli {

inline constexpr std::size_t kMaxRequest = 64 * 1024;

class ControlServer {
 public:
  using Handler = std::function<nlohmann::json(const nlohmann::json& request)>;
  ControlServer(boost::asio::io_context& io, std::string path, unsigned mode, Handler handler);
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
