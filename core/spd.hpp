// Traffic selectors and the Security Policy Database (RFC 4301 4.4.1).
//
// The SPD is ordered: the first policy that matches a packet decides (the
// index that finds it without walking the list: core/policy_index.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/ip.hpp"

namespace ipsecgw::core {

// One side's selector set plus the shared protocol and ports.
// proto 0 means any protocol; ports apply only to packets that carry them.
struct Selectors {
  std::vector<IpRange> local;
  std::vector<IpRange> remote;
  std::uint8_t proto = 0;
  PortRange local_ports;
  PortRange remote_ports;

  // A packet read from TUN: src is local, dst is remote.
  [[nodiscard]] bool matches_outbound(const PacketInfo& p) const noexcept;
  // A decapsulated packet: src is remote, dst is local.
  [[nodiscard]] bool matches_inbound(const PacketInfo& p) const noexcept;
  [[nodiscard]] std::string to_string() const;

 private:
  [[nodiscard]] bool matches(const IpAddress& l, const IpAddress& r, const PacketInfo& p,
                             std::uint16_t lport, std::uint16_t rport) const noexcept;
};

enum class PolicyAction : std::uint8_t { kProtect, kBypass, kDiscard };
const char* to_string(PolicyAction a) noexcept;

struct Policy {
  std::string name;
  Selectors sel;
  PolicyAction action = PolicyAction::kDiscard;
  // For kProtect: index of the outbound SA in the data-plane snapshot, or -1
  // when no SA is installed yet (packets are then dropped as "no SA").
  int sa_index = -1;
  // A trap policy (start_action "trap"): a packet matching it while no SA is
  // installed asks the IKE engine for one ("acquire") and is held.
  bool trap = false;
  // Whole packets only: a fragment (which may lack the ports that decided
  // for its first part) passes this policy by.
  bool whole_packets = false;
};

// A policy written in the configuration; protect policies name their SA
// (a manual SA's name, resolved to an index when the SAD is published).
struct StaticPolicy {
  Policy policy;
  std::string sa_name;  // for kProtect
};

}  // namespace ipsecgw::core
