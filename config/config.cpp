#include "config/config.hpp"

#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/log.hpp"
#include "ike/ikev1_phase2.hpp"
#include "ike/ikev1_proposals.hpp"

namespace ipsecgw::config {

using nlohmann::json;

namespace {

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

std::optional<std::uint32_t> parse_spi(Walker& w, const json& obj, const std::string& path) {
  auto it = obj.find("spi");
  const std::string p = path + ".spi";
  if (it == obj.end()) {
    w.error(p, "is required");
    return std::nullopt;
  }
  unsigned long long v = 0;
  if (it->is_number_unsigned()) {
    v = it->get<unsigned long long>();
  } else if (it->is_string()) {
    const auto s = it->get<std::string>();
    std::size_t used = 0;
    try {
      v = std::stoull(s, &used, 0);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || s.empty()) {
      w.error(p, "'" + s + "' is not a number (write it as \"0x00001001\" or 4097)");
      return std::nullopt;
    }
  } else {
    w.error(p, "must be a number or a string like \"0x00001001\"");
    return std::nullopt;
  }
  if (v < 256 || v > 0xffffffffULL) {
    w.error(p, "must be between 0x100 and 0xffffffff (0-255 are reserved, RFC 4303 2.1)");
    return std::nullopt;
  }
  return static_cast<std::uint32_t>(v);
}

// One traffic selector as strongSwan writes it: "10.2.0.0/24",
// "10.2.0.0/24[tcp/443]", "198.51.100.2[udp/1701]", "[udp]" (the SA's own
// address), "[17/%any]". The protocol and port ranges apply to every entry
// of a side, so they must agree there.
struct TsEntry {
  std::optional<core::IpRange> range;  // none: the SA's address on that side
  std::uint8_t proto = 0;              // 0: any
  core::PortRange ports;
};
std::optional<TsEntry> parse_ts_entry(const std::string& text, std::string& why) {
  TsEntry e;
  std::string addr = text;
  if (const auto open = text.find('['); open != std::string::npos) {
    if (text.back() != ']') {
      why = "a protocol/port selector ends with ']'";
      return std::nullopt;
    }
    addr = text.substr(0, open);
    const std::string inside = text.substr(open + 1, text.size() - open - 2);
    const auto slash = inside.find('/');
    const std::string proto = inside.substr(0, slash);
    if (proto != "%any" && !proto.empty()) {
      auto n = core::parse_ip_protocol(proto);
      if (!n) {
        why = "'" + proto + "' is not an IP protocol (a name such as tcp, udp, icmp, or a number)";
        return std::nullopt;
      }
      e.proto = *n;
    }
    if (slash != std::string::npos) {
      const std::string port = inside.substr(slash + 1);
      if (port != "%any") {
        unsigned lo = 0, hi = 0;
        char dash = 0;
        std::istringstream one(port), two(port);
        if ((two >> lo >> dash >> hi) && dash == '-' && two.eof() && lo <= hi && hi <= 65535) {
        } else if ((one >> lo) && one.eof() && lo <= 65535) {
          hi = lo;
        } else {
          why = "'" + port + "' is not a port, a range LOW-HIGH or %any";
          return std::nullopt;
        }
        if (e.proto != 6 && e.proto != 17 && e.proto != 132 && e.proto != 136 && e.proto != 1 && e.proto != 58) {
          why = "ports need a protocol that has them (tcp, udp, sctp, udplite; icmp types)";
          return std::nullopt;
        }
        e.ports = {static_cast<std::uint16_t>(lo), static_cast<std::uint16_t>(hi)};
      }
    }
  }
  if (!addr.empty()) {
    e.range = core::IpRange::parse(addr);
    if (!e.range) {
      why = "'" + addr + "' is not an address, prefix or range";
      return std::nullopt;
    }
  }
  return e;
}

// A manual SA's local_ts or remote_ts: the ranges, and the protocol and
// ports they share. `own` stands for an entry without an address.
bool parse_ts_side(Walker& w, const json& sa, const std::string& path, const char* key, bool required,
                   const core::IpAddress& own, std::vector<core::IpRange>& ranges, std::uint8_t& proto,
                   core::PortRange& ports) {
  auto it = sa.find(key);
  const std::string p = path + "." + key;
  if (it == sa.end()) {
    if (required) w.error(p, "is required");
    return !required;
  }
  if (!it->is_array() || it->empty()) {
    w.error(p, "must be a non-empty list of traffic selectors (\"10.2.0.0/24\", \"10.2.0.0/24[tcp/443]\")");
    return false;
  }
  bool ok = true;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string ep = p + "[" + std::to_string(i) + "]";
    if (!(*it)[i].is_string()) {
      w.error(ep, "must be a string");
      ok = false;
      continue;
    }
    std::string why;
    auto e = parse_ts_entry((*it)[i].get<std::string>(), why);
    if (!e) {
      w.error(ep, why);
      ok = false;
      continue;
    }
    if (i > 0 && (e->proto != proto || !(e->ports == ports))) {
      w.error(ep, "every selector of one side must name the same protocol and ports");
      ok = false;
      continue;
    }
    proto = e->proto;
    ports = e->ports;
    ranges.push_back(e->range ? *e->range : core::IpRange{own, own});
  }
  return ok;
}

// What a direction's key must be: its length and how to explain it; no
// length when the algorithm itself was wrong (reported already).
struct KeySpec {
  std::optional<std::size_t> len;
  std::string explain;
};
KeySpec esp_key_spec(const std::optional<core::EspTransform>& t) {
  if (!t) return {};
  return {t->keymat_len(), t->name() + " (" + std::to_string(t->enc.key_bytes) + " key" +
                               (core::salt_len(t->enc.alg) ? " + 4 salt" : "") +
                               (t->aead() ? "" : " + " + std::to_string(core::integ_key_len(t->integ)) +
                                                     " integrity key") + ")"};
}

bool parse_direction(Walker& w, const json& sa, const std::string& path, const char* key,
                     const KeySpec& want, core::SaDirection& out) {
  auto it = sa.find(key);
  const std::string p = path + "." + key;
  if (it == sa.end()) {
    w.error(p, "is required");
    return false;
  }
  if (!w.is_object(*it, p)) return false;
  w.only_keys(*it, p, {"spi", "key"});
  auto spi = parse_spi(w, *it, p);
  auto key_hex = w.string(*it, p, "key", true);
  if (!spi || !key_hex) return false;
  auto raw = core::from_hex(*key_hex);
  core::secure_wipe(key_hex->data(), key_hex->size());
  if (!raw) {
    w.error(p + ".key", "is not hex");
    return false;
  }
  core::SecureBytes secure(*raw);
  core::secure_wipe(raw->data(), raw->size());
  if (want.len && secure.size() != *want.len) {
    w.error(p + ".key", "must be " + std::to_string(*want.len) + " bytes for " + want.explain + ", got " +
                            std::to_string(secure.size()));
    return false;
  }
  out.spi = *spi;
  out.keymat = std::move(secure);
  return true;
}

void parse_manual_sa(Walker& w, const std::string& name, const json& sa, const std::string& path,
                     const UdpEncapConfig& udp, std::vector<core::SaParams>& out) {
  if (!w.is_object(sa, path)) return;
  w.only_keys(sa, path, {"local_addr", "remote_addr", "local_ts", "remote_ts", "mode", "protocol",
                         "encap", "esp", "ah", "replay_window", "remote_port", "out", "in"});
  core::SaParams p;
  p.name = name;
  bool ok = true;
  auto addr = [&](const char* key, core::IpAddress& a) {
    auto s = w.string(sa, path, key, true);
    if (!s) return false;
    auto parsed = core::IpAddress::parse(*s);
    if (!parsed) {
      w.error(path + "." + key, "'" + *s + "' is not an IP address");
      return false;
    }
    a = *parsed;
    return true;
  };
  ok &= addr("local_addr", p.local_addr);
  ok &= addr("remote_addr", p.remote_addr);
  if (ok && p.local_addr.family() != p.remote_addr.family()) {
    w.error(path + ".remote_addr", "must be of the same IP version as local_addr");
    ok = false;
  }
  const auto mode = w.string(sa, path, "mode", false).value_or("tunnel");
  if (mode == "transport") {
    p.mode = core::SaMode::kTransport;
  } else if (mode != "tunnel") {
    w.error(path + ".mode", "must be \"tunnel\" or \"transport\"");
    ok = false;
  }
  std::uint8_t lproto = 0, rproto = 0;
  const bool transport = p.mode == core::SaMode::kTransport;
  ok &= parse_ts_side(w, sa, path, "local_ts", !transport, p.local_addr, p.selectors.local, lproto,
                      p.selectors.local_ports);
  ok &= parse_ts_side(w, sa, path, "remote_ts", !transport, p.remote_addr, p.selectors.remote, rproto,
                      p.selectors.remote_ports);
  if (lproto && rproto && lproto != rproto) {
    w.error(path + ".remote_ts", "names another protocol than local_ts");
    ok = false;
  }
  p.selectors.proto = lproto ? lproto : rproto;
  if (transport && ok) {
    // Transport mode protects traffic between the two addresses: all of it
    // unless the selectors say less, never more.
    auto within = [&](const char* key, std::vector<core::IpRange>& ranges, const core::IpAddress& a) {
      if (ranges.empty()) ranges = {core::IpRange{a, a}};
      for (const auto& r : ranges) {
        if (r.lo != a || r.hi != a) {
          w.error(path + "." + key, "a transport-mode SA protects only traffic of its own addresses: '" +
                                        r.to_string() + "' is not " + a.to_string());
          ok = false;
        }
      }
    };
    within("local_ts", p.selectors.local, p.local_addr);
    within("remote_ts", p.selectors.remote, p.remote_addr);
  }
  const auto proto = w.string(sa, path, "protocol", false).value_or("esp");
  if (proto == "ah") {
    p.protocol = core::IpsecProtocol::kAh;
  } else if (proto == "ah+esp") {
    w.error(path + ".protocol", "AH+ESP bundles are not implemented yet; use \"esp\" or \"ah\"");
    ok = false;
  } else if (proto != "esp") {
    w.error(path + ".protocol", "must be \"esp\" or \"ah\"");
    ok = false;
  }
  const auto encap = w.string(sa, path, "encap", false).value_or("none");
  if (encap == "udp" && p.protocol == core::IpsecProtocol::kAh) {
    w.error(path + ".encap", "AH cannot be UDP-encapsulated: its ICV covers the IP addresses a NAT rewrites "
                             "(RFC 3948 covers ESP only); use \"none\"");
    ok = false;
  } else if (encap == "udp") {
    p.encap = core::Encap::kUdp;
  } else if (encap != "none") {
    w.error(path + ".encap", "must be \"udp\" (ESP in UDP, RFC 3948) or \"none\" (IP protocol 50)");
    ok = false;
  }
  p.remote_port = w.integer<std::uint16_t>(sa, path, "remote_port", 1, 65535).value_or(udp.port);
  p.replay_window =
      w.integer<std::uint32_t>(sa, path, "replay_window", 0, core::kMaxReplayWindow)
          .value_or(core::kDefaultReplayWindow);

  KeySpec want;
  if (p.protocol == core::IpsecProtocol::kAh) {
    if (sa.contains("esp")) {
      w.error(path + ".esp", "an AH SA has no encryption; name its integrity algorithm in \"ah\"");
      ok = false;
    }
    if (auto ah = w.string(sa, path, "ah", true)) {
      std::string why;
      auto t = core::single_ah_transform(*ah, why);
      if (!t) {
        w.error(path + ".ah", "'" + *ah + "': " + why);
        ok = false;
      } else {
        p.ah = *t;
        want = {t->keymat_len(), "AH " + t->name() + " (the integrity key alone)"};
      }
    } else {
      ok = false;
    }
  } else {
    if (sa.contains("ah")) {
      w.error(path + ".ah", "only for \"protocol\": \"ah\"");
      ok = false;
    }
    std::optional<core::EspTransform> t;
    if (auto esp = w.string(sa, path, "esp", true)) {
      std::string why;
      t = core::single_esp_transform(*esp, why);
      if (!t) {
        w.error(path + ".esp", "'" + *esp + "': " + why);
        ok = false;
      } else {
        p.transform = *t;
      }
    } else {
      ok = false;
    }
    want = esp_key_spec(t);
  }
  ok &= parse_direction(w, sa, path, "out", want, p.out);
  ok &= parse_direction(w, sa, path, "in", want, p.in);
  if (ok) out.push_back(std::move(p));
}

void parse_policy(Walker& w, const json& pj, const std::string& path,
                  const std::set<std::string>& sa_names, std::vector<core::StaticPolicy>& out) {
  if (!w.is_object(pj, path)) return;
  w.only_keys(pj, path, {"name", "local_ts", "remote_ts", "proto", "local_port", "remote_port",
                         "action", "sa"});
  core::StaticPolicy sp;
  bool ok = true;
  sp.policy.name = w.string(pj, path, "name", false).value_or(path);
  sp.policy.sel.local = w.ranges(pj, path, "local_ts", true);
  sp.policy.sel.remote = w.ranges(pj, path, "remote_ts", true);
  ok &= !sp.policy.sel.local.empty() && !sp.policy.sel.remote.empty();
  if (auto proto = w.string(pj, path, "proto", false)) {
    auto n = core::parse_ip_protocol(*proto);
    if (!n) {
      w.error(path + ".proto", "'" + *proto + "' is not a protocol name or number");
      ok = false;
    } else {
      sp.policy.sel.proto = *n;
    }
  } else if (auto n = w.integer<std::uint8_t>(pj, path, "proto", 0, 255)) {
    sp.policy.sel.proto = *n;
  }
  auto lp = w.ports(pj, path, "local_port");
  auto rp = w.ports(pj, path, "remote_port");
  ok &= lp.has_value() && rp.has_value();
  if (lp && rp) {
    sp.policy.sel.local_ports = *lp;
    sp.policy.sel.remote_ports = *rp;
    auto pr = sp.policy.sel.proto;
    if ((!lp->any() || !rp->any()) && pr != core::ipproto::kTcp && pr != core::ipproto::kUdp &&
        pr != core::ipproto::kSctp && pr != core::ipproto::kUdpLite && pr != core::ipproto::kIcmp &&
        pr != core::ipproto::kIcmpv6) {
      w.error(path + ".proto", "ports need a protocol that has them (tcp, udp, sctp, udplite)");
      ok = false;
    }
  }
  auto action = w.string(pj, path, "action", true);
  if (action == "bypass") {
    sp.policy.action = core::PolicyAction::kBypass;
  } else if (action == "discard") {
    sp.policy.action = core::PolicyAction::kDiscard;
  } else if (action == "protect") {
    sp.policy.action = core::PolicyAction::kProtect;
    auto sa = w.string(pj, path, "sa", true);
    if (!sa) {
      ok = false;
    } else if (!sa_names.count(*sa)) {
      w.error(path + ".sa", "no manual SA named '" + *sa + "'");
      ok = false;
    } else {
      sp.sa_name = *sa;
    }
  } else {
    if (action) w.error(path + ".action", "must be \"protect\", \"bypass\" or \"discard\"");
    ok = false;
  }
  if (ok) out.push_back(std::move(sp));
}

void parse_tun(Walker& w, const json& t, TunConfig& tun) {
  const std::string path = "$.tun";
  if (!w.is_object(t, path)) return;
  w.only_keys(t, path, {"name", "mtu", "addresses", "table", "fwmark", "rule_priority"});
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


std::vector<std::string> string_list(Walker& w, const json& obj, const std::string& path,
                                     const char* key, bool required) {
  std::vector<std::string> out;
  auto it = obj.find(key);
  const std::string p = path + "." + key;
  if (it == obj.end()) {
    if (required) w.error(p, "is required");
    return out;
  }
  if (!it->is_array()) {
    w.error(p, "must be a list of strings");
    return out;
  }
  for (std::size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) {
      w.error(p + "[" + std::to_string(i) + "]", "must be a string");
      continue;
    }
    out.push_back((*it)[i].get<std::string>());
  }
  return out;
}

std::vector<core::Proposal> proposals(Walker& w, const json& obj, const std::string& path,
                                      const char* key, bool ike, std::vector<const char*> deflt) {
  std::vector<core::Proposal> out;
  auto list = string_list(w, obj, path, key, false);
  if (obj.find(key) == obj.end())
    for (auto* d : deflt) list.push_back(d);
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string p = path + "." + key + "[" + std::to_string(i) + "]";
    std::string bad;
    auto pr = core::parse_proposal(list[i], bad);
    if (!pr) {
      w.error(p, "'" + list[i] + "': unknown algorithm keyword '" + bad + "'");
      continue;
    }
    if (pr->enc.empty()) {
      w.error(p, "'" + list[i] + "': names no encryption algorithm");
      continue;
    }
    bool aead = true, plain = true;
    for (const auto& e : pr->enc) (core::is_aead(e.alg) ? plain : aead) = false;
    if (!aead && !plain) {
      w.error(p, "'" + list[i] + "': mixes AEAD and non-AEAD encryption (write two proposals)");
      continue;
    }
    if (plain && pr->integ.empty()) {
      w.error(p, "'" + list[i] + "': encryption without an integrity algorithm");
      continue;
    }
    if (ike && pr->dh.empty()) {
      w.error(p, "'" + list[i] + "': an IKE proposal needs a DH group");
      continue;
    }
    if (ike && !pr->esn.empty()) {
      w.error(p, "'" + list[i] + "': esn is for ESP proposals");
      continue;
    }
    for (auto g : pr->dh) {
      if (g == core::DhGroup::kModp1024 || g == core::DhGroup::kModp1536) {
        // Legacy groups only when written out, as here; say so.
        core::log::warn("config", p, ": legacy DH group modp", g == core::DhGroup::kModp1024 ? "1024" : "1536",
                        " configured");
      }
    }
    out.push_back(std::move(*pr));
  }
  if (out.empty() && !list.empty()) return out;
  if (out.empty()) w.error(path + "." + key, "needs at least one proposal");
  return out;
}

