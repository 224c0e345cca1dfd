#include "cli/keylog.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include <cstdio>

#include "core/log.hpp"

namespace ipsecgw::cli {

namespace {

std::string q(const std::string& s) { return "\"" + s + "\""; }

const char* esp_enc_name(const core::EncSpec& e) {
  switch (e.alg) {
    case core::EncAlg::kNull: return "NULL";
    case core::EncAlg::kAesCbc: return "AES-CBC [RFC3602]";
    case core::EncAlg::kAesCtr: return "AES-CTR [RFC3686]";
    case core::EncAlg::kTripleDesCbc: return "TripleDES-CBC [RFC2451]";
    case core::EncAlg::kAesGcm16: return "AES-GCM with 16 octet ICV [RFC4106]";
    case core::EncAlg::kChaCha20Poly1305: return nullptr;  // not in Wireshark 4.0
    case core::EncAlg::kNullAesGmac: return nullptr;       // nor this (and nothing is encrypted)
  }
  return nullptr;
}

const char* esp_auth_name(core::IntegAlg a) {
  switch (a) {
    case core::IntegAlg::kNone: return "NULL";
    case core::IntegAlg::kHmacMd5_96: return "HMAC-MD5-96 [RFC2403]";
    case core::IntegAlg::kHmacSha1_96: return "HMAC-SHA-1-96 [RFC2404]";
    case core::IntegAlg::kHmacSha256_128: return "HMAC-SHA-256-128 [RFC4868]";
    case core::IntegAlg::kHmacSha384_192: return "HMAC-SHA-384-192 [RFC4868]";
    case core::IntegAlg::kHmacSha512_256: return "HMAC-SHA-512-256 [RFC4868]";
    case core::IntegAlg::kAesXcbc96: return "NULL";  // ESP does not take it
    case core::IntegAlg::kAesGmac128:
    case core::IntegAlg::kAesGmac192:
    case core::IntegAlg::kAesGmac256: return "NULL";
  }
  return "NULL";
}

// AH's integrity algorithms, in Wireshark's style where it names them.
std::string ah_auth_name(core::IntegAlg a) {
  if (a == core::IntegAlg::kAesXcbc96) return "AES-XCBC-MAC-96 [RFC3566]";
  if (const auto k = core::gmac_key_len(a)) return "AES-GMAC-" + std::to_string(k * 8) + " [RFC4543]";
  return esp_auth_name(a);
}

std::string ike_enc_name(const core::EncSpec& e) {
  const std::string bits = std::to_string(e.key_bytes * 8);
  switch (e.alg) {
    case core::EncAlg::kAesCbc: return "AES-CBC-" + bits + " [RFC3602]";
    case core::EncAlg::kAesCtr: return "AES-CTR-" + bits + " [RFC5930]";
    case core::EncAlg::kTripleDesCbc: return "3DES [RFC2451]";
    case core::EncAlg::kAesGcm16: return "AES-GCM-" + bits + " with 16 octet ICV [RFC5282]";
    default: return "";
  }
}

const char* ike_integ_name(core::IntegAlg a) {
  switch (a) {
    case core::IntegAlg::kNone: return "NONE [RFC4306]";
    case core::IntegAlg::kHmacMd5_96: return "HMAC_MD5_96 [RFC2403]";
    case core::IntegAlg::kHmacSha1_96: return "HMAC_SHA1_96 [RFC2404]";
    case core::IntegAlg::kHmacSha256_128: return "HMAC_SHA2_256_128 [RFC4868]";
    case core::IntegAlg::kHmacSha384_192: return "HMAC_SHA2_384_192 [RFC4868]";
    case core::IntegAlg::kHmacSha512_256: return "HMAC_SHA2_512_256 [RFC4868]";
    case core::IntegAlg::kAesXcbc96: return "AUTH_AES_XCBC_96 [RFC3566]";
    case core::IntegAlg::kAesGmac128:
    case core::IntegAlg::kAesGmac192:
    case core::IntegAlg::kAesGmac256: return "NONE [RFC4306]";
  }
  return "NONE [RFC4306]";
}


}  // namespace

void KeyLog::append(const std::string& path, const std::string& lines) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Never through a symlink (someone else's file would get our keys).
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    core::log::warn("keylog", "cannot write ", path, ": ", std::strerror(errno));
    return;
  }
  const ssize_t n = ::write(fd, lines.data(), lines.size());
  ::close(fd);
  if (n != static_cast<ssize_t>(lines.size())) core::log::warn("keylog", "short write to ", path);
}

