// Configuration: the document as a whole (parse_config, load_config_file),
// "tun", "udp_encap", "control", "keylog", "metrics" and "limits". The
// sections with more to them have files of their own: manual SAs and
// policies (manual.cpp), IKE connections and secrets (connections.cpp),
// what `check` explains and the routes (explain.cpp); the JSON walker they
// share is in walker.hpp.
#include "config/config.hpp"

#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/walker.hpp"
#include "core/log.hpp"

namespace ipsecgw::config {

using nlohmann::json;
using namespace detail;

namespace {

void parse_tun(Walker& w, const json& t, TunConfig& tun) {
  const std::string path = "$.tun";
  if (!w.is_object(t, path)) return;
  w.only_keys(t, path, {"name", "mtu", "addresses", "table", "fwmark", "rule_priority", "txqueuelen"});
  if (auto n = w.string(t, path, "name", false)) {
    if (n->empty() || n->size() > 15) {
      w.error(path + ".name", "must be 1 to 15 characters");
    } else {
      tun.name = *n;
    }
  }
  tun.mtu = w.integer<int>(t, path, "mtu", 576, 9000).value_or(tun.mtu);
  tun.table = w.integer<std::uint32_t>(t, path, "table", 1, 0xfffffffe).value_or(tun.table);
  tun.fwmark = w.integer<std::uint32_t>(t, path, "fwmark", 1, 0xffffffff).value_or(tun.fwmark);
  tun.rule_priority =
      w.integer<std::uint32_t>(t, path, "rule_priority", 1, 32765).value_or(tun.rule_priority);
  tun.txqueuelen = w.integer<std::uint32_t>(t, path, "txqueuelen", 16, 65536).value_or(tun.txqueuelen);
  if (auto it = t.find("addresses"); it != t.end()) {
    if (!it->is_array()) {
      w.error(path + ".addresses", "must be a list of \"ADDRESS/PREFIXLEN\"");
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        const auto& e = (*it)[i];
        if (!e.is_string() || !core::IpRange::parse(e.get<std::string>()) ||
            e.get<std::string>().find('/') == std::string::npos) {
          w.error(path + ".addresses[" + std::to_string(i) + "]", "must be \"ADDRESS/PREFIXLEN\"");
        } else {
          tun.addresses.push_back(e.get<std::string>());
        }
      }
    }
  }
}



}  // namespace

namespace {

// "at line L, column C" of byte offset `byte` (nlohmann counts from 1, past the error).
std::string where(std::string_view text, std::size_t byte) {
  const std::size_t at = std::min(text.size(), byte == 0 ? 0 : byte - 1);
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "at line " + std::to_string(line) + ", column " + std::to_string(col);
}

void wipe_strings(json& j) {
  if (j.is_string()) {
    auto& s = j.get_ref<std::string&>();
    core::secure_wipe(s.data(), s.size());
  } else if (j.is_structured()) {
    for (auto& x : j) wipe_strings(x);
  }
}

}  // namespace

