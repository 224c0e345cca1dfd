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
  // Packets the kernel queues for ipsecgw to read, per TUN queue: what
  // rides out a worker's short absence from the CPU at a high packet rate
  // (the kernel's default is 500).
  std::uint32_t txqueuelen = 4096;
};

struct UdpEncapConfig {
  std::uint16_t port = core::kNattPort;
  unsigned keepalive = 20;  // seconds between NAT keepalives, 0 = off
};

// The data plane ("dataplane"): how many workers (one TUN queue and its
// sockets each; 0 = one per core) and whether the TUN device and the UDP
// sockets use the kernel's segmentation offloads (TSO on TUN, UDP GSO/GRO).
struct DataplaneConfig {
  unsigned workers = 0;
  bool offload = true;
  // With offload: UDP segmentation offload on the TUN device too, where the
  // kernel has it (6.2 and later); false keeps TSO and leaves UDP alone.
  bool uso = true;
};

struct ControlConfig {
  std::string socket = "/run/ipsecgw.sock";
  unsigned mode = 0600;
};

struct KeyLogConfig {
  std::string esp;    // Wireshark "esp_sa" UAT file, empty = off
  std::string ikev2;  // Wireshark "ikev2_decryption_table" UAT file, empty = off
  std::string ikev1;  // Wireshark "ikev1_decryption_table" UAT file, empty = off
  std::string ah;     // AH SAs' integrity keys, esp_sa's columns without encryption, empty = off
};

struct MetricsConfig {
  std::string listen;  // "127.0.0.1:9750"; empty = off. Loopback addresses only.
};

// Budgets for what others can make the gateway hold or do ("limits"); each
// is counted when it bites (stats, metrics).
struct LimitsConfig {
  std::size_t half_open = 4096;             // half-open IKE SAs in total
  std::size_t half_open_per_source = 64;    // ... from one IP address
  std::size_t cookie_threshold = 64;        // half-open IKE SAs before COOKIE is required (RFC 7296 2.6)
  std::size_t reassembly_bytes = 1 << 20;   // IKE fragments held for peers not yet authenticated
  std::size_t children_per_ike_sa = 64;     // Child SAs of one IKE SA
  std::size_t ike_queue = 4096;             // IKE datagrams for existing SAs waiting for the engine
  std::size_t ike_queue_new = 256;          // ... that would start a new SA (served after the others)
  unsigned log_lines_per_second = 10;       // about unauthenticated input
  std::size_t control_sessions = 16;        // open control socket connections
  unsigned control_idle_s = 30;             // a control or metrics connection idle this long is closed
  std::size_t metrics_sessions = 16;        // open metrics connections
};

struct Config {
  LimitsConfig limits;
  ControlConfig control;
  MetricsConfig metrics;
  KeyLogConfig keylog;
  TunConfig tun;
  UdpEncapConfig udp_encap;
  DataplaneConfig dataplane;
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
std::vector<core::Route> protected_routes(const Config& c);

}  // namespace ipsecgw::config
