#include "cli/control.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cstring>

#include "core/log.hpp"

namespace ipsecgw::cli {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;

namespace {

nlohmann::json error_reply(const std::string& why) { return {{"ok", false}, {"error", why}}; }

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(local::socket s, const ControlServer::Handler& h, SessionTicket ticket)
      : sock_(std::move(s)), buf_(kMaxRequest), handler_(h), timer_(sock_.get_executor()), ticket_(std::move(ticket)) {}
  // A client that sends nothing (or never reads the reply) for `idle` is cut off.
  void start(std::chrono::seconds idle) {
    auto self = shared_from_this();
    timer_.expires_after(idle);
    timer_.async_wait([self](const boost::system::error_code& ec) {
      if (ec) return;
      boost::system::error_code ignored;
      self->sock_.close(ignored);
    });
    asio::async_read_until(sock_, buf_, '\n', [self](const boost::system::error_code& ec, std::size_t n) {
      self->on_read(ec, n);
    });
  }

 private:
  void on_read(const boost::system::error_code& ec, std::size_t n) {
    nlohmann::json reply;
    if (ec == asio::error::not_found) {
      reply = error_reply("request larger than " + std::to_string(kMaxRequest) + " bytes");
      core::log::warn("control", "oversized request refused");
    } else if (ec && ec != asio::error::eof) {
      return;
    } else {
      std::string line(asio::buffers_begin(buf_.data()), asio::buffers_begin(buf_.data()) + static_cast<std::ptrdiff_t>(ec ? buf_.size() : n));
      nlohmann::json req;
      try {
        req = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        reply = error_reply(std::string("malformed JSON: ") + e.what());
      }
      if (reply.is_null()) {
        if (!req.is_object() || !req.contains("verb") || !req["verb"].is_string()) {
          reply = error_reply("a request is an object with a string \"verb\"");
        } else {
          try {
            reply = handler_(req);
          } catch (const std::exception& e) {
            reply = error_reply(std::string("request failed: ") + e.what());
          }
        }
      }
    }
    out_ = reply.dump() + "\n";
    auto self = shared_from_this();
    asio::async_write(sock_, asio::buffer(out_), [self](const boost::system::error_code&, std::size_t) {
      boost::system::error_code ignored;
      self->sock_.shutdown(local::socket::shutdown_both, ignored);
      self->sock_.close(ignored);
      self->timer_.cancel();
    });
  }

  local::socket sock_;
  asio::streambuf buf_;
  const ControlServer::Handler& handler_;
  std::string out_;
  asio::steady_timer timer_;
  SessionTicket ticket_;
};

}  // namespace

struct ControlServer::Impl {
  Impl(asio::io_context& io, Handler h, SessionLimits l) : acceptor(io), handler(std::move(h)), limits(l) {}
  void accept() {
    accept_sessions(acceptor, limits, live, std::chrono::milliseconds(50),
                    [this](local::socket s, SessionTicket t) {
                      std::make_shared<Session>(std::move(s), handler, std::move(t))->start(limits.idle);
                    });
  }
  local::acceptor acceptor;
  Handler handler;
  SessionLimits limits;
  std::shared_ptr<std::size_t> live = std::make_shared<std::size_t>(0);
  unsigned mode = 0600;
};

ControlServer::ControlServer(asio::io_context& io, std::string path, unsigned mode, Handler handler,
                             SessionLimits limits)
    : impl_(std::make_unique<Impl>(io, std::move(handler), limits)), path_(std::move(path)) {
  impl_->mode = mode;
}

ControlServer::~ControlServer() { close(); }

bool ControlServer::open(std::string& err) {
  if (path_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    err = "control socket path too long: " + path_;
    return false;
  }
  // Refuse to take over the socket of a gateway that is still running.
  nlohmann::json reply;
  std::string ignored;
  if (control_request(path_, {{"verb", "ping"}}, reply, ignored)) {
    err = "control socket " + path_ + " is in use by a running gateway";
    return false;
  }
  ::unlink(path_.c_str());
  boost::system::error_code ec;
  const mode_t old = ::umask(0077);
  impl_->acceptor.open(local(), ec);
  if (!ec) impl_->acceptor.bind(local::endpoint(path_), ec);
  if (!ec) impl_->acceptor.listen(16, ec);
  ::umask(old);
  if (ec) {
    err = "control socket " + path_ + ": " + ec.message();
    return false;
  }
  if (::chmod(path_.c_str(), impl_->mode) != 0) {
    err = "control socket " + path_ + ": chmod: " + std::strerror(errno);
    return false;
  }
  impl_->accept();
  return true;
}

void ControlServer::close() {
  if (!impl_ || !impl_->acceptor.is_open()) return;
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  ::unlink(path_.c_str());
}

bool control_request(const std::string& path, const nlohmann::json& request, nlohmann::json& reply,
                     std::string& err) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::strerror(errno);
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    ::close(fd);
    err = "socket path too long";
    return false;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    err = "cannot connect to " + path + ": " + std::strerror(errno) + " (is the gateway running?)";
    ::close(fd);
    return false;
  }
  const std::string line = request.dump() + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    err = std::string("send: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  std::string in;
  char buf[65536];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
    if (in.size() > 64 * 1024 * 1024) break;
  }
  ::close(fd);
  try {
    reply = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    err = "no valid reply from " + path;
    return false;
  }
  return true;
}

}  // namespace ipsecgw::cli
