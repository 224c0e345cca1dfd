// IKEv2 messages (RFC 7296 section 3): the header, the generic payload
// chain, and typed views of each payload this engine uses. Decoding never
// trusts a length: every field is read through core::ByteReader, and a
// failure says which payload was bad. The SK payload (3.14) is kept as
// bytes here; SkCipher (ike/ike_crypto.hpp) protects and unprotects it.
//
// The codec is shared by IKEv2 and (next) IKEv1, whose generic payload
// header is the same shape.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "core/ip.hpp"

namespace ipsecgw::ike {

using core::ByteSpan;
using core::Bytes;

inline constexpr std::size_t kHeaderLen = 28;
inline constexpr std::size_t kGenericHeaderLen = 4;
inline constexpr std::uint8_t kVersion2 = 0x20;
inline constexpr std::size_t kMaxMessage = 65535;

enum class Exchange : std::uint8_t {
  kSaInit = 34,
  kAuth = 35,
  kCreateChildSa = 36,
  kInformational = 37,
};
const char* to_string(Exchange e) noexcept;

enum Flags : std::uint8_t { kFlagInitiator = 0x08, kFlagVersion = 0x10, kFlagResponse = 0x20 };

enum class PayloadType : std::uint8_t {
  kNone = 0,
  kSa = 33,
  kKe = 34,
  kIdi = 35,
  kIdr = 36,
  kCert = 37,
  kCertReq = 38,
  kAuth = 39,
  kNonce = 40,
  kNotify = 41,
  kDelete = 42,
  kVendor = 43,
  kTsi = 44,
  kTsr = 45,
  kSk = 46,
  kCp = 47,
  kEap = 48,
  kSkf = 53,
};

// Notify message types (RFC 7296 3.10.1 and later RFCs).
enum class Notify : std::uint16_t {
  kUnsupportedCriticalPayload = 1,
  kInvalidIkeSpi = 4,
  kInvalidMajorVersion = 5,
  kInvalidSyntax = 7,
  kInvalidMessageId = 9,
  kInvalidSpi = 11,
  kNoProposalChosen = 14,
  kInvalidKePayload = 17,
  kAuthenticationFailed = 24,
  kSinglePairRequired = 34,
  kNoAdditionalSas = 35,
  kInternalAddressFailure = 36,
  kFailedCpRequired = 37,
  kTsUnacceptable = 38,
  kInvalidSelectors = 39,
  kTemporaryFailure = 43,
  kChildSaNotFound = 44,
  kInitialContact = 16384,
  kSetWindowSize = 16385,
  kAdditionalTsPossible = 16386,
  kIpcompSupported = 16387,
  kNatDetectionSourceIp = 16388,
  kNatDetectionDestinationIp = 16389,
  kCookie = 16390,
  kUseTransportMode = 16391,
  kHttpCertLookupSupported = 16392,
  kRekeySa = 16393,
  kEspTfcPaddingNotSupported = 16394,
  kNonFirstFragmentsAlso = 16395,
  kMobikeSupported = 16396,
  kMultipleAuthSupported = 16404,
  kRedirectSupported = 16406,
  kIkev2FragmentationSupported = 16430,
  kSignatureHashAlgorithms = 16431,
};
std::string notify_name(std::uint16_t type);
inline bool is_error(std::uint16_t t) noexcept { return t < 16384; }

enum class ProtocolId : std::uint8_t { kNone = 0, kIke = 1, kAh = 2, kEsp = 3 };
enum class TransformType : std::uint8_t { kEncr = 1, kPrf = 2, kInteg = 3, kDh = 4, kEsn = 5 };
enum class IdType : std::uint8_t { kIpv4 = 1, kFqdn = 2, kRfc822 = 3, kIpv6 = 5, kKeyId = 11 };
enum class AuthMethod : std::uint8_t { kRsa = 1, kPsk = 2, kDss = 3, kDigitalSignature = 14 };
inline constexpr std::uint8_t kTsIpv4Range = 7;
inline constexpr std::uint8_t kTsIpv6Range = 8;

struct Header {
  std::uint64_t spi_i = 0;
  std::uint64_t spi_r = 0;
  PayloadType next = PayloadType::kNone;
  std::uint8_t version = kVersion2;
  Exchange exchange = Exchange::kSaInit;
  std::uint8_t flags = 0;
  std::uint32_t message_id = 0;
  std::uint32_t length = 0;

