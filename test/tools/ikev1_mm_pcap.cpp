// Writes an IKEv1 Main Mode with a pre-shared key and a Quick Mode with PFS,
// each played in both roles by ipsecgw's exchange objects (ike::v1::MainMode,
// ike::v1::QuickMode), as a pcap, and the Wireshark key table for it, so that
// tshark, an independent implementation, can check the encrypted messages
// (Main Mode 5 and 6, Quick Mode 1 to 3, an R-U-THERE and a DELETE): with a
// wrong key, IV or IV chain it could not read them.
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
#include "ike/ikev1_informational.hpp"
#include "ike/ikev1_main_mode.hpp"
#include "ike/ikev1_phase2.hpp"
#include "ike/ikev1_quick_mode.hpp"
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
  auto mc_i = cfg("gw-a.example"), mc_r = cfg("gw-b.example");
  mc_i.local_addr = mc_r.remote_addr = *core::IpAddress::parse("198.51.100.1");
  mc_i.remote_addr = mc_r.local_addr = *core::IpAddress::parse("198.51.100.2");
  v1::MainMode mi(true, std::move(mc_i)), mr(false, std::move(mc_r));
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
  const std::uint64_t cky_i = sai.cky_i;
  const auto key = v1::encryption_key(s.hash, sai.keys.e.span(), s.enc.key_bytes);

  // Quick Mode with PFS, both sides played by ike::v1::QuickMode on the ISAKMP SA just made.
  auto qcfg = [&](const char* local, const char* remote) {
    v1::QuickModeConfig c;
    c.esp_proposals = {*core::parse_proposal("aes128-sha256-modp2048", bad)};
    c.local_ts = *core::IpRange::parse(local);
    c.remote_ts = *core::IpRange::parse(remote);
    return c;
  };
  v1::QuickMode qi(true, sai, qcfg("10.1.0.0/24", "10.2.0.0/24"), 0x0badcafe, 0x11223344);
  v1::QuickMode qr(false, sar, qcfg("10.2.0.0/24", "10.1.0.0/24"), 0, 0x55667788);
  for (int n = 1; n <= 3; ++n) {
    auto& from = n == 2 ? qr : qi;
    auto& to = n == 2 ? qi : qr;
    auto m = from.build();
    if (!m) return std::cerr << "Quick Mode: " << from.error() << "\n", 1;
    msgs.push_back({n != 2, *m});
    if (!to.process(*m)) return std::cerr << "Quick Mode: " << to.error() << "\n", 1;
  }
  if (!qi.done() || !qr.done()) return std::cerr << "Quick Mode did not complete\n", 1;
  // Informational: B -> A  R-U-THERE 7 (RFC 3706); A -> B  DELETE of the ESP SA it receives on.
  {
    v1::DecodeError derr;
    const auto dpd = v1::seal_informational(sar, 0x0dd0dd01, {v1::dpd_notify(false, sar.cky_i, sar.cky_r, 7)});
    msgs.push_back({false, dpd});
    if (!v1::open_informational(sai, dpd, derr)) return std::cerr << "DPD: " << derr.detail << "\n", 1;
    const auto del = v1::seal_informational(sai, 0x0dd0dd02, {v1::delete_esp({qi.result().spi_in})});
    msgs.push_back({true, del});
    if (!v1::open_informational(sar, del, derr)) return std::cerr << "DELETE: " << derr.detail << "\n", 1;
  }
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
