// The gateway's answers to the control verbs (status, sa, stats, up, down,
// reload, log-level); the socket itself is in control.cpp.
#include "cli/gateway.hpp"

#include <boost/asio.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/log.hpp"
#include "esp/natt.hpp"

namespace ipsecgw::cli {

namespace {
nlohmann::json ok(nlohmann::json result) { return {{"ok", true}, {"result", std::move(result)}}; }
nlohmann::json fail(const std::string& why) { return {{"ok", false}, {"error", why}}; }
std::string hex64(std::uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}
}  // namespace

nlohmann::json Gateway::handle_control(const nlohmann::json& req) {
  const std::string verb = req["verb"].get<std::string>();
  if (verb == "ping") return ok("pong");
  if (verb == "status") return ok(control_status());
  if (verb == "sa") return ok(control_sa());
  if (verb == "stats") return ok(control_stats());
  if (verb == "log-level") {
    if (!req.contains("level") || !req["level"].is_string()) return fail("log-level needs \"level\"");
    core::log::Level l;
    if (!core::log::parse_level(req["level"].get<std::string>(), l))
      return fail("unknown level '" + req["level"].get<std::string>() + "' (error, warn, info, debug)");
    core::log::set_level(l);
    core::log::info("control", "log level set to ", req["level"].get<std::string>());
    return ok(nlohmann::json{{"level", req["level"]}});
  }
  if (verb == "up" || verb == "down") {
    if (!engine_) return fail("no IKE connections are configured");
    if (!req.contains("name") || !req["name"].is_string()) return fail(verb + " needs \"name\": CONN or CONN/CHILD");
    const std::string name = req["name"].get<std::string>();
    const auto slash = name.find('/');
    const std::string conn = name.substr(0, slash);
    const std::string child = slash == std::string::npos ? "" : name.substr(slash + 1);
    bool known = false;
    for (const auto* c : engine_->connections()) {
      if (c->name != conn) continue;
      known = child.empty();
      for (const auto& ch : c->children) known = known || ch.name == child;
    }
    if (!known) return fail("no connection or child named '" + name + "'");
    std::string why;
    const auto now = ike::Clock::now();
    bool done = false;
    if (verb == "down") {
      done = engine_->terminate(conn, child, now, why);
    } else if (engine_->established(conn)) {
      if (child.empty()) {
        why = "'" + conn + "' is already up";
      } else {
        engine_->acquire(conn, child, now);
        done = true;
      }
    } else {
      done = engine_->initiate(conn, child, now, why);
    }
    after_engine();
    if (!done) return fail(why);
    return ok(nlohmann::json{{"name", name}, {"action", verb == "up" ? "initiated" : "deleting"}});
  }
  if (verb == "reload") return reload();
  return fail("unknown verb '" + verb + "' (status, sa, stats, up, down, log-level, reload)");
}

nlohmann::json Gateway::control_status() {
  nlohmann::json j;
  j["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count();
  nlohmann::json conns = nlohmann::json::array();
  nlohmann::json ikes = nlohmann::json::array();
  if (engine_) {
    for (const auto* cp : engine_->connections()) {
      const auto& c = *cp;
      nlohmann::json cj;
      cj["name"] = c.name;
      std::string la, ra;
      for (const auto& a : c.local_addrs) la += (la.empty() ? "" : ",") + a.to_string();
      for (const auto& a : c.remote_addrs) ra += (ra.empty() ? "" : ",") + a.to_string();
      cj["local_addrs"] = la.empty() ? "%any" : la;
      cj["remote_addrs"] = ra.empty() ? "%any" : ra;
      cj["local_id"] = c.local_id;
      cj["remote_id"] = c.remote_id;
      nlohmann::json children = nlohmann::json::array();
      for (const auto& ch : c.children) children.push_back(ch.name);
      cj["children"] = children;
      cj["established"] = engine_->established(c.name);
      conns.push_back(cj);
    }
    for (const auto& st : engine_->status(ike::Clock::now())) {
      nlohmann::json s;
      s["connection"] = st.connection;
      s["version"] = st.version;
      s["state"] = st.state;
      s["role"] = st.initiator ? "initiator" : "responder";
      s["spi_i"] = hex64(st.spi_i);
      s["spi_r"] = hex64(st.spi_r);
      s["local"] = st.local;
      s["remote"] = st.remote;
      s["local_id"] = st.local_id;
      s["remote_id"] = st.remote_id;
      s["algorithms"] = st.algorithms;
      s["nat_local"] = st.nat_local;
      s["nat_remote"] = st.nat_remote;
      s["udp_encap"] = st.udp_encap;
      s["age_s"] = st.age_s;
      s["rekey_in_s"] = st.rekey_in_s;
      nlohmann::json ch = nlohmann::json::array();
      for (const auto& c : st.children) {
        ch.push_back({{"name", c.name}, {"child", c.child}, {"spi_in", core::spi_hex(c.spi_in)},
                      {"spi_out", core::spi_hex(c.spi_out)}, {"algorithms", c.algorithms},
                      {"protocol", c.protocol}, {"mode", c.mode}, {"pfs", c.pfs},
                      {"local_ts", c.local_ts}, {"remote_ts", c.remote_ts}, {"age_s", c.age_s},
                      {"rekey_in_s", c.rekey_in_s}, {"expire_in_s", c.expire_in_s}});
      }
      s["children"] = ch;
      ikes.push_back(s);
    }
  }
  j["connections"] = conns;
  j["ike_sas"] = ikes;
  j["manual_sas"] = dp_->sa_count() - (engine_ ? engine_->child_sa_count() : 0);
  return j;
}

nlohmann::json Gateway::control_sa() {
  std::map<std::string, ike::ChildStatus> lifetimes;
  if (engine_)
    for (const auto& st : engine_->status(ike::Clock::now()))
      for (const auto& c : st.children) lifetimes[c.name] = c;
  nlohmann::json sas = nlohmann::json::array();
  dp_->for_each_sa([&](const esp::OutboundSa& out, const esp::InboundSa& in) {
    const auto& p = out.params();
    nlohmann::json s;
    s["name"] = p.name;
    s["spi_in"] = core::spi_hex(p.in.spi);
    s["spi_out"] = core::spi_hex(p.out.spi);
    s["mode"] = p.mode == core::SaMode::kTunnel ? "tunnel" : "transport";
    s["protocol"] = p.protocol == core::IpsecProtocol::kEsp ? "esp" : p.protocol == core::IpsecProtocol::kAh ? "ah" : "ah+esp";
    s["algorithms"] = p.protocol == core::IpsecProtocol::kAh     ? p.ah.name()
                      : p.protocol == core::IpsecProtocol::kAhEsp ? p.transform.name() + " + ah-" + p.ah.name()
                                                                  : p.transform.name();
    s["encap"] = p.encap == core::Encap::kUdp ? "udp" : "none";
    s["local_addr"] = p.local_addr.to_string();
    s["remote_addr"] = p.remote_addr.to_string();
    s["selectors"] = p.selectors.to_string();
    s["bytes_out"] = out.counters().out.bytes.load();
    s["packets_out"] = out.counters().out.packets.load();
    nlohmann::json drops = nlohmann::json::object();
    {
      const auto& c = in.counters();
      s["bytes_in"] = c.in.bytes.load();
      s["packets_in"] = c.in.packets.load();
      s["replay_window"] = in.replay().size();
      for (std::size_t i = 1; i < core::kDropCount; ++i) {
        const auto v = c.drops[i].load() + out.counters().drops[i].load();
        if (v) drops[std::string(core::key_of(static_cast<core::Drop>(i)))] = v;
      }
    }
    s["drops"] = drops;
    s["keyed_by"] = lifetimes.count(p.name) ? "ike" : "manual";
    if (auto it = lifetimes.find(p.name); it != lifetimes.end()) {
      s["age_s"] = it->second.age_s;
      s["rekey_in_s"] = it->second.rekey_in_s;
      s["expire_in_s"] = it->second.expire_in_s;
    }
    sas.push_back(s);
  });
  return nlohmann::json{{"sas", sas}};
}

nlohmann::json Gateway::control_stats() {
  const nlohmann::json full = stats();
  const auto& t = full["totals"];
  const auto& d = t["drops"];
  nlohmann::json j;
  j["uptime_s"] = full["uptime_s"];
  j["active_ike_sas"] = engine_ ? engine_->ike_sa_count() : 0;
  j["active_child_sas"] = full["active_sas"];
  j["bytes_out"] = t["bytes_out"];
  j["packets_out"] = t["packets_out"];
  j["bytes_in"] = t["bytes_in"];
  j["packets_in"] = t["packets_in"];
  j["bad_spi"] = d["bad_spi"];
  j["not_authenticated"] = d["auth_failed"];
  j["not_decrypted"] = d["bad_padding"].get<std::uint64_t>() + d["malformed"].get<std::uint64_t>();
  j["replay_drops"] = d["replay"];
  j["policy_drops"] = d["policy_mismatch"];
  const auto& k = engine_ ? engine_->counters() : ike::EngineCounters{};
  j["sas_installed"] = k.child_installed + (j["active_child_sas"].get<std::uint64_t>() -
                                            (engine_ ? engine_->child_sa_count() : 0));
  j["ike_established"] = k.ike_established;
  j["ike_failed"] = k.ike_failed;
  j["auth_failures"] = k.auth_failed;
  j["retransmissions"] = k.retransmits;
  j["cookies_sent"] = k.cookies_sent;
  j["invalid_ike_messages"] = k.invalid_messages;
  j["ike_rekeys"] = k.ike_rekeyed;
  j["child_rekeys"] = k.child_rekeyed;
  j["rekey_collisions"] = k.rekey_collisions_won + k.rekey_collisions_lost;
  j["ikev1_dropped"] = k.ikev1_dropped;
  j["ikev1_main_modes"] = k.ikev1_main_mode_done;
  j["ikev1_main_modes_failed"] = k.ikev1_main_mode_failed;
  j["ikev1_quick_modes"] = k.ikev1_quick_mode_done;
  j["ikev1_quick_modes_failed"] = k.ikev1_quick_mode_failed;
  j["ike_state_bugs"] = k.state_bugs;
  // Budgets (limits): what is held now, and what was refused when one bit.
  j["ike_half_open"] = engine_ ? engine_->half_open_count() : 0;
  j["ike_reassembly_bytes"] = engine_ ? engine_->reassembly_bytes() : 0;
  j["ike_half_open_refused"] = k.half_open_refused;
  j["ike_cookies_rejected"] = k.cookies_rejected;
  j["ike_reassembly_refused"] = k.reassembly_refused;
  j["ike_children_refused"] = k.children_refused;
  j["ike_log_suppressed"] = k.log_suppressed;
  j["ike_queue_full"] = gw_.ike_queue_full.load();
  j["ike_queue_new_full"] = gw_.ike_queue_new_full.load();
  j["control_sessions_refused"] = gw_.control_sessions_refused.load();
  j["metrics_sessions_refused"] = gw_.metrics_sessions_refused.load();
  j["accept_errors"] = gw_.accept_errors.load();
  j["ike_send_failed"] = gw_.ike_send_failed.load();
  return j;
}

}  // namespace ipsecgw::cli
