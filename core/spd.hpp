// Traffic selectors and the Security Policy Database (RFC 4301 4.4.1).
//
// The SPD is an ordered list; the first policy that matches a packet decides.
// It is built by the control plane and published to the data plane inside an
// immutable snapshot: nothing here is mutated after publication.
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

class Spd {
 public:
  void add(Policy p) { policies_.push_back(std::move(p)); }
  // First matching policy for a packet read from TUN, or nullptr (no policy:
  // the packet is discarded, RFC 4301 5.1 default deny).
  [[nodiscard]] const Policy* lookup_outbound(const PacketInfo& p) const noexcept;
  [[nodiscard]] const std::vector<Policy>& policies() const noexcept { return policies_; }
  [[nodiscard]] std::vector<Policy>& policies() noexcept { return policies_; }

 private:
  std::vector<Policy> policies_;
};

}  // namespace ipsecgw::core
