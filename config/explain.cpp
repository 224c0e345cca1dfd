// What `ipsecgw check` prints about a configuration, and the routes into
// the TUN device it implies.
#include <optional>
#include <sstream>
#include <string>

#include "config/config.hpp"

namespace ipsecgw::config {

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
    for (const auto& ch : conn.children)
      if (ch.mode == core::SaMode::kTransport && conn.local_addrs.size() == 1) add(ch.remote_ts, conn.local_addrs[0]);
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
    const bool bundle = sa.protocol == core::IpsecProtocol::kAhEsp;
    os << "  " << sa.name << (ah ? ": AH " : bundle ? ": AH+ESP " : ": ESP ") << (sa.mode == core::SaMode::kTransport ? "transport " : "tunnel ")
       << sa.local_addr.to_string() << " <-> "
       << sa.remote_addr.to_string()
       << (sa.encap == core::Encap::kUdp ? " in UDP port " + std::to_string(sa.remote_port)
                                         : std::string(ah || bundle ? " as IP protocol 51" : " as IP protocol 50"))
       << ", " << (ah ? sa.ah.name() : bundle ? sa.transform.name() + " + ah-" + sa.ah.name() : sa.transform.name())
       << ", " << spis
       << (bundle ? " (AH out " + core::spi_hex(sa.ah_out.spi) + " in " + core::spi_hex(sa.ah_in.spi) + ")" : "")
       << ", replay window "
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
        sel.proto = ch.ts_proto;
        sel.local_ports = ch.local_ports;
        sel.remote_ports = ch.remote_ports;
        os << "      child " << ch.name << ": " << (ch.protocol() == core::IpsecProtocol::kAh ? "AH " : "ESP ")
           << (ch.mode == core::SaMode::kTransport ? "transport " : "tunnel ")
           << (ch.local_ts.empty() || ch.remote_ts.empty() ? "(dynamic) " : "") << sel.to_string() << ", start_action "
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