void parse_child(Walker& w, const std::string& name, const json& cj, const std::string& path,
                 ike::ChildConfig& ch) {
  if (!w.is_object(cj, path)) return;
  w.only_keys(cj, path, {"local_ts", "remote_ts", "esp_proposals", "mode", "start_action",
                         "rekey_time", "life_time", "rekey_bytes", "life_bytes", "replay_window",
                         "dpd_action"},
              {{"ah_proposals", "AH proposals (AH)"},
               {"ipcomp", "IPComp compression settings"},
               {"inactivity", "inactivity timeouts"},
               {"hostaccess", "hostaccess rules"},
               {"updown", "updown scripts"},
               {"close_action", "close actions"}});
  ch.name = name;
  ch.local_ts = w.ranges(cj, path, "local_ts", true);
  ch.remote_ts = w.ranges(cj, path, "remote_ts", true);
  ch.esp_proposals = proposals(w, cj, path, "esp_proposals", false, {"aes128gcm16", "aes128-sha256"});
  const auto mode = w.string(cj, path, "mode", false).value_or("tunnel");
  if (mode == "transport") w.error(path + ".mode", "transport mode is not implemented yet; use \"tunnel\"");
  else if (mode != "tunnel") w.error(path + ".mode", "must be \"tunnel\" or \"transport\"");
  const auto sa = w.string(cj, path, "start_action", false).value_or("none");
  if (sa == "start") ch.start_action = ike::StartAction::kStart;
  else if (sa == "trap") ch.start_action = ike::StartAction::kTrap;
  else if (sa != "none") w.error(path + ".start_action", "must be \"start\", \"trap\" or \"none\"");
  const auto da = w.string(cj, path, "dpd_action", false).value_or("clear");
  if (da == "restart") ch.dpd_action = ike::DpdAction::kRestart;
  else if (da != "clear") w.error(path + ".dpd_action", "must be \"clear\" or \"restart\"");
  ch.rekey_time = w.integer<std::uint32_t>(cj, path, "rekey_time", 0, 30 * 86400).value_or(3600);
  ch.life_time = w.integer<std::uint32_t>(cj, path, "life_time", 0, 30 * 86400).value_or(0);
  if (ch.life_time && ch.rekey_time && ch.life_time <= ch.rekey_time)
    w.error(path + ".life_time", "must be longer than rekey_time");
  ch.rekey_bytes = w.integer<std::uint64_t>(cj, path, "rekey_bytes", 0, UINT64_MAX >> 1).value_or(0);
  ch.life_bytes = w.integer<std::uint64_t>(cj, path, "life_bytes", 0, UINT64_MAX >> 1).value_or(0);
  ch.replay_window = w.integer<std::uint32_t>(cj, path, "replay_window", 0, core::kMaxReplayWindow)
                         .value_or(core::kDefaultReplayWindow);
}

