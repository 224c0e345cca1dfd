// ipsecgw: a userspace IPsec gateway on a TUN device.
#include <CLI/CLI.hpp>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/control.hpp"
#include "cli/gateway.hpp"
#include "config/config.hpp"
#include "core/log.hpp"

namespace {

int print_errors(const std::vector<ipsecgw::config::ConfigError>& errors, const std::string& file) {
  std::cerr << file << ": " << errors.size() << " problem" << (errors.size() == 1 ? "" : "s")
            << ":\n";
  for (const auto& e : errors) std::cerr << "  " << e.to_string() << "\n";
  return 1;
}

using nlohmann::json;

std::string str(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

std::string duration(const json& v) {
  if (!v.is_number_integer() || v.get<long long>() < 0) return "-";
  long long s = v.get<long long>();
  std::ostringstream os;
  if (s >= 3600) os << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60) os << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else os << s << "s";
  return os.str();
}

void print_status(const json& r) {
  std::cout << "uptime " << duration(r["uptime_s"]) << ", " << r["connections"].size() << " connection(s), "
            << r["ike_sas"].size() << " IKE SA(s), " << r["manual_sas"] << " manual SA(s)\n";
  for (const auto& c : r["connections"]) {
    std::cout << "  " << str(c["name"]) << ": " << str(c["local_addrs"]) << "..." << str(c["remote_addrs"])
              << (c["established"].get<bool>() ? "  up" : "  down") << "\n";
  }
  for (const auto& s : r["ike_sas"]) {
    std::cout << str(s["connection"]) << "[" << str(s["spi_i"]) << "_i " << str(s["spi_r"]) << "_r]: "
              << str(s["state"]) << ", " << (s.value("version", 2) == 1 ? "IKEv1, " : "IKEv2, ") << str(s["role"])
              << ", age " << duration(s["age_s"]) << "\n"
              << "  " << str(s["local"]) << "[" << str(s["local_id"]) << "]..." << str(s["remote"]) << "["
              << str(s["remote_id"]) << "]\n"
              << "  " << str(s["algorithms"])
              << (s["nat_local"].get<bool>() ? ", NAT here" : "") << (s["nat_remote"].get<bool>() ? ", NAT at peer" : "")
              << (s["udp_encap"].get<bool>() ? ", UDP-encapsulated" : "") << ", rekey in " << duration(s["rekey_in_s"])
              << "\n";
    for (const auto& c : s["children"]) {
      std::cout << "  " << str(c["child"]) << ": INSTALLED, " << str(c["algorithms"]) << ", SPIs "
                << str(c["spi_in"]) << "_i " << str(c["spi_out"]) << "_o, age " << duration(c["age_s"])
                << ", rekey in " << duration(c["rekey_in_s"]) << "\n"
                << "    " << str(c["local_ts"]) << " === " << str(c["remote_ts"]) << "\n";
    }
  }
}

void print_sa(const json& r) {
  if (r["sas"].empty()) std::cout << "no SAs\n";
  for (const auto& s : r["sas"]) {
    std::cout << str(s["name"]) << " (" << str(s["keyed_by"]) << ")\n"
              << "  " << str(s["protocol"]) << " " << str(s["mode"]) << ", " << str(s["algorithms"])
              << ", encap " << str(s["encap"]) << ", " << str(s["local_addr"]) << " <-> " << str(s["remote_addr"]) << "\n"
              << "  spi in " << str(s["spi_in"]) << ", spi out " << str(s["spi_out"]) << "\n"
              << "  selectors " << str(s["selectors"]) << "\n"
              << "  out: " << s["packets_out"] << " packets, " << s["bytes_out"] << " bytes\n"
              << "  in:  " << s.value("packets_in", json(0)) << " packets, " << s.value("bytes_in", json(0)) << " bytes\n";
    std::cout << "  drops:";
    if (s["drops"].empty()) std::cout << " none";
    for (const auto& [k, v] : s["drops"].items()) std::cout << " " << k << "=" << v;
    std::cout << "\n";
    if (s.contains("rekey_in_s"))
      std::cout << "  lifetime: rekey in " << duration(s["rekey_in_s"]) << ", expires in " << duration(s["expire_in_s"]) << "\n";
  }
}

void print_stats(const json& r) {
  for (const auto& [k, v] : r.items()) std::cout << std::left << std::setw(22) << k << " " << v << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ipsecgw: a userspace IPsec gateway on a TUN device"};
  app.set_version_flag("--version", std::string("ipsecgw ") + IPSECGW_VERSION);
  app.require_subcommand(1);

  std::string config_file;
  std::string stats_file;
  std::string log_level;
  auto* run = app.add_subcommand("run", "run the gateway until SIGINT or SIGTERM");
  run->add_option("-c,--config", config_file, "configuration file (JSON)")->required();
  run->add_option("--stats-file", stats_file,
                  "write statistics as JSON to this file every second and on SIGUSR1");
  run->add_option("--log-level", log_level, "error, warn, info or debug (overrides the file)");

  auto* check = app.add_subcommand("check", "validate a configuration and explain what it does");
  check->add_option("-c,--config", config_file, "configuration file (JSON)")->required();

  // Verbs that talk to a running gateway over its control socket.
  std::string socket_path;
  bool as_json = false;
  std::string verb_arg;
  struct Verb {
    const char* name;
    const char* help;
    const char* arg;
  };
  const Verb verbs[] = {
      {"status", "connections, IKE SAs and their Child SAs", nullptr},
      {"sa", "every SA with SPIs, algorithms, selectors, traffic and drops", nullptr},
      {"stats", "totals since start", nullptr},
      {"up", "initiate a connection or one of its children", "CONN[/CHILD]"},
      {"down", "delete a connection's IKE SA or one Child SA", "CONN[/CHILD]"},
      {"log-level", "set the log level (error, warn, info, debug)", "LEVEL"},
      {"reload", "re-read the configuration (also on SIGHUP)", nullptr},
  };
  std::vector<std::pair<std::string, CLI::App*>> verb_cmds;
  for (const auto& v : verbs) {
    auto* cmd = app.add_subcommand(v.name, v.help);
    cmd->add_option("--socket", socket_path, "control socket (default: the configuration's, or /run/ipsecgw.sock)");
    cmd->add_option("-c,--config", config_file, "read the control socket path from this configuration");
    cmd->add_flag("--json", as_json, "print the reply as JSON");
    if (v.arg) cmd->add_option("target", verb_arg, v.arg)->required();
    verb_cmds.emplace_back(v.name, cmd);
  }
  run->add_option("--socket", socket_path, "control socket (overrides the configuration)");

  CLI11_PARSE(app, argc, argv);

  for (const auto& [name, cmd] : verb_cmds) {
    if (!*cmd) continue;
    std::string path = socket_path;
    if (path.empty() && !config_file.empty()) {
      auto loaded = ipsecgw::config::load_config_file(config_file);
      if (!loaded.config) return print_errors(loaded.errors, config_file);
      path = loaded.config->control.socket;
    }
    if (path.empty()) path = ipsecgw::config::ControlConfig{}.socket;
    json req{{"verb", name}};
    if (name == "up" || name == "down") req["name"] = verb_arg;
    if (name == "log-level") req["level"] = verb_arg;
    json reply;
    std::string err;
    if (!ipsecgw::cli::control_request(path, req, reply, err)) {
      std::cerr << "ipsecgw " << name << ": " << err << "\n";
      return 2;
    }
    if (as_json) {
      std::cout << reply.dump(2) << "\n";
      return reply.value("ok", false) ? 0 : 1;
    }
    if (!reply.value("ok", false)) {
      std::cerr << "ipsecgw " << name << ": " << reply.value("error", std::string("failed")) << "\n";
      return 1;
    }
    const json& r = reply["result"];
    if (name == "status") print_status(r);
    else if (name == "sa") print_sa(r);
    else if (name == "stats") print_stats(r);
    else std::cout << r.dump() << "\n";
    return 0;
  }

  auto loaded = ipsecgw::config::load_config_file(config_file);
  if (!loaded.config) return print_errors(loaded.errors, config_file);

  if (*check) {
    std::cout << config_file << ": OK\n" << ipsecgw::config::explain(*loaded.config);
    return 0;
  }

  namespace log = ipsecgw::core::log;
  log::Level level = log::Level::kInfo;
  log::parse_level(log_level.empty() ? loaded.config->log_level : log_level, level);
  log::set_level(level);
  if (!socket_path.empty()) loaded.config->control.socket = socket_path;
  // As many file descriptors as the hard limit allows (up to 65536): a
  // burst of control or metrics clients must not starve the gateway.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536) {
    const rlim_t want = rl.rlim_max == RLIM_INFINITY ? 65536 : std::min<rlim_t>(rl.rlim_max, 65536);
    if (want > rl.rlim_cur) {
      rl.rlim_cur = want;
      if (::setrlimit(RLIMIT_NOFILE, &rl) == 0) log::debug("gateway", "file descriptor limit raised to ", want);
    }
  }
  try {
    ipsecgw::cli::Gateway gw(std::move(*loaded.config), stats_file);
    gw.set_config_path(config_file);
    return gw.run();
  } catch (const std::exception& e) {
    log::error("gateway", "fatal: ", e.what());
    return 1;
  }
}
