// ISAKMP encryption for IKEv1 (RFC 2408 3.1, the E flag; RFC 2409 5 and
// appendix B): CBC over everything after the header, with the IV chains
// RFC 2409 defines.
//
// - Phase 1 (Main/Aggressive Mode): the first encrypted message uses
//   hash(g^xi | g^xr); each later one the last cipher block of the one
//   before, whichever side sent it.
// - Each Quick Mode or Informational exchange, by message ID: first
//   hash(last phase-1 block | M-ID), then the last block of its previous
//   message.
//
// The plaintext is padded with zeros to the block size (the payloads'
// lengths say where they end; RFC 2409 5.3). One Ikev1Cipher serves both
// directions of one ISAKMP SA; it is not thread-safe (the IKE thread owns it).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/crypto.hpp"
#include "ike/ikev1_proposals.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

class Ikev1Cipher {
 public:
  // `key`: encryption_key(prf, SKEYID_e, cipher key length); `iv`:
  // phase1_iv(hash, g^xi, g^xr, block). nullptr on a bad size or suite.
  static std::unique_ptr<Ikev1Cipher> create(const Phase1Suite& s, ByteSpan key, ByteSpan iv);

  // A whole encrypted message: `h` with the E flag set, next payload and
  // length filled in, then the encrypted, padded chain. Message ID 0 is
  // phase 1; any other names a Quick Mode or Informational exchange.
  Bytes seal(Header h, const std::vector<RawPayload>& payloads);
  // Decrypts the body of a received message whose header says E; returns the
  // plaintext chain with its padding (parse it with allow_padding). The IV
  // chain moves on only when `commit` is true (after the message's HASH
  // checked out), so that a forged message cannot derail it (RFC 2409 5.3
  // leaves this to the implementation; strongSwan does the same).
  std::optional<Bytes> open(ByteSpan msg, std::string& why);
  void commit(ByteSpan msg);
  // Forgets a finished phase-2 exchange's IV chain.
  void end_exchange(std::uint32_t message_id) { phase2_.erase(message_id); }
  [[nodiscard]] std::size_t block() const noexcept { return block_; }

 private:
  Ikev1Cipher() = default;
  Bytes iv_for(std::uint32_t message_id) const;
  void advance(std::uint32_t message_id, ByteSpan ciphertext);
  Phase1Suite suite_;
  std::size_t block_ = 16;
  std::unique_ptr<core::Cipher> enc_, dec_;
  Bytes phase1_iv_;                          // the next phase-1 message's IV
  Bytes last_phase1_block_;                  // seeds phase-2 IVs
  std::map<std::uint32_t, Bytes> phase2_;    // next IV per phase-2 exchange
};

}  // namespace ipsecgw::ike::v1
