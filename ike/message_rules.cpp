#include "ike/message_rules.hpp"

#include <map>

namespace ipsecgw::ike {

namespace {

constexpr unsigned kMany = 255;

struct Rule {
  PayloadType type;
  unsigned max;  // occurrences allowed
};

struct ExchangeRules {
  Exchange exchange;
  bool response;
  bool encrypted;              // everything but SK/SKF inside the encrypted payload
  std::vector<Rule> allowed;   // anything else is INVALID_SYNTAX
};

// RFC 7296 1.2 (IKE_SA_INIT, IKE_AUTH), 1.3 (CREATE_CHILD_SA), 1.4
// (INFORMATIONAL), 2.6 (COOKIE), 3.15 (CP), 3.16 (EAP), 4 (Vendor ID and
// Notify anywhere).
const std::vector<ExchangeRules>& table() {
  using P = PayloadType;
  static const std::vector<ExchangeRules> t = {
      {Exchange::kSaInit, false, false,
       {{P::kSa, 1}, {P::kKe, 1}, {P::kNonce, 1}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kSaInit, true, false,
       {{P::kSa, 1}, {P::kKe, 1}, {P::kNonce, 1}, {P::kCertReq, kMany}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kAuth, false, true,
       {{P::kIdi, 1}, {P::kCert, kMany}, {P::kCertReq, kMany}, {P::kIdr, 1}, {P::kAuth, 1}, {P::kCp, 1},
        {P::kSa, 1}, {P::kTsi, 1}, {P::kTsr, 1}, {P::kEap, 1}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kAuth, true, true,
       {{P::kIdr, 1}, {P::kCert, kMany}, {P::kAuth, 1}, {P::kCp, 1}, {P::kSa, 1}, {P::kTsi, 1}, {P::kTsr, 1},
        {P::kEap, 1}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kCreateChildSa, false, true,
       {{P::kSa, 1}, {P::kNonce, 1}, {P::kKe, 1}, {P::kTsi, 1}, {P::kTsr, 1}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kCreateChildSa, true, true,
       {{P::kSa, 1}, {P::kNonce, 1}, {P::kKe, 1}, {P::kTsi, 1}, {P::kTsr, 1}, {P::kNotify, kMany}, {P::kVendor, kMany}}},
      {Exchange::kInformational, false, true,
       {{P::kNotify, kMany}, {P::kDelete, kMany}, {P::kCp, 1}, {P::kVendor, kMany}}},
      {Exchange::kInformational, true, true,
       {{P::kNotify, kMany}, {P::kDelete, kMany}, {P::kCp, 1}, {P::kVendor, kMany}}},
  };
  return t;
}

// Payload types this implementation knows; others, when not critical, are
// skipped as RFC 7296 2.5 says (critical ones never get this far).
bool known(PayloadType t) {
  const auto n = static_cast<int>(t);
  return (n >= 33 && n <= 48) || n == 53;
}

bool fail(RuleViolation& v, Notify n, std::string d) {
  v.notify = n;
  v.detail = std::move(d);
  return false;
}

}  // namespace

bool check_payload_rules(Exchange x, bool response, const std::vector<Payload>& outer,
                         const std::vector<Payload>& inner, RuleViolation& v) {
  const ExchangeRules* r = nullptr;
  for (const auto& e : table())
    if (e.exchange == x && e.response == response) r = &e;
  if (!r) return fail(v, Notify::kInvalidSyntax, std::string("no rules for exchange ") + to_string(x));
  if (r->encrypted) {
    // The encrypted payload is the only one outside (RFC 7296 3.14 allows
    // others before it, but no exchange here puts anything there).
    if (outer.size() != 1 || (outer[0].type != PayloadType::kSk && outer[0].type != PayloadType::kSkf))
      return fail(v, Notify::kInvalidSyntax,
                  std::string(to_string(x)) + ": payloads outside the encrypted payload");
  }
  const auto& chain = r->encrypted ? inner : outer;
  std::map<PayloadType, unsigned> seen;
  for (const auto& p : chain) {
    if (!known(p.type)) continue;
    const Rule* rule = nullptr;
    for (const auto& a : r->allowed)
      if (a.type == p.type) rule = &a;
    if (!rule)
      return fail(v, Notify::kInvalidSyntax,
                  std::string(to_string(x)) + (response ? " response" : " request") + ": payload type " +
                      std::to_string(static_cast<int>(p.type)) + " does not belong there");
    if (++seen[p.type] > rule->max)
      return fail(v, Notify::kInvalidSyntax,
                  std::string(to_string(x)) + (response ? " response" : " request") + ": more than " +
                      std::to_string(rule->max) + " payloads of type " + std::to_string(static_cast<int>(p.type)));
  }
  return true;
}

}  // namespace ipsecgw::ike
