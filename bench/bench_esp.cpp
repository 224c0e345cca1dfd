// Per-packet cost of ESP encrypt+decrypt through ipsecgw's SAs, next to the
// raw OpenSSL EVP cost of the same cryptographic work.
//
// For each AEAD and inner packet size (64, 512, 1400 bytes) one iteration is:
//   ipsecgw: copy the inner IPv4 packet into a Packet buffer,
//            OutboundSa::encapsulate, InboundSa::decapsulate (replay window,
//            padding, inner header and selector checks included);
//   raw EVP: copy the same number of plaintext bytes into a buffer, seal them
//            with EVP (12-byte nonce, 8 bytes of AAD, 16-byte tag) and open
//            them again, contexts prepared once, as ipsecgw's are.
// Each side runs in several interleaved rounds; the best round counts, so
// that a noisy neighbour on the machine inflates neither side alone.
// Target (issue 2): ipsecgw within 1.25x of raw EVP at 1400 bytes.
//
// Then AH (HMAC-SHA2-256-128, tunnel and transport) next to the raw EVP_MAC
// HMAC of the same bytes (computed and verified: two MACs, as AH's
// encapsulate + decapsulate), and ESP transport next to the raw AEAD.
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/packet.hpp"
#include "core/sa.hpp"
#include "esp/esp_sa.hpp"

using namespace ipsecgw;
using Clock = std::chrono::steady_clock;

namespace {

core::SaParams make_sa(const std::string& esp) {
  std::string why;
  auto t = core::single_esp_transform(esp, why);
  if (!t) throw std::runtime_error(esp + ": " + why);
  core::SaParams p;
  p.name = esp;
  p.transform = *t;
  p.local_addr = *core::IpAddress::parse("198.51.100.1");
  p.remote_addr = *core::IpAddress::parse("198.51.100.2");
  p.selectors.local = {core::IpRange::any(core::Family::V4)};
  p.selectors.remote = {core::IpRange::any(core::Family::V4)};
  p.replay_window = 64;
  core::Bytes k(t->keymat_len());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i * 13 + 5);
  p.out.spi = p.in.spi = 0x1001;
  p.out.keymat = core::SecureBytes(k);
  p.in.keymat = core::SecureBytes(k);
  return p;
}

core::Bytes inner_packet(std::size_t len, bool between_gateways = false) {
  core::Bytes b(len, 0xab);
  b[0] = 0x45;
  b[2] = static_cast<std::uint8_t>(len >> 8);
  b[3] = static_cast<std::uint8_t>(len);
  b[4] = b[5] = 0;  // ID
  b[6] = b[7] = 0;  // not a fragment
  b[8] = 64;
  b[9] = 17;  // UDP
  const std::uint8_t src[4] = {10, 1, 0, 2}, dst[4] = {10, 2, 0, 2};
  const std::uint8_t gsrc[4] = {198, 51, 100, 1}, gdst[4] = {198, 51, 100, 2};  // transport mode
  std::memcpy(&b[12], between_gateways ? gsrc : src, 4);
  std::memcpy(&b[16], between_gateways ? gdst : dst, 4);
  b[10] = b[11] = 0;
  std::uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(b[i] << 8 | b[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  b[10] = static_cast<std::uint8_t>(~sum >> 8);
  b[11] = static_cast<std::uint8_t>(~sum);
  b[20] = 0x30; b[21] = 0x39; b[22] = 0x00; b[23] = 0x35;  // ports 12345 -> 53
  b[24] = static_cast<std::uint8_t>((len - 20) >> 8);
  b[25] = static_cast<std::uint8_t>(len - 20);
  b[26] = b[27] = 0;
  return b;
}

// ns per iteration of fn over `iters` iterations.
template <typename Fn>
double time_ns(std::size_t iters, Fn&& fn) {
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < iters; ++i) fn();
  const auto t1 = Clock::now();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iters);
}