  [[nodiscard]] bool from_initiator() const noexcept { return flags & kFlagInitiator; }
  [[nodiscard]] bool is_response() const noexcept { return flags & kFlagResponse; }
};

// The 28-byte header IKEv1 (RFC 2408 3.1) and IKEv2 (RFC 7296 3.1) share, as
// plain numbers; each version's Header gives the fields their meaning.
struct RawHeader {
  std::uint64_t spi_i = 0, spi_r = 0;  // IKEv1: the initiator's and responder's cookies
  std::uint8_t next = 0, version = 0, exchange = 0, flags = 0;
  std::uint32_t message_id = 0, length = 0;
};
std::optional<RawHeader> read_raw_header(ByteSpan msg);  // nullopt when shorter than 28 bytes
void write_raw_header(Bytes& out, const RawHeader& h);   // appends 28 bytes

// Parses the fixed header and checks the length field against the datagram.
std::optional<Header> parse_header(ByteSpan msg, std::string& why);
void write_header(Bytes& out, const Header& h);  // appends 28 bytes

struct Payload {
  PayloadType type = PayloadType::kNone;
  bool critical = false;
  Bytes body;  // without the generic header
  // For SK/SKF only: the type of the first payload inside.
  PayloadType inner_first = PayloadType::kNone;
};

// Splits a chain starting with `first`. Unknown non-critical payloads are
// kept (and ignored by the engine); an unknown critical one fails with
// `unsupported_critical` set to its type. An SK/SKF payload must be last.
bool parse_chain(ByteSpan data, PayloadType first, std::vector<Payload>& out, std::string& why,
                 std::uint8_t* unsupported_critical = nullptr);

// Encodes a chain; returns the bytes and sets `first` to the first type.
// An SK payload's next-payload field is its inner_first.
Bytes encode_chain(const std::vector<Payload>& payloads);
// An unencrypted message (IKE_SA_INIT): the header, with its next payload
// and length set from `pl` (not empty), then the chain.
Bytes encode_plain(Header h, const std::vector<Payload>& pl);

// ---- typed payloads -------------------------------------------------------

struct Transform {
  TransformType type = TransformType::kEncr;
  std::uint16_t id = 0;
  std::uint16_t key_bits = 0;  // Key Length attribute (14), 0 when absent
  bool operator==(const Transform&) const = default;
};

struct Proposal {
  std::uint8_t number = 1;
  ProtocolId protocol = ProtocolId::kIke;
  Bytes spi;
  std::vector<Transform> transforms;
};

struct SaPayload {
  std::vector<Proposal> proposals;
};
std::optional<SaPayload> decode_sa(ByteSpan body, std::string& why);
Bytes encode_sa(const SaPayload& sa);

struct KePayload {
  std::uint16_t group = 0;
  Bytes data;
};
std::optional<KePayload> decode_ke(ByteSpan body, std::string& why);
Bytes encode_ke(const KePayload& ke);

struct NotifyPayload {
  ProtocolId protocol = ProtocolId::kNone;
  Bytes spi;
  std::uint16_t type = 0;
  Bytes data;
};
std::optional<NotifyPayload> decode_notify(ByteSpan body, std::string& why);
Bytes encode_notify(const NotifyPayload& n);

struct IdPayload {
  IdType type = IdType::kFqdn;
  Bytes data;
  [[nodiscard]] std::string to_string() const;
  bool operator==(const IdPayload&) const = default;
};
std::optional<IdPayload> decode_id(ByteSpan body, std::string& why);
Bytes encode_id(const IdPayload& id);
// "198.51.100.1" -> IPv4, "fd00::1" -> IPv6, "a@b" -> RFC822, else FQDN.
IdPayload id_from_string(const std::string& s);

struct AuthPayload {
  AuthMethod method = AuthMethod::kPsk;
  Bytes data;
};
std::optional<AuthPayload> decode_auth(ByteSpan body, std::string& why);
Bytes encode_auth(const AuthPayload& a);

struct TrafficSelector {
  std::uint8_t ip_proto = 0;  // 0 = any
  std::uint16_t start_port = 0;
  std::uint16_t end_port = 65535;
  core::IpAddress start;
  core::IpAddress end;
  [[nodiscard]] std::string to_string() const;
  bool operator==(const TrafficSelector&) const = default;
};
std::optional<std::vector<TrafficSelector>> decode_ts(ByteSpan body, std::string& why);
Bytes encode_ts(const std::vector<TrafficSelector>& ts);

struct DeletePayload {
  ProtocolId protocol = ProtocolId::kIke;
  std::vector<std::uint32_t> spis;  // ESP/AH: 4-byte SPIs; IKE: none
};
std::optional<DeletePayload> decode_delete(ByteSpan body, std::string& why);
Bytes encode_delete(const DeletePayload& d);

}  // namespace ipsecgw::ike
