#include "ike/message.hpp"

#include <cstdio>

namespace ipsecgw::ike {

using core::ByteReader;

const char* to_string(Exchange e) noexcept {
  switch (e) {
    case Exchange::kSaInit: return "IKE_SA_INIT";
    case Exchange::kAuth: return "IKE_AUTH";
    case Exchange::kCreateChildSa: return "CREATE_CHILD_SA";
    case Exchange::kInformational: return "INFORMATIONAL";
  }
  return "UNKNOWN_EXCHANGE";
}

std::string notify_name(std::uint16_t type) {
  switch (static_cast<Notify>(type)) {
    case Notify::kUnsupportedCriticalPayload: return "UNSUPPORTED_CRITICAL_PAYLOAD";
    case Notify::kInvalidIkeSpi: return "INVALID_IKE_SPI";
    case Notify::kInvalidMajorVersion: return "INVALID_MAJOR_VERSION";
    case Notify::kInvalidSyntax: return "INVALID_SYNTAX";
    case Notify::kInvalidMessageId: return "INVALID_MESSAGE_ID";
    case Notify::kInvalidSpi: return "INVALID_SPI";
    case Notify::kNoProposalChosen: return "NO_PROPOSAL_CHOSEN";
    case Notify::kInvalidKePayload: return "INVALID_KE_PAYLOAD";
    case Notify::kAuthenticationFailed: return "AUTHENTICATION_FAILED";
    case Notify::kSinglePairRequired: return "SINGLE_PAIR_REQUIRED";
    case Notify::kNoAdditionalSas: return "NO_ADDITIONAL_SAS";
    case Notify::kInternalAddressFailure: return "INTERNAL_ADDRESS_FAILURE";
    case Notify::kFailedCpRequired: return "FAILED_CP_REQUIRED";
    case Notify::kTsUnacceptable: return "TS_UNACCEPTABLE";
    case Notify::kInvalidSelectors: return "INVALID_SELECTORS";
    case Notify::kTemporaryFailure: return "TEMPORARY_FAILURE";
    case Notify::kChildSaNotFound: return "CHILD_SA_NOT_FOUND";
    case Notify::kInitialContact: return "INITIAL_CONTACT";
    case Notify::kSetWindowSize: return "SET_WINDOW_SIZE";
    case Notify::kAdditionalTsPossible: return "ADDITIONAL_TS_POSSIBLE";
    case Notify::kIpcompSupported: return "IPCOMP_SUPPORTED";
    case Notify::kNatDetectionSourceIp: return "NAT_DETECTION_SOURCE_IP";
    case Notify::kNatDetectionDestinationIp: return "NAT_DETECTION_DESTINATION_IP";
    case Notify::kCookie: return "COOKIE";
    case Notify::kUseTransportMode: return "USE_TRANSPORT_MODE";
    case Notify::kHttpCertLookupSupported: return "HTTP_CERT_LOOKUP_SUPPORTED";
    case Notify::kRekeySa: return "REKEY_SA";
    case Notify::kEspTfcPaddingNotSupported: return "ESP_TFC_PADDING_NOT_SUPPORTED";
    case Notify::kNonFirstFragmentsAlso: return "NON_FIRST_FRAGMENTS_ALSO";
    case Notify::kMobikeSupported: return "MOBIKE_SUPPORTED";
    case Notify::kMultipleAuthSupported: return "MULTIPLE_AUTH_SUPPORTED";
    case Notify::kRedirectSupported: return "REDIRECT_SUPPORTED";
    case Notify::kIkev2FragmentationSupported: return "IKEV2_FRAGMENTATION_SUPPORTED";
    case Notify::kSignatureHashAlgorithms: return "SIGNATURE_HASH_ALGORITHMS";
  }
  return "NOTIFY(" + std::to_string(type) + ")";
}

std::optional<RawHeader> read_raw_header(ByteSpan msg) {
  ByteReader r(msg);
  RawHeader h;
  if (!r.read_u64(h.spi_i) || !r.read_u64(h.spi_r) || !r.read_u8(h.next) || !r.read_u8(h.version) ||
      !r.read_u8(h.exchange) || !r.read_u8(h.flags) || !r.read_u32(h.message_id) || !r.read_u32(h.length))
    return std::nullopt;
  return h;
}

void write_raw_header(Bytes& out, const RawHeader& h) {
  core::ByteAppender a{out};
  a.u64(h.spi_i);
  a.u64(h.spi_r);
  a.u8(h.next);
  a.u8(h.version);
  a.u8(h.exchange);
  a.u8(h.flags);
  a.u32(h.message_id);
  a.u32(h.length);
}

std::optional<Header> parse_header(ByteSpan msg, std::string& why) {
  const auto raw = read_raw_header(msg);
  if (!raw) {
    why = "shorter than an IKE header (" + std::to_string(msg.size()) + " bytes)";
    return std::nullopt;
  }
  Header h;
  h.spi_i = raw->spi_i;
  h.spi_r = raw->spi_r;
  h.version = raw->version;
  h.flags = raw->flags;
  h.message_id = raw->message_id;
  h.length = raw->length;
  const auto next = raw->next;
  const auto exch = raw->exchange;
  h.next = static_cast<PayloadType>(next);
  h.exchange = static_cast<Exchange>(exch);
  if (h.length != msg.size()) {
    why = "length field " + std::to_string(h.length) + " but datagram has " +
          std::to_string(msg.size()) + " bytes";
    return std::nullopt;
  }
  return h;
}

void write_header(Bytes& out, const Header& h) {
  write_raw_header(out, {h.spi_i, h.spi_r, static_cast<std::uint8_t>(h.next), h.version,
                         static_cast<std::uint8_t>(h.exchange), h.flags, h.message_id, h.length});
}

namespace {
bool known(PayloadType t) {
  switch (t) {
    case PayloadType::kSa: case PayloadType::kKe: case PayloadType::kIdi: case PayloadType::kIdr:
    case PayloadType::kCert: case PayloadType::kCertReq: case PayloadType::kAuth:
    case PayloadType::kNonce: case PayloadType::kNotify: case PayloadType::kDelete:
    case PayloadType::kVendor: case PayloadType::kTsi: case PayloadType::kTsr:
    case PayloadType::kSk: case PayloadType::kCp: case PayloadType::kEap: case PayloadType::kSkf:
      return true;
    default:
      return false;
  }
}
}  // namespace

bool parse_chain(ByteSpan data, PayloadType first, std::vector<Payload>& out, std::string& why,
                 std::uint8_t* unsupported_critical) {
  ByteReader r(data);
  PayloadType type = first;
  std::size_t count = 0;
  while (type != PayloadType::kNone) {
    if (++count > 256) {
      why = "more than 256 payloads";
      return false;
    }
    std::uint8_t next = 0, flags = 0;
    std::uint16_t len = 0;
    if (!r.read_u8(next) || !r.read_u8(flags) || !r.read_u16(len)) {
      why = "payload " + std::to_string(static_cast<int>(type)) + ": truncated generic header";
      return false;
    }
    ByteSpan body;
    if (len < kGenericHeaderLen || !r.read_bytes(len - kGenericHeaderLen, body)) {
      why = "payload " + std::to_string(static_cast<int>(type)) + ": length " +
            std::to_string(len) + " runs past the message";
      return false;
    }
    Payload p;
    p.type = type;
    p.critical = flags & 0x80;
    p.body.assign(body.begin(), body.end());
    if (!known(type) && p.critical) {
      if (unsupported_critical) *unsupported_critical = static_cast<std::uint8_t>(type);
      why = "unsupported critical payload " + std::to_string(static_cast<int>(type));
      return false;
    }
    if (type == PayloadType::kSk || type == PayloadType::kSkf) {
      p.inner_first = static_cast<PayloadType>(next);
      out.push_back(std::move(p));
      if (r.remaining() != 0) {
        why = "data after the encrypted payload";
        return false;
      }
      return true;
    }
    out.push_back(std::move(p));
    type = static_cast<PayloadType>(next);
  }
  if (r.remaining() != 0) {
    why = std::to_string(r.remaining()) + " bytes after the last payload";
    return false;
  }
  return true;
}

Bytes encode_chain(const std::vector<Payload>& payloads) {
  Bytes out;
  core::ByteAppender a{out};
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const auto& p = payloads[i];
    PayloadType next = i + 1 < payloads.size() ? payloads[i + 1].type : PayloadType::kNone;
    if (p.type == PayloadType::kSk || p.type == PayloadType::kSkf) next = p.inner_first;
    a.u8(static_cast<std::uint8_t>(next));
    a.u8(p.critical ? 0x80 : 0);
    a.u16(static_cast<std::uint16_t>(p.body.size() + kGenericHeaderLen));
    a.bytes(p.body);
  }
  return out;
}

