// The per-exchange payload rules (ike/message_rules.hpp).
#include <catch2/catch.hpp>

#include "ike/message_rules.hpp"

using namespace ipsecgw::ike;

namespace {
Payload pl(PayloadType t) { return {t, false, {}, {}}; }
std::vector<Payload> sk() { return {pl(PayloadType::kSk)}; }
}  // namespace

TEST_CASE("payload rules: what each exchange may carry", "[ike][rules]") {
  RuleViolation v;
  using P = PayloadType;
  // IKE_SA_INIT request: SA, KE, Ni, notifies, vendor IDs; never encrypted.
  CHECK(check_payload_rules(Exchange::kSaInit, false, {pl(P::kSa), pl(P::kKe), pl(P::kNonce), pl(P::kNotify), pl(P::kNotify)}, {}, v));
  CHECK_FALSE(check_payload_rules(Exchange::kSaInit, false, {pl(P::kSa), pl(P::kSa), pl(P::kKe)}, {}, v));
  CHECK(v.notify == Notify::kInvalidSyntax);
  CHECK_FALSE(check_payload_rules(Exchange::kSaInit, false, {pl(P::kSa), pl(P::kAuth)}, {}, v));
  // An error response carries only a notify: allowed by the table (the handler decides).
  CHECK(check_payload_rules(Exchange::kSaInit, true, {pl(P::kNotify)}, {}, v));
  // IKE_AUTH: everything inside SK.
  const std::vector<Payload> auth{pl(P::kIdi), pl(P::kNotify), pl(P::kIdr), pl(P::kAuth), pl(P::kSa), pl(P::kTsi), pl(P::kTsr)};
  CHECK(check_payload_rules(Exchange::kAuth, false, sk(), auth, v));
  CHECK_FALSE(check_payload_rules(Exchange::kAuth, false, {pl(P::kIdi), pl(P::kSk)}, auth, v));
  CHECK(v.detail.find("outside the encrypted payload") != std::string::npos);
  CHECK_FALSE(check_payload_rules(Exchange::kAuth, true, sk(), {pl(P::kIdi), pl(P::kAuth)}, v));  // IDi in a response
  CHECK_FALSE(check_payload_rules(Exchange::kAuth, false, sk(), {pl(P::kAuth), pl(P::kAuth)}, v));
  // CREATE_CHILD_SA: one SA, one Nonce, at most one KE.
  CHECK(check_payload_rules(Exchange::kCreateChildSa, false, sk(), {pl(P::kNotify), pl(P::kSa), pl(P::kNonce), pl(P::kKe), pl(P::kTsi), pl(P::kTsr)}, v));
  CHECK_FALSE(check_payload_rules(Exchange::kCreateChildSa, false, sk(), {pl(P::kSa), pl(P::kNonce), pl(P::kKe), pl(P::kKe)}, v));
  CHECK_FALSE(check_payload_rules(Exchange::kCreateChildSa, false, sk(), {pl(P::kSa), pl(P::kNonce), pl(P::kIdi)}, v));
  // INFORMATIONAL: N, D, CP; an SA does not belong.
  CHECK(check_payload_rules(Exchange::kInformational, false, sk(), {pl(P::kDelete), pl(P::kNotify), pl(P::kDelete)}, v));
  CHECK(check_payload_rules(Exchange::kInformational, true, sk(), {}, v));  // an empty answer (liveness)
  CHECK_FALSE(check_payload_rules(Exchange::kInformational, false, sk(), {pl(P::kDelete), pl(P::kSa)}, v));
  // An unknown payload type that is not critical is skipped (RFC 7296 2.5).
  CHECK(check_payload_rules(Exchange::kInformational, false, sk(), {pl(static_cast<P>(200))}, v));
}
