// What a configured IKE connection is (the "connections" and "secrets" of the
// JSON configuration, shaped after swanctl.conf).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "core/ip.hpp"
#include "core/sa.hpp"

namespace ipsecgw::ike {

enum class StartAction : std::uint8_t { kNone, kStart, kTrap };
enum class DpdAction : std::uint8_t { kClear, kRestart };

struct ChildConfig {
  std::string name;
  std::vector<core::IpRange> local_ts;
  std::vector<core::IpRange> remote_ts;
  std::vector<core::Proposal> esp_proposals;
  std::vector<core::Proposal> ah_proposals;  // IKEv2: instead of esp_proposals (no bundles)
  std::uint8_t ts_proto = 0;                 // selectors' IP protocol, 0: any
  core::PortRange local_ports, remote_ports;
  core::SaMode mode = core::SaMode::kTunnel;
  StartAction start_action = StartAction::kNone;
  std::uint32_t rekey_time = 3600;  // s, 0 = never
  std::uint32_t life_time = 0;      // hard limit, 0 = rekey_time * 1.1
  std::uint64_t rekey_bytes = 0;
  std::uint64_t life_bytes = 0;
  std::uint32_t replay_window = core::kDefaultReplayWindow;
  DpdAction dpd_action = DpdAction::kClear;  // when the peer is found dead
  bool operator==(const ChildConfig&) const = default;

  // What the child's SAs are: AH when it has AH proposals and no ESP ones.
  [[nodiscard]] core::IpsecProtocol protocol() const noexcept {
    return !ah_proposals.empty() && esp_proposals.empty() ? core::IpsecProtocol::kAh : core::IpsecProtocol::kEsp;
  }
  [[nodiscard]] const std::vector<core::Proposal>& proposals() const noexcept {
    return protocol() == core::IpsecProtocol::kAh ? ah_proposals : esp_proposals;
  }
  // A DH group in the first proposal: every CREATE_CHILD_SA does PFS.
  [[nodiscard]] bool pfs() const noexcept { return !proposals().empty() && !proposals()[0].dh.empty(); }
};

struct ConnectionConfig {
  std::string name;
  int version = 2;
  std::vector<core::IpAddress> local_addrs;
  std::vector<core::IpAddress> remote_addrs;  // empty: any (responder only)
  std::string local_id;                        // empty: the local address
  std::string remote_id;                       // empty: any
  std::vector<core::Proposal> proposals;
  bool encap = false;                          // force UDP encapsulation
  std::uint32_t dpd_delay = 0;                 // s, 0 = off
  std::uint32_t dpd_timeout = 0;               // s, 0 = via retransmissions
  std::uint32_t rekey_time = 14400;            // s, 0 = never
  std::uint32_t reauth_time = 0;
  std::size_t fragment_size = 1228;            // IKE messages longer than this are fragmented
                                               // (RFC 7383) when the peer supports it; 0 = never
  bool aggressive = false;                     // IKEv1: Aggressive Mode instead of Main Mode
  std::uint16_t local_port = 500;
  std::uint16_t remote_port = 500;
  std::vector<ChildConfig> children;
  core::SecureBytes psk;                       // resolved from "secrets"
};

}  // namespace ipsecgw::ike