std::vector<core::IpAddress> addresses(Walker& w, const json& obj, const std::string& path,
                                       const char* key) {
  std::vector<core::IpAddress> out;
  auto list = string_list(w, obj, path, key, false);
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (list[i] == "%any") continue;
    auto a = core::IpAddress::parse(list[i]);
    if (!a) w.error(path + "." + key + "[" + std::to_string(i) + "]", "'" + list[i] + "' is not an IP address");
    else out.push_back(*a);
  }
  return out;
}

// What IKEv1 can carry of a connection ("version" 1, or 0 which answers it).
void check_ikev1(Walker& w, const json& cj, const std::string& path, const ike::ConnectionConfig& c) {
  std::size_t suites = 0;
  std::string why;
  for (const auto& p : c.proposals)
    suites += ike::v1::phase1_suites(p, ike::v1::AuthMethod::kPsk, 0, why).size();
  if (suites == 0 && c.version == 1)
    w.error(path + ".proposals", "no proposal is possible in IKEv1 phase 1 (" + why +
                                     "); use e.g. \"aes128-sha256-modp2048\" or \"3des-sha1-modp1024\"");
  if (c.encap && c.version == 1)
    w.error(path + ".encap", "forcing UDP encapsulation is not implemented for IKEv1 (NAT-T is used when a NAT is found)");
  if (cj.contains("fragment_size") && c.version == 1)
    w.error(path + ".fragment_size", "IKEv1 fragmentation is not implemented yet");
  for (const auto& ch : c.children) {
    const std::string cp = path + ".children." + ch.name;
    if (ch.local_ts.size() > 1) w.error(cp + ".local_ts", "IKEv1 Quick Mode carries one selector per side");
    if (ch.remote_ts.size() > 1) w.error(cp + ".remote_ts", "IKEv1 Quick Mode carries one selector per side");
    std::size_t n = 0;
    for (const auto& p : ch.esp_proposals)
      n += ike::v1::phase2_suites(p, ike::v1::EncapMode::kTunnel, 0, 0, why).size();
    if (n == 0 && !ch.esp_proposals.empty() && c.version == 1)
      w.error(cp + ".esp_proposals", "no proposal is possible in IKEv1 Quick Mode (" + why + ")");
  }
}

