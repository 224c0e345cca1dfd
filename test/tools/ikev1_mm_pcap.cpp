// Writes an IKEv1 Main Mode with a pre-shared key and a Quick Mode with PFS, both sides played by
// ipsecgw's own IKEv1 pieces (ISAKMP codec, proposals, RFC 2409 key
// derivation, ISAKMP encryption), as a pcap, and the Wireshark key table
// for it, so that tshark, an independent implementation, can check the
// encrypted messages: Main Mode 5 and 6 and the three Quick Mode messages: if the encryption key, the phase-1 IV or its
// chaining were wrong, tshark could not read the identities inside.
//
//   ikev1_mm_pcap SUITE OUT.pcap OUT_KEYTABLE [--wrong-key]
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "core/crypto.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/ikev1_cipher.hpp"
#include "ike/ikev1_crypto.hpp"
#include "ike/ikev1_phase2.hpp"
#include "ike/ikev1_proposals.hpp"
#include "ike/isakmp.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;

namespace {

void put16(core::Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

// IPv4 + UDP 500 -> 500 around an ISAKMP message (UDP checksum 0: allowed for IPv4).
core::Bytes udp_packet(bool from_initiator, const core::Bytes& isakmp) {
  const std::uint8_t a[4] = {198, 51, 100, 1}, b[4] = {198, 51, 100, 2};
  core::Bytes p;
  const auto total = static_cast<std::uint16_t>(20 + 8 + isakmp.size());
  p.insert(p.end(), {0x45, 0});
  put16(p, total);
  p.insert(p.end(), {0, 1, 0x40, 0, 64, 17, 0, 0});
  p.insert(p.end(), from_initiator ? a : b, (from_initiator ? a : b) + 4);
  p.insert(p.end(), from_initiator ? b : a, (from_initiator ? b : a) + 4);
  std::uint32_t sum = 0;
  for (std::size_t i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  p[10] = static_cast<std::uint8_t>(~sum >> 8);
  p[11] = static_cast<std::uint8_t>(~sum);
  put16(p, 500);
  put16(p, 500);
  put16(p, static_cast<std::uint16_t>(8 + isakmp.size()));
  put16(p, 0);
  p.insert(p.end(), isakmp.begin(), isakmp.end());
  return p;
}

void write_pcap(const std::string& path, const std::vector<std::pair<bool, core::Bytes>>& msgs) {
  std::ofstream f(path, std::ios::binary);
  auto u32 = [&](std::uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
  auto u16 = [&](std::uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
  u32(0xa1b2c3d4);
  u16(2);
  u16(4);
  u32(0);
  u32(0);
  u32(65535);
  u32(101);  // LINKTYPE_RAW: IPv4 packets
  std::uint32_t t = 1700000000;
  for (const auto& [from_i, m] : msgs) {
    const auto pkt = udp_packet(from_i, m);
    u32(t++);
    u32(0);
    u32(static_cast<std::uint32_t>(pkt.size()));
    u32(static_cast<std::uint32_t>(pkt.size()));
    f.write(reinterpret_cast<const char*>(pkt.data()), static_cast<std::streamsize>(pkt.size()));
  }
}

v1::RawPayload raw(v1::Payload t, core::Bytes b) { return {t, std::move(b)}; }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: ikev1_mm_pcap SUITE OUT.pcap OUT_KEYTABLE [--wrong-key]\n";
    return 2;
  }
  std::string bad, why;
  auto prop = core::parse_proposal(argv[1], bad);
  if (!prop) return std::cerr << "bad suite " << bad << "\n", 2;
  auto suites = v1::phase1_suites(*prop, v1::AuthMethod::kPsk, 28800, why);
  if (suites.empty()) return std::cerr << why << "\n", 2;
  const auto s = suites[0];
  const core::Bytes psk{'a', ' ', 'l', 'o', 'n', 'g', ' ', 's', 'e', 'c', 'r', 'e', 't'};

  std::uint64_t cky_i = 0, cky_r = 0;
  core::random_bytes({reinterpret_cast<std::uint8_t*>(&cky_i), 8});
  core::random_bytes({reinterpret_cast<std::uint8_t*>(&cky_r), 8});
  v1::Header h;
  h.cky_i = cky_i;
  h.exchange = v1::Exchange::kMain;
  std::vector<std::pair<bool, core::Bytes>> msgs;

  // (1) I -> R  SA (one proposal, our transform), VID (RFC 3947 NAT-T).
  v1::SaPayload sai{v1::kDoiIpsec, v1::kSitIdentityOnly, {{1, 1, {}, {v1::encode_phase1(s, 1)}}}};
  const core::Bytes sai_b = v1::encode_sa(sai);
  msgs.push_back({true, v1::encode_plain(h, {raw(v1::Payload::kSa, sai_b),
                                             raw(v1::Payload::kVendor, *core::from_hex("4a131c81070358455c5728f20e95452f"))})});
  // (2) R -> I  SA (the chosen transform).
  h.cky_r = cky_r;
  msgs.push_back({false, v1::encode_plain(h, {raw(v1::Payload::kSa, sai_b)})});
  // (3) I -> R  KE, NONCE; (4) R -> I  KE, NONCE.
  auto di = DhKey::generate(s.group, why), dr = DhKey::generate(s.group, why);
  if (!di || !dr) return std::cerr << why << "\n", 1;
  core::Bytes ni(16), nr(16);
  core::random_bytes(ni);
  core::random_bytes(nr);
  msgs.push_back({true, v1::encode_plain(h, {raw(v1::Payload::kKe, di->public_value()), raw(v1::Payload::kNonce, ni)})});
  msgs.push_back({false, v1::encode_plain(h, {raw(v1::Payload::kKe, dr->public_value()), raw(v1::Payload::kNonce, nr)})});
  // Keys (RFC 2409 5): SKEYID = prf(psk, Ni | Nr), then SKEYID_d/_a/_e and the cipher key.
  auto gxy = di->shared_secret(dr->public_value(), why);
  if (!gxy) return std::cerr << why << "\n", 1;
  auto k = v1::derive_phase1(s.hash, v1::skeyid_psk(s.hash, psk, ni, nr), gxy->span(), cky_i, cky_r);
  const auto key = v1::encryption_key(s.hash, k.e.span(), s.enc.key_bytes);
  const auto iv = v1::phase1_iv(s.hash, di->public_value(), dr->public_value(), core::block_len(s.enc.alg));
  auto ci = v1::Ikev1Cipher::create(s, key.span(), iv);
  auto cr = v1::Ikev1Cipher::create(s, key.span(), iv);
  if (!ci || !cr) return std::cerr << "cipher\n", 1;
  // (5) I -> R  encrypted: IDii (FQDN gw-a.example, UDP 500), HASH_I.
  v1::IdPayload idi{v1::IdType::kFqdn, 17, 500, core::Bytes{'g', 'w', '-', 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e'}};
  const auto idi_b = v1::encode_id(idi);
  const auto hi = v1::hash_i(s.hash, k.skeyid.span(), di->public_value(), dr->public_value(), cky_i, cky_r, sai_b, idi_b);
  const auto m5 = ci->seal(h, {raw(v1::Payload::kId, idi_b), raw(v1::Payload::kHash, hi)});
  msgs.push_back({true, m5});
  auto p5 = cr->open(m5, why);
  if (!p5) return std::cerr << why << "\n", 1;
  cr->commit(m5);
  // (6) R -> I  encrypted: IDir (FQDN gw-b.example), HASH_R; its IV is the last block of (5).
  v1::IdPayload idr{v1::IdType::kFqdn, 17, 500, core::Bytes{'g', 'w', '-', 'b', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e'}};
  const auto idr_b = v1::encode_id(idr);
  const auto hr = v1::hash_r(s.hash, k.skeyid.span(), di->public_value(), dr->public_value(), cky_i, cky_r, sai_b, idr_b);
  const auto m6 = cr->seal(h, {raw(v1::Payload::kId, idr_b), raw(v1::Payload::kHash, hr)});
  msgs.push_back({false, m6});
  // The initiator reads (6) back through its own chain.
  auto p6 = ci->open(m6, why);
  if (!p6) return std::cerr << why << "\n", 1;
  std::vector<v1::RawPayload> chain;
  v1::DecodeError err;
  if (!v1::parse_chain(*p6, v1::Payload::kId, chain, err, true) || chain.size() != 2) return std::cerr << err.detail << "\n", 1;
  ci->commit(m6);

  // Quick Mode (RFC 2409 5.5) on its own IV chain, M-ID 0x0badcafe, with PFS:
  // (1) I -> R  HASH(1), SA, Ni, KE, IDci, IDcr;  (2) R -> I  HASH(2), SA, Nr, KE, IDci, IDcr;
  // (3) I -> R  HASH(3).
  const std::uint32_t mid = 0x0badcafe;
  h.exchange = v1::Exchange::kQuick;
  h.message_id = mid;
  auto esp = core::parse_proposal("aes128-sha256-modp2048", bad);
  const auto p2 = v1::phase2_suites(*esp, v1::EncapMode::kTunnel, 3600, 0, why).at(0);
  auto qi = DhKey::generate(*p2.pfs, why), qr = DhKey::generate(*p2.pfs, why);
  if (!qi || !qr) return std::cerr << why << "\n", 1;
  core::Bytes ni2(16), nr2(16);
  core::random_bytes(ni2);
  core::random_bytes(nr2);
  const auto idci = v1::encode_id(v1::IdPayload::from_range(*core::IpRange::parse("10.1.0.0/24")));
  const auto idcr = v1::encode_id(v1::IdPayload::from_range(*core::IpRange::parse("10.2.0.0/24")));
  auto qm = [&](std::uint32_t spi, const core::Bytes& nonce, const DhKey& ke) {
    v1::SaPayload sa{v1::kDoiIpsec, v1::kSitIdentityOnly, {v1::esp_proposal(1, spi, {p2})}};
    return std::vector<v1::RawPayload>{raw(v1::Payload::kSa, v1::encode_sa(sa)), raw(v1::Payload::kNonce, nonce),
                                       raw(v1::Payload::kKe, ke.public_value()), raw(v1::Payload::kId, idci),
                                       raw(v1::Payload::kId, idcr)};
  };
  auto with_hash = [](core::Bytes hash, std::vector<v1::RawPayload> rest) {
    rest.insert(rest.begin(), raw(v1::Payload::kHash, std::move(hash)));
    return rest;
  };
  const auto rest1 = qm(0x11223344, ni2, *qi);
  const auto q1 = ci->seal(h, with_hash(v1::qm_hash1(s.hash, k.a.span(), mid, v1::encode_chain(rest1)), rest1));
  msgs.push_back({true, q1});
  if (!cr->open(q1, why)) return std::cerr << why << "\n", 1;
  cr->commit(q1);
  const auto rest2 = qm(0x55667788, nr2, *qr);
  const auto q2 = cr->seal(h, with_hash(v1::qm_hash2(s.hash, k.a.span(), mid, ni2, v1::encode_chain(rest2)), rest2));
  msgs.push_back({false, q2});
  if (!ci->open(q2, why)) return std::cerr << why << "\n", 1;
  ci->commit(q2);
  const auto q3 = ci->seal(h, {raw(v1::Payload::kHash, v1::qm_hash3(s.hash, k.a.span(), mid, ni2, nr2))});
  msgs.push_back({true, q3});
  auto p3 = cr->open(q3, why);
  if (!p3) return std::cerr << why << "\n", 1;
  write_pcap(argv[2], msgs);
  // Wireshark's ikev1_decryption_table: initiator cookie, encryption key (hex).
  core::Bytes kb(key.span().begin(), key.span().end());
  if (argc > 4 && std::string(argv[4]) == "--wrong-key") kb[0] ^= 0xff;
  core::Bytes cb;
  core::ByteAppender{cb}.u64(cky_i);
  std::ofstream(argv[3]) << core::to_hex(cb) << "," << core::to_hex(kb) << "\n";
  std::cout << s.name() << ": cookie " << core::to_hex(cb) << "\n";
  return 0;
}
