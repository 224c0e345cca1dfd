#include "core/crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace ipsecgw::core {

void random_bytes(MutByteSpan out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) {
    // No randomness means no safe keys or IVs: there is no way to go on.
    throw std::runtime_error("RAND_bytes failed");
  }
}

namespace {

const EVP_CIPHER* aead_cipher(EncAlg alg, std::size_t key_len) {
  if (alg == EncAlg::kChaCha20Poly1305) return key_len == 32 ? EVP_chacha20_poly1305() : nullptr;
  if (alg != EncAlg::kAesGcm16) return nullptr;
  switch (key_len) {
    case 16: return EVP_aes_128_gcm();
    case 24: return EVP_aes_192_gcm();
    case 32: return EVP_aes_256_gcm();
    default: return nullptr;
  }
}

const EVP_CIPHER* block_cipher(EncAlg alg, std::size_t key_len) {
  switch (alg) {
    case EncAlg::kAesCbc:
      return key_len == 16 ? EVP_aes_128_cbc()
             : key_len == 24 ? EVP_aes_192_cbc()
             : key_len == 32 ? EVP_aes_256_cbc()
                             : nullptr;
    case EncAlg::kAesCtr:
      return key_len == 16 ? EVP_aes_128_ctr()
             : key_len == 24 ? EVP_aes_192_ctr()
             : key_len == 32 ? EVP_aes_256_ctr()
                             : nullptr;
    case EncAlg::kTripleDesCbc: return key_len == 24 ? EVP_des_ede3_cbc() : nullptr;
    default: return nullptr;
  }
}

int as_int(std::size_t n) { return static_cast<int>(n); }

}  // namespace

std::unique_ptr<Aead> Aead::create(EncAlg alg, ByteSpan key, ByteSpan salt, CipherDir dir) {
  const EVP_CIPHER* cipher = aead_cipher(alg, key.size());
  if (!cipher || salt.size() != 4) return nullptr;
  std::unique_ptr<Aead> a(new Aead());
  std::memcpy(a->salt_, salt.data(), 4);
  a->ctx_ = EVP_CIPHER_CTX_new();
  int enc = dir == CipherDir::kEncrypt ? 1 : 0;
  if (!a->ctx_ || EVP_CipherInit_ex(a->ctx_, cipher, nullptr, nullptr, nullptr, enc) != 1 ||
      EVP_CIPHER_CTX_ctrl(a->ctx_, EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1 ||
      EVP_CipherInit_ex(a->ctx_, nullptr, nullptr, key.data(), nullptr, enc) != 1) {
    return nullptr;
  }
  return a;
}

Aead::~Aead() {
  EVP_CIPHER_CTX_free(ctx_);  // frees and cleanses the key schedule
  secure_wipe(salt_, sizeof salt_);
}

bool Aead::seal(ByteSpan iv, ByteSpan aad, MutByteSpan data, MutByteSpan tag) noexcept {
  if (iv.size() != 8 || tag.size() != kTagLen) return false;
  std::uint8_t nonce[12];
  std::memcpy(nonce, salt_, 4);
  std::memcpy(nonce + 4, iv.data(), 8);
  int outl = 0;
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce, -1) != 1) return false;
  if (!aad.empty() && EVP_CipherUpdate(ctx_, nullptr, &outl, aad.data(), as_int(aad.size())) != 1)
    return false;
  if (!data.empty() &&
      EVP_CipherUpdate(ctx_, data.data(), &outl, data.data(), as_int(data.size())) != 1)
    return false;
  std::uint8_t scratch[16];
  if (EVP_CipherFinal_ex(ctx_, scratch, &outl) != 1) return false;
  return EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, as_int(kTagLen), tag.data()) == 1;
}