void parse_connection(Walker& w, const std::string& name, const json& cj, const std::string& path,
                      std::vector<ike::ConnectionConfig>& out) {
  if (!w.is_object(cj, path)) return;
  w.only_keys(cj, path, {"version", "local_addrs", "remote_addrs", "local", "remote", "proposals",
                         "encap", "dpd_delay", "dpd_timeout", "rekey_time", "reauth_time",
                         "local_port", "remote_port", "children", "fragment_size", "aggressive"},
              {{"pools", "virtual IP address pools (road warriors)"},
               {"vips", "virtual IPs requested from the peer (road warriors)"},
               {"mobike", "MOBIKE settings"},
               {"send_cert", "certificate settings"},
               {"send_certreq", "certificate settings"},
               {"pull", "Mode Config settings"},
               {"unique", "uniqueness policies"},
               {"keyingtries", "keying-try limits"},
               {"over_time", "IKE SA hard lifetimes (over_time)"},
               {"rand_time", "rekey jitter settings"},
               {"ppk_id", "post-quantum preshared keys"},
               {"childless", "childless IKE SA settings"}});
  ike::ConnectionConfig c;
  c.name = name;
  // 2: IKEv2; 1: IKEv1 (Main and Quick Mode); 0: initiates IKEv2 and answers both (as swanctl).
  c.version = w.integer<int>(cj, path, "version", 0, 2).value_or(2);
  c.local_addrs = addresses(w, cj, path, "local_addrs");
  c.remote_addrs = addresses(w, cj, path, "remote_addrs");
  for (const char* side : {"local", "remote"}) {
    auto it = cj.find(side);
    const std::string sp = path + "." + side;
    if (it == cj.end()) continue;
    if (!w.is_object(*it, sp)) continue;
    w.only_keys(*it, sp, {"auth", "id"},
                {{"certs", "certificates"},
                 {"cacerts", "CA certificates"},
                 {"pubkeys", "raw public keys"},
                 {"eap_id", "EAP identities"},
                 {"xauth_id", "XAUTH identities"},
                 {"groups", "group memberships"},
                 {"aaa_id", "AAA identities"},
                 {"ca_id", "CA identities"},
                 {"revocation", "revocation checks"}});
    const auto auth = w.string(*it, sp, "auth", false).value_or("psk");
    if (auth == "pubkey") w.error(sp + ".auth", "certificate authentication is not implemented yet; use \"psk\"");
    else if (auth != "psk") w.error(sp + ".auth", "must be \"psk\" or \"pubkey\"");
    auto id = w.string(*it, sp, "id", false).value_or("");
    (std::string(side) == "local" ? c.local_id : c.remote_id) = id;
  }
  c.proposals = proposals(w, cj, path, "proposals", true,
                          c.version == 1 ? std::vector<const char*>{"aes128-sha256-modp2048"}
                                         : std::vector<const char*>{"aes128-sha256-modp2048", "aes256gcm16-prfsha256-x25519"});
  if (auto it = cj.find("encap"); it != cj.end()) {
    if (!it->is_boolean()) w.error(path + ".encap", "must be true or false");
    else c.encap = it->get<bool>();
  }
  if (auto it = cj.find("aggressive"); it != cj.end()) {
    if (!it->is_boolean()) w.error(path + ".aggressive", "must be true or false");
    else c.aggressive = it->get<bool>();
  }
  c.dpd_delay = w.integer<std::uint32_t>(cj, path, "dpd_delay", 0, 86400).value_or(0);
  c.dpd_timeout = w.integer<std::uint32_t>(cj, path, "dpd_timeout", 0, 86400).value_or(0);
  c.rekey_time = w.integer<std::uint32_t>(cj, path, "rekey_time", 0, 30 * 86400).value_or(14400);
  c.reauth_time = w.integer<std::uint32_t>(cj, path, "reauth_time", 0, 30 * 86400).value_or(0);
  if (c.reauth_time != 0)
    w.error(path + ".reauth_time", "reauthentication is not implemented yet; use 0 (never) or rekey_time");
  c.local_port = w.integer<std::uint16_t>(cj, path, "local_port", 1, 65535).value_or(500);
  c.fragment_size = w.integer<std::size_t>(cj, path, "fragment_size", 0, 65000).value_or(c.fragment_size);
  if (c.fragment_size != 0 && c.fragment_size < 128)
    w.error(path + ".fragment_size", "must be 0 (never fragment) or at least 128");
  c.remote_port = w.integer<std::uint16_t>(cj, path, "remote_port", 1, 65535).value_or(500);
  if (!c.local_addrs.empty() && !c.remote_addrs.empty() &&
      c.local_addrs[0].family() != c.remote_addrs[0].family())
    w.error(path + ".remote_addrs", "must be of the same IP version as local_addrs");
  auto it = cj.find("children");
  if (it == cj.end() || !it->is_object() || it->empty()) {
    w.error(path + ".children", "needs at least one child");
  } else {
    for (const auto& [cn, cv] : it->items()) {
      ike::ChildConfig ch;
      parse_child(w, cn, cv, path + ".children." + cn, ch);
      c.children.push_back(std::move(ch));
    }
  }
  if (c.version != 2) check_ikev1(w, cj, path, c);
  if (cj.contains("aggressive") && c.version == 2)
    w.error(path + ".aggressive", "is an IKEv1 setting; this connection has version 2");
  bool starts = false;
  for (const auto& ch : c.children) starts |= ch.start_action != ike::StartAction::kNone;
  if (starts && (c.local_addrs.empty() || c.remote_addrs.empty()))
    w.error(path + ".remote_addrs", "start_action \"start\" or \"trap\" needs local_addrs and remote_addrs");
  out.push_back(std::move(c));
}

