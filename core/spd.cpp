#include "core/spd.hpp"

namespace ipsecgw::core {

namespace {
bool any_contains(const std::vector<IpRange>& ranges, const IpAddress& a) {
  for (const auto& r : ranges) {
    if (r.contains(a)) return true;
  }
  return false;
}
std::string join(const std::vector<IpRange>& ranges) {
  std::string s;
  for (const auto& r : ranges) {
    if (!s.empty()) s += ",";
    s += r.to_string();
  }
  return s.empty() ? "none" : s;
}
}  // namespace

bool Selectors::matches(const IpAddress& l, const IpAddress& r, const PacketInfo& p,
                        std::uint16_t lport, std::uint16_t rport) const noexcept {
  if (!any_contains(local, l) || !any_contains(remote, r)) return false;
  if (proto != 0 && proto != p.proto) return false;
  if (local_ports.any() && remote_ports.any()) return true;
  // Port-specific selectors never match a packet whose ports are unknown
  // (non-first fragments are OPAQUE, RFC 4301 4.4.1.3).
  if (!p.has_ports) return false;
  return local_ports.contains(lport) && remote_ports.contains(rport);
}

bool Selectors::matches_outbound(const PacketInfo& p) const noexcept {
  return matches(p.src, p.dst, p, p.src_port, p.dst_port);
}

bool Selectors::matches_inbound(const PacketInfo& p) const noexcept {
  return matches(p.dst, p.src, p, p.dst_port, p.src_port);
}

std::string Selectors::to_string() const {
  std::string s = join(local);
  if (!local_ports.any()) s += "[" + local_ports.to_string() + "]";
  s += " <-> " + join(remote);
  if (!remote_ports.any()) s += "[" + remote_ports.to_string() + "]";
  if (proto != 0) s += " proto " + ip_protocol_name(proto);
  return s;
}

const char* to_string(PolicyAction a) noexcept {
  switch (a) {
    case PolicyAction::kProtect: return "protect";
    case PolicyAction::kBypass: return "bypass";
    case PolicyAction::kDiscard: return "discard";
  }
  return "?";
}

}  // namespace ipsecgw::core
