// The gateway's Prometheus metrics endpoint: sessions with a deadline and a
// cap, and the text format.
#include "cli/gateway.hpp"

#include <boost/asio.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "core/log.hpp"
#include "esp/natt.hpp"

namespace ipsecgw::cli {

namespace {
// One HTTP/1.0-style exchange per connection: read the request head (at most
// 8 KiB), answer GET /metrics, close.
struct MetricsSession : std::enable_shared_from_this<MetricsSession> {
  MetricsSession(boost::asio::ip::tcp::socket s, Gateway& g, SessionTicket t)
      : sock(std::move(s)), buf(8192), gw(g), timer(sock.get_executor()), ticket(std::move(t)) {}
  void start(std::chrono::seconds idle) {
    auto self = shared_from_this();
    timer.expires_after(idle);
    timer.async_wait([self](const boost::system::error_code& ec) {
      if (ec) return;
      boost::system::error_code ignored;
      self->sock.close(ignored);
    });
    boost::asio::async_read_until(sock, buf, "\r\n\r\n", [self](const boost::system::error_code& ec, std::size_t) {
      std::string head(boost::asio::buffers_begin(self->buf.data()), boost::asio::buffers_end(self->buf.data()));
      std::string status = "200 OK", body;
      if (ec) {
        status = "400 Bad Request";
        body = "bad request\n";
      } else if (head.rfind("GET /metrics ", 0) == 0 || head.rfind("GET /metrics\r", 0) == 0) {
        body = self->gw.prometheus();
      } else {
        status = "404 Not Found";
        body = "try /metrics\n";
      }
      self->out = "HTTP/1.1 " + status + "\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      boost::asio::async_write(self->sock, boost::asio::buffer(self->out),
                               [self](const boost::system::error_code&, std::size_t) {
                                 boost::system::error_code ignored;
                                 self->sock.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
                                 self->sock.close(ignored);
                                 self->timer.cancel();
                               });
    });
  }
  boost::asio::ip::tcp::socket sock;
  boost::asio::streambuf buf;
  Gateway& gw;
  std::string out;
  boost::asio::steady_timer timer;
  SessionTicket ticket;
};
}  // namespace

void Gateway::serve_metrics(boost::asio::ip::tcp::acceptor& acc) {
  const SessionLimits lim{cfg_.limits.metrics_sessions, std::chrono::seconds(cfg_.limits.control_idle_s),
                          &gw_.metrics_sessions_refused, &gw_.accept_errors};
  accept_sessions(acc, lim, std::make_shared<std::size_t>(0), std::chrono::milliseconds(50),
                  [this, idle = lim.idle](boost::asio::ip::tcp::socket s, SessionTicket t) {
                    std::make_shared<MetricsSession>(std::move(s), *this, std::move(t))->start(idle);
                  });
}

std::string Gateway::prometheus() {
  const nlohmann::json st = control_stats();
  const nlohmann::json full = stats();
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("ipsecgw_uptime_seconds", "gauge", "Seconds since the gateway started.");
  o << "ipsecgw_uptime_seconds " << st["uptime_s"] << "\n";
  metric("ipsecgw_ike_sas", "gauge", "Established IKE SAs.");
  o << "ipsecgw_ike_sas " << st["active_ike_sas"] << "\n";
  metric("ipsecgw_child_sas", "gauge", "Installed Child SAs (negotiated and manual).");
  o << "ipsecgw_child_sas " << st["active_child_sas"] << "\n";
  {
    // By protocol and mode: ESP, AH and AH+ESP bundles, tunnel and transport.
    std::map<std::pair<std::string, std::string>, int> kinds;
    for (const auto* proto : {"esp", "ah", "ah+esp"})
      for (const auto* mode : {"tunnel", "transport"}) kinds[{proto, mode}] = 0;
    dp_->for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa&) {
      const auto& p = out.params();
      const char* proto = p.protocol == core::IpsecProtocol::kEsp ? "esp" : p.protocol == core::IpsecProtocol::kAh ? "ah" : "ah+esp";
      ++kinds[{proto, p.mode == core::SaMode::kTransport ? "transport" : "tunnel"}];
    });
    metric("ipsecgw_child_sas_by_kind", "gauge", "Installed SA pairs by protocol (esp, ah, ah+esp) and mode.");
    for (const auto& [k, n] : kinds)
      o << "ipsecgw_child_sas_by_kind{protocol=\"" << k.first << "\",mode=\"" << k.second << "\"} " << n << "\n";
  }
  metric("ipsecgw_bytes_total", "counter", "Bytes protected (out) and received (in).");
  o << "ipsecgw_bytes_total{direction=\"out\"} " << st["bytes_out"] << "\n";
  o << "ipsecgw_bytes_total{direction=\"in\"} " << st["bytes_in"] << "\n";
  metric("ipsecgw_packets_total", "counter", "Packets protected (out) and received (in).");
  o << "ipsecgw_packets_total{direction=\"out\"} " << st["packets_out"] << "\n";
  o << "ipsecgw_packets_total{direction=\"in\"} " << st["packets_in"] << "\n";
  metric("ipsecgw_drops_total", "counter", "Packets dropped, by reason.");
  for (const auto& [reason, v] : full["totals"]["drops"].items())
    o << "ipsecgw_drops_total{reason=\"" << reason << "\"} " << v << "\n";
  for (const char* k : {"sas_installed", "ike_established", "ike_failed", "auth_failures", "retransmissions",
                        "cookies_sent", "invalid_ike_messages", "ike_rekeys", "child_rekeys",
                        "rekey_collisions", "ikev1_dropped", "ikev1_main_modes", "ikev1_main_modes_failed",
                        "ikev1_quick_modes", "ikev1_quick_modes_failed", "ike_state_bugs",
                        "ike_half_open_refused", "ike_cookies_rejected", "ike_reassembly_refused",
                        "ike_children_refused", "ike_log_suppressed", "ike_queue_full", "ike_queue_new_full",
                        "control_sessions_refused", "metrics_sessions_refused", "accept_errors", "ike_send_failed"}) {
    const std::string name = std::string("ipsecgw_") + k + "_total";
    metric(name.c_str(), "counter", k);
    o << name << " " << st[k] << "\n";
  }
  metric("ipsecgw_ike_half_open", "gauge", "Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet).");
  o << "ipsecgw_ike_half_open " << st["ike_half_open"] << "\n";
  metric("ipsecgw_ike_reassembly_bytes", "gauge", "Bytes of IKE fragments held for peers not yet authenticated.");
  o << "ipsecgw_ike_reassembly_bytes " << st["ike_reassembly_bytes"] << "\n";
  if (engine_) {
    metric("ipsecgw_connection_up", "gauge", "1 when the connection has an established IKE SA.");
    for (const auto* c : engine_->connections())
      o << "ipsecgw_connection_up{connection=\"" << c->name << "\"} " << (engine_->established(c->name) ? 1 : 0) << "\n";
    std::map<std::string, std::size_t> children;
    for (const auto* c : engine_->connections()) children[c->name] = 0;
    for (const auto& s : engine_->status(ike::Clock::now())) children[s.connection] += s.children.size();
    metric("ipsecgw_connection_child_sas", "gauge", "Child SAs of the connection.");
    for (const auto& [name, n] : children) o << "ipsecgw_connection_child_sas{connection=\"" << name << "\"} " << n << "\n";
  }
  return o.str();
}

}  // namespace ipsecgw::cli