// Resolves each connection's PSK from "secrets" (matched by ids, as swanctl does).
void parse_secrets(Walker& w, const json* sj, std::vector<ike::ConnectionConfig>& conns) {
  struct Secret {
    std::vector<std::string> ids;
    core::SecureBytes secret;
  };
  std::vector<Secret> secrets;
  if (sj && w.is_object(*sj, "$.secrets")) {
    for (const auto& [name, v] : sj->items()) {
      const std::string p = "$.secrets." + name;
      if (!w.is_object(v, p)) continue;
      w.only_keys(v, p, {"type", "ids", "secret"});
      const auto type = w.string(v, p, "type", false).value_or("psk");
      if (type != "psk") {
        w.error(p + ".type", "only \"psk\" secrets are implemented yet");
        continue;
      }
      auto secret = w.string(v, p, "secret", true);
      if (!secret) continue;
      Secret s;
      s.ids = string_list(w, v, p, "ids", false);
      if (secret->rfind("0x", 0) == 0) {
        auto b = core::from_hex(*secret);
        if (!b) {
          w.error(p + ".secret", "starts with 0x but is not hex");
          continue;
        }
        s.secret = core::SecureBytes(*b);
        core::secure_wipe(b->data(), b->size());
      } else {
        s.secret = core::SecureBytes(core::ByteSpan(reinterpret_cast<const std::uint8_t*>(secret->data()), secret->size()));
      }
      core::secure_wipe(secret->data(), secret->size());
      if (s.secret.size() < 8) core::log::warn("config", p, ": a PSK shorter than 8 bytes is weak");
      secrets.push_back(std::move(s));
    }
  }
  for (auto& c : conns) {
    int best = -1;
    const Secret* pick = nullptr;
    for (const auto& s : secrets) {
      int score = 0;
      bool any = s.ids.empty();
      for (const auto& id : s.ids) {
        if (id == c.local_id || id == "%any") score += 1, any = true;
        if (id == c.remote_id) score += 2, any = true;
      }
      if (any && score > best) {
        best = score;
        pick = &s;
      }
    }
    if (!pick) w.error("$.connections." + c.name, "no PSK in \"secrets\" matches its ids");
    else c.psk = pick->secret.clone();
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
                         "control", "keylog", "metrics", "limits"});
  Config c;
  if (auto it = doc.find("tun"); it != doc.end()) parse_tun(w, *it, c.tun);
  if (auto it = doc.find("udp_encap"); it != doc.end() && w.is_object(*it, "$.udp_encap")) {
    w.only_keys(*it, "$.udp_encap", {"port", "keepalive"});
    c.udp_encap.port = w.integer<std::uint16_t>(*it, "$.udp_encap", "port", 1, 65535)
                           .value_or(c.udp_encap.port);
    c.udp_encap.keepalive = w.integer<unsigned>(*it, "$.udp_encap", "keepalive", 0, 3600)
                                .value_or(c.udp_encap.keepalive);
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
    w.only_keys(*it, "$.keylog", {"esp", "ikev2", "ikev1"});
    c.keylog.esp = w.string(*it, "$.keylog", "esp", false).value_or("");
    c.keylog.ikev2 = w.string(*it, "$.keylog", "ikev2", false).value_or("");
    c.keylog.ikev1 = w.string(*it, "$.keylog", "ikev1", false).value_or("");
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

std::vector<core::Route> protected_routes(const Config& c) {
  std::vector<core::Route> out;
  auto add = [&](const std::vector<core::IpRange>& ranges, const std::optional<core::IpAddress>& src) {
    for (const auto& r : ranges) {
      for (const auto& p : r.to_prefixes()) {
        bool dup = false;
        for (const auto& q : out) dup = dup || (q.dst.addr == p.addr && q.dst.len == p.len);
        if (!dup) out.push_back({p, src});
      }
    }
  };
  // A transport-mode SA's peer is routed into the TUN device with the SA's
  // own address as the source, the address its packets must come from.
  for (const auto& sa : c.manual)
    if (sa.mode == core::SaMode::kTransport) add(sa.selectors.remote, sa.local_addr);
  for (const auto& sa : c.manual) add(sa.selectors.remote, std::nullopt);
  for (const auto& conn : c.connections)
    for (const auto& ch : conn.children) add(ch.remote_ts, std::nullopt);
  for (const auto& p : c.policies) {
    // Bypass and discard policies take effect on packets that reach the TUN
    // device, so their networks are routed there too.
    add(p.policy.sel.remote, std::nullopt);
  }
  return out;
}

std::string explain(const Config& c) {
  std::ostringstream os;
  os << "TUN device " << c.tun.name << ", MTU " << c.tun.mtu << ", routes in table "
     << c.tun.table << " (rule: not fwmark 0x" << std::hex << c.tun.fwmark << std::dec
     << ", priority " << c.tun.rule_priority << ")\n";
  os << "UDP encapsulation port " << c.udp_encap.port << ", NAT keepalive "
     << (c.udp_encap.keepalive ? std::to_string(c.udp_encap.keepalive) + " s" : "off") << "\n";
  os << c.manual.size() << " manual SA" << (c.manual.size() == 1 ? "" : "s") << ":\n";
  for (const auto& sa : c.manual) {
    const std::string spis = "out " + core::spi_hex(sa.out.spi) + " in " + core::spi_hex(sa.in.spi);
    const bool ah = sa.protocol == core::IpsecProtocol::kAh;
    os << "  " << sa.name << (ah ? ": AH " : ": ESP ") << (sa.mode == core::SaMode::kTransport ? "transport " : "tunnel ")
       << sa.local_addr.to_string() << " <-> "
       << sa.remote_addr.to_string()
       << (sa.encap == core::Encap::kUdp ? " in UDP port " + std::to_string(sa.remote_port)
                                         : std::string(ah ? " as IP protocol 51" : " as IP protocol 50"))
       << ", " << (ah ? sa.ah.name() : sa.transform.name()) << ", " << spis << ", replay window "
       << (sa.replay_window ? std::to_string(sa.replay_window) : "off") << "\n"
       << "      protects " << sa.selectors.to_string() << "\n";
  }
  if (!c.connections.empty()) {
    os << c.connections.size() << " IKEv2 connection" << (c.connections.size() == 1 ? "" : "s") << ":\n";
    for (const auto& conn : c.connections) {
      auto addrs = [](const std::vector<core::IpAddress>& v) {
        std::string s;
        for (const auto& a : v) s += (s.empty() ? "" : ",") + a.to_string();
        return s.empty() ? std::string("%any") : s;
      };
      os << "  " << conn.name << ": " << addrs(conn.local_addrs) << " (" << (conn.local_id.empty() ? "address" : conn.local_id)
         << ") <-> " << addrs(conn.remote_addrs) << " (" << (conn.remote_id.empty() ? "any id" : conn.remote_id)
         << "), PSK, " << conn.proposals.size() << " IKE proposal(s)"
         << (conn.encap ? ", UDP encapsulation forced" : "")
         << (conn.dpd_delay ? ", DPD every " + std::to_string(conn.dpd_delay) + " s" : "") << "\n";
      for (const auto& ch : conn.children) {
        core::Selectors sel;
        sel.local = ch.local_ts;
        sel.remote = ch.remote_ts;
        os << "      child " << ch.name << ": " << sel.to_string() << ", start_action "
           << (ch.start_action == ike::StartAction::kStart ? "start"
               : ch.start_action == ike::StartAction::kTrap ? "trap" : "none") << ", rekey "
           << ch.rekey_time << " s\n";
      }
    }
  }
  os << "SPD (first match wins):\n";
  int i = 1;
  for (const auto& p : c.policies) {
    os << "  " << i++ << ". " << core::to_string(p.policy.action) << " "
       << p.policy.sel.to_string() << (p.sa_name.empty() ? "" : " with SA " + p.sa_name) << "\n";
  }
  for (const auto& sa : c.manual) {
    os << "  " << i++ << ". protect " << sa.selectors.to_string() << " with SA " << sa.name << "\n";
  }
  os << "  *. discard anything else read from " << c.tun.name << "\n";
  os << "Routes via " << c.tun.name << ":";
  for (const auto& r : protected_routes(c)) os << " " << r.dst.to_string() << (r.src ? " (from " + r.src->to_string() + ")" : "");
  os << "\n";
  return os.str();
}

}  // namespace ipsecgw::config
