// Configuration: IKE connections and their children ("connections", in
// swanctl.conf's terms; IKEv1 and IKEv2) and the PSKs ("secrets").
#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <string>

#include "config/walker.hpp"
#include "core/log.hpp"
#include "ike/ikev1_phase2.hpp"
#include "ike/ikev1_proposals.hpp"

namespace ipsecgw::config::detail {

namespace {

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
    if (ike && std::any_of(pr->enc.begin(), pr->enc.end(), [](const core::EncSpec& e) {
          return e.alg == core::EncAlg::kNull || e.alg == core::EncAlg::kNullAesGmac;
        })) {
      w.error(p, "'" + list[i] + "': IKE messages must be encrypted (null and *gmac are for ESP)");
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

// A child's AH proposals (IKEv2: instead of ESP, RFC 7296 has no bundles).
std::vector<core::Proposal> ah_proposals(Walker& w, const json& obj, const std::string& path) {
  std::vector<core::Proposal> out;
  auto list = string_list(w, obj, path, "ah_proposals", false);
  for (std::size_t i = 0; i < list.size(); ++i) {
    std::string why;
    auto pr = core::parse_ah_proposal(list[i], why);
    if (!pr) w.error(path + ".ah_proposals[" + std::to_string(i) + "]", "'" + list[i] + "': " + why);
    else out.push_back(std::move(*pr));
  }
  if (obj.contains("ah_proposals") && list.empty()) w.error(path + ".ah_proposals", "needs at least one proposal");
  return out;
}

void parse_child(Walker& w, const std::string& name, const json& cj, const std::string& path,
                 ike::ChildConfig& ch) {
  if (!w.is_object(cj, path)) return;
  w.only_keys(cj, path, {"local_ts", "remote_ts", "esp_proposals", "ah_proposals", "mode", "start_action",
                         "rekey_time", "life_time", "rekey_bytes", "life_bytes", "replay_window",
                         "dpd_action"},
              {{"ipcomp", "IPComp compression settings"},
               {"inactivity", "inactivity timeouts"},
               {"hostaccess", "hostaccess rules"},
               {"updown", "updown scripts"},
               {"close_action", "close actions"}});
  ch.name = name;
  // Without local_ts/remote_ts (or with "dynamic", "[udp/1701]"): the address IKE runs on.
  std::uint8_t lproto = 0, rproto = 0;
  parse_ts_side(w, cj, path, "local_ts", false, nullptr, ch.local_ts, lproto, ch.local_ports);
  parse_ts_side(w, cj, path, "remote_ts", false, nullptr, ch.remote_ts, rproto, ch.remote_ports);
  if (lproto && rproto && lproto != rproto) w.error(path + ".remote_ts", "names another protocol than local_ts");
  ch.ts_proto = lproto ? lproto : rproto;
  ch.ah_proposals = ah_proposals(w, cj, path);
  if (ch.ah_proposals.empty() || cj.contains("esp_proposals"))
    ch.esp_proposals = proposals(w, cj, path, "esp_proposals", false, {"aes128gcm16", "aes128-sha256"});
  const auto mode = w.string(cj, path, "mode", false).value_or("tunnel");
  if (mode == "transport") ch.mode = core::SaMode::kTransport;
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
    const std::string v = c.version == 1 ? "" : " (version 0 answers IKEv1 too; use version 2)";
    std::size_t na = 0;
    for (const auto& p : ch.ah_proposals) na += ike::v1::ah_suites(p, ike::v1::EncapMode::kTunnel, 0, 0, why).size();
    if (na == 0 && !ch.ah_proposals.empty())
      w.error(cp + ".ah_proposals", "no proposal is possible in IKEv1 Quick Mode (" + why + ")");
    // IKEv1 client IDs carry one port each (RFC 2407 4.6.2), or any.
    for (const bool local : {true, false}) {
      const auto& pr = local ? ch.local_ports : ch.remote_ports;
      if (!pr.any() && pr.lo != pr.hi)
        w.error(cp + (local ? ".local_ts" : ".remote_ts"),
                "IKEv1 Quick Mode carries one port per side, not the range " + pr.to_string() + v);
    }
    std::size_t n = 0;
    for (const auto& p : ch.esp_proposals)
      n += ike::v1::phase2_suites(p, ike::v1::EncapMode::kTunnel, 0, 0, why).size();
    if (n == 0 && !ch.esp_proposals.empty() && c.version == 1)
      w.error(cp + ".esp_proposals", "no proposal is possible in IKEv1 Quick Mode (" + why + ")");
  }
}

}  // namespace

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
  for (auto& ch : c.children) {
    const std::string cp = path + ".children." + ch.name;
    if (!ch.ah_proposals.empty() && !ch.esp_proposals.empty() && c.version != 1)
      w.error(cp + ".ah_proposals", "an IKEv2 Child SA is ESP or AH, not both: RFC 7296 has no AH+ESP bundles "
                                    "(IKEv1 Quick Mode has); write two children or leave out esp_proposals");
    if (ch.remote_ts.empty() && c.remote_addrs.size() != 1)
      w.error(cp + ".remote_ts", "is needed unless remote_addrs names one address (the peer's side is routed "
                                 "into the TUN device when the gateway starts)");
    // A side without selectors is the address IKE runs on: known now when there is one.
    if (ch.local_ts.empty() && c.local_addrs.size() == 1) ch.local_ts = {{c.local_addrs[0], c.local_addrs[0]}};
    if (ch.remote_ts.empty() && c.remote_addrs.size() == 1) ch.remote_ts = {{c.remote_addrs[0], c.remote_addrs[0]}};
    // Transport mode protects the two hosts' own traffic (RFC 4301 4.1):
    // one address per side, the one IKE runs on where that is known.
    if (ch.mode == core::SaMode::kTransport) {
      for (const bool local : {true, false}) {
        const auto& addrs = local ? c.local_addrs : c.remote_addrs;
        for (const auto& r : local ? ch.local_ts : ch.remote_ts) {
          if (r.lo == r.hi && (addrs.size() != 1 || r.lo == addrs[0])) continue;
          w.error(cp + (local ? ".local_ts" : ".remote_ts"),
                  "a transport-mode child protects only its hosts' own traffic: '" + r.to_string() + "' is not " +
                      (r.lo != r.hi || addrs.size() != 1 ? std::string("one address") : addrs[0].to_string()) +
                      " (leave it out for the address IKE runs on)");
          break;
        }
      }
    }
  }
  if (c.version != 2) check_ikev1(w, cj, path, c);
  if (cj.contains("aggressive") && c.version == 2)
    w.error(path + ".aggressive", "is an IKEv1 setting; this connection has version 2");
  bool starts = false;
  for (const auto& ch : c.children) starts |= ch.start_action != ike::StartAction::kNone;
  if (starts && (c.local_addrs.empty() || c.remote_addrs.empty()))
    w.error(path + ".remote_addrs", "start_action \"start\" or \"trap\" needs local_addrs and remote_addrs");
  for (const auto& ch : c.children)
    if (ch.start_action == ike::StartAction::kTrap && (ch.local_ts.empty() || ch.remote_ts.empty()))
      w.error(path + ".children." + ch.name, "start_action \"trap\" needs local_ts and remote_ts, or one address "
                                             "in local_addrs and remote_addrs");
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

}  // namespace ipsecgw::config::detail
