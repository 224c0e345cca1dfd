#include "ike/isakmp.hpp"

#include <algorithm>
#include <array>

#include "ike/message.hpp"

namespace ipsecgw::ike::v1 {

using core::ByteReader;

namespace {

constexpr std::size_t kGenericHeaderLen = 4;

std::optional<core::IpAddress> addr_from(ByteSpan b) {
  if (b.size() == 4) return core::IpAddress::v4(b);
  if (b.size() == 16) return core::IpAddress::v6(b);
  return std::nullopt;
}
constexpr std::size_t kMaxPayloads = 256;

bool fail(DecodeError& err, Notify n, std::string detail) {
  err.notify = n;
  err.detail = std::move(detail);
  return false;
}
template <class T>
std::optional<T> none(DecodeError& err, Notify n, std::string detail) {
  fail(err, n, std::move(detail));
  return std::nullopt;
}

std::string ptype(std::uint8_t t) {
  const char* s = to_string(static_cast<Payload>(t));
  return std::string(s) + "(" + std::to_string(t) + ")";
}

// Reads one generic payload header and body; `type` names it in errors.
bool read_generic(ByteReader& r, std::uint8_t type, std::uint8_t& next, ByteSpan& body, DecodeError& err) {
  std::uint8_t reserved = 0;
  std::uint16_t len = 0;
  if (!r.read_u8(next) || !r.read_u8(reserved) || !r.read_u16(len))
    return fail(err, Notify::kPayloadMalformed, ptype(type) + ": truncated generic header");
  if (len < kGenericHeaderLen || !r.read_bytes(len - kGenericHeaderLen, body))
    return fail(err, Notify::kPayloadMalformed,
                ptype(type) + ": length " + std::to_string(len) + " runs past its container");
  if (reserved != 0) return fail(err, Notify::kPayloadMalformed, ptype(type) + ": reserved octet not zero");
  return true;
}

// Attributes fill the rest of `r` (RFC 2408 3.3).
bool read_attributes(ByteReader& r, std::vector<Attribute>& out, DecodeError& err) {
  while (r.remaining() > 0) {
    std::uint16_t t = 0, v = 0;
    if (!r.read_u16(t) || !r.read_u16(v)) return fail(err, Notify::kPayloadMalformed, "truncated attribute");
    Attribute a;
    a.type = t & 0x7fff;
    a.basic = (t & 0x8000) != 0;
    if (a.basic) {
      a.value = v;
    } else {
      ByteSpan d;
      if (!r.read_bytes(v, d))
        return fail(err, Notify::kPayloadMalformed,
                    "attribute " + std::to_string(a.type) + ": length " + std::to_string(v) + " runs past the transform");
      a.data.assign(d.begin(), d.end());
    }
    if (out.size() >= 64) return fail(err, Notify::kPayloadMalformed, "more than 64 attributes");
    out.push_back(std::move(a));
  }
  return true;
}

void write_attributes(core::ByteAppender& a, const std::vector<Attribute>& attrs) {
  for (const auto& x : attrs) {
    if (x.basic) {
      a.u16(static_cast<std::uint16_t>(0x8000 | x.type));
      a.u16(x.value);
    } else {
      a.u16(x.type);
      a.u16(static_cast<std::uint16_t>(x.data.size()));
      a.bytes(x.data);
    }
  }
}

// Appends a generic payload header with `next` and the body's length.
void write_generic(Bytes& out, std::uint8_t next, ByteSpan body) {
  core::ByteAppender a{out};
  a.u8(next);
  a.u8(0);
  a.u16(static_cast<std::uint16_t>(kGenericHeaderLen + body.size()));
  a.bytes(body);
}

std::optional<Transform> decode_transform(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  Transform t;
  std::uint16_t reserved = 0;
  if (!r.read_u8(t.number) || !r.read_u8(t.id) || !r.read_u16(reserved))
    return none<Transform>(err, Notify::kPayloadMalformed, "Transform: truncated");
  if (!read_attributes(r, t.attributes, err)) return std::nullopt;
  return t;
}

std::optional<Proposal> decode_proposal(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  Proposal p;
  std::uint8_t spi_size = 0, count = 0;
  ByteSpan spi;
  if (!r.read_u8(p.number) || !r.read_u8(p.protocol) || !r.read_u8(spi_size) || !r.read_u8(count) ||
      !r.read_bytes(spi_size, spi))
    return none<Proposal>(err, Notify::kPayloadMalformed, "Proposal: truncated");
  p.spi.assign(spi.begin(), spi.end());
  if (p.protocol == 0 || p.protocol > 4)
    return none<Proposal>(err, Notify::kInvalidProtocolId, "Proposal: protocol " + std::to_string(p.protocol));
  std::uint8_t type = static_cast<std::uint8_t>(Payload::kTransform);
  for (unsigned i = 0; i < count; ++i) {
    if (type != static_cast<std::uint8_t>(Payload::kTransform))
      return none<Proposal>(err, Notify::kBadProposalSyntax,
                            "Proposal: " + std::to_string(count) + " transforms announced, " + std::to_string(i) + " chained");
    std::uint8_t next = 0;
    ByteSpan tb;
    if (!read_generic(r, type, next, tb, err)) return std::nullopt;
    auto t = decode_transform(tb, err);
    if (!t) return std::nullopt;
    p.transforms.push_back(std::move(*t));
    type = next;
  }
  if (type != 0 || r.remaining() != 0 || count == 0)
    return none<Proposal>(err, Notify::kBadProposalSyntax,
                          "Proposal: transforms do not match the count " + std::to_string(count));
  return p;
}

constexpr std::array<std::pair<const char*, const char*>, 12> kVendors{{
    {"4a131c81070358455c5728f20e95452f", "RFC 3947"},
    {"4485152d18b6bbcd0be8a8469579ddcc", "draft-ietf-ipsec-nat-t-ike-00"},
    {"cd60464335df21f87cfdb2fc68b6a448", "draft-ietf-ipsec-nat-t-ike-02"},
    {"90cb80913ebb696e086381b5ec427b1f", "draft-ietf-ipsec-nat-t-ike-02\\n"},
    {"7d9419a65310ca6f2c179d9215529d56", "draft-ietf-ipsec-nat-t-ike-03"},
    {"afcad71368a1f1c96b8696fc77570100", "DPD"},
    {"4048b7d56ebce88525e7de7f00d6c2d3", "FRAGMENTATION"},
    {"4048b7d56ebce88525e7de7f00d6c2d380000000", "FRAGMENTATION"},
    {"09002689dfd6b712", "XAUTH"},
    {"12f5f28c457168a9702d9fe274cc0100", "Cisco Unity"},
    {"882fe56d6fd20dbc2251613b2ebe5beb", "strongSwan"},
    {"4f45517a7b6f6a52", "Openswan"},
}};

}  // namespace

std::optional<std::vector<Attribute>> decode_attributes(ByteSpan data, DecodeError& err) {
  ByteReader r(data);
  std::vector<Attribute> out;
  if (!read_attributes(r, out, err)) return std::nullopt;
  return out;
}

Bytes encode_attributes(const std::vector<Attribute>& attrs) {
  Bytes out;
  core::ByteAppender a{out};
  write_attributes(a, attrs);
  return out;
}

const char* to_string(Exchange e) noexcept {
  switch (e) {
    case Exchange::kBase: return "Base";
    case Exchange::kMain: return "Main Mode";
    case Exchange::kAuthOnly: return "Authentication Only";
    case Exchange::kAggressive: return "Aggressive Mode";
    case Exchange::kInformational: return "Informational";
    case Exchange::kTransaction: return "Transaction";
    case Exchange::kQuick: return "Quick Mode";
    case Exchange::kNewGroup: return "New Group Mode";
  }
  return "unknown exchange";
}

const char* to_string(Payload p) noexcept {
  switch (p) {
    case Payload::kNone: return "none";
    case Payload::kSa: return "SA";
    case Payload::kProposal: return "P";
    case Payload::kTransform: return "T";
    case Payload::kKe: return "KE";
    case Payload::kId: return "ID";
    case Payload::kCert: return "CERT";
    case Payload::kCertReq: return "CR";
    case Payload::kHash: return "HASH";
    case Payload::kSig: return "SIG";
    case Payload::kNonce: return "NONCE";
    case Payload::kNotify: return "N";
    case Payload::kDelete: return "D";
    case Payload::kVendor: return "VID";
    case Payload::kAttribute: return "ATTR";
    case Payload::kNatD: case Payload::kNatDDraft: return "NAT-D";
    case Payload::kNatOa: case Payload::kNatOaDraft: return "NAT-OA";
    case Payload::kFragment: return "FRAG";
  }
  return "unknown";
}

bool known_payload(std::uint8_t t) noexcept {
  switch (static_cast<Payload>(t)) {
    case Payload::kSa: case Payload::kKe: case Payload::kId: case Payload::kCert: case Payload::kCertReq:
    case Payload::kHash: case Payload::kSig: case Payload::kNonce: case Payload::kNotify:
    case Payload::kDelete: case Payload::kVendor: case Payload::kAttribute: case Payload::kNatD:
    case Payload::kNatOa: case Payload::kNatDDraft: case Payload::kNatOaDraft: case Payload::kFragment:
      return true;
    default:
      return false;  // P and T appear only inside an SA payload
  }
}

std::string notify_name(std::uint16_t type) {
  static const std::pair<std::uint16_t, const char*> kNames[] = {
      {1, "INVALID-PAYLOAD-TYPE"}, {2, "DOI-NOT-SUPPORTED"}, {3, "SITUATION-NOT-SUPPORTED"},
      {4, "INVALID-COOKIE"}, {5, "INVALID-MAJOR-VERSION"}, {6, "INVALID-MINOR-VERSION"},
      {7, "INVALID-EXCHANGE-TYPE"}, {8, "INVALID-FLAGS"}, {9, "INVALID-MESSAGE-ID"},
      {10, "INVALID-PROTOCOL-ID"}, {11, "INVALID-SPI"}, {12, "INVALID-TRANSFORM-ID"},
      {13, "ATTRIBUTES-NOT-SUPPORTED"}, {14, "NO-PROPOSAL-CHOSEN"}, {15, "BAD-PROPOSAL-SYNTAX"},
      {16, "PAYLOAD-MALFORMED"}, {17, "INVALID-KEY-INFORMATION"}, {18, "INVALID-ID-INFORMATION"},
      {19, "INVALID-CERT-ENCODING"}, {20, "INVALID-CERTIFICATE"}, {21, "CERT-TYPE-UNSUPPORTED"},
      {22, "INVALID-CERT-AUTHORITY"}, {23, "INVALID-HASH-INFORMATION"}, {24, "AUTHENTICATION-FAILED"},
      {25, "INVALID-SIGNATURE"}, {26, "ADDRESS-NOTIFICATION"}, {27, "NOTIFY-SA-LIFETIME"},
      {28, "CERTIFICATE-UNAVAILABLE"}, {29, "UNSUPPORTED-EXCHANGE-TYPE"}, {30, "UNEQUAL-PAYLOAD-LENGTHS"},
      {16384, "CONNECTED"}, {24576, "RESPONDER-LIFETIME"}, {24577, "REPLAY-STATUS"},
      {24578, "INITIAL-CONTACT"}, {36136, "R-U-THERE"}, {36137, "R-U-THERE-ACK"},
  };
  for (const auto& [t, n] : kNames)
    if (t == type) return n;
  return "NOTIFY-" + std::to_string(type);
}

std::optional<Header> parse_header(ByteSpan msg, DecodeError& err) {
  const auto raw = read_raw_header(msg);
  if (!raw) return none<Header>(err, Notify::kPayloadMalformed, "shorter than the ISAKMP header");
  Header h;
  h.cky_i = raw->spi_i;
  h.cky_r = raw->spi_r;
  h.next = static_cast<Payload>(raw->next);
  h.version = raw->version;
  h.exchange = static_cast<Exchange>(raw->exchange);
  h.flags = raw->flags;
  h.message_id = raw->message_id;
  h.length = raw->length;
  if ((h.version >> 4) != 1)
    return none<Header>(err, Notify::kInvalidMajorVersion, "major version " + std::to_string(h.version >> 4));
  if (h.length != msg.size())
    return none<Header>(err, Notify::kUnequalPayloadLengths,
                        "length field " + std::to_string(h.length) + ", datagram " + std::to_string(msg.size()));
  if (h.flags & ~(kFlagEncrypted | kFlagCommit | kFlagAuthOnly))
    return none<Header>(err, Notify::kInvalidFlags, "unknown flags " + std::to_string(h.flags));
  if (h.cky_i == 0) return none<Header>(err, Notify::kInvalidCookie, "zero initiator cookie");
  return h;
}

void write_header(Bytes& out, const Header& h) {
  write_raw_header(out, {h.cky_i, h.cky_r, static_cast<std::uint8_t>(h.next), h.version,
                         static_cast<std::uint8_t>(h.exchange), h.flags, h.message_id, h.length});
}

bool parse_chain(ByteSpan data, Payload first, std::vector<RawPayload>& out, DecodeError& err,
                 bool allow_padding) {
  ByteReader r(data);
  auto type = static_cast<std::uint8_t>(first);
  while (type != 0) {
    if (!known_payload(type)) return fail(err, Notify::kInvalidPayloadType, "payload type " + std::to_string(type));
    if (out.size() >= kMaxPayloads) return fail(err, Notify::kPayloadMalformed, "more than 256 payloads");
    std::uint8_t next = 0;
    ByteSpan body;
    if (!read_generic(r, type, next, body, err)) return false;
    out.push_back({static_cast<Payload>(type), Bytes(body.begin(), body.end())});
    type = next;
  }
  if (r.remaining() != 0 && !allow_padding)
    return fail(err, Notify::kPayloadMalformed, std::to_string(r.remaining()) + " bytes after the last payload");
  return true;
}

Bytes encode_chain(const std::vector<RawPayload>& payloads) {
  Bytes out;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const std::uint8_t next = i + 1 < payloads.size() ? static_cast<std::uint8_t>(payloads[i + 1].type) : std::uint8_t{0};
    write_generic(out, next, payloads[i].body);
  }
  return out;
}

