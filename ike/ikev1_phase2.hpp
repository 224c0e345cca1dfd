// IKEv1 phase-2 (Quick Mode) ESP proposals (RFC 2407 4.4.4 transform IDs,
// 4.5 SA attributes; RFC 3947 and its draft for the UDP encapsulation
// modes; RFC 4106 for AES-GCM; RFC 4304 for ESN): the strongSwan keywords of
// a child ("aes128-sha256-modp2048", "aes128gcm16") as ESP transforms, and
// received transforms as suites.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/algorithms.hpp"
#include "core/sa.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

inline constexpr std::uint8_t kProtoAh = 2;   // PROTO_IPSEC_AH (RFC 2407 4.4.1)
inline constexpr std::uint8_t kProtoEsp = 3;

// SA attribute types of the IPsec DOI (RFC 2407 4.5, RFC 4304).
enum class P2Attr : std::uint16_t {
  kLifeType = 1,
  kLifeDuration = 2,
  kGroup = 3,
  kEncapsulation = 4,
  kAuthAlgorithm = 5,
  kKeyLength = 6,
  kEsn = 11,
};

enum class EncapMode : std::uint16_t {
  kTunnel = 1,
  kTransport = 2,
  kUdpTunnel = 3,      // RFC 3947
  kUdpTransport = 4,
  kUdpTunnelDraft = 61443,  // draft-ietf-ipsec-nat-t-ike-00..03
  kUdpTransportDraft = 61444,
};

// One SA's transform: ESP, or AH (`proto`, then `ah` holds it).
struct Phase2Suite {
  core::IpsecProtocol proto = core::IpsecProtocol::kEsp;  // kEsp or kAh
  core::EspTransform esp;
  core::AhTransform ah;
  std::optional<core::DhGroup> pfs;  // Quick Mode with its own KE
  EncapMode mode = EncapMode::kTunnel;
  std::uint32_t life_seconds = 0;     // 0: not offered
  std::uint64_t life_kilobytes = 0;
  [[nodiscard]] std::string name() const;  // "aes128-sha256-modp2048", "ah-sha256"
  [[nodiscard]] bool is_ah() const noexcept { return proto == core::IpsecProtocol::kAh; }
  [[nodiscard]] std::uint8_t protocol_id() const noexcept { return is_ah() ? kProtoAh : kProtoEsp; }
  [[nodiscard]] std::size_t keymat_len() const noexcept { return is_ah() ? ah.keymat_len() : esp.keymat_len(); }
  bool operator==(const Phase2Suite&) const = default;
};

// Every combination a configured ESP proposal allows. Without a DH group
// there is no PFS. `why` says what IKEv1 cannot carry when nothing is left.
std::vector<Phase2Suite> phase2_suites(const core::Proposal& p, EncapMode mode, std::uint32_t life_seconds,
                                       std::uint64_t life_kilobytes, std::string& why);
// ... of a configured AH proposal ("sha256", "sha1-modp2048").
std::vector<Phase2Suite> ah_suites(const core::Proposal& p, EncapMode mode, std::uint32_t life_seconds,
                                   std::uint64_t life_kilobytes, std::string& why);

// An ESP transform: transform ID (ESP_AES, ESP_3DES, ESP_AES-GCM-16, ...)
// and the attributes life type/duration (seconds, then kilobytes), group,
// encapsulation mode, authentication algorithm, key length, ESN.
// An AH transform (`s.is_ah()`): transform ID (AH_SHA, AH_SHA2-256, ...) and
// the same attributes, the authentication algorithm always (RFC 2407 4.4.3).
Transform encode_phase2(const Phase2Suite& s, std::uint8_t number);
std::optional<Phase2Suite> decode_phase2(const Transform& t, std::string& why,
                                         std::uint8_t protocol = kProtoEsp);

// RESPONDER-LIFETIME (RFC 2407 4.6.3.1): the lifetimes a responder holds an
// SA to when they are shorter than offered (0: not given), as the notify's
// attribute data, and back.
Bytes lifetime_attributes(std::uint32_t seconds, std::uint64_t kilobytes);
bool parse_lifetime_attributes(ByteSpan data, std::uint32_t& seconds, std::uint64_t& kilobytes);

// One ESP (or AH, as the suites are) proposal with our inbound SPI and one
// transform per suite.
Proposal esp_proposal(std::uint8_t number, std::uint32_t spi, const std::vector<Phase2Suite>& suites);

}  // namespace ipsecgw::ike::v1