bool Aead::open(ByteSpan iv, ByteSpan aad, MutByteSpan data, ByteSpan tag) noexcept {
  if (iv.size() != 8 || tag.size() != kTagLen) return false;
  std::uint8_t nonce[12];
  std::memcpy(nonce, salt_, 4);
  std::memcpy(nonce + 4, iv.data(), 8);
  int outl = 0;
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, nonce, -1) != 1) return false;
  if (!aad.empty() && EVP_CipherUpdate(ctx_, nullptr, &outl, aad.data(), as_int(aad.size())) != 1)
    return false;
  if (!data.empty() &&
      EVP_CipherUpdate(ctx_, data.data(), &outl, data.data(), as_int(data.size())) != 1)
    return false;
  // OpenSSL compares the tag in constant time inside CipherFinal.
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, as_int(kTagLen),
                          const_cast<std::uint8_t*>(tag.data())) != 1)
    return false;
  std::uint8_t scratch[16];
  return EVP_CipherFinal_ex(ctx_, scratch, &outl) == 1;
}

std::unique_ptr<Cipher> Cipher::create(EncAlg alg, ByteSpan key, ByteSpan nonce, CipherDir dir) {
  std::unique_ptr<Cipher> c(new Cipher());
  c->alg_ = alg;
  if (alg == EncAlg::kNull) return key.empty() && nonce.empty() ? std::move(c) : nullptr;
  const EVP_CIPHER* cipher = block_cipher(alg, key.size());
  if (!cipher) return nullptr;
  if (alg == EncAlg::kAesCtr) {
    if (nonce.size() != 4) return nullptr;
    std::memcpy(c->nonce_, nonce.data(), 4);
  } else if (!nonce.empty()) {
    return nullptr;
  }
  c->ctx_ = EVP_CIPHER_CTX_new();
  int enc = dir == CipherDir::kEncrypt ? 1 : 0;
  if (!c->ctx_ || EVP_CipherInit_ex(c->ctx_, cipher, nullptr, key.data(), nullptr, enc) != 1 ||
      EVP_CIPHER_CTX_set_padding(c->ctx_, 0) != 1) {
    return nullptr;
  }
  return c;
}

Cipher::~Cipher() {
  EVP_CIPHER_CTX_free(ctx_);
  secure_wipe(nonce_, sizeof nonce_);
}

bool Cipher::run(ByteSpan iv, MutByteSpan data) noexcept {
  if (alg_ == EncAlg::kNull) return iv.empty();
  std::uint8_t block[16];
  const std::uint8_t* ivp = iv.data();
  if (alg_ == EncAlg::kAesCtr) {
    if (iv.size() != 8) return false;
    std::memcpy(block, nonce_, 4);
    std::memcpy(block + 4, iv.data(), 8);
    store_be32(block + 12, 1);
    ivp = block;
  } else {
    auto bl = block_len(alg_);
    if (iv.size() != bl || data.size() % bl != 0) return false;
  }
  int outl = 0;
  if (EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, ivp, -1) != 1) return false;
  if (data.empty()) return true;
  return EVP_CipherUpdate(ctx_, data.data(), &outl, data.data(), as_int(data.size())) == 1 &&
         static_cast<std::size_t>(outl) == data.size();
}

std::unique_ptr<Hmac> Hmac::create(const char* digest, ByteSpan key) {
  if (!digest) return nullptr;
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) return nullptr;
  std::unique_ptr<Hmac> h(new Hmac());
  h->ctx_ = EVP_MAC_CTX_new(mac);
  EVP_MAC_free(mac);
  if (!h->ctx_) return nullptr;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(digest), 0),
      OSSL_PARAM_construct_end()};
  // OpenSSL refuses an empty HMAC key pointer; a zero-length key is still valid.
  static const std::uint8_t kEmpty[1] = {0};
  if (EVP_MAC_init(h->ctx_, key.empty() ? kEmpty : key.data(), key.size(), params) != 1) {
    return nullptr;
  }
  h->full_len_ = EVP_MAC_CTX_get_mac_size(h->ctx_);
  return h;
}

Hmac::~Hmac() { EVP_MAC_CTX_free(ctx_); }

bool Hmac::begin() noexcept {
  // A NULL key re-initialises HMAC with the key set at creation.
  return EVP_MAC_init(ctx_, nullptr, 0, nullptr) == 1;
}