struct RawAead {
  EVP_CIPHER_CTX* enc = EVP_CIPHER_CTX_new();
  EVP_CIPHER_CTX* dec = EVP_CIPHER_CTX_new();
  ~RawAead() {
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
  }
  RawAead(const EVP_CIPHER* c, const std::uint8_t* key) {
    EVP_EncryptInit_ex(enc, c, nullptr, key, nullptr);
    EVP_DecryptInit_ex(dec, c, nullptr, key, nullptr);
  }
  // Seals and opens `len` bytes in place; false if the tag did not verify.
  bool round_trip(std::uint8_t* buf, int len, const std::uint8_t* nonce, const std::uint8_t* aad) {
    int out = 0;
    std::uint8_t tag[16];
    EVP_EncryptInit_ex(enc, nullptr, nullptr, nullptr, nonce);
    EVP_EncryptUpdate(enc, nullptr, &out, aad, 8);
    EVP_EncryptUpdate(enc, buf, &out, buf, len);
    EVP_EncryptFinal_ex(enc, buf + out, &out);
    EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_GET_TAG, 16, tag);
    EVP_DecryptInit_ex(dec, nullptr, nullptr, nullptr, nonce);
    EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_AEAD_SET_TAG, 16, tag);
    EVP_DecryptUpdate(dec, nullptr, &out, aad, 8);
    EVP_DecryptUpdate(dec, buf, &out, buf, len);
    return EVP_DecryptFinal_ex(dec, buf + out, &out) == 1;
  }
};

struct RawHmac {
  EVP_MAC_CTX* ctx = nullptr;
  explicit RawHmac(const std::uint8_t* key, std::size_t key_len) {
    EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", const_cast<char*>("SHA256"), 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_init(ctx, key, key_len, params);
  }
  ~RawHmac() { EVP_MAC_CTX_free(ctx); }
  void mac(const std::uint8_t* data, std::size_t len, std::uint8_t out[32]) {
    std::size_t n = 0;
    EVP_MAC_init(ctx, nullptr, 0, nullptr);
    EVP_MAC_update(ctx, data, len);
    EVP_MAC_final(ctx, out, &n, 32);
  }
};

struct Suite {
  const char* esp;
  const EVP_CIPHER* (*cipher)();
  int key_bytes;
};

}  // namespace