Bytes encode_plain(Header h, const std::vector<RawPayload>& payloads) {
  const Bytes body = encode_chain(payloads);
  h.next = payloads.empty() ? Payload::kNone : payloads.front().type;
  h.length = static_cast<std::uint32_t>(kHeaderLen + body.size());
  Bytes out;
  out.reserve(h.length);
  write_header(out, h);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// ---- SA ---------------------------------------------------------------------------

std::optional<std::uint64_t> Attribute::number() const {
  if (basic) return value;
  if (data.empty() || data.size() > 8) return std::nullopt;
  std::uint64_t v = 0;
  for (auto b : data) v = v << 8 | b;
  return v;
}

const Attribute* Transform::find(std::uint16_t type) const noexcept {
  for (const auto& a : attributes)
    if (a.type == type) return &a;
  return nullptr;
}

std::optional<SaPayload> decode_sa(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  SaPayload sa;
  if (!r.read_u32(sa.doi)) return none<SaPayload>(err, Notify::kPayloadMalformed, "SA: truncated DOI");
  if (sa.doi != kDoiIpsec) return none<SaPayload>(err, Notify::kDoiNotSupported, "SA: DOI " + std::to_string(sa.doi));
  if (!r.read_u32(sa.situation)) return none<SaPayload>(err, Notify::kPayloadMalformed, "SA: truncated situation");
  if (sa.situation != kSitIdentityOnly)
    return none<SaPayload>(err, Notify::kSituationNotSupported, "SA: situation " + std::to_string(sa.situation));
  auto type = static_cast<std::uint8_t>(Payload::kProposal);
  while (type != 0) {
    if (type != static_cast<std::uint8_t>(Payload::kProposal))
      return none<SaPayload>(err, Notify::kBadProposalSyntax, "SA: " + ptype(type) + " where a proposal belongs");
    if (sa.proposals.size() >= 64) return none<SaPayload>(err, Notify::kPayloadMalformed, "SA: more than 64 proposals");
    std::uint8_t next = 0;
    ByteSpan pb;
    if (!read_generic(r, type, next, pb, err)) return std::nullopt;
    auto p = decode_proposal(pb, err);
    if (!p) return std::nullopt;
    // Proposal numbers never decrease (RFC 2408 4.2).
    if (!sa.proposals.empty() && p->number < sa.proposals.back().number)
      return none<SaPayload>(err, Notify::kBadProposalSyntax, "SA: proposal numbers decrease");
    sa.proposals.push_back(std::move(*p));
    type = next;
  }
  if (r.remaining() != 0)
    return none<SaPayload>(err, Notify::kPayloadMalformed, "SA: " + std::to_string(r.remaining()) + " bytes after the last proposal");
  return sa;
}

Bytes encode_sa(const SaPayload& sa) {
  Bytes out;
  core::ByteAppender a{out};
  a.u32(sa.doi);
  a.u32(sa.situation);
  for (std::size_t i = 0; i < sa.proposals.size(); ++i) {
    const auto& p = sa.proposals[i];
    Bytes pb;
    core::ByteAppender pa{pb};
    pa.u8(p.number);
    pa.u8(p.protocol);
    pa.u8(static_cast<std::uint8_t>(p.spi.size()));
    pa.u8(static_cast<std::uint8_t>(p.transforms.size()));
    pa.bytes(p.spi);
    for (std::size_t j = 0; j < p.transforms.size(); ++j) {
      const auto& t = p.transforms[j];
      Bytes tb;
      core::ByteAppender ta{tb};
      ta.u8(t.number);
      ta.u8(t.id);
      ta.u16(0);
      write_attributes(ta, t.attributes);
      write_generic(pb, j + 1 < p.transforms.size() ? static_cast<std::uint8_t>(Payload::kTransform) : std::uint8_t{0}, tb);
    }
    write_generic(out, i + 1 < sa.proposals.size() ? static_cast<std::uint8_t>(Payload::kProposal) : std::uint8_t{0}, pb);
  }
  return out;
}

// ---- ID ----------------------------------------------------------------------------

std::optional<IdPayload> decode_id(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  IdPayload id;
  std::uint8_t type = 0;
  if (!r.read_u8(type) || !r.read_u8(id.protocol) || !r.read_u16(id.port))
    return none<IdPayload>(err, Notify::kPayloadMalformed, "ID: truncated");
  if (type == 0 || type > 11) return none<IdPayload>(err, Notify::kInvalidIdInformation, "ID: type " + std::to_string(type));
  id.type = static_cast<IdType>(type);
  const ByteSpan d = r.rest();
  id.data.assign(d.begin(), d.end());
  std::size_t want = 0;
  switch (id.type) {
    case IdType::kIpv4: want = 4; break;
    case IdType::kIpv4Subnet: case IdType::kIpv4Range: want = 8; break;
    case IdType::kIpv6: want = 16; break;
    case IdType::kIpv6Subnet: case IdType::kIpv6Range: want = 32; break;
    default:
      if (id.data.empty()) return none<IdPayload>(err, Notify::kInvalidIdInformation, "ID: empty identity");
      return id;
  }
  if (id.data.size() != want)
    return none<IdPayload>(err, Notify::kInvalidIdInformation,
                           "ID: type " + std::to_string(type) + " with " + std::to_string(id.data.size()) + " bytes");
  if ((id.type == IdType::kIpv4Subnet || id.type == IdType::kIpv6Subnet || id.type == IdType::kIpv4Range ||
       id.type == IdType::kIpv6Range) &&
      !id.range())
    return none<IdPayload>(err, Notify::kInvalidIdInformation, "ID: not a valid subnet or range");
  return id;
}

Bytes encode_id(const IdPayload& id) {
  Bytes out;
  core::ByteAppender a{out};
  a.u8(static_cast<std::uint8_t>(id.type));
  a.u8(id.protocol);
  a.u16(id.port);
  a.bytes(id.data);
  return out;
}

std::optional<core::IpRange> IdPayload::range() const {
  const bool v6 = type == IdType::kIpv6 || type == IdType::kIpv6Subnet || type == IdType::kIpv6Range;
  const std::size_t n = v6 ? 16 : 4;
  auto addr = [&](std::size_t off) -> std::optional<core::IpAddress> {
    if (data.size() < off + n) return std::nullopt;
    return addr_from(ByteSpan(data).subspan(off, n));
  };
  switch (type) {
    case IdType::kIpv4: case IdType::kIpv6: {
      auto a = addr(0);
      if (!a) return std::nullopt;
      return core::IpRange{*a, *a};
    }
    case IdType::kIpv4Range: case IdType::kIpv6Range: {
      auto a = addr(0), b = addr(n);
      if (!a || !b || *b < *a) return std::nullopt;
      return core::IpRange{*a, *b};
    }
    case IdType::kIpv4Subnet: case IdType::kIpv6Subnet: {
      auto a = addr(0), m = addr(n);
      if (!a || !m) return std::nullopt;
      // The mask must be contiguous ones; the range is address & mask .. | ~mask.
      Bytes lo(data.begin(), data.begin() + static_cast<long>(n)), hi = lo;
      bool zeros = false;
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t mb = data[n + i];
        for (int bit = 7; bit >= 0; --bit) {
          const bool one = (mb >> bit) & 1;
          if (one && zeros) return std::nullopt;
          if (!one) zeros = true;
        }
        lo[i] = static_cast<std::uint8_t>(lo[i] & mb);
        hi[i] = static_cast<std::uint8_t>(lo[i] | static_cast<std::uint8_t>(~mb));
      }
      auto l = addr_from(lo), h = addr_from(hi);
      if (!l || !h) return std::nullopt;
      return core::IpRange{*l, *h};
    }
    default:
      return std::nullopt;
  }
}

