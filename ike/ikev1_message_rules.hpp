// Which payloads each IKEv1 exchange may carry, and which only inside the
// encryption (RFC 2409 5, 5.5, 5.7; RFC 3947 for NAT-D and NAT-OA; RFC 2408
// 3 for the rest), in the manner of strongSwan's IKEv1 message rules:
// checked on the whole (decrypted) chain before an exchange uses any of it.
// A chain that breaks them fails with the notify to send back
// (INVALID-PAYLOAD-TYPE for a payload the exchange does not carry,
// PAYLOAD-MALFORMED for one too many, INVALID-FLAGS for one that must be
// encrypted and was not).
#pragma once

#include <vector>

#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

// `from_initiator`: sent by the exchange's initiator; `encrypted`: the
// message had the E flag (and `chain` is its decrypted body).
bool check_payload_rules(Exchange x, bool from_initiator, bool encrypted, const std::vector<RawPayload>& chain,
                         DecodeError& err);

}  // namespace ipsecgw::ike::v1
