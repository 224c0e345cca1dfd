#include "ike/ikev1_informational.hpp"

#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

namespace {
Bytes cookies(std::uint64_t cky_i, std::uint64_t cky_r) {
  Bytes b;
  core::ByteAppender a{b};
  a.u64(cky_i);
  a.u64(cky_r);
  return b;
}
}  // namespace

Bytes seal_informational(Phase1Sa& sa, std::uint32_t message_id, const std::vector<RawPayload>& payloads) {
  Header h;
  h.cky_i = sa.cky_i;
  h.cky_r = sa.cky_r;
  h.exchange = Exchange::kInformational;
  h.message_id = message_id;
  std::vector<RawPayload> pl{{Payload::kHash, qm_hash1(sa.suite.hash, sa.keys.a.span(), message_id, encode_chain(payloads))}};
  pl.insert(pl.end(), payloads.begin(), payloads.end());
  Bytes out = sa.cipher->seal(h, pl);
  sa.cipher->end_exchange(message_id);
  return out;
}

std::optional<Message> open_informational(Phase1Sa& sa, ByteSpan datagram, DecodeError& err) {
  auto h = parse_header(datagram, err);
  if (!h) return std::nullopt;
  auto fail = [&](Notify n, std::string why) -> std::optional<Message> {
    err.notify = n;
    err.detail = std::move(why);
    return std::nullopt;
  };
  if (h->exchange != Exchange::kInformational || h->cky_i != sa.cky_i || h->cky_r != sa.cky_r)
    return fail(Notify::kInvalidCookie, "not an Informational message of this ISAKMP SA");
  if (!h->encrypted() || h->message_id == 0)
    return fail(Notify::kInvalidFlags, "an unprotected Informational message");
  std::string why;
  auto plain = sa.cipher->open(datagram, why);
  Message m;
  m.header = *h;
  if (!plain || !parse_chain(*plain, h->next, m.raw, err, true))
    return fail(Notify::kInvalidHashInformation, "does not decrypt: " + (plain ? err.detail : why));
  if (m.raw.empty() || m.raw[0].type != Payload::kHash)
    return fail(Notify::kInvalidHashInformation, "the first payload is not HASH");
  if (!check_payload_rules(Exchange::kInformational, true, true, m.raw, err)) return std::nullopt;
  std::size_t rest_len = 0;
  for (std::size_t i = 1; i < m.raw.size(); ++i) rest_len += 4 + m.raw[i].body.size();
  const auto want =
      qm_hash1(sa.suite.hash, sa.keys.a.span(), h->message_id, ByteSpan(*plain).subspan(4 + m.raw[0].body.size(), rest_len));
  if (!core::ct_equal(want, m.raw[0].body)) return fail(Notify::kInvalidHashInformation, "HASH(1) does not verify");
  // Only now is the message the peer's: its one-message exchange ends (a
  // forged one must not end another exchange's IV chain).
  sa.cipher->end_exchange(h->message_id);
  if (!decode_payloads(m.raw, m, err)) return std::nullopt;
  return m;
}

RawPayload delete_isakmp(std::uint64_t cky_i, std::uint64_t cky_r) {
  return {Payload::kDelete, encode_delete({kDoiIpsec, 1, 16, {cookies(cky_i, cky_r)}})};
}

RawPayload delete_esp(const std::vector<std::uint32_t>& spis, std::uint8_t protocol) {
  DeletePayload d{kDoiIpsec, protocol, 4, {}};
  for (auto s : spis) {
    Bytes b;
    core::ByteAppender{b}.u32(s);
    d.spis.push_back(std::move(b));
  }
  return {Payload::kDelete, encode_delete(d)};
}

RawPayload initial_contact(std::uint64_t cky_i, std::uint64_t cky_r) {
  return {Payload::kNotify,
          encode_notify({kDoiIpsec, 1, static_cast<std::uint16_t>(Notify::kInitialContact), cookies(cky_i, cky_r), {}})};
}

RawPayload dpd_notify(bool ack, std::uint64_t cky_i, std::uint64_t cky_r, std::uint32_t seq) {
  Bytes s;
  core::ByteAppender{s}.u32(seq);
  const auto type = static_cast<std::uint16_t>(ack ? Notify::kRUThereAck : Notify::kRUThere);
  return {Payload::kNotify, encode_notify({kDoiIpsec, 1, type, cookies(cky_i, cky_r), s})};
}

std::optional<std::uint32_t> dpd_sequence(const NotifyPayload& n, std::uint64_t cky_i, std::uint64_t cky_r) {
  if (n.type != static_cast<std::uint16_t>(Notify::kRUThere) && n.type != static_cast<std::uint16_t>(Notify::kRUThereAck))
    return std::nullopt;
  // RFC 3706 5: the SPI is the cookies of this ISAKMP SA, the data a 4-byte sequence number.
  if (n.protocol != 1 || n.spi != cookies(cky_i, cky_r) || n.data.size() != 4) return std::nullopt;
  return core::load_be32(n.data.data());
}

}  // namespace ipsecgw::ike::v1
