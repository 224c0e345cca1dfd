// IKEv2 proposals: from strongSwan-style keywords (core::Proposal) to SA
// payload proposals, and selection the way strongSwan does it (the
// responder walks its own proposals in configured order and takes the first
// that one of the peer's proposals can satisfy; within a type, its own order
// decides).
#pragma once

#include <optional>
#include <vector>

#include "core/algorithms.hpp"
#include "core/sa.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/message.hpp"

namespace ipsecgw::ike {

// The PRFs a proposal offers: as written, or derived from its integrity
// algorithms, or (AEAD) SHA-256/384/512 as strongSwan does.
std::vector<core::PrfAlg> prfs_of(const core::Proposal& p);

Proposal ike_offer(const core::Proposal& p, std::uint8_t number, ByteSpan spi = {});
// What a Child SA negotiated: an ESP transform or an AH one (RFC 7296 has
// no bundles: a Child SA is one or the other).
struct ChildSuite {
  core::IpsecProtocol proto = core::IpsecProtocol::kEsp;
  core::EspTransform esp;
  core::AhTransform ah;
  [[nodiscard]] bool is_ah() const noexcept { return proto == core::IpsecProtocol::kAh; }
  // Per direction, RFC 7296 2.17 order (AH: the integrity key alone).
  [[nodiscard]] std::size_t keymat_len() const noexcept { return is_ah() ? ah.keymat_len() : esp.keymat_len(); }
  [[nodiscard]] std::string name() const { return is_ah() ? "ah-" + ah.name() : esp.name(); }
  [[nodiscard]] ProtocolId protocol_id() const noexcept { return is_ah() ? ProtocolId::kAh : ProtocolId::kEsp; }
  bool operator==(const ChildSuite&) const = default;
};

// A Child SA proposal (ESP, or AH: integrity, DH and ESN only); DH groups are
// included only when `with_dh` (CREATE_CHILD_SA).
Proposal child_offer(const core::Proposal& p, core::IpsecProtocol proto, std::uint8_t number, std::uint32_t spi,
                     bool with_dh);
inline Proposal esp_offer(const core::Proposal& p, std::uint8_t number, std::uint32_t spi, bool with_dh) {
  return child_offer(p, core::IpsecProtocol::kEsp, number, spi, with_dh);
}

struct IkeChoice {
  IkeTransform t;
  Proposal reply;  // the chosen proposal as it goes back (peer's number, one of each)
};
std::optional<IkeChoice> select_ike(const std::vector<core::Proposal>& ours, const SaPayload& theirs);

struct EspChoice {
  ChildSuite t;
  std::optional<core::DhGroup> dh;
  std::uint32_t peer_spi = 0;
  Proposal reply;  // without our SPI (the caller sets it)
};
// Our proposals (of protocol `proto`) against the peer's SA payload.
std::optional<EspChoice> select_child(const std::vector<core::Proposal>& ours, core::IpsecProtocol proto,
                                      const SaPayload& theirs, bool want_dh);
inline std::optional<EspChoice> select_esp(const std::vector<core::Proposal>& ours, const SaPayload& theirs,
                                           bool want_dh) {
  return select_child(ours, core::IpsecProtocol::kEsp, theirs, want_dh);
}

}  // namespace ipsecgw::ike
