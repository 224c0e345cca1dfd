// The configuration parser's walker: reads values from the JSON document
// and records every error against its JSON path. Internal to config/.
#pragma once

#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

namespace ipsecgw::config::detail {

using nlohmann::json;

// Walks the document, recording errors against JSON paths.
class Walker {
 public:
  explicit Walker(std::vector<ConfigError>& errors) : errors_(errors) {}

  void error(const std::string& path, std::string msg) { errors_.push_back({path, std::move(msg)}); }

  // A key swanctl.conf users know that ipsecgw does not do yet: refused
  // with a message that says so, rather than as unknown or ignored.
  struct Planned {
    const char* key;
    const char* what;  // "road-warrior address pools", ...
  };

  // Reports keys that are not in `known`; `planned` ones as not implemented yet.
  void only_keys(const json& obj, const std::string& path, std::initializer_list<const char*> known,
                 std::initializer_list<Planned> planned = {}) {
    for (const auto& [k, v] : obj.items()) {
      bool ok = false;
      for (const char* name : known) ok = ok || k == name;
      if (ok) continue;
      const Planned* p = nullptr;
      for (const auto& x : planned)
        if (k == x.key) p = &x;
      if (p) error(path + "." + k, std::string(p->what) + " are not implemented yet; remove \"" + k + "\"");
      else error(path + "." + k, "unknown key");
    }
  }

  bool is_object(const json& v, const std::string& path) {
    if (v.is_object()) return true;
    error(path, "must be an object");
    return false;
  }

  std::optional<std::string> string(const json& obj, const std::string& path, const char* key,
                                    bool required) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) error(path + "." + key, "is required");
      return std::nullopt;
    }
    if (!it->is_string()) {
      error(path + "." + key, "must be a string");
      return std::nullopt;
    }
    return it->get<std::string>();
  }

  template <class T>
  std::optional<T> integer(const json& obj, const std::string& path, const char* key, T lo, T hi) {
    auto it = obj.find(key);
    if (it == obj.end()) return std::nullopt;
    if (!it->is_number_integer()) {
      error(path + "." + key, "must be an integer");
      return std::nullopt;
    }
    auto v = it->get<long long>();
    if (v < static_cast<long long>(lo) || v > static_cast<long long>(hi)) {
      error(path + "." + key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
      return std::nullopt;
    }
    return static_cast<T>(v);
  }

  std::vector<core::IpRange> ranges(const json& obj, const std::string& path, const char* key,
                                    bool required) {
    std::vector<core::IpRange> out;
    auto it = obj.find(key);
    const std::string p = path + "." + key;
    if (it == obj.end()) {
      if (required) error(p, "is required");
      return out;
    }
    if (!it->is_array() || it->empty()) {
      error(p, "must be a non-empty list of addresses, prefixes or ranges");
      return out;
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const auto& e = (*it)[i];
      const std::string ep = p + "[" + std::to_string(i) + "]";
      if (!e.is_string()) {
        error(ep, "must be a string");
        continue;
      }
      auto r = core::IpRange::parse(e.get<std::string>());
      if (!r) {
        error(ep, "'" + e.get<std::string>() + "' is not an address, prefix or range");
        continue;
      }
      out.push_back(*r);
    }
    return out;
  }

  std::optional<core::PortRange> ports(const json& obj, const std::string& path, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end()) return core::PortRange{};
    const std::string p = path + "." + key;
    if (it->is_number_integer()) {
      auto v = it->get<long long>();
      if (v < 0 || v > 65535) {
        error(p, "port must be between 0 and 65535");
        return std::nullopt;
      }
      return core::PortRange{static_cast<std::uint16_t>(v), static_cast<std::uint16_t>(v)};
    }
    if (it->is_string()) {
      unsigned lo = 0, hi = 0;
      char dash = 0;
      std::istringstream is(it->get<std::string>());
      if ((is >> lo >> dash >> hi) && dash == '-' && is.eof() && lo <= hi && hi <= 65535) {
        return core::PortRange{static_cast<std::uint16_t>(lo), static_cast<std::uint16_t>(hi)};
      }
    }
    error(p, "must be a port number or a range \"LOW-HIGH\"");
    return std::nullopt;
  }

 private:
  std::vector<ConfigError>& errors_;
};

// The sections of the document, one file each: manual SAs and policies
// (config/manual.cpp), IKE connections and secrets (config/connections.cpp).
bool parse_ts_side(Walker& w, const json& sa, const std::string& path, const char* key, bool required,
                   const core::IpAddress* own, std::vector<core::IpRange>& ranges, std::uint8_t& proto,
                   core::PortRange& ports);
void parse_manual_sa(Walker& w, const std::string& name, const json& sa, const std::string& path,
                     const UdpEncapConfig& udp, std::vector<core::SaParams>& out);
void parse_policy(Walker& w, const json& pj, const std::string& path,
                  const std::set<std::string>& sa_names, std::vector<core::StaticPolicy>& out);
void parse_connection(Walker& w, const std::string& name, const json& cj, const std::string& path,
                      std::vector<ike::ConnectionConfig>& out);
void parse_secrets(Walker& w, const json* sj, std::vector<ike::ConnectionConfig>& conns);

}  // namespace ipsecgw::config::detail
