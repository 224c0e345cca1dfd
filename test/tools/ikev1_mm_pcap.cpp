// Writes an IKEv1 Main Mode with a pre-shared key (ike::v1::MainMode playing
// both roles) and a Quick Mode with PFS built from ipsecgw's IKEv1 pieces
// (ISAKMP codec, phase-2 proposals, RFC 2409 hashes, ISAKMP encryption) as a
// pcap, and the Wireshark key table for it, so that tshark, an independent
// implementation, can check the encrypted messages (Main Mode 5 and 6, Quick
// Mode 1 to 3): with a wrong key, IV or IV chain it could not read them.
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
#include "ike/ikev1_main_mode.hpp"
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

  // Main Mode, both sides played by ike::v1::MainMode.
  auto cfg = [&](const char* me) {
    v1::MainModeConfig c;
    c.proposals = {*prop};
    c.psk = core::SecureBytes(psk);
    const std::string id = me;
    c.local_id = {v1::IdType::kFqdn, 17, 500, core::Bytes(id.begin(), id.end())};
    return c;
  };
  v1::MainMode mi(true, cfg("gw-a.example")), mr(false, cfg("gw-b.example"));
  std::vector<std::pair<bool, core::Bytes>> msgs;
  for (int round = 0; round < 6; ++round) {
    if (auto m = mi.build()) {
      msgs.push_back({true, *m});
      if (!mr.process(*m)) return std::cerr << "responder: " << mr.error() << "\n", 1;
    }
    if (auto m = mr.build()) {
      msgs.push_back({false, *m});
      if (!mi.process(*m)) return std::cerr << "initiator: " << mi.error() << "\n", 1;
    }
  }
  if (!mi.done() || !mr.done() || msgs.size() != 6) return std::cerr << "Main Mode did not complete\n", 1;
  auto sai = mi.take_sa(), sar = mr.take_sa();
  const auto& k = sai.keys;
  const std::uint64_t cky_i = sai.cky_i;
  auto& ci = sai.cipher;
  auto& cr = sar.cipher;
  const auto key = v1::encryption_key(s.hash, k.e.span(), s.enc.key_bytes);
  v1::Header h;
  h.cky_i = sai.cky_i;
  h.cky_r = sai.cky_r;

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