std::string IdPayload::to_string() const {
  switch (type) {
    case IdType::kFqdn: case IdType::kUserFqdn: {
      std::string s(data.begin(), data.end());
      for (auto& c : s)
        if (c < 0x20 || c > 0x7e) c = '?';
      return s;
    }
    case IdType::kKeyId: return "keyid:" + core::to_hex(data);
    case IdType::kDerAsn1Dn: return "dn:" + core::to_hex(data);
    case IdType::kDerAsn1Gn: return "gn:" + core::to_hex(data);
    default: {
      auto r = range();
      return r ? r->to_string() : "?";
    }
  }
}

IdPayload IdPayload::from_range(const core::IpRange& r, std::uint8_t protocol, std::uint16_t port) {
  IdPayload id;
  id.protocol = protocol;
  id.port = port;
  const bool v6 = r.family() == core::Family::V6;
  const auto lo = r.lo.bytes(), hi = r.hi.bytes();
  if (r.lo == r.hi) {
    id.type = v6 ? IdType::kIpv6 : IdType::kIpv4;
    id.data.assign(lo.begin(), lo.end());
    return id;
  }
  // A prefix when first..last is one; else a range.
  if (const auto prefixes = r.to_prefixes(); prefixes.size() == 1) {
    id.type = v6 ? IdType::kIpv6Subnet : IdType::kIpv4Subnet;
    id.data.assign(lo.begin(), lo.end());
    Bytes mask(lo.size(), 0);
    for (std::size_t i = 0; i < prefixes[0].len; ++i) mask[i / 8] |= static_cast<std::uint8_t>(0x80 >> (i % 8));
    id.data.insert(id.data.end(), mask.begin(), mask.end());
    return id;
  }
  id.type = v6 ? IdType::kIpv6Range : IdType::kIpv4Range;
  id.data.assign(lo.begin(), lo.end());
  id.data.insert(id.data.end(), hi.begin(), hi.end());
  return id;
}