void KeyLog::esp(const core::SaParams& p) {
  const std::string proto = p.local_addr.is_v4() ? "IPv4" : "IPv6";
  if (p.protocol != core::IpsecProtocol::kEsp && !ah_.empty()) {
    auto line = [&](const core::IpAddress& src, const core::IpAddress& dst, const core::SaDirection& d) {
      return q(proto) + "," + q(src.to_string()) + "," + q(dst.to_string()) + "," + q(core::spi_hex(d.spi)) + "," +
             q(ah_auth_name(p.ah.integ)) + "," + q("0x" + core::to_hex(d.keymat.span())) + "\n";
    };
    const bool bundle = p.protocol == core::IpsecProtocol::kAhEsp;  // its AH SAs: ah_out/ah_in
    append(ah_, line(p.local_addr, p.remote_addr, bundle ? p.ah_out : p.out) +
                    line(p.remote_addr, p.local_addr, bundle ? p.ah_in : p.in));
  }
  if (p.protocol == core::IpsecProtocol::kAh) return;
  if (esp_.empty()) return;
  const char* enc = esp_enc_name(p.transform.enc);
  if (!enc) {
    core::log::info("keylog", "SA ", p.name, ": ", p.transform.name(), " is not decryptable by Wireshark 4.0; not logged");
    return;
  }
  const std::size_t ek = p.transform.enc_keymat_len();
  auto line = [&](const core::IpAddress& src, const core::IpAddress& dst, const core::SaDirection& d) {
    const auto km = d.keymat.span();
    return q(proto) + "," + q(src.to_string()) + "," + q(dst.to_string()) + "," + q(core::spi_hex(d.spi)) + "," +
           q(enc) + "," + q("0x" + core::to_hex(km.first(ek))) + "," + q(esp_auth_name(p.transform.integ)) + "," +
           q(km.size() > ek ? "0x" + core::to_hex(km.subspan(ek)) : "") + "\n";
  };
  append(esp_, line(p.local_addr, p.remote_addr, p.out) + line(p.remote_addr, p.local_addr, p.in));
}

void KeyLog::ikev1(std::uint64_t cky_i, core::ByteSpan enc_key) {
  if (ikev1_.empty()) return;
  append(ikev1_, core::hex64(cky_i) + "," + core::to_hex(enc_key) + "\n");
}

void KeyLog::ike(const ike::IkeKeyLog& k) {
  if (ike_.empty()) return;
  const std::string enc = ike_enc_name(k.transform.enc);
  if (enc.empty()) {
    core::log::info("keylog", "IKE SA ", core::hex64(k.spi_i), ": ", k.transform.name(),
                    " is not decryptable by Wireshark 4.0; not logged");
    return;
  }
  // SPIs and keys are UAT byte buffers: bare hex; the algorithms are quoted.
  append(ike_, core::hex64(k.spi_i) + "," + core::hex64(k.spi_r) + "," + core::to_hex(k.sk_ei) + "," +
                   core::to_hex(k.sk_er) + "," + q(enc) + "," + core::to_hex(k.sk_ai) + "," +
                   core::to_hex(k.sk_ar) + "," + q(ike_integ_name(k.transform.integ)) + "\n");
}

}  // namespace ipsecgw::cli