bool Hmac::update(ByteSpan data) noexcept {
  return data.empty() || EVP_MAC_update(ctx_, data.data(), data.size()) == 1;
}

bool Hmac::finish(MutByteSpan out) noexcept {
  std::uint8_t full[EVP_MAX_MD_SIZE];
  std::size_t len = 0;
  if (out.size() > full_len_ || EVP_MAC_final(ctx_, full, &len, sizeof full) != 1) return false;
  std::memcpy(out.data(), full, out.size());
  secure_wipe(full, sizeof full);
  return true;
}

std::unique_ptr<Mac> Mac::create(IntegAlg a, ByteSpan key) {
  if (key.size() != integ_key_len(a)) return nullptr;
  if (a == IntegAlg::kAesXcbc96) return XcbcMac::create(key);
  if (gmac_key_len(a)) return GmacMac::create(key);
  return Hmac::create(digest_name(a), key);
}

std::unique_ptr<GmacMac> GmacMac::create(ByteSpan keymat) {
  if (keymat.size() < 4) return nullptr;
  const std::size_t kl = keymat.size() - 4;
  const EVP_CIPHER* c = kl == 16 ? EVP_aes_128_gcm() : kl == 24 ? EVP_aes_192_gcm() : kl == 32 ? EVP_aes_256_gcm() : nullptr;
  if (!c) return nullptr;
  std::unique_ptr<GmacMac> m(new GmacMac());
  std::memcpy(m->nonce_, keymat.data() + kl, 4);
  m->ctx_ = EVP_CIPHER_CTX_new();
  if (!m->ctx_ || EVP_EncryptInit_ex(m->ctx_, c, nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(m->ctx_, EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1 ||
      EVP_EncryptInit_ex(m->ctx_, nullptr, nullptr, keymat.data(), nullptr) != 1)
    return nullptr;
  return m;
}

GmacMac::~GmacMac() {
  EVP_CIPHER_CTX_free(ctx_);
  secure_wipe(nonce_, sizeof nonce_);
}

void GmacMac::set_iv(ByteSpan iv8) noexcept {
  iv_set_ = iv8.size() == 8;
  if (iv_set_) std::memcpy(nonce_ + 4, iv8.data(), 8);
}

bool GmacMac::begin() noexcept {
  if (!iv_set_) return false;
  iv_set_ = false;
  return EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce_) == 1;
}

bool GmacMac::update(ByteSpan data) noexcept {
  int outl = 0;
  return data.empty() || EVP_EncryptUpdate(ctx_, nullptr, &outl, data.data(), as_int(data.size())) == 1;
}

bool GmacMac::finish(MutByteSpan out) noexcept {
  std::uint8_t tag[kTagLen], scratch[16];
  int outl = 0;
  if (out.size() > kTagLen || EVP_EncryptFinal_ex(ctx_, scratch, &outl) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, as_int(kTagLen), tag) != 1)
    return false;
  std::memcpy(out.data(), tag, out.size());
  return true;
}

bool GmacMac::one_shot(ByteSpan nonce12, ByteSpan data, MutByteSpan tag) noexcept {
  if (nonce12.size() != 12) return false;
  std::uint8_t saved[12];
  std::memcpy(saved, nonce_, 12);
  std::memcpy(nonce_, nonce12.data(), 12);
  iv_set_ = true;
  const bool ok = begin() && update(data) && finish(tag);
  std::memcpy(nonce_, saved, 12);
  return ok;
}