// ---- N, D, CERT, NAT-OA ---------------------------------------------------------------

std::optional<NotifyPayload> decode_notify(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  NotifyPayload n;
  std::uint8_t spi_size = 0;
  ByteSpan spi;
  if (!r.read_u32(n.doi) || !r.read_u8(n.protocol) || !r.read_u8(spi_size) || !r.read_u16(n.type) ||
      !r.read_bytes(spi_size, spi))
    return none<NotifyPayload>(err, Notify::kPayloadMalformed, "N: truncated");
  // DOI 0 is what some implementations send for ISAKMP-level notifies.
  if (n.doi != kDoiIpsec && n.doi != 0) return none<NotifyPayload>(err, Notify::kDoiNotSupported, "N: DOI " + std::to_string(n.doi));
  n.spi.assign(spi.begin(), spi.end());
  const ByteSpan d = r.rest();
  n.data.assign(d.begin(), d.end());
  return n;
}

Bytes encode_notify(const NotifyPayload& n) {
  Bytes out;
  core::ByteAppender a{out};
  a.u32(n.doi);
  a.u8(n.protocol);
  a.u8(static_cast<std::uint8_t>(n.spi.size()));
  a.u16(n.type);
  a.bytes(n.spi);
  a.bytes(n.data);
  return out;
}

