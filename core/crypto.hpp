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
class Hmac {
 public:
  static std::unique_ptr<Hmac> create(const char* digest, ByteSpan key);
  ~Hmac();
  Hmac(const Hmac&) = delete;
  Hmac& operator=(const Hmac&) = delete;

  bool begin() noexcept;
  bool update(ByteSpan data) noexcept;
  // Writes the first out.size() bytes of the MAC (out.size() <= full length).
  bool finish(MutByteSpan out) noexcept;
  [[nodiscard]] std::size_t full_len() const noexcept { return full_len_; }

 private:
  Hmac() = default;
  EVP_MAC_CTX* ctx_ = nullptr;
  std::size_t full_len_ = 0;
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