std::unique_ptr<XcbcMac> XcbcMac::create(ByteSpan key) {
  if (key.size() != 16) return nullptr;
  std::unique_ptr<XcbcMac> m(new XcbcMac());
  // K1, K2, K3 = E(K, 0x01..), E(K, 0x02..), E(K, 0x03..).
  EVP_CIPHER_CTX* k = EVP_CIPHER_CTX_new();
  if (!k) return nullptr;
  std::uint8_t k1[16], block[16];
  int len = 0;
  bool ok = EVP_EncryptInit_ex(k, EVP_aes_128_ecb(), nullptr, key.data(), nullptr) == 1 &&
            EVP_CIPHER_CTX_set_padding(k, 0) == 1;
  std::uint8_t* outs[3] = {k1, m->k2_, m->k3_};
  for (int i = 0; ok && i < 3; ++i) {
    std::memset(block, i + 1, sizeof block);
    ok = EVP_EncryptUpdate(k, outs[i], &len, block, 16) == 1 && len == 16;
  }
  EVP_CIPHER_CTX_free(k);
  m->k1_ = EVP_CIPHER_CTX_new();
  ok = ok && m->k1_ && EVP_EncryptInit_ex(m->k1_, EVP_aes_128_ecb(), nullptr, k1, nullptr) == 1 &&
       EVP_CIPHER_CTX_set_padding(m->k1_, 0) == 1;
  secure_wipe(k1, sizeof k1);
  if (!ok) return nullptr;
  return m;
}

XcbcMac::~XcbcMac() {
  EVP_CIPHER_CTX_free(k1_);
  secure_wipe(k2_, sizeof k2_);
  secure_wipe(k3_, sizeof k3_);
  secure_wipe(state_, sizeof state_);
  secure_wipe(buf_, sizeof buf_);
}

bool XcbcMac::encrypt(std::uint8_t block[16]) noexcept {
  int len = 0;
  return EVP_EncryptUpdate(k1_, block, &len, block, 16) == 1 && len == 16;
}

bool XcbcMac::begin() noexcept {
  std::memset(state_, 0, sizeof state_);
  buf_len_ = 0;
  return true;
}

bool XcbcMac::update(ByteSpan data) noexcept {
  std::size_t i = 0;
  while (i < data.size()) {
    if (buf_len_ == 16) {  // more follows: the held block is not the last
      for (int j = 0; j < 16; ++j) state_[j] ^= buf_[j];
      if (!encrypt(state_)) return false;
      buf_len_ = 0;
    }
    const std::size_t n = std::min<std::size_t>(16 - buf_len_, data.size() - i);
    std::memcpy(buf_ + buf_len_, data.data() + i, n);
    buf_len_ += n;
    i += n;
  }
  return true;
}

bool XcbcMac::finish(MutByteSpan out) noexcept {
  if (out.size() > 16) return false;
  if (buf_len_ == 16) {
    for (int j = 0; j < 16; ++j) state_[j] ^= buf_[j] ^ k2_[j];
  } else {
    buf_[buf_len_] = 0x80;
    std::memset(buf_ + buf_len_ + 1, 0, 15 - buf_len_);
    for (int j = 0; j < 16; ++j) state_[j] ^= buf_[j] ^ k3_[j];
  }
  if (!encrypt(state_)) return false;
  std::memcpy(out.data(), state_, out.size());
  return begin();
}

std::unique_ptr<IvGenerator> IvGenerator::create() {
  std::unique_ptr<IvGenerator> g(new IvGenerator());
  std::uint8_t key[16];
  random_bytes(key);
  random_bytes(g->salt_);
  g->ctx_ = EVP_CIPHER_CTX_new();
  bool ok = g->ctx_ && EVP_EncryptInit_ex(g->ctx_, EVP_aes_128_ecb(), nullptr, key, nullptr) == 1 &&
            EVP_CIPHER_CTX_set_padding(g->ctx_, 0) == 1;
  secure_wipe(key, sizeof key);
  return ok ? std::move(g) : nullptr;
}

IvGenerator::~IvGenerator() {
  EVP_CIPHER_CTX_free(ctx_);
  secure_wipe(salt_, sizeof salt_);
}

bool IvGenerator::next(std::uint64_t seq, MutByteSpan iv) noexcept {
  if (iv.size() > 16) return false;
  std::uint8_t block[16];
  std::memcpy(block, salt_, 8);
  store_be64(block + 8, seq);
  int outl = 0;
  if (EVP_EncryptUpdate(ctx_, block, &outl, block, 16) != 1 || outl != 16) return false;
  std::memcpy(iv.data(), block, iv.size());
  return true;
}

}  // namespace ipsecgw::core
