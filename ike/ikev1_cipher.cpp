#include "ike/ikev1_cipher.hpp"

#include "ike/ikev1_crypto.hpp"

namespace ipsecgw::ike::v1 {

std::unique_ptr<Ikev1Cipher> Ikev1Cipher::create(const Phase1Suite& s, ByteSpan key, ByteSpan iv) {
  auto c = std::unique_ptr<Ikev1Cipher>(new Ikev1Cipher());
  c->suite_ = s;
  c->block_ = core::block_len(s.enc.alg);
  if (s.enc.alg != core::EncAlg::kAesCbc && s.enc.alg != core::EncAlg::kTripleDesCbc) return nullptr;
  if (key.size() != s.enc.key_bytes || iv.size() != c->block_) return nullptr;
  c->enc_ = core::Cipher::create(s.enc.alg, key, {}, core::CipherDir::kEncrypt);
  c->dec_ = core::Cipher::create(s.enc.alg, key, {}, core::CipherDir::kDecrypt);
  if (!c->enc_ || !c->dec_) return nullptr;
  c->phase1_iv_.assign(iv.begin(), iv.end());
  return c;
}

Bytes Ikev1Cipher::iv_for(std::uint32_t message_id) const {
  if (message_id == 0) return phase1_iv_;
  if (auto it = phase2_.find(message_id); it != phase2_.end()) return it->second;
  // The first message of a phase-2 exchange (RFC 2409 appendix B).
  return phase2_iv(suite_.hash, last_phase1_block_.empty() ? phase1_iv_ : last_phase1_block_, message_id, block_);
}

void Ikev1Cipher::advance(std::uint32_t message_id, ByteSpan ciphertext) {
  const ByteSpan last = ciphertext.last(block_);
  if (message_id == 0) {
    phase1_iv_.assign(last.begin(), last.end());
    last_phase1_block_ = phase1_iv_;
  } else {
    phase2_[message_id].assign(last.begin(), last.end());
  }
}

Bytes Ikev1Cipher::seal(Header h, const std::vector<RawPayload>& payloads) {
  Bytes body = encode_chain(payloads);
  body.resize((body.size() + block_ - 1) / block_ * block_, 0);
  if (body.empty()) body.resize(block_, 0);
  const Bytes iv = iv_for(h.message_id);
  if (!enc_->run(iv, body)) return {};
  advance(h.message_id, body);
  h.flags |= kFlagEncrypted;
  h.next = payloads.empty() ? Payload::kNone : payloads.front().type;
  h.length = static_cast<std::uint32_t>(kHeaderLen + body.size());
  Bytes out;
  out.reserve(h.length);
  write_header(out, h);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

std::optional<Bytes> Ikev1Cipher::open(ByteSpan msg, std::string& why) {
  DecodeError err;
  auto h = parse_header(msg, err);
  if (!h) {
    why = err.detail;
    return std::nullopt;
  }
  if (!h->encrypted()) {
    why = "not encrypted";
    return std::nullopt;
  }
  const ByteSpan ct = msg.subspan(kHeaderLen);
  if (ct.empty() || ct.size() % block_ != 0) {
    why = "encrypted body of " + std::to_string(ct.size()) + " bytes is not a multiple of the block size";
    return std::nullopt;
  }
  Bytes plain(ct.begin(), ct.end());
  if (!dec_->run(iv_for(h->message_id), plain)) {
    why = "decryption failed";
    return std::nullopt;
  }
  return plain;
}

void Ikev1Cipher::commit(ByteSpan msg) {
  DecodeError err;
  auto h = parse_header(msg, err);
  if (!h || msg.size() < kHeaderLen + block_) return;
  advance(h->message_id, msg.subspan(kHeaderLen));
}

}  // namespace ipsecgw::ike::v1
