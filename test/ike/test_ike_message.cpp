// IKEv2 payload codec: round trips, and truncation of every payload and of a
// whole message at every length.
#include <catch2/catch.hpp>

#include "ike/message.hpp"
#include "ike/proposals.hpp"

using namespace ipsecgw;

namespace {
core::Proposal prop(const char* s) {
  std::string bad;
  return *core::parse_proposal(s, bad);
}
}  // namespace

TEST_CASE("IKEv2 payloads round trip and every truncation fails cleanly", "[ike][codec][truncation]") {
  std::string why;
  ike::SaPayload sa;
  sa.proposals.push_back(ike::ike_offer(prop("aes256gcm16-prfsha384-x25519-ecp256"), 1));
  sa.proposals.push_back(ike::ike_offer(prop("aes128-sha256-modp2048"), 2));
  const auto sa_b = ike::encode_sa(sa);
  auto sa2 = ike::decode_sa(sa_b, why);
  REQUIRE(sa2);
  REQUIRE(sa2->proposals.size() == 2);
  CHECK(sa2->proposals[1].transforms == sa.proposals[1].transforms);

  const auto ke_b = ike::encode_ke({31, core::Bytes(32, 7)});
  const auto n_b = ike::encode_notify({ike::ProtocolId::kEsp, {1, 2, 3, 4}, 16393, {9}});
  const auto id_b = ike::encode_id(ike::id_from_string("gw-a.example"));
  const auto auth_b = ike::encode_auth({ike::AuthMethod::kPsk, core::Bytes(32, 1)});
  ike::TrafficSelector t4, t6;
  t4.start = *core::IpAddress::parse("10.1.0.0");
  t4.end = *core::IpAddress::parse("10.1.0.255");
  t6.start = *core::IpAddress::parse("fd01::");
  t6.end = *core::IpAddress::parse("fd01::ffff");
  t6.ip_proto = 17;
  t6.start_port = t6.end_port = 53;
  const auto ts_b = ike::encode_ts({t4, t6});
  const auto del_b = ike::encode_delete({ike::ProtocolId::kEsp, {0x1001, 0x2002}});

  auto ts2 = ike::decode_ts(ts_b, why);
  REQUIRE(ts2);
  CHECK((*ts2)[1] == t6);
  CHECK(ike::decode_id(id_b, why)->to_string() == "gw-a.example");
  CHECK(ike::decode_delete(del_b, why)->spis.size() == 2);
  CHECK(ike::decode_notify(n_b, why)->spi.size() == 4);

  // Strict prefixes of fixed-structure payloads must fail (never crash).
  for (std::size_t n = 0; n < sa_b.size(); ++n) CHECK_FALSE(ike::decode_sa({sa_b.data(), n}, why));
  for (std::size_t n = 0; n < ts_b.size(); ++n) CHECK_FALSE(ike::decode_ts({ts_b.data(), n}, why));
  for (std::size_t n = 0; n < del_b.size(); ++n) CHECK_FALSE(ike::decode_delete({del_b.data(), n}, why));
  for (std::size_t n = 0; n < 4; ++n) CHECK_FALSE(ike::decode_notify({n_b.data(), n}, why));
  for (std::size_t n = 0; n < 5; ++n) CHECK_FALSE(ike::decode_ke({ke_b.data(), n}, why));
  for (std::size_t n = 0; n < 5; ++n) CHECK_FALSE(ike::decode_id({id_b.data(), n}, why));
  for (std::size_t n = 0; n < 5; ++n) CHECK_FALSE(ike::decode_auth({auth_b.data(), n}, why));

  // A whole message: header + chain; every truncation is refused by the
  // header's length check or by the chain parser.
  std::vector<ike::Payload> pl = {{ike::PayloadType::kSa, false, sa_b, {}},
                                  {ike::PayloadType::kKe, false, ke_b, {}},
                                  {ike::PayloadType::kNonce, false, core::Bytes(32, 5), {}},
                                  {ike::PayloadType::kNotify, false, n_b, {}},
                                  {ike::PayloadType::kTsi, false, ts_b, {}},
                                  {ike::PayloadType::kDelete, false, del_b, {}}};
  const auto body = ike::encode_chain(pl);
  ike::Header h;
  h.spi_i = 42;
  h.next = ike::PayloadType::kSa;
  h.length = static_cast<std::uint32_t>(ike::kHeaderLen + body.size());
  core::Bytes msg;
  ike::write_header(msg, h);
  msg.insert(msg.end(), body.begin(), body.end());
  auto hh = ike::parse_header(msg, why);
  REQUIRE(hh);
  std::vector<ike::Payload> out;
  REQUIRE(ike::parse_chain(core::ByteSpan(msg).subspan(ike::kHeaderLen), hh->next, out, why));
  CHECK(out.size() == pl.size());
  for (std::size_t n = 0; n < msg.size(); ++n) {
    core::ByteSpan cut(msg.data(), n);
    CHECK_FALSE(ike::parse_header(cut, why));
    if (n >= ike::kHeaderLen) {
      std::vector<ike::Payload> o;
      CHECK_FALSE(ike::parse_chain(cut.subspan(ike::kHeaderLen), h.next, o, why));
    }
  }
  // An unknown critical payload is refused and named.
  std::vector<ike::Payload> crit = {{static_cast<ike::PayloadType>(200), true, {1, 2}, {}}};
  std::uint8_t unsupported = 0;
  std::vector<ike::Payload> o;
  CHECK_FALSE(ike::parse_chain(ike::encode_chain(crit), static_cast<ike::PayloadType>(200), o, why, &unsupported));
  CHECK(unsupported == 200);
}