Bytes encode_plain(Header h, const std::vector<Payload>& pl) {
  const Bytes body = encode_chain(pl);
  h.next = pl.empty() ? PayloadType::kNone : pl.front().type;
  h.length = static_cast<std::uint32_t>(kHeaderLen + body.size());
  Bytes out;
  out.reserve(h.length);
  write_header(out, h);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

// ---- SA ---------------------------------------------------------------------

std::optional<SaPayload> decode_sa(ByteSpan body, std::string& why) {
  SaPayload sa;
  ByteReader r(body);
  std::uint8_t last = 2;
  while (last == 2 && r.remaining() > 0) {
    std::uint8_t reserved = 0, num = 0, proto = 0, spi_size = 0, ntrans = 0;
    std::uint16_t len = 0;
    if (!r.read_u8(last) || !r.read_u8(reserved) || !r.read_u16(len) || len < 8 ||
        len - 4u > r.remaining() + 0u) {
      why = "SA: truncated proposal";
      return std::nullopt;
    }
    ByteSpan pbody;
    if (!r.read_bytes(len - 4u, pbody)) {
      why = "SA: truncated proposal";
      return std::nullopt;
    }
    ByteReader pr(pbody);
    Proposal p;
    ByteSpan spi;
    if (!pr.read_u8(num) || !pr.read_u8(proto) || !pr.read_u8(spi_size) || !pr.read_u8(ntrans) ||
        !pr.read_bytes(spi_size, spi)) {
      why = "SA: truncated proposal header";
      return std::nullopt;
    }
    if (last != 0 && last != 2) {
      why = "SA: bad last-proposal value " + std::to_string(last);
      return std::nullopt;
    }
    p.number = num;
    p.protocol = static_cast<ProtocolId>(proto);
    p.spi.assign(spi.begin(), spi.end());
    std::uint8_t tlast = 3;
    for (unsigned i = 0; i < ntrans; ++i) {
      std::uint8_t res = 0, ttype = 0, res2 = 0;
      std::uint16_t tlen = 0, id = 0;
      if (tlast != 3 || !pr.read_u8(tlast) || !pr.read_u8(res) || !pr.read_u16(tlen) || tlen < 8) {
        why = "SA: truncated transform";
        return std::nullopt;
      }
      ByteSpan tbody;
      if (!pr.read_bytes(tlen - 4u, tbody)) {
        why = "SA: transform runs past its proposal";
        return std::nullopt;
      }
      ByteReader tr(tbody);
      (void)tr.read_u8(ttype);
      (void)tr.read_u8(res2);
      (void)tr.read_u16(id);
      Transform t;
      t.type = static_cast<TransformType>(ttype);
      t.id = id;
      while (tr.remaining() > 0) {
        std::uint16_t atype = 0, aval = 0;
        if (!tr.read_u16(atype) || !tr.read_u16(aval)) {
          why = "SA: truncated transform attribute";
          return std::nullopt;
        }
        if (atype & 0x8000) {
          if ((atype & 0x7fff) == 14) t.key_bits = aval;
          else {
            why = "SA: unknown transform attribute " + std::to_string(atype & 0x7fff);
            return std::nullopt;
          }
        } else if (!tr.skip(aval)) {  // TLV: length then value
          why = "SA: truncated transform attribute";
          return std::nullopt;
        }
      }
      p.transforms.push_back(t);
    }
    if (pr.remaining() != 0) {
      why = "SA: proposal length does not match its transforms";
      return std::nullopt;
    }
    sa.proposals.push_back(std::move(p));
  }
  if (r.remaining() != 0 || sa.proposals.empty() || last == 2) {
    why = sa.proposals.empty() ? "SA: no proposal"
          : last == 2          ? "SA: truncated (a proposal says more follow)"
                               : "SA: data after the last proposal";
    return std::nullopt;
  }
  return sa;
}

Bytes encode_sa(const SaPayload& sa) {
  Bytes out;
  core::ByteAppender a{out};
  for (std::size_t i = 0; i < sa.proposals.size(); ++i) {
    const auto& p = sa.proposals[i];
    Bytes tb;
    core::ByteAppender ta{tb};
    for (std::size_t k = 0; k < p.transforms.size(); ++k) {
      const auto& t = p.transforms[k];
      ta.u8(k + 1 < p.transforms.size() ? 3 : 0);
      ta.u8(0);
      ta.u16(t.key_bits ? 12 : 8);
      ta.u8(static_cast<std::uint8_t>(t.type));
      ta.u8(0);
      ta.u16(t.id);
      if (t.key_bits) {
        ta.u16(0x8000 | 14);
        ta.u16(t.key_bits);
      }
    }
    a.u8(i + 1 < sa.proposals.size() ? 2 : 0);
    a.u8(0);
    a.u16(static_cast<std::uint16_t>(8 + p.spi.size() + tb.size()));
    a.u8(p.number);
    a.u8(static_cast<std::uint8_t>(p.protocol));
    a.u8(static_cast<std::uint8_t>(p.spi.size()));
    a.u8(static_cast<std::uint8_t>(p.transforms.size()));
    a.bytes(p.spi);
    a.bytes(tb);
  }
  return out;
}

// ---- KE, Notify, ID, AUTH -------------------------------------------------------

std::optional<KePayload> decode_ke(ByteSpan body, std::string& why) {
  ByteReader r(body);
  KePayload ke;
  std::uint16_t reserved = 0;
  if (!r.read_u16(ke.group) || !r.read_u16(reserved) || r.remaining() == 0) {
    why = "KE: truncated";
    return std::nullopt;
  }
  auto rest = r.rest();
  ke.data.assign(rest.begin(), rest.end());
  return ke;
}

Bytes encode_ke(const KePayload& ke) {
  Bytes out;
  core::ByteAppender a{out};
  a.u16(ke.group);
  a.u16(0);
  a.bytes(ke.data);
  return out;
}

std::optional<NotifyPayload> decode_notify(ByteSpan body, std::string& why) {
  ByteReader r(body);
  NotifyPayload n;
  std::uint8_t proto = 0, spi_size = 0;
  ByteSpan spi;
  if (!r.read_u8(proto) || !r.read_u8(spi_size) || !r.read_u16(n.type) ||
      !r.read_bytes(spi_size, spi)) {
    why = "Notify: truncated";
    return std::nullopt;
  }
  n.protocol = static_cast<ProtocolId>(proto);
  n.spi.assign(spi.begin(), spi.end());
  auto rest = r.rest();
  n.data.assign(rest.begin(), rest.end());
  return n;
}

Bytes encode_notify(const NotifyPayload& n) {
  Bytes out;
  core::ByteAppender a{out};
  a.u8(static_cast<std::uint8_t>(n.protocol));
  a.u8(static_cast<std::uint8_t>(n.spi.size()));
  a.u16(n.type);
  a.bytes(n.spi);
  a.bytes(n.data);
  return out;
}

std::optional<IdPayload> decode_id(ByteSpan body, std::string& why) {
  if (body.size() < 5) {
    why = "ID: truncated";
    return std::nullopt;
  }
  IdPayload id;
  id.type = static_cast<IdType>(body[0]);
  id.data.assign(body.begin() + 4, body.end());
  if ((id.type == IdType::kIpv4 && id.data.size() != 4) ||
      (id.type == IdType::kIpv6 && id.data.size() != 16)) {
    why = "ID: address of the wrong length";
    return std::nullopt;
  }
  return id;
}

Bytes encode_id(const IdPayload& id) {
  Bytes out{static_cast<std::uint8_t>(id.type), 0, 0, 0};
  out.insert(out.end(), id.data.begin(), id.data.end());
  return out;
}

std::string IdPayload::to_string() const {
  switch (type) {
    case IdType::kIpv4:
      if (data.size() == 4) return core::IpAddress::v4(data).to_string();
      break;
    case IdType::kIpv6:
      if (data.size() == 16) return core::IpAddress::v6(data).to_string();
      break;
    case IdType::kFqdn:
    case IdType::kRfc822: {
      std::string s;
      for (auto c : data) s += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
      return s;
    }
    default:
      break;
  }
  return "id-type" + std::to_string(static_cast<int>(type)) + ":" + core::to_hex(data);
}

IdPayload id_from_string(const std::string& s) {
  IdPayload id;
  if (auto a = core::IpAddress::parse(s)) {
    id.type = a->is_v4() ? IdType::kIpv4 : IdType::kIpv6;
    auto b = a->bytes();
    id.data.assign(b.begin(), b.end());
    return id;
  }
  id.type = s.find('@') != std::string::npos ? IdType::kRfc822 : IdType::kFqdn;
  id.data.assign(s.begin(), s.end());
  return id;
}

std::optional<AuthPayload> decode_auth(ByteSpan body, std::string& why) {
  if (body.size() < 5) {
    why = "AUTH: truncated";
    return std::nullopt;
  }
  AuthPayload a;
  a.method = static_cast<AuthMethod>(body[0]);
  a.data.assign(body.begin() + 4, body.end());
  return a;
}

Bytes encode_auth(const AuthPayload& a) {
  Bytes out{static_cast<std::uint8_t>(a.method), 0, 0, 0};
  out.insert(out.end(), a.data.begin(), a.data.end());
  return out;
}

// ---- TS, Delete ---------------------------------------------------------------

std::string TrafficSelector::to_string() const {
  std::string s = start.to_string();
  if (start != end) s += "-" + end.to_string();
  if (ip_proto != 0 || start_port != 0 || end_port != 65535) {
    s += "[" + std::to_string(ip_proto);
    if (start_port != 0 || end_port != 65535) {
      s += "/" + std::to_string(start_port);
      if (end_port != start_port) s += "-" + std::to_string(end_port);
    }
    s += "]";
  }
  return s;
}

std::optional<std::vector<TrafficSelector>> decode_ts(ByteSpan body, std::string& why) {
  ByteReader r(body);
  std::uint8_t n = 0;
  if (!r.read_u8(n) || !r.skip(3) || n == 0) {
    why = "TS: truncated or empty";
    return std::nullopt;
  }
  std::vector<TrafficSelector> out;
  for (unsigned i = 0; i < n; ++i) {
    std::uint8_t type = 0, proto = 0;
    std::uint16_t len = 0;
    TrafficSelector ts;
    if (!r.read_u8(type) || !r.read_u8(proto) || !r.read_u16(len) ||
        !r.read_u16(ts.start_port) || !r.read_u16(ts.end_port)) {
      why = "TS: truncated selector";
      return std::nullopt;
    }
    const std::size_t alen = type == kTsIpv4Range ? 4 : type == kTsIpv6Range ? 16 : 0;
    if (alen == 0) {
      why = "TS: unsupported selector type " + std::to_string(type);
      return std::nullopt;
    }
    ByteSpan a, b;
    if (len != 8 + 2 * alen || !r.read_bytes(alen, a) || !r.read_bytes(alen, b)) {
      why = "TS: selector length does not match its type";
      return std::nullopt;
    }
    ts.ip_proto = proto;
    ts.start = alen == 4 ? core::IpAddress::v4(a) : core::IpAddress::v6(a);
    ts.end = alen == 4 ? core::IpAddress::v4(b) : core::IpAddress::v6(b);
    out.push_back(ts);
  }
  if (r.remaining() != 0) {
    why = "TS: data after the last selector";
    return std::nullopt;
  }
  return out;
}

Bytes encode_ts(const std::vector<TrafficSelector>& ts) {
  Bytes out;
  core::ByteAppender a{out};
  a.u8(static_cast<std::uint8_t>(ts.size()));
  a.u8(0);
  a.u16(0);
  for (const auto& t : ts) {
    const bool v4 = t.start.is_v4();
    a.u8(v4 ? kTsIpv4Range : kTsIpv6Range);
    a.u8(t.ip_proto);
    a.u16(v4 ? 16 : 40);
    a.u16(t.start_port);
    a.u16(t.end_port);
    a.bytes(t.start.bytes());
    a.bytes(t.end.bytes());
  }
  return out;
}

std::optional<DeletePayload> decode_delete(ByteSpan body, std::string& why) {
  ByteReader r(body);
  std::uint8_t proto = 0, spi_size = 0;
  std::uint16_t n = 0;
  if (!r.read_u8(proto) || !r.read_u8(spi_size) || !r.read_u16(n)) {
    why = "Delete: truncated";
    return std::nullopt;
  }
  DeletePayload d;
  d.protocol = static_cast<ProtocolId>(proto);
  if (d.protocol == ProtocolId::kIke) {
    if (spi_size != 0 || n != 0 || r.remaining() != 0) {
      why = "Delete: an IKE SA delete carries no SPI";
      return std::nullopt;
    }
    return d;
  }
  if ((d.protocol != ProtocolId::kEsp && d.protocol != ProtocolId::kAh) || spi_size != 4) {
    why = "Delete: bad protocol or SPI size";
    return std::nullopt;
  }
  for (unsigned i = 0; i < n; ++i) {
    std::uint32_t spi = 0;
    if (!r.read_u32(spi)) {
      why = "Delete: truncated SPI list";
      return std::nullopt;
    }
    d.spis.push_back(spi);
  }
  if (r.remaining() != 0) {
    why = "Delete: data after the SPIs";
    return std::nullopt;
  }
  return d;
}

Bytes encode_delete(const DeletePayload& d) {
  Bytes out;
  core::ByteAppender a{out};
  a.u8(static_cast<std::uint8_t>(d.protocol));
  a.u8(d.protocol == ProtocolId::kIke ? 0 : 4);
  a.u16(static_cast<std::uint16_t>(d.spis.size()));
  for (auto s : d.spis) a.u32(s);
  return out;
}

}  // namespace ipsecgw::ike
