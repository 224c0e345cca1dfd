// The IKEv1 payload rules: what each exchange may carry, how often, and what
// only inside the encryption; checked before an exchange uses a message.
#include <catch2/catch.hpp>

#include "core/bytes.hpp"
#include "ike/ikev1_message_rules.hpp"
#include "test/ike/ike_scan_probes.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike::v1;

namespace {
std::vector<RawPayload> chain(std::initializer_list<Payload> types) {
  std::vector<RawPayload> out;
  for (auto t : types) out.push_back({t, core::Bytes(8, 0)});
  return out;
}
}  // namespace

TEST_CASE("IKEv1 payload rules: each exchange's payloads, counts and encryption", "[ike][ikev1][rules]") {
  DecodeError err;
  SECTION("ike-scan's probes pass (third-party messages)") {
    for (const char* probe : {test::kMainModeProbe, test::kAggressiveProbe}) {
      auto m = decode_plain(*core::from_hex(probe), err);
      REQUIRE(m);
      CHECK(check_payload_rules(m->header.exchange, true, false, m->raw, err));
    }
  }
  SECTION("Main Mode: the identity only encrypted") {
    CHECK(check_payload_rules(Exchange::kMain, true, false, chain({Payload::kSa, Payload::kVendor}), err));
    CHECK(check_payload_rules(Exchange::kMain, true, true, chain({Payload::kId, Payload::kHash, Payload::kNotify}), err));
    CHECK_FALSE(check_payload_rules(Exchange::kMain, true, false, chain({Payload::kId, Payload::kHash}), err));
    CHECK(err.notify == Notify::kInvalidFlags);
  }
  SECTION("Main Mode: one SA, no DELETE") {
    CHECK_FALSE(check_payload_rules(Exchange::kMain, true, false, chain({Payload::kSa, Payload::kSa}), err));
    CHECK(err.notify == Notify::kPayloadMalformed);
    CHECK_FALSE(check_payload_rules(Exchange::kMain, false, true, chain({Payload::kDelete}), err));
    CHECK(err.notify == Notify::kInvalidPayloadType);
  }
  SECTION("Aggressive Mode: the responder's HASH_R in the clear, the initiator's HASH_I not") {
    CHECK(check_payload_rules(Exchange::kAggressive, false, false,
                              chain({Payload::kSa, Payload::kKe, Payload::kNonce, Payload::kId, Payload::kHash}), err));
    CHECK_FALSE(check_payload_rules(Exchange::kAggressive, true, false, chain({Payload::kHash}), err));
    CHECK(err.notify == Notify::kInvalidFlags);
  }
  SECTION("Quick Mode: encrypted, two IDs at most, no DELETE") {
    const auto qm1 = chain({Payload::kHash, Payload::kSa, Payload::kNonce, Payload::kKe, Payload::kId, Payload::kId});
    CHECK(check_payload_rules(Exchange::kQuick, true, true, qm1, err));
    CHECK_FALSE(check_payload_rules(Exchange::kQuick, true, false, qm1, err));
    CHECK_FALSE(check_payload_rules(Exchange::kQuick, false, true,
                                    chain({Payload::kHash, Payload::kId, Payload::kId, Payload::kId}), err));
    CHECK(err.notify == Notify::kPayloadMalformed);
    CHECK_FALSE(check_payload_rules(Exchange::kQuick, true, true, chain({Payload::kHash, Payload::kDelete}), err));
    CHECK(err.notify == Notify::kInvalidPayloadType);
  }
  SECTION("Informational: a notification may be in the clear, a DELETE never") {
    CHECK(check_payload_rules(Exchange::kInformational, true, false, chain({Payload::kNotify}), err));
    CHECK_FALSE(check_payload_rules(Exchange::kInformational, true, false, chain({Payload::kDelete}), err));
    CHECK(err.notify == Notify::kInvalidFlags);
    CHECK(check_payload_rules(Exchange::kInformational, false, true, chain({Payload::kHash, Payload::kDelete}), err));
  }
  SECTION("exchanges not spoken") {
    CHECK_FALSE(check_payload_rules(Exchange::kTransaction, true, true, chain({Payload::kHash}), err));
    CHECK(err.notify == Notify::kInvalidExchangeType);
  }
}
