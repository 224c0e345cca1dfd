// IKEv1 cryptography (RFC 2409): SKEYID for each authentication method,
// SKEYID_d/_a/_e (section 5), the encryption key expanded from SKEYID_e
// when the cipher needs more than the prf gives (appendix B), the phase-1
// and phase-2 CBC IVs (appendix B), HASH_I/HASH_R (5), the Quick Mode and
// Informational hashes (5.5, 5.7) and KEYMAT (5.5).
//
// Everything here is a pure function of its inputs: the exchanges call it;
// nothing keeps state. The prf is the HMAC of the negotiated hash (RFC 2409
// 4: "the prf ... is the HMAC version of the negotiated hash").
#pragma once

#include <cstdint>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "core/ip.hpp"

namespace ipsecgw::ike::v1 {

using core::Bytes;
using core::ByteSpan;
using core::SecureBytes;

// SKEYID = prf(pre-shared-key, Ni_b | Nr_b)          (pre-shared keys)
SecureBytes skeyid_psk(core::PrfAlg prf, ByteSpan psk, ByteSpan ni, ByteSpan nr);
// SKEYID = prf(Ni_b | Nr_b, g^xy)                     (signatures)
SecureBytes skeyid_sig(core::PrfAlg prf, ByteSpan ni, ByteSpan nr, ByteSpan gxy);

struct Phase1Keys {
  SecureBytes skeyid, d, a, e;
};
// SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0)
// SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1)
// SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2)
Phase1Keys derive_phase1(core::PrfAlg prf, SecureBytes skeyid, ByteSpan gxy, std::uint64_t cky_i,
                         std::uint64_t cky_r);

// The cipher key from SKEYID_e (appendix B): its first `len` bytes, or,
// when it is shorter, K1 | K2 | ... with K1 = prf(SKEYID_e, 0),
// Kn = prf(SKEYID_e, Kn-1), cut to `len`.
SecureBytes encryption_key(core::PrfAlg prf, ByteSpan skeyid_e, std::size_t len);

// Phase-1 IV = hash(g^xi | g^xr), cut to the cipher's block size.
Bytes phase1_iv(core::PrfAlg hash, ByteSpan gxi, ByteSpan gxr, std::size_t block);
// IV of a phase-2 or Informational exchange = hash(last phase-1 CBC
// block | M-ID), cut to the block size.
Bytes phase2_iv(core::PrfAlg hash, ByteSpan last_phase1_block, std::uint32_t message_id,
                std::size_t block);

// NAT-D (RFC 3947 3.2) = HASH(CKY-I | CKY-R | IP | Port), with the negotiated hash.
Bytes nat_d(core::PrfAlg hash, std::uint64_t cky_i, std::uint64_t cky_r, const core::IpAddress& ip,
            std::uint16_t port);

// HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)
// HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b)
// `sai_b` is the initiator's whole SA payload body (without its generic
// header); `id_b` the sender's ID payload body.
Bytes hash_i(core::PrfAlg prf, ByteSpan skeyid, ByteSpan gxi, ByteSpan gxr, std::uint64_t cky_i,
             std::uint64_t cky_r, ByteSpan sai_b, ByteSpan idii_b);
Bytes hash_r(core::PrfAlg prf, ByteSpan skeyid, ByteSpan gxi, ByteSpan gxr, std::uint64_t cky_i,
             std::uint64_t cky_r, ByteSpan sai_b, ByteSpan idir_b);

// Quick Mode (5.5):
// HASH(1) = prf(SKEYID_a, M-ID | the message after HASH)
// HASH(2) = prf(SKEYID_a, M-ID | Ni_b | the message after HASH)
// HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)
// Informational (5.7): HASH(1) with the N or D payload as the message.
Bytes qm_hash1(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan rest);
Bytes qm_hash2(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan ni_b, ByteSpan rest);
Bytes qm_hash3(core::PrfAlg prf, ByteSpan skeyid_a, std::uint32_t mid, ByteSpan ni_b, ByteSpan nr_b);

// KEYMAT for one SA of a Quick Mode (5.5), `len` bytes:
// K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
// Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b).
// `spi` is the SPI of the SA the keys are for (the receiver's).
SecureBytes keymat(core::PrfAlg prf, ByteSpan skeyid_d, ByteSpan gxy_qm, std::uint8_t protocol,
                   std::uint32_t spi, ByteSpan ni_b, ByteSpan nr_b, std::size_t len);

}  // namespace ipsecgw::ike::v1
