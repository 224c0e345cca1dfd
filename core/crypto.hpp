// Symmetric crypto over OpenSSL 3 EVP, with contexts prepared once per SA.
//
// Each object owns its EVP contexts and key schedule: creating one does the
// expensive work (cipher fetch, key expansion); each packet then only sets an
// IV or re-initialises the MAC. An object is used by one thread at a time
// (the worker that owns the SA direction); none of them lock.
#pragma once

#include <memory>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_mac_ctx_st EVP_MAC_CTX;

namespace ipsecgw::core {

enum class CipherDir : std::uint8_t { kEncrypt, kDecrypt };

void random_bytes(MutByteSpan out);

// AEAD with a 4-byte salt from the keying material and an 8-byte explicit IV
// (nonce = salt || iv, RFC 4106 4 and RFC 7634 2), 16-byte tag.
class Aead {
 public:
  static constexpr std::size_t kTagLen = 16;
  // key: the cipher key without salt. Returns nullptr on a bad size.
  static std::unique_ptr<Aead> create(EncAlg alg, ByteSpan key, ByteSpan salt, CipherDir dir);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  // Encrypts `data` in place and writes the tag. Direction must be kEncrypt.
  bool seal(ByteSpan iv, ByteSpan aad, MutByteSpan data, MutByteSpan tag) noexcept;
  // Verifies and decrypts in place; false on a bad tag (data is then garbage).
  bool open(ByteSpan iv, ByteSpan aad, MutByteSpan data, ByteSpan tag) noexcept;

 private:
  Aead() = default;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  std::uint8_t salt_[4] = {};
};

// Non-AEAD ciphers: AES-CBC, 3DES-CBC (iv = block), AES-CTR (RFC 3686:
// counter block = nonce || iv || 1), NULL. Data is processed in place; CBC
// data must be a multiple of the block size.
class Cipher {
 public:
  static std::unique_ptr<Cipher> create(EncAlg alg, ByteSpan key, ByteSpan nonce, CipherDir dir);
  ~Cipher();
  Cipher(const Cipher&) = delete;
  Cipher& operator=(const Cipher&) = delete;
  bool run(ByteSpan iv, MutByteSpan data) noexcept;

 private:
  Cipher() = default;
  EncAlg alg_ = EncAlg::kNull;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  std::uint8_t nonce_[4] = {};
};

// HMAC truncated to the algorithm's ICV length (or full length for PRF use).
// A message authentication code computed in pieces (AH's ICV covers a
// masked copy of the header and then the packet as it is).
class Mac {
 public:
  virtual ~Mac() = default;
  virtual bool begin() noexcept = 0;
  virtual bool update(ByteSpan data) noexcept = 0;
  // Writes the first out.size() bytes of the MAC (out.size() <= full length).
  virtual bool finish(MutByteSpan out) noexcept = 0;
  // The per-message IV of a MAC that takes one (AES-GMAC); others ignore it.
  virtual void set_iv(ByteSpan /*iv*/) noexcept {}
  // An integrity algorithm's MAC with its key (HMAC family, AES-XCBC, AES-GMAC).
  static std::unique_ptr<Mac> create(IntegAlg a, ByteSpan key);
};

class Hmac final : public Mac {
 public:
  static std::unique_ptr<Hmac> create(const char* digest, ByteSpan key);
  ~Hmac() override;
  Hmac(const Hmac&) = delete;
  Hmac& operator=(const Hmac&) = delete;

  bool begin() noexcept override;
  bool update(ByteSpan data) noexcept override;
  bool finish(MutByteSpan out) noexcept override;
  [[nodiscard]] std::size_t full_len() const noexcept { return full_len_; }

 private:
  Hmac() = default;
  EVP_MAC_CTX* ctx_ = nullptr;
  std::size_t full_len_ = 0;
};

// AES-XCBC-MAC (RFC 3566) with a 128-bit key, on AES-128-ECB (OpenSSL 3 has
// no XCBC): K1, K2, K3 derived from the key; CBC-MAC under K1 whose last
// block is XORed with K2 when whole, or padded with 0x80 0... and XORed
// with K3. AES-XCBC-96 takes the first 12 bytes.
class XcbcMac final : public Mac {
 public:
  static std::unique_ptr<XcbcMac> create(ByteSpan key);
  ~XcbcMac() override;
  XcbcMac(const XcbcMac&) = delete;
  XcbcMac& operator=(const XcbcMac&) = delete;

  bool begin() noexcept override;
  bool update(ByteSpan data) noexcept override;
  bool finish(MutByteSpan out) noexcept override;

 private:
  XcbcMac() = default;
  bool encrypt(std::uint8_t block[16]) noexcept;  // in place, under K1
  EVP_CIPHER_CTX* k1_ = nullptr;
  std::uint8_t k2_[16] = {}, k3_[16] = {};
  std::uint8_t state_[16] = {};  // E(K1, ...) so far
  std::uint8_t buf_[16] = {};    // the last block, held back until more comes or finish
  std::size_t buf_len_ = 0;
};

// AES-GMAC (RFC 4543, NIST SP 800-38D): GCM over additional data alone,
// nonce = the 4-byte salt || an 8-byte IV given per message (set_iv before
// begin). For AH's AUTH_AES_*_GMAC and ESP's ENCR_NULL_AUTH_AES_GMAC.
class GmacMac final : public Mac {
 public:
  static constexpr std::size_t kTagLen = 16;
  // keymat: the AES key (16, 24 or 32 bytes) followed by the 4-byte salt.
  static std::unique_ptr<GmacMac> create(ByteSpan keymat);
  ~GmacMac() override;
  GmacMac(const GmacMac&) = delete;
  GmacMac& operator=(const GmacMac&) = delete;

  void set_iv(ByteSpan iv8) noexcept override;
  bool begin() noexcept override;
  bool update(ByteSpan data) noexcept override;
  bool finish(MutByteSpan out) noexcept override;
  // One GMAC over a 12-byte nonce (Wycheproof's form), for known-answer tests.
  bool one_shot(ByteSpan nonce12, ByteSpan data, MutByteSpan tag) noexcept;

 private:
  GmacMac() = default;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  std::uint8_t nonce_[12] = {};
  bool iv_set_ = false;  // begin() needs a fresh IV each time (never the last one again)
};

// Unpredictable CBC IVs without a DRBG call per packet: the IV is the
// sequence number encrypted under a random per-SA key (as Linux's seqiv
// family does), so it is unique per packet and unpredictable to outsiders.
class IvGenerator {
 public:
  static std::unique_ptr<IvGenerator> create();
  ~IvGenerator();
  IvGenerator(const IvGenerator&) = delete;
  IvGenerator& operator=(const IvGenerator&) = delete;
  bool next(std::uint64_t seq, MutByteSpan iv) noexcept;  // iv.size() <= 16

 private:
  IvGenerator() = default;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  std::uint8_t salt_[8] = {};
};

}  // namespace ipsecgw::core
