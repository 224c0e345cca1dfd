// Configuration: manually keyed SAs ("manual": ESP and AH, tunnel and
// transport, traffic selectors in strongSwan's syntax, keys) and the
// static policies ("policies").
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "config/walker.hpp"
#include "core/log.hpp"

namespace ipsecgw::config::detail {

namespace {

std::optional<std::uint32_t> parse_spi(Walker& w, const json& obj, const std::string& path,
                                       const char* key = "spi") {
  auto it = obj.find(key);
  const std::string p = path + "." + key;
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
  if (!addr.empty() && addr != "dynamic") {
    e.range = core::IpRange::parse(addr);
    if (!e.range) {
      why = "'" + addr + "' is not an address, prefix or range";
      return std::nullopt;
    }
  }
  return e;
}

}  // namespace

// A local_ts or remote_ts: the ranges, and the protocol and ports they
// share. An entry without an address ("[udp/1701]", "dynamic") stands for
// `*own` (a manual SA's address); without `own` (an IKE child) it is the
// address IKE runs on, left as no range ("dynamic"), and alone on its side.
bool parse_ts_side(Walker& w, const json& sa, const std::string& path, const char* key, bool required,
                   const core::IpAddress* own, std::vector<core::IpRange>& ranges, std::uint8_t& proto,
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
    if (e->range) ranges.push_back(*e->range);
    else if (own) ranges.push_back(core::IpRange{*own, *own});
    else if (it->size() > 1) {
      w.error(ep, "a selector without an address (the IKE address, \"dynamic\") stands alone on its side");
      ok = false;
    }
  }
  return ok;
}

namespace {

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

// One SPI and its key ("spi"/"key", or an AH+ESP bundle's "ah_spi"/"ah_key").
bool parse_spi_key(Walker& w, const json& dir, const std::string& p, const char* spi_key, const char* key_key,
                   const KeySpec& want, core::SaDirection& out) {
  auto spi = parse_spi(w, dir, p, spi_key);
  auto key_hex = w.string(dir, p, key_key, true);
  if (!spi || !key_hex) return false;
  auto raw = core::from_hex(*key_hex);
  core::secure_wipe(key_hex->data(), key_hex->size());
  const std::string kp = p + "." + key_key;
  if (!raw) {
    w.error(kp, "is not hex");
    return false;
  }
  core::SecureBytes secure(*raw);
  core::secure_wipe(raw->data(), raw->size());
  if (want.len && secure.size() != *want.len) {
    w.error(kp, "must be " + std::to_string(*want.len) + " bytes for " + want.explain + ", got " +
                    std::to_string(secure.size()));
    return false;
  }
  out.spi = *spi;
  out.keymat = std::move(secure);
  return true;
}

// A direction ("out" or "in"): its SPI and key, and for an AH+ESP bundle
// (`ah_want`) the AH SA's too.
bool parse_direction(Walker& w, const json& sa, const std::string& path, const char* key,
                     const KeySpec& want, core::SaDirection& out, const KeySpec* ah_want = nullptr,
                     core::SaDirection* ah_out = nullptr) {
  auto it = sa.find(key);
  const std::string p = path + "." + key;
  if (it == sa.end()) {
    w.error(p, "is required");
    return false;
  }
  if (!w.is_object(*it, p)) return false;
  if (ah_want) w.only_keys(*it, p, {"spi", "key", "ah_spi", "ah_key"});
  else w.only_keys(*it, p, {"spi", "key"});
  bool ok = parse_spi_key(w, *it, p, "spi", "key", want, out);
  if (ah_want) ok &= parse_spi_key(w, *it, p, "ah_spi", "ah_key", *ah_want, *ah_out);
  return ok;
}

}  // namespace

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
  ok &= parse_ts_side(w, sa, path, "local_ts", !transport, &p.local_addr, p.selectors.local, lproto,
                      p.selectors.local_ports);
  ok &= parse_ts_side(w, sa, path, "remote_ts", !transport, &p.remote_addr, p.selectors.remote, rproto,
                      p.selectors.remote_ports);
  if (lproto && rproto && lproto != rproto) {
    w.error(path + ".remote_ts", "names another protocol than local_ts");
    ok = false;
  }
  p.selectors.proto = lproto ? lproto : rproto;
  p.clear_outside_selectors = p.selectors.proto != 0 || !p.selectors.local_ports.any() || !p.selectors.remote_ports.any();
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
    p.protocol = core::IpsecProtocol::kAhEsp;  // AH over ESP (RFC 4301 4.5)
  } else if (proto != "esp") {
    w.error(path + ".protocol", "must be \"esp\", \"ah\" or \"ah+esp\"");
    ok = false;
  }
  const auto encap = w.string(sa, path, "encap", false).value_or("none");
  if (encap == "udp" && p.protocol != core::IpsecProtocol::kEsp) {
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

  KeySpec want, ah_want;
  if (p.protocol != core::IpsecProtocol::kEsp) {
    // AH's algorithm (alone, or beside ESP's in a bundle); its key is the integrity key alone.
    if (auto ah = w.string(sa, path, "ah", true)) {
      std::string why;
      auto t = core::single_ah_transform(*ah, why);
      if (!t) {
        w.error(path + ".ah", "'" + *ah + "': " + why);
        ok = false;
      } else {
        p.ah = *t;
        ah_want = {t->keymat_len(), "AH " + t->name() + " (the integrity key alone)"};
      }
    } else {
      ok = false;
    }
  }
  if (p.protocol == core::IpsecProtocol::kAh) {
    if (sa.contains("esp")) {
      w.error(path + ".esp", "an AH SA has no encryption; name its integrity algorithm in \"ah\"");
      ok = false;
    }
    want = ah_want;
  } else {
    if (sa.contains("ah") && p.protocol == core::IpsecProtocol::kEsp) {
      w.error(path + ".ah", "only for \"protocol\": \"ah\" or \"ah+esp\"");
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
  const bool bundle = p.protocol == core::IpsecProtocol::kAhEsp;
  ok &= parse_direction(w, sa, path, "out", want, p.out, bundle ? &ah_want : nullptr, &p.ah_out);
  ok &= parse_direction(w, sa, path, "in", want, p.in, bundle ? &ah_want : nullptr, &p.ah_in);
  if (bundle && ok && (p.out.spi == p.ah_out.spi || p.in.spi == p.ah_in.spi))
    w.error(path + ".in", "the AH and ESP SAs of a bundle need SPIs of their own"), ok = false;
  // One key for two SAs would give two packets one nonce (AES-GCM/GMAC/CTR:
  // the IV is the sequence number) or let one SA's packets pass as the other's.
  auto same = [](const core::SaDirection& a, const core::SaDirection& b) {
    return a.keymat.size() == b.keymat.size() && a.keymat.size() > 0 && core::ct_equal(a.keymat.span(), b.keymat.span());
  };
  if (ok && same(p.out, p.in)) w.error(path + ".in.key", "is the same as out.key: each direction needs its own"), ok = false;
  if (ok && bundle && same(p.ah_out, p.ah_in))
    w.error(path + ".in.ah_key", "is the same as out.ah_key: each direction needs its own"), ok = false;
  if (ok && bundle && (same(p.out, p.ah_out) || same(p.in, p.ah_in)))
    w.error(path + ".out.ah_key", "is the same as the ESP key: AH and ESP need keys of their own"), ok = false;
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

}  // namespace ipsecgw::config::detail