LoadResult parse_config(std::string_view text) {
  LoadResult r;
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // Where, never what: the text there may be a secret (nlohmann's own
    // message quotes the last token read).
    r.errors.push_back({"$", "invalid JSON " + where(text, e.byte) + " (the text there is not shown: it may be secret)"});
    return r;
  } catch (const json::exception&) {
    r.errors.push_back({"$", "invalid JSON: a number out of range"});
    return r;
  }
  // The document's strings (secrets among them) are wiped when it goes.
  struct Wipe {
    json& j;
    ~Wipe() { wipe_strings(j); }
  } wipe{doc};
  Walker w(r.errors);
  if (!w.is_object(doc, "$")) return r;
  w.only_keys(doc, "$", {"tun", "udp_encap", "manual", "policies", "connections", "secrets", "log_level",
                         "control", "keylog", "metrics", "limits", "dataplane"});
  Config c;
  if (auto it = doc.find("tun"); it != doc.end()) parse_tun(w, *it, c.tun);
  if (auto it = doc.find("udp_encap"); it != doc.end() && w.is_object(*it, "$.udp_encap")) {
    w.only_keys(*it, "$.udp_encap", {"port", "keepalive"});
    c.udp_encap.port = w.integer<std::uint16_t>(*it, "$.udp_encap", "port", 1, 65535)
                           .value_or(c.udp_encap.port);
    c.udp_encap.keepalive = w.integer<unsigned>(*it, "$.udp_encap", "keepalive", 0, 3600)
                                .value_or(c.udp_encap.keepalive);
  }
  if (auto it = doc.find("dataplane"); it != doc.end() && w.is_object(*it, "$.dataplane")) {
    w.only_keys(*it, "$.dataplane", {"workers", "offload", "uso"});
    c.dataplane.workers = w.integer<unsigned>(*it, "$.dataplane", "workers", 0, 64).value_or(c.dataplane.workers);
    if (auto o = it->find("offload"); o != it->end()) {
      if (o->is_boolean()) c.dataplane.offload = o->get<bool>();
      else w.error("$.dataplane.offload", "must be true or false");
    }
    if (auto o = it->find("uso"); o != it->end()) {
      if (o->is_boolean()) c.dataplane.uso = o->get<bool>();
      else w.error("$.dataplane.uso", "must be true or false");
    }
  }
  if (auto lvl = w.string(doc, "$", "log_level", false)) {
    core::log::Level l;
    if (!core::log::parse_level(*lvl, l)) {
      w.error("$.log_level", "must be error, warn, info or debug");
    } else {
      c.log_level = *lvl;
    }
  }
  std::set<std::string> sa_names;
  if (auto it = doc.find("manual"); it != doc.end() && w.is_object(*it, "$.manual")) {
    for (const auto& [name, sa] : it->items()) {
      sa_names.insert(name);
      parse_manual_sa(w, name, sa, "$.manual." + name, c.udp_encap, c.manual);
    }
  }
  // Inbound SPIs identify SAs (RFC 4301 4.1): they must be unique.
  std::set<std::uint32_t> spis;
  for (const auto& sa : c.manual) {
    if (!spis.insert(sa.in.spi).second) {
      w.error("$.manual." + sa.name + ".in.spi", "is used by another SA");
    }
    if (sa.protocol == core::IpsecProtocol::kAhEsp && !spis.insert(sa.ah_in.spi).second)
      w.error("$.manual." + sa.name + ".in.ah_spi", "is used by another SA");
  }
  if (auto it = doc.find("policies"); it != doc.end()) {
    if (!it->is_array()) {
      w.error("$.policies", "must be a list");
    } else {
      for (std::size_t i = 0; i < it->size(); ++i) {
        parse_policy(w, (*it)[i], "$.policies[" + std::to_string(i) + "]", sa_names, c.policies);
      }
    }
  }
  if (auto it = doc.find("limits"); it != doc.end() && w.is_object(*it, "$.limits")) {
    const std::string p = "$.limits";
    w.only_keys(*it, p, {"half_open", "half_open_per_source", "cookie_threshold", "reassembly_bytes",
                         "children_per_ike_sa", "ike_queue", "ike_queue_new", "log_lines_per_second",
                         "control_sessions", "control_idle_s", "metrics_sessions"});
    auto& l = c.limits;
    auto size = [&](const char* key, std::size_t& v, std::size_t lo, std::size_t hi) {
      v = w.integer<std::size_t>(*it, p, key, lo, hi).value_or(v);
    };
    size("half_open", l.half_open, 1, 1u << 20);
    size("half_open_per_source", l.half_open_per_source, 1, 1u << 20);
    size("cookie_threshold", l.cookie_threshold, 0, 1u << 20);
    size("reassembly_bytes", l.reassembly_bytes, 65536, std::size_t{1} << 30);
    size("children_per_ike_sa", l.children_per_ike_sa, 1, 1u << 16);
    size("ike_queue", l.ike_queue, 16, 1u << 20);
    size("ike_queue_new", l.ike_queue_new, 1, 1u << 20);
    size("control_sessions", l.control_sessions, 1, 4096);
    size("metrics_sessions", l.metrics_sessions, 1, 4096);
    l.log_lines_per_second = w.integer<unsigned>(*it, p, "log_lines_per_second", 1, 100000).value_or(l.log_lines_per_second);
    l.control_idle_s = w.integer<unsigned>(*it, p, "control_idle_s", 1, 86400).value_or(l.control_idle_s);
  }
  if (auto it = doc.find("metrics"); it != doc.end() && w.is_object(*it, "$.metrics")) {
    w.only_keys(*it, "$.metrics", {"listen"});
    if (auto l = w.string(*it, "$.metrics", "listen", true)) {
      const auto colon = l->rfind(':');
      std::string host = colon == std::string::npos ? "" : l->substr(0, colon);
      if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      const auto addr = core::IpAddress::parse(host);
      const bool loopback = addr && ((addr->is_v4() && addr->bytes()[0] == 127) ||
                                     (!addr->is_v4() && *addr == *core::IpAddress::parse("::1")));
      unsigned long port = 0;
      if (colon != std::string::npos) port = std::strtoul(l->c_str() + colon + 1, nullptr, 10);
      if (!loopback || port == 0 || port > 65535)
        w.error("$.metrics.listen", "must be a loopback address and port, such as \"127.0.0.1:9750\" or \"[::1]:9750\"");
      else
        c.metrics.listen = *l;
    }
  }
  if (auto it = doc.find("keylog"); it != doc.end() && w.is_object(*it, "$.keylog")) {
    w.only_keys(*it, "$.keylog", {"esp", "ikev2", "ikev1", "ah"});
    c.keylog.esp = w.string(*it, "$.keylog", "esp", false).value_or("");
    c.keylog.ikev2 = w.string(*it, "$.keylog", "ikev2", false).value_or("");
    c.keylog.ikev1 = w.string(*it, "$.keylog", "ikev1", false).value_or("");
    c.keylog.ah = w.string(*it, "$.keylog", "ah", false).value_or("");
  }
  if (auto it = doc.find("control"); it != doc.end() && w.is_object(*it, "$.control")) {
    w.only_keys(*it, "$.control", {"socket", "mode"});
    if (auto sock = w.string(*it, "$.control", "socket", false)) {
      if (sock->empty() || sock->size() > 100 || (*sock)[0] != '/')
        w.error("$.control.socket", "must be an absolute path of at most 100 characters");
      else
        c.control.socket = *sock;
    }
    if (auto m = w.string(*it, "$.control", "mode", false)) {
      char* end = nullptr;
      const unsigned long v = std::strtoul(m->c_str(), &end, 8);
      if (m->empty() || *end != '\0' || v > 0777) w.error("$.control.mode", "must be an octal mode such as \"0600\"");
      else c.control.mode = static_cast<unsigned>(v);
    }
  }
  if (auto it = doc.find("connections"); it != doc.end() && w.is_object(*it, "$.connections")) {
    for (const auto& [name, v] : it->items()) parse_connection(w, name, v, "$.connections." + name, c.connections);
  }
  if (!c.connections.empty()) {
    auto it = doc.find("secrets");
    parse_secrets(w, it == doc.end() ? nullptr : &*it, c.connections);
  }
  if (r.errors.empty()) r.config = std::move(c);
  return r;
}

LoadResult load_config_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    LoadResult r;
    r.errors.push_back({path, "cannot be read"});
    return r;
  }
  // Read into one buffer of the file's size, wiped after parsing: it holds
  // the PSKs and manual keys.
  std::string text;
  in.seekg(0, std::ios::end);
  const auto size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size > 0) {
    if (size > 16 * 1024 * 1024) {
      LoadResult r;
      r.errors.push_back({path, "larger than 16 MiB"});
      return r;
    }
    text.resize(static_cast<std::size_t>(size));
    in.read(text.data(), size);
    text.resize(static_cast<std::size_t>(in.gcount()));
  }
  auto r = parse_config(text);
  core::secure_wipe(text.data(), text.size());
  return r;
}

}  // namespace ipsecgw::config