std::optional<DeletePayload> decode_delete(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  DeletePayload d;
  std::uint16_t count = 0;
  if (!r.read_u32(d.doi) || !r.read_u8(d.protocol) || !r.read_u8(d.spi_size) || !r.read_u16(count))
    return none<DeletePayload>(err, Notify::kPayloadMalformed, "D: truncated");
  if (d.doi != kDoiIpsec) return none<DeletePayload>(err, Notify::kDoiNotSupported, "D: DOI " + std::to_string(d.doi));
  if (d.spi_size == 0 || count == 0)
    return none<DeletePayload>(err, Notify::kPayloadMalformed, "D: no SPI");
  if (static_cast<std::size_t>(d.spi_size) * count != r.remaining())
    return none<DeletePayload>(err, Notify::kPayloadMalformed,
                               "D: " + std::to_string(count) + " SPIs of " + std::to_string(d.spi_size) + " bytes in " +
                                   std::to_string(r.remaining()));
  for (unsigned i = 0; i < count; ++i) {
    ByteSpan s;
    r.read_bytes(d.spi_size, s);
    d.spis.emplace_back(s.begin(), s.end());
  }
  return d;
}

Bytes encode_delete(const DeletePayload& d) {
  Bytes out;
  core::ByteAppender a{out};
  a.u32(d.doi);
  a.u8(d.protocol);
  a.u8(d.spi_size);
  a.u16(static_cast<std::uint16_t>(d.spis.size()));
  for (const auto& s : d.spis) a.bytes(s);
  return out;
}

