// ipsecgw: a userspace IPsec gateway on a TUN device.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

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

  CLI11_PARSE(app, argc, argv);

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
  try {
    ipsecgw::cli::Gateway gw(std::move(*loaded.config), stats_file);
    return gw.run();
  } catch (const std::exception& e) {
    log::error("gateway", "fatal: ", e.what());
    return 1;
  }
}
