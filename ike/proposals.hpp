// IKEv2 proposals: from strongSwan-style keywords (core::Proposal) to SA
// payload proposals, and selection the way strongSwan does it (the
// responder walks its own proposals in configured order and takes the first
// that one of the peer's proposals can satisfy; within a type, its own order
// decides).
#pragma once

#include <optional>
#include <vector>

#include "core/algorithms.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/message.hpp"

namespace ipsecgw::ike {

// The PRFs a proposal offers: as written, or derived from its integrity
// algorithms, or (AEAD) SHA-256/384/512 as strongSwan does.
std::vector<core::PrfAlg> prfs_of(const core::Proposal& p);

Proposal ike_offer(const core::Proposal& p, std::uint8_t number, ByteSpan spi = {});
// ESP proposal; DH groups are included only when `with_dh` (CREATE_CHILD_SA).
Proposal esp_offer(const core::Proposal& p, std::uint8_t number, std::uint32_t spi, bool with_dh);

struct IkeChoice {
  IkeTransform t;
  Proposal reply;  // the chosen proposal as it goes back (peer's number, one of each)
};
std::optional<IkeChoice> select_ike(const std::vector<core::Proposal>& ours, const SaPayload& theirs);

struct EspChoice {
  core::EspTransform t;
  std::optional<core::DhGroup> dh;
  std::uint32_t peer_spi = 0;
  Proposal reply;  // without our SPI (the caller sets it)
};
std::optional<EspChoice> select_esp(const std::vector<core::Proposal>& ours, const SaPayload& theirs,
                                    bool want_dh);

}  // namespace ipsecgw::ike
