// IKEv1 Informational exchanges under an ISAKMP SA (RFC 2409 5.7): one
// message, HASH(1) = prf(SKEYID_a, M-ID | N/D) first, then the Notification
// or Delete payloads, encrypted on the exchange's own IV chain. Also the
// payloads they carry: DELETE of the ISAKMP SA (its cookies) and of ESP SAs
// (their SPIs, RFC 2408 3.15), INITIAL-CONTACT, and RFC 3706's dead-peer
// detection (R-U-THERE / R-U-THERE-ACK with a sequence number).
#pragma once

#include <optional>
#include <vector>

#include "ike/ikev1_main_mode.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

// A protected Informational message with a fresh non-zero message ID.
Bytes seal_informational(Phase1Sa& sa, std::uint32_t message_id, const std::vector<RawPayload>& payloads);
// Decrypts one, checks its HASH(1) in constant time before anything else,
// and decodes it; nullopt with the notify and reason otherwise. The
// exchange's IV chain is dropped afterwards (it has one message).
std::optional<Message> open_informational(Phase1Sa& sa, ByteSpan datagram, DecodeError& err);

RawPayload delete_isakmp(std::uint64_t cky_i, std::uint64_t cky_r);
RawPayload delete_esp(const std::vector<std::uint32_t>& spis, std::uint8_t protocol = 3);
RawPayload initial_contact(std::uint64_t cky_i, std::uint64_t cky_r);
// RFC 3706: protocol ISAKMP, the two cookies as SPI, a 32-bit sequence number.
RawPayload dpd_notify(bool ack, std::uint64_t cky_i, std::uint64_t cky_r, std::uint32_t seq);
// The sequence number of a well-formed R-U-THERE(-ACK) for this SA.
std::optional<std::uint32_t> dpd_sequence(const NotifyPayload& n, std::uint64_t cky_i, std::uint64_t cky_r);

}  // namespace ipsecgw::ike::v1
