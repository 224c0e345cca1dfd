// IKEv2 cryptography: PRF and prf+ (RFC 7296 2.13), key derivation (2.14,
// 2.17, 2.18), Diffie-Hellman groups over OpenSSL 3 EVP_PKEY, and the
// encrypted payload SK (3.14, RFC 5282 for AEAD).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "core/crypto.hpp"
#include "ike/message.hpp"

typedef struct evp_pkey_st EVP_PKEY;

namespace ipsecgw::ike {

using core::SecureBytes;

const char* prf_digest(core::PrfAlg a) noexcept;
std::size_t prf_len(core::PrfAlg a) noexcept;

// prf(key, data) with the negotiated PRF (HMAC family).
Bytes prf(core::PrfAlg a, ByteSpan key, ByteSpan data);
// prf+(K, S) = T1 | T2 | ..., Tn = prf(K, Tn-1 | S | n), cut to `len`.
SecureBytes prf_plus(core::PrfAlg a, ByteSpan key, ByteSpan seed, std::size_t len);

// One side's ephemeral Diffie-Hellman key for a group, in the wire format
// IKEv2 uses (RFC 7296 3.4, RFC 5903 for ECP: x || y, RFC 8031 for
// Curve25519/448: raw little-endian).
class DhKey {
 public:
  static std::unique_ptr<DhKey> generate(core::DhGroup g, std::string& why);
  ~DhKey();
  DhKey(const DhKey&) = delete;
  DhKey& operator=(const DhKey&) = delete;
  [[nodiscard]] const Bytes& public_value() const noexcept { return pub_; }
  [[nodiscard]] core::DhGroup group() const noexcept { return group_; }
  // g^ir with the peer's public value: padded to the group's length for
  // MODP, the x coordinate for ECP. nullopt on an invalid peer value.
  std::optional<SecureBytes> shared_secret(ByteSpan peer, std::string& why) const;
  // For known-answer tests: a key from a fixed private value.
  static std::unique_ptr<DhKey> from_private(core::DhGroup g, ByteSpan priv, std::string& why);

 private:
  DhKey() = default;
  core::DhGroup group_{};
  EVP_PKEY* key_ = nullptr;
  Bytes pub_;
};
// Expected size of a group's public value; 0 for an unsupported group.
std::size_t dh_public_len(core::DhGroup g) noexcept;
bool dh_supported(core::DhGroup g) noexcept;

// The algorithms of an IKE SA.
struct IkeTransform {
  core::EncSpec enc;
  core::IntegAlg integ = core::IntegAlg::kNone;
  core::PrfAlg prf = core::PrfAlg::kHmacSha256;
  core::DhGroup dh = core::DhGroup::kCurve25519;
  [[nodiscard]] bool aead() const noexcept { return core::is_aead(enc.alg); }
  [[nodiscard]] std::string name() const;  // strongSwan keyword
  bool operator==(const IkeTransform&) const = default;
};

// SK_d, SK_ai/ar, SK_ei/er, SK_pi/pr.
struct IkeKeys {
  SecureBytes d, ai, ar, ei, er, pi, pr;
};
// SKEYSEED = prf(Ni | Nr, g^ir); keys = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
// With `old_sk_d` (IKE SA rekey, 2.18): SKEYSEED = prf(SK_d, g^ir | Ni | Nr).
IkeKeys derive_ike_keys(const IkeTransform& t, ByteSpan shared, ByteSpan ni, ByteSpan nr,
                        std::uint64_t spi_i, std::uint64_t spi_r,
                        const SecureBytes* old_sk_d = nullptr, SecureBytes* skeyseed_out = nullptr);

// One direction of SK payload protection.
class SkCipher {
 public:
  static std::unique_ptr<SkCipher> create(const IkeTransform& t, ByteSpan enc_key,
                                          ByteSpan integ_key, core::CipherDir dir);
  // Builds a whole message: header (length filled in) + SK payload whose
  // plaintext is the encoded inner chain.
  Bytes seal(Header h, const std::vector<Payload>& inner);
  // As seal, split into SKF fragments (RFC 7383) when the message would be
  // longer than `max_len` bytes; one message when it fits.
  std::vector<Bytes> seal_fragmented(Header h, const std::vector<Payload>& inner, std::size_t max_len);
  // Verifies and decrypts the SK payload (the last payload of `msg`, whose
  // body starts at `sk_body_offset`); returns the inner plaintext chain.
  std::optional<Bytes> open(ByteSpan msg, std::size_t sk_body_offset, std::string& why);
  [[nodiscard]] std::size_t overhead() const noexcept;
  // AEAD and CTR IVs are a counter (unique per key, RFC 5282 3.1) that
  // starts at a random value; this sets the IV the next message uses, for
  // known-answer tests against published messages (RFC 7634 appendix B).
  void set_next_iv(std::uint64_t iv) noexcept { iv_counter_ = iv - 1; }

 private:
  SkCipher() = default;
  Bytes seal_raw(Header h, PayloadType sk_type, PayloadType first, ByteSpan extra, Bytes plain);
  IkeTransform t_;
  std::unique_ptr<core::Aead> aead_;
  std::unique_ptr<core::Cipher> cipher_;
  std::unique_ptr<core::Hmac> hmac_;
  std::uint64_t iv_counter_ = 0;
};

// NAT detection hash (RFC 7296 2.23): SHA-1(SPIi | SPIr | IP | port).
Bytes natd_hash(std::uint64_t spi_i, std::uint64_t spi_r, const core::IpAddress& ip,
                std::uint16_t port);

}  // namespace ipsecgw::ike