int main(int argc, char** argv) {
  const double seconds = argc > 1 ? std::atof(argv[1]) : 0.25;  // per round and side
  const int rounds = 5;
  const Suite suites[] = {{"aes128gcm16", EVP_aes_128_gcm, 16},
                          {"aes256gcm16", EVP_aes_256_gcm, 32},
                          {"chacha20poly1305", EVP_chacha20_poly1305, 32}};
  const std::size_t sizes[] = {64, 512, 1400};

  std::printf("ESP encrypt+decrypt per packet, best of %d rounds (ns; lower is better)\n", rounds);
  std::printf("%-18s %6s %12s %12s %8s %12s\n", "algorithm", "bytes", "ipsecgw", "raw EVP",
              "ratio", "ipsecgw Gb/s");
  bool ok = true;
  for (const auto& s : suites) {
    auto p = make_sa(s.esp);
    std::string why;
    auto out = esp::OutboundSa::create(p, why);
    auto in = esp::InboundSa::create(p, why);
    if (!out || !in) {
      std::fprintf(stderr, "%s: %s\n", s.esp, why.c_str());
      return 1;
    }
    std::uint8_t key[32];
    for (int i = 0; i < s.key_bytes; ++i) key[i] = static_cast<std::uint8_t>(i * 13 + 5);
    RawAead raw(s.cipher(), key);

    for (std::size_t size : sizes) {
      const auto inner = inner_packet(size);
      auto pkt = std::make_unique<core::Packet>();
      const int plain = static_cast<int>((size + 2 + 3) / 4 * 4);  // payload + pad + trailer
      std::vector<std::uint8_t> buf(static_cast<std::size_t>(plain) + 16);
      std::uint8_t nonce[12] = {1, 2, 3, 4}, aad[8] = {0, 0, 0x10, 0x01};
      std::uint64_t seq = 0;
      bool failed = false;

      auto gw_iter = [&] {
        pkt->assign(inner);
        if (out->encapsulate(*pkt) != core::Drop::kNone ||
            in->decapsulate(*pkt) != core::Drop::kNone)
          failed = true;
      };
      auto raw_iter = [&] {
        std::memcpy(buf.data(), inner.data(), size);
        ++seq;
        std::memcpy(nonce + 4, &seq, 8);
        std::memcpy(aad + 4, &seq, 4);
        if (!raw.round_trip(buf.data(), plain, nonce, aad)) failed = true;
      };
      // Calibrate the iteration count to `seconds`.
      std::size_t iters = 1000;
      const double per = time_ns(iters, gw_iter);
      iters = std::max<std::size_t>(1000, static_cast<std::size_t>(seconds * 1e9 / per));
      double best_gw = 1e18, best_raw = 1e18;
      for (int r = 0; r < rounds; ++r) {
        best_gw = std::min(best_gw, time_ns(iters, gw_iter));
        best_raw = std::min(best_raw, time_ns(iters, raw_iter));
      }
      if (failed) {
        std::fprintf(stderr, "%s %zu: a round trip failed\n", s.esp, size);
        ok = false;
      }
      // Gb/s of inner traffic one core could encrypt AND decrypt.
      const double gbps = static_cast<double>(size) * 8 / best_gw;
      std::printf("%-18s %6zu %12.1f %12.1f %7.2fx %12.2f\n", s.esp, size, best_gw, best_raw,
                  best_gw / best_raw, gbps);
    }
  }
  // AH and transport mode.
  std::printf("\nAH and transport mode, per packet (ns): protect + verify, next to the raw primitive\n");
  std::printf("%-26s %6s %12s %12s %8s %12s\n", "SA", "bytes", "ipsecgw", "raw EVP", "ratio", "ipsecgw Gb/s");
  struct Row {
    const char* name;
    core::IpsecProtocol proto;
    core::SaMode mode;
  };
  const Row rows[] = {{"ah sha256 tunnel", core::IpsecProtocol::kAh, core::SaMode::kTunnel},
                      {"ah sha256 transport", core::IpsecProtocol::kAh, core::SaMode::kTransport},
                      {"esp aes128gcm16 transport", core::IpsecProtocol::kEsp, core::SaMode::kTransport}};
  for (const auto& row : rows) {
    auto p = make_sa("aes128gcm16");
    p.protocol = row.proto;
    p.mode = row.mode;
    std::uint8_t key[32];
    for (int i = 0; i < 32; ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 1);
    if (row.proto == core::IpsecProtocol::kAh) {
      std::string why;
      p.ah = *core::single_ah_transform("sha256", why);
      p.out.keymat = core::SecureBytes(core::Bytes(key, key + 32));
      p.in.keymat = core::SecureBytes(core::Bytes(key, key + 32));
    }
    std::string why;
    auto out = esp::OutboundSa::create(p, why);
    auto in = esp::InboundSa::create(p, why);
    if (!out || !in) {
      std::fprintf(stderr, "%s: %s\n", row.name, why.c_str());
      return 1;
    }
    RawHmac hmac(key, 32);
    std::uint8_t aead_key[16];
    for (int i = 0; i < 16; ++i) aead_key[i] = static_cast<std::uint8_t>(i * 13 + 5);
    RawAead aead(EVP_aes_128_gcm(), aead_key);
    const bool transport = row.mode == core::SaMode::kTransport;
    for (std::size_t size : sizes) {
      const auto inner = inner_packet(size, transport);
      auto pkt = std::make_unique<core::Packet>();
      std::vector<std::uint8_t> buf(size + 64);
      std::uint8_t nonce[12] = {1, 2, 3, 4}, aad[8] = {0, 0, 0x10, 0x01}, tag[32];
      std::uint64_t seq = 0;
      bool failed = false;
      // One SA pair plays both ends (ESP transport rebuilds the header as
      // from the peer; the selectors take any address).
      auto gw_iter = [&] {
        pkt->assign(inner);
        if (out->encapsulate(*pkt) != core::Drop::kNone || in->decapsulate(*pkt) != core::Drop::kNone) failed = true;
      };
      auto raw_iter = [&] {
        std::memcpy(buf.data(), inner.data(), size);
        ++seq;
        if (row.proto == core::IpsecProtocol::kAh) {
          // The bytes AH's ICV covers: the packet, plus header and AH.
          const std::size_t covered = size + (transport ? 0 : 20) + 28;
          hmac.mac(buf.data(), std::min(covered, buf.size()), tag);
          hmac.mac(buf.data(), std::min(covered, buf.size()), tag);
        } else {
          std::memcpy(nonce + 4, &seq, 8);
          std::memcpy(aad + 4, &seq, 4);
          if (!aead.round_trip(buf.data(), static_cast<int>((size - 20 + 2 + 3) / 4 * 4), nonce, aad)) failed = true;
        }
      };
      std::size_t iters = 1000;
      const double per = time_ns(iters, gw_iter);
      iters = std::max<std::size_t>(1000, static_cast<std::size_t>(seconds * 1e9 / per));
      double best_gw = 1e18, best_raw = 1e18;
      for (int r = 0; r < rounds; ++r) {
        best_gw = std::min(best_gw, time_ns(iters, gw_iter));
        best_raw = std::min(best_raw, time_ns(iters, raw_iter));
      }
      if (failed) {
        std::fprintf(stderr, "%s %zu: a round trip failed\n", row.name, size);
        ok = false;
      }
      std::printf("%-26s %6zu %12.1f %12.1f %7.2fx %12.2f\n", row.name, size, best_gw, best_raw,
                  best_gw / best_raw, static_cast<double>(size) * 8 / best_gw);
    }
  }
  return ok ? 0 : 1;
}
