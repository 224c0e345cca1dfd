// Which payloads each IKEv2 exchange may carry (RFC 7296 1.2-1.5, 3.x), in
// the manner of strongSwan's message rules: checked on a whole decoded
// chain before any exchange handler sees it. A message that breaks them is
// answered (when it is a request) with the notify the rule names, and no
// handler runs.
//
// The table says what may appear and how often, and what must be inside
// the encrypted payload; what an exchange requires in a given state (an
// error response carries only a Notify) is the handler's business.
#pragma once

#include <string>
#include <vector>

#include "ike/message.hpp"

namespace ipsecgw::ike {

struct RuleViolation {
  Notify notify = Notify::kInvalidSyntax;
  std::string detail;
};

// `outer`: the chain after the header; `inner`: the decrypted chain (empty
// for IKE_SA_INIT, which is never encrypted). False, with what is wrong,
// when the message breaks the exchange's rules.
bool check_payload_rules(Exchange x, bool response, const std::vector<Payload>& outer,
                         const std::vector<Payload>& inner, RuleViolation& v);

}  // namespace ipsecgw::ike