std::optional<CertPayload> decode_cert(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  CertPayload c;
  if (!r.read_u8(c.encoding) || r.remaining() == 0)
    return none<CertPayload>(err, Notify::kInvalidCertEncoding, "CERT: truncated");
  const ByteSpan d = r.rest();
  c.data.assign(d.begin(), d.end());
  return c;
}

Bytes encode_cert(const CertPayload& c) {
  Bytes out{c.encoding};
  out.insert(out.end(), c.data.begin(), c.data.end());
  return out;
}

std::optional<NatOaPayload> decode_nat_oa(ByteSpan body, DecodeError& err) {
  ByteReader r(body);
  std::uint8_t type = 0, r1 = 0;
  std::uint16_t r2 = 0;
  if (!r.read_u8(type) || !r.read_u8(r1) || !r.read_u16(r2))
    return none<NatOaPayload>(err, Notify::kPayloadMalformed, "NAT-OA: truncated");
  const std::size_t n = type == 1 ? 4 : type == 5 ? 16 : 0;
  if (n == 0 || r.remaining() != n)
    return none<NatOaPayload>(err, Notify::kPayloadMalformed, "NAT-OA: ID type " + std::to_string(type));
  auto a = addr_from(r.rest());
  if (!a) return none<NatOaPayload>(err, Notify::kPayloadMalformed, "NAT-OA: address");
  return NatOaPayload{*a};
}

