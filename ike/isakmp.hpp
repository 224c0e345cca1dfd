// ISAKMP messages for IKEv1 (RFC 2408 section 3, the IPsec DOI of RFC 2407
// section 4, NAT-T payloads of RFC 3947 and their draft numbers): the
// header, the generic payload chain, and typed views of every payload.
//
// Decoding never trusts a length: every field is read through
// core::ByteReader, and a failure carries the notify type RFC 2408 3.14.1
// says to send back (PAYLOAD-MALFORMED, INVALID-PAYLOAD-TYPE, ...) with a
// detail for the log. An encrypted message (the E flag) is decoded in two
// steps: the header here, then the chain once the exchange has decrypted it.
//
// Shared with IKEv2: core::ByteReader/ByteAppender and the generic payload
// header's shape (next payload, one reserved octet, length).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "core/ip.hpp"

namespace ipsecgw::ike::v1 {

using core::Bytes;
using core::ByteSpan;

inline constexpr std::size_t kHeaderLen = 28;
inline constexpr std::uint8_t kVersion1 = 0x10;  // major 1, minor 0
inline constexpr std::uint32_t kDoiIpsec = 1;
inline constexpr std::uint32_t kSitIdentityOnly = 1;

// RFC 2408 3.1, RFC 2409, RFC 2407 4.7.
enum class Exchange : std::uint8_t {
  kBase = 1,
  kMain = 2,  // Identity Protection
  kAuthOnly = 3,
  kAggressive = 4,
  kInformational = 5,
  kTransaction = 6,  // Mode Config (draft-dukes-ike-mode-cfg)
  kQuick = 32,
  kNewGroup = 33,
};
const char* to_string(Exchange e) noexcept;

enum Flags : std::uint8_t { kFlagEncrypted = 0x01, kFlagCommit = 0x02, kFlagAuthOnly = 0x04 };

// RFC 2408 3.1; NAT-D/NAT-OA as RFC 3947 and as draft-ietf-ipsec-nat-t-ike-02/03.
enum class Payload : std::uint8_t {
  kNone = 0,
  kSa = 1,
  kProposal = 2,
  kTransform = 3,
  kKe = 4,
  kId = 5,
  kCert = 6,
  kCertReq = 7,
  kHash = 8,
  kSig = 9,
  kNonce = 10,
  kNotify = 11,
  kDelete = 12,
  kVendor = 13,
  kAttribute = 14,  // Mode Config
  kNatD = 20,
  kNatOa = 21,
  kNatDDraft = 130,
  kNatOaDraft = 131,
  kFragment = 132,  // Cisco/strongSwan IKEv1 fragmentation
};
const char* to_string(Payload p) noexcept;
// Payloads that may stand in a message's top-level chain.
bool known_payload(std::uint8_t type) noexcept;

// Notify types (RFC 2408 3.14.1, 2407 4.6.3, RFC 3706).
enum class Notify : std::uint16_t {
  kInvalidPayloadType = 1,
  kDoiNotSupported = 2,
  kSituationNotSupported = 3,
  kInvalidCookie = 4,
  kInvalidMajorVersion = 5,
  kInvalidMinorVersion = 6,
  kInvalidExchangeType = 7,
  kInvalidFlags = 8,
  kInvalidMessageId = 9,
  kInvalidProtocolId = 10,
  kInvalidSpi = 11,
  kInvalidTransformId = 12,
  kAttributesNotSupported = 13,
  kNoProposalChosen = 14,
  kBadProposalSyntax = 15,
  kPayloadMalformed = 16,
  kInvalidKeyInformation = 17,
  kInvalidIdInformation = 18,
  kInvalidCertEncoding = 19,
  kInvalidCertificate = 20,
  kCertTypeUnsupported = 21,
  kInvalidCertAuthority = 22,
  kInvalidHashInformation = 23,
  kAuthenticationFailed = 24,
  kInvalidSignature = 25,
  kAddressNotification = 26,
  kNotifySaLifetime = 27,
  kCertificateUnavailable = 28,
  kUnsupportedExchangeType = 29,
  kUnequalPayloadLengths = 30,
  kConnected = 16384,
  kResponderLifetime = 24576,
  kReplayStatus = 24577,
  kInitialContact = 24578,
  kRUThere = 36136,
  kRUThereAck = 36137,
};
std::string notify_name(std::uint16_t type);

// A decoding failure: what to tell the peer, and what to log.
struct DecodeError {
  Notify notify = Notify::kPayloadMalformed;
  std::string detail;
};

struct Header {
  std::uint64_t cky_i = 0;
  std::uint64_t cky_r = 0;
  Payload next = Payload::kNone;
  std::uint8_t version = kVersion1;
  Exchange exchange = Exchange::kMain;
  std::uint8_t flags = 0;
  std::uint32_t message_id = 0;
  std::uint32_t length = 0;
  [[nodiscard]] bool encrypted() const noexcept { return flags & kFlagEncrypted; }
};
// Parses the fixed header: major version 1, length matching the datagram
// (RFC 2408 5.2 allows trailing padding only inside an encrypted body).
std::optional<Header> parse_header(ByteSpan msg, DecodeError& err);
void write_header(Bytes& out, const Header& h);

struct RawPayload {
  Payload type = Payload::kNone;
  Bytes body;  // without the generic header
};
// Walks a chain of generic payloads starting with `first`. Unknown types are
// INVALID-PAYLOAD-TYPE; a length that runs past `data` is PAYLOAD-MALFORMED.
// With `allow_padding` (a decrypted body), bytes after the last payload are
// the cipher's padding and ignored; otherwise they are an error.
bool parse_chain(ByteSpan data, Payload first, std::vector<RawPayload>& out, DecodeError& err,
                 bool allow_padding = false);
Bytes encode_chain(const std::vector<RawPayload>& payloads);
// Header and chain of an unencrypted message, next payload and length set.
Bytes encode_plain(Header h, const std::vector<RawPayload>& payloads);

// ---- SA, Proposal, Transform (RFC 2408 3.4-3.6, RFC 2407 4.5) ------------------

// A data attribute: TV (basic, the AF bit set, 2-byte value) or TLV.
struct Attribute {
  std::uint16_t type = 0;  // without the AF bit
  bool basic = true;
  std::uint16_t value = 0;  // basic
  Bytes data;               // TLV
  // The value as an integer: a basic value, or a TLV of at most 8 bytes.
  [[nodiscard]] std::optional<std::uint64_t> number() const;
  bool operator==(const Attribute&) const = default;
};

// A bare attribute list (a RESPONDER-LIFETIME notification's data, RFC 2407 4.6.3.1).
std::optional<std::vector<Attribute>> decode_attributes(ByteSpan data, DecodeError& err);
Bytes encode_attributes(const std::vector<Attribute>& attrs);

struct Transform {
  std::uint8_t number = 1;
  std::uint8_t id = 0;  // KEY_IKE (1) in phase 1; ESP_AES, AH_SHA, ... in phase 2
  std::vector<Attribute> attributes;
  [[nodiscard]] const Attribute* find(std::uint16_t type) const noexcept;
  bool operator==(const Transform&) const = default;
};

struct Proposal {
  std::uint8_t number = 1;
  std::uint8_t protocol = 1;  // PROTO_ISAKMP 1, PROTO_IPSEC_AH 2, PROTO_IPSEC_ESP 3, IPCOMP 4
  Bytes spi;
  std::vector<Transform> transforms;
  bool operator==(const Proposal&) const = default;
};

struct SaPayload {
  std::uint32_t doi = kDoiIpsec;
  std::uint32_t situation = kSitIdentityOnly;
  // In order; proposals sharing a number form one bundle (AH and ESP).
  std::vector<Proposal> proposals;
  bool operator==(const SaPayload&) const = default;
};
std::optional<SaPayload> decode_sa(ByteSpan body, DecodeError& err);
Bytes encode_sa(const SaPayload& sa);

// ---- Identification (RFC 2407 4.6.2) ---------------------------------------------

enum class IdType : std::uint8_t {
  kIpv4 = 1,
  kFqdn = 2,
  kUserFqdn = 3,
  kIpv4Subnet = 4,
  kIpv6 = 5,
  kIpv6Subnet = 6,
  kIpv4Range = 7,
  kIpv6Range = 8,
  kDerAsn1Dn = 9,
  kDerAsn1Gn = 10,
  kKeyId = 11,
};

struct IdPayload {
  IdType type = IdType::kIpv4;
  std::uint8_t protocol = 0;  // 0: any (phase 1: 0 or 17)
  std::uint16_t port = 0;
  Bytes data;
  // For the address types: the range they name (a subnet as its first and
  // last address). nullopt for names and keys, or a malformed address.
  [[nodiscard]] std::optional<core::IpRange> range() const;
  // For logs: "10.1.0.0/24", "gw-a.example", "user@example", "keyid:0a0b".
  [[nodiscard]] std::string to_string() const;
  static IdPayload from_range(const core::IpRange& r, std::uint8_t protocol = 0, std::uint16_t port = 0);
  bool operator==(const IdPayload&) const = default;
};
std::optional<IdPayload> decode_id(ByteSpan body, DecodeError& err);
Bytes encode_id(const IdPayload& id);

// ---- Notification and Delete (RFC 2408 3.14, 3.15) -------------------------------

struct NotifyPayload {
  std::uint32_t doi = kDoiIpsec;
  std::uint8_t protocol = 1;
  std::uint16_t type = 0;
  Bytes spi;
  Bytes data;
  bool operator==(const NotifyPayload&) const = default;
};
std::optional<NotifyPayload> decode_notify(ByteSpan body, DecodeError& err);
Bytes encode_notify(const NotifyPayload& n);

struct DeletePayload {
  std::uint32_t doi = kDoiIpsec;
  std::uint8_t protocol = 1;
  std::uint8_t spi_size = 16;  // ISAKMP: the two cookies; AH/ESP: 4
  std::vector<Bytes> spis;
  bool operator==(const DeletePayload&) const = default;
};
std::optional<DeletePayload> decode_delete(ByteSpan body, DecodeError& err);
Bytes encode_delete(const DeletePayload& d);

// ---- Certificate, Certificate Request (3.9, 3.10), NAT-OA (RFC 3947 5.2) ----------

struct CertPayload {
  std::uint8_t encoding = 4;  // X.509 Certificate - Signature
  Bytes data;
  bool operator==(const CertPayload&) const = default;
};
std::optional<CertPayload> decode_cert(ByteSpan body, DecodeError& err);
Bytes encode_cert(const CertPayload& c);

struct NatOaPayload {
  core::IpAddress address;
  bool operator==(const NatOaPayload&) const = default;
};
std::optional<NatOaPayload> decode_nat_oa(ByteSpan body, DecodeError& err);
Bytes encode_nat_oa(const NatOaPayload& n);

// ---- A whole decoded message ------------------------------------------------------

// Everything a message carried, each payload checked by its own rules.
// Which payloads an exchange requires and allows is the exchange's business.
struct Message {
  Header header;
  std::vector<RawPayload> raw;  // in order, for hashes over payload bodies
  std::optional<SaPayload> sa;
  Bytes sa_body;  // the SA payload's body as received (SAi_b for HASH_I/HASH_R)
  Bytes ke, nonce, hash, sig;
  std::vector<IdPayload> ids;  // Main/Aggressive: one; Quick Mode: IDci, IDcr
  std::vector<Bytes> id_bodies;
  std::vector<CertPayload> certs;
  std::vector<Bytes> cert_requests;
  std::vector<NotifyPayload> notifies;
  std::vector<DeletePayload> deletes;
  std::vector<Bytes> vendor_ids;
  std::vector<Bytes> nat_d;
  std::vector<NatOaPayload> nat_oa;
  std::vector<Bytes> attributes;  // Mode Config, kept raw
};
// Decodes each payload of a parsed chain into `m` (header set by the caller).
bool decode_payloads(const std::vector<RawPayload>& chain, Message& m, DecodeError& err);
// Header, chain and payloads of an unencrypted message in one call.
std::optional<Message> decode_plain(ByteSpan msg, DecodeError& err);

// Vendor IDs this implementation knows (RFC 3947 and its drafts, RFC 3706,
// fragmentation, XAUTH, Cisco Unity); empty when unknown.
std::string vendor_name(ByteSpan vid);

}  // namespace ipsecgw::ike::v1
