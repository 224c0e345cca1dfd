// The JSON configuration and its validation.
//
// Every problem is reported with the JSON path it concerns ("$.manual.lan.
// out.key: ...") and all problems are collected, not just the first, so that
// `ipsecgw check` can list them at once. Parsing is the only place in
// ipsecgw where exceptions (nlohmann::json's) are used; they stop here.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/sa.hpp"
#include "core/spd.hpp"
#include "ike/connection.hpp"

namespace ipsecgw::config {

struct TunConfig {
  std::string name = "ipsec0";
  int mtu = 1400;
  std::vector<std::string> addresses;  // optional addresses for the device
  std::uint32_t table = 4500;          // routing table for protected networks
  std::uint32_t fwmark = 0x4500;       // mark on ipsecgw's own sockets
  std::uint32_t rule_priority = 10000;
};

struct UdpEncapConfig {
  std::uint16_t port = core::kNattPort;
  unsigned keepalive = 20;  // seconds between NAT keepalives, 0 = off
};

struct ControlConfig {
  std::string socket = "/run/ipsecgw.sock";
  unsigned mode = 0600;
};

struct KeyLogConfig {
  std::string esp;    // Wireshark "esp_sa" UAT file, empty = off
  std::string ikev2;  // Wireshark "ikev2_decryption_table" UAT file, empty = off
  std::string ikev1;  // Wireshark "ikev1_decryption_table" UAT file, empty = off
};

struct MetricsConfig {
  std::string listen;  // "127.0.0.1:9750"; empty = off. Loopback addresses only.
};

struct Config {
  ControlConfig control;
  MetricsConfig metrics;
  KeyLogConfig keylog;
  TunConfig tun;
  UdpEncapConfig udp_encap;
  std::vector<core::SaParams> manual;
  std::vector<core::StaticPolicy> policies;
  std::vector<ike::ConnectionConfig> connections;  // PSKs resolved from "secrets"
  std::string log_level = "info";
};

struct ConfigError {
  std::string path;
  std::string message;
  [[nodiscard]] std::string to_string() const { return path + ": " + message; }
};

struct LoadResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<ConfigError> errors;
};

LoadResult parse_config(std::string_view json_text);
LoadResult load_config_file(const std::string& path);

// A human-readable account of what the configuration will do.
std::string explain(const Config& c);

// Routes the TUN device needs: every remote selector of every SA and of every
// protect policy, as prefixes.
std::vector<core::Prefix> protected_routes(const Config& c);

}  // namespace ipsecgw::config