Bytes encode_nat_oa(const NatOaPayload& n) {
  const auto b = n.address.bytes();
  Bytes out{static_cast<std::uint8_t>(b.size() == 4 ? 1 : 5), 0, 0, 0};
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

// ---- whole messages ---------------------------------------------------------------------

bool decode_payloads(const std::vector<RawPayload>& chain, Message& m, DecodeError& err) {
  auto once = [&](const RawPayload& p, const void* already) {
    if (already) return fail(err, Notify::kPayloadMalformed, std::string("more than one ") + to_string(p.type) + " payload");
    return true;
  };
  for (const auto& p : chain) {
    switch (p.type) {
      case Payload::kSa: {
        if (!once(p, m.sa ? &m.sa : nullptr)) return false;
        auto sa = decode_sa(p.body, err);
        if (!sa) return false;
        m.sa = std::move(*sa);
        m.sa_body = p.body;
        break;
      }
      case Payload::kKe:
        if (!once(p, m.ke.empty() ? nullptr : &m.ke)) return false;
        if (p.body.empty()) return fail(err, Notify::kInvalidKeyInformation, "KE: empty");
        m.ke = p.body;
        break;
      case Payload::kNonce:
        if (!once(p, m.nonce.empty() ? nullptr : &m.nonce)) return false;
        // RFC 2409 5: between 8 and 256 bytes.
        if (p.body.size() < 8 || p.body.size() > 256)
          return fail(err, Notify::kPayloadMalformed, "NONCE: " + std::to_string(p.body.size()) + " bytes");
        m.nonce = p.body;
        break;
      case Payload::kHash:
        if (!once(p, m.hash.empty() ? nullptr : &m.hash)) return false;
        if (p.body.empty()) return fail(err, Notify::kInvalidHashInformation, "HASH: empty");
        m.hash = p.body;
        break;
      case Payload::kSig:
        if (!once(p, m.sig.empty() ? nullptr : &m.sig)) return false;
        if (p.body.empty()) return fail(err, Notify::kInvalidSignature, "SIG: empty");
        m.sig = p.body;
        break;
      case Payload::kId: {
        if (m.ids.size() >= 2) return fail(err, Notify::kPayloadMalformed, "more than two ID payloads");
        auto id = decode_id(p.body, err);
        if (!id) return false;
        m.ids.push_back(std::move(*id));
        m.id_bodies.push_back(p.body);
        break;
      }
      case Payload::kCert: {
        auto c = decode_cert(p.body, err);
        if (!c) return false;
        m.certs.push_back(std::move(*c));
        break;
      }
      case Payload::kCertReq:
        if (p.body.empty()) return fail(err, Notify::kCertTypeUnsupported, "CR: empty");
        m.cert_requests.push_back(p.body);
        break;
      case Payload::kNotify: {
        auto n = decode_notify(p.body, err);
        if (!n) return false;
        m.notifies.push_back(std::move(*n));
        break;
      }
      case Payload::kDelete: {
        auto d = decode_delete(p.body, err);
        if (!d) return false;
        m.deletes.push_back(std::move(*d));
        break;
      }
      case Payload::kVendor:
        m.vendor_ids.push_back(p.body);
        break;
      case Payload::kNatD: case Payload::kNatDDraft:
        if (p.body.empty()) return fail(err, Notify::kPayloadMalformed, "NAT-D: empty");
        m.nat_d.push_back(p.body);
        break;
      case Payload::kNatOa: case Payload::kNatOaDraft: {
        auto n = decode_nat_oa(p.body, err);
        if (!n) return false;
        m.nat_oa.push_back(*n);
        break;
      }
      case Payload::kAttribute:
        m.attributes.push_back(p.body);
        break;
      default:
        return fail(err, Notify::kInvalidPayloadType, std::string("payload ") + to_string(p.type) + " at the top level");
    }
  }
  return true;
}

std::optional<Message> decode_plain(ByteSpan msg, DecodeError& err) {
  auto h = parse_header(msg, err);
  if (!h) return std::nullopt;
  if (h->encrypted()) return none<Message>(err, Notify::kInvalidFlags, "encrypted message where a plain one belongs");
  Message m;
  m.header = *h;
  if (!parse_chain(msg.subspan(kHeaderLen), h->next, m.raw, err)) return std::nullopt;
  if (!decode_payloads(m.raw, m, err)) return std::nullopt;
  return m;
}

std::string vendor_name(ByteSpan vid) {
  const std::string hex = core::to_hex(vid);
  for (const auto& [h, name] : kVendors)
    if (hex == h) return name;
  // DPD and strongSwan VIDs may carry a version suffix after their prefix.
  if (hex.rfind("afcad71368a1f1c96b8696fc7757", 0) == 0) return "DPD";
  return {};
}

}  // namespace ipsecgw::ike::v1
