#include "ike/ikev1_message_rules.hpp"

#include <map>

namespace ipsecgw::ike::v1 {

namespace {

constexpr unsigned kMany = 255;

struct Rule {
  Payload type;
  unsigned max;
  bool encrypted;  // only inside an encrypted message
};

struct ExchangeRules {
  Exchange exchange;
  bool from_initiator;
  std::vector<Rule> allowed;
};

const std::vector<ExchangeRules>& table() {
  using P = Payload;
  static const std::vector<ExchangeRules> t = {
      // Main Mode (RFC 2409 5): SA, KE/Nonce/NAT-D in the clear; ID, HASH, CERT, SIG encrypted.
      {Exchange::kMain, true,
       {{P::kSa, 1, false}, {P::kKe, 1, false}, {P::kNonce, 1, false}, {P::kId, 1, true}, {P::kCert, kMany, true},
        {P::kCertReq, kMany, false}, {P::kHash, 1, true}, {P::kSig, 1, true}, {P::kNotify, kMany, false},
        {P::kVendor, kMany, false}, {P::kNatD, kMany, false}, {P::kNatDDraft, kMany, false}, {P::kFragment, 1, false}}},
      {Exchange::kMain, false,
       {{P::kSa, 1, false}, {P::kKe, 1, false}, {P::kNonce, 1, false}, {P::kId, 1, true}, {P::kCert, kMany, true},
        {P::kCertReq, kMany, false}, {P::kHash, 1, true}, {P::kSig, 1, true}, {P::kNotify, kMany, false},
        {P::kVendor, kMany, false}, {P::kNatD, kMany, false}, {P::kNatDDraft, kMany, false}, {P::kFragment, 1, false}}},
      // Aggressive Mode: the initiator's identity in the clear, its HASH_I encrypted (message 3).
      {Exchange::kAggressive, true,
       {{P::kSa, 1, false}, {P::kKe, 1, false}, {P::kNonce, 1, false}, {P::kId, 1, false}, {P::kCert, kMany, true},
        {P::kCertReq, kMany, false}, {P::kHash, 1, true}, {P::kSig, 1, true}, {P::kNotify, kMany, false},
        {P::kVendor, kMany, false}, {P::kNatD, kMany, false}, {P::kNatDDraft, kMany, false}, {P::kFragment, 1, false}}},
      {Exchange::kAggressive, false,
       {{P::kSa, 1, false}, {P::kKe, 1, false}, {P::kNonce, 1, false}, {P::kId, 1, false}, {P::kCert, kMany, false},
        {P::kCertReq, kMany, false}, {P::kHash, 1, false}, {P::kSig, 1, false}, {P::kNotify, kMany, false},
        {P::kVendor, kMany, false}, {P::kNatD, kMany, false}, {P::kNatDDraft, kMany, false}, {P::kFragment, 1, false}}},
      // Quick Mode (5.5): all of it encrypted; IDci/IDcr, and NAT-OA for each side.
      {Exchange::kQuick, true,
       {{P::kHash, 1, true}, {P::kSa, 2, true}, {P::kNonce, 1, true}, {P::kKe, 1, true}, {P::kId, 2, true},
        {P::kNatOa, 2, true}, {P::kNatOaDraft, 2, true}, {P::kNotify, kMany, true}, {P::kVendor, kMany, true}}},
      {Exchange::kQuick, false,
       {{P::kHash, 1, true}, {P::kSa, 2, true}, {P::kNonce, 1, true}, {P::kKe, 1, true}, {P::kId, 2, true},
        {P::kNatOa, 2, true}, {P::kNatOaDraft, 2, true}, {P::kNotify, kMany, true}, {P::kVendor, kMany, true}}},
      // Informational (5.7): notifications may come in the clear before keys exist; deletes never.
      {Exchange::kInformational, true,
       {{P::kHash, 1, true}, {P::kNotify, kMany, false}, {P::kDelete, kMany, true}, {P::kVendor, kMany, true}}},
      {Exchange::kInformational, false,
       {{P::kHash, 1, true}, {P::kNotify, kMany, false}, {P::kDelete, kMany, true}, {P::kVendor, kMany, true}}},
  };
  return t;
}

bool fail(DecodeError& err, Notify n, std::string d) {
  err.notify = n;
  err.detail = std::move(d);
  return false;
}

}  // namespace

bool check_payload_rules(Exchange x, bool from_initiator, bool encrypted, const std::vector<RawPayload>& chain,
                         DecodeError& err) {
  const ExchangeRules* rules = nullptr;
  for (const auto& r : table())
    if (r.exchange == x && r.from_initiator == from_initiator) rules = &r;
  if (!rules) return fail(err, Notify::kInvalidExchangeType, std::string(to_string(x)) + " is not spoken");
  std::map<Payload, unsigned> seen;
  for (const auto& p : chain) {
    const Rule* rule = nullptr;
    for (const auto& r : rules->allowed)
      if (r.type == p.type) rule = &r;
    if (!rule)
      return fail(err, Notify::kInvalidPayloadType,
                  std::string(to_string(p.type)) + " payload in " + to_string(x));
    if (++seen[p.type] > rule->max)
      return fail(err, Notify::kPayloadMalformed,
                  std::string("more than ") + std::to_string(rule->max) + " " + to_string(p.type) + " payloads in " +
                      to_string(x));
    if (rule->encrypted && !encrypted)
      return fail(err, Notify::kInvalidFlags, std::string(to_string(p.type)) + " payload outside the encryption in " +
                                                  to_string(x));
  }
  return true;
}

}  // namespace ipsecgw::ike::v1
