// Algorithm identifiers and strongSwan-style proposal keywords
// ("aes256gcm16", "aes128-sha256-esn", "aes256gcm16-prfsha384-x25519").
//
// Shared by ESP (manual and negotiated SAs) and IKE: one table of names,
// IANA transform IDs (RFC 7296 3.3.2) and key sizes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ipsecgw::core {

enum class EncAlg : std::uint8_t {
  kNull,              // RFC 2410
  kAesCbc,            // RFC 3602
  kAesCtr,            // RFC 3686
  kTripleDesCbc,      // RFC 2451
  kAesGcm16,          // RFC 4106, 16-byte ICV
  kChaCha20Poly1305,  // RFC 7634
  kNullAesGmac,       // RFC 4543 ENCR_NULL_AUTH_AES_GMAC: integrity only, the payload in the clear
};

enum class IntegAlg : std::uint8_t {
  kNone,
  kHmacMd5_96,      // RFC 2403
  kHmacSha1_96,     // RFC 2404
  kHmacSha256_128,  // RFC 4868
  kHmacSha384_192,
  kHmacSha512_256,
  kAesXcbc96,       // RFC 3566 (AH so far)
  kAesGmac128,      // RFC 4543 AUTH_AES_*_GMAC (AH): AES-GMAC, key + 4-byte salt, 8-byte IV in the header
  kAesGmac192,
  kAesGmac256,
};
// AES-GMAC's key length without the salt (0: not GMAC).
std::size_t gmac_key_len(IntegAlg a) noexcept;

enum class PrfAlg : std::uint8_t { kHmacMd5, kHmacSha1, kHmacSha256, kHmacSha384, kHmacSha512 };

// IANA Transform Type 4 numbers.
enum class DhGroup : std::uint16_t {
  kModp1024 = 2,
  kModp1536 = 5,
  kModp2048 = 14,
  kModp3072 = 15,
  kModp4096 = 16,
  kModp6144 = 17,
  kModp8192 = 18,
  kEcp256 = 19,
  kEcp384 = 20,
  kEcp521 = 21,
  kCurve25519 = 31,
  kCurve448 = 32,
};

struct EncSpec {
  EncAlg alg = EncAlg::kNull;
  std::size_t key_bytes = 0;  // without salt/nonce
  bool operator==(const EncSpec&) const = default;
};

bool is_aead(EncAlg a) noexcept;
std::size_t salt_len(EncAlg a) noexcept;  // 4 for GCM, ChaCha20-Poly1305, CTR nonce
std::size_t iv_len(EncAlg a) noexcept;    // bytes carried in each packet
std::size_t block_len(EncAlg a) noexcept; // payload alignment (RFC 4303 2.4)
std::size_t icv_len(IntegAlg a) noexcept;
std::size_t integ_key_len(IntegAlg a) noexcept;
const char* digest_name(IntegAlg a) noexcept;  // OpenSSL digest name, nullptr for kNone

// A single ESP transform: what one SA uses.
struct EspTransform {
  EncSpec enc;
  IntegAlg integ = IntegAlg::kNone;
  bool esn = false;

  [[nodiscard]] bool aead() const noexcept { return is_aead(enc.alg); }
  [[nodiscard]] std::size_t icv_len() const noexcept;
  // Keying material in RFC 7296 2.17 order: encryption key (+salt), integrity key.
  [[nodiscard]] std::size_t enc_keymat_len() const noexcept { return enc.key_bytes + salt_len(enc.alg); }
  [[nodiscard]] std::size_t keymat_len() const noexcept {
    return enc_keymat_len() + integ_key_len(integ);
  }
  [[nodiscard]] std::string name() const;  // strongSwan keyword
  bool operator==(const EspTransform&) const = default;
};

// A single AH transform (RFC 4302): the integrity algorithm alone.
struct AhTransform {
  IntegAlg integ = IntegAlg::kHmacSha256_128;
  bool esn = false;

  [[nodiscard]] std::size_t icv_len() const noexcept { return core::icv_len(integ); }
  [[nodiscard]] std::size_t keymat_len() const noexcept { return integ_key_len(integ); }
  // AES-GMAC carries an 8-byte IV between the sequence number and the ICV (RFC 4543).
  [[nodiscard]] std::size_t iv_len() const noexcept { return gmac_key_len(integ) ? 8 : 0; }
  [[nodiscard]] std::string name() const;  // strongSwan keyword ("sha256", "sha1-esn")
  bool operator==(const AhTransform&) const = default;
};

// One proposal as written by the user: each list holds the alternatives.
struct Proposal {
  std::vector<EncSpec> enc;
  std::vector<IntegAlg> integ;
  std::vector<PrfAlg> prf;
  std::vector<DhGroup> dh;
  std::vector<bool> esn;  // empty: not specified
  bool operator==(const Proposal&) const = default;
};

// The keyword of a DH group ("modp2048", "ecp256", "x25519"); nullptr if unknown.
const char* dh_group_name(DhGroup g) noexcept;
// A known group number (IANA Transform Type 4, also IKEv1's Group Description).
std::optional<DhGroup> dh_group_from_number(std::uint16_t n) noexcept;

// Parses "aes128-sha256-modp2048-esn"; on failure returns nullopt and puts the
// offending keyword in `bad_token`.
std::optional<Proposal> parse_proposal(std::string_view text, std::string& bad_token);

// Resolves a proposal that must name exactly one ESP transform (manual SAs).
// On failure returns nullopt with a human-readable reason.
std::optional<EspTransform> single_esp_transform(std::string_view text, std::string& why);
// An AH proposal ("sha256", "sha1-aesxcbc-modp2048-esn"): integrity
// algorithms, DH groups and ESN only; AES-XCBC ("aesxcbc") is taken here
// though not by ESP and IKE proposals. nullopt with the reason otherwise.
std::optional<Proposal> parse_ah_proposal(std::string_view text, std::string& why);
// ... exactly one AH transform: "sha256", "sha512-esn", "md5".
std::optional<AhTransform> single_ah_transform(std::string_view text, std::string& why);

}  // namespace ipsecgw::core
