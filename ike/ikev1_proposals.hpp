// IKEv1 phase-1 proposals (RFC 2409 appendix A, RFC 3602 for AES): the
// strongSwan keywords of a connection ("aes128-sha256-modp2048",
// "3des-sha1-modp1024") as ISAKMP transforms, and the responder's choice
// among the transforms an initiator offers.
//
// IKEv1 has no transform types: each transform is a whole suite (cipher,
// hash, authentication method, group, lifetime), so one configured proposal
// with lists of alternatives becomes one transform per combination. The
// prf is the HMAC of the negotiated hash (RFC 2409 4).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/algorithms.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

// Phase-1 attribute types (RFC 2409 appendix A).
enum class P1Attr : std::uint16_t {
  kEncryption = 1,
  kHash = 2,
  kAuthMethod = 3,
  kGroup = 4,
  kLifeType = 11,
  kLifeDuration = 12,
  kKeyLength = 14,
};

enum class AuthMethod : std::uint16_t {
  kPsk = 1,
  kDss = 2,
  kRsaSig = 3,
  kEcdsa256 = 9,  // RFC 4754
  kEcdsa384 = 10,
  kEcdsa521 = 11,
};

inline constexpr std::uint8_t kKeyIke = 1;       // the phase-1 transform ID
inline constexpr std::uint16_t kLifeSeconds = 1;  // life type
inline constexpr std::uint16_t kLifeKilobytes = 2;

struct Phase1Suite {
  core::EncSpec enc;              // AES-CBC 128/192/256 or 3DES-CBC
  core::PrfAlg hash = core::PrfAlg::kHmacSha1;
  core::DhGroup group = core::DhGroup::kModp2048;
  AuthMethod auth = AuthMethod::kPsk;
  std::uint32_t life_seconds = 0;  // 0: not offered
  [[nodiscard]] std::string name() const;  // "aes128-sha256-modp2048"
  bool operator==(const Phase1Suite&) const = default;
};

// Every combination a configured proposal allows, in its order. Ciphers,
// hashes and groups IKEv1 cannot carry (AEAD, ChaCha20, no integrity) are
// left out; `why` says so when nothing is left.
std::vector<Phase1Suite> phase1_suites(const core::Proposal& p, AuthMethod auth, std::uint32_t life_seconds,
                                       std::string& why);

// The transform for a suite, attributes in the order implementations send
// them (encryption, key length, hash, authentication, group, life).
Transform encode_phase1(const Phase1Suite& s, std::uint8_t number);
// A received transform as a suite; nullopt with the reason when it names
// something this implementation does not do (DES, an unknown group, ...).
std::optional<Phase1Suite> decode_phase1(const Transform& t, std::string& why);

struct Phase1Choice {
  Phase1Suite suite;
  std::uint8_t proposal_number = 1;
  Transform transform;  // as offered: the responder returns it unchanged (RFC 2409 5)
};
// The responder's pick: the first offered transform (the initiator's order)
// that one of our proposals allows with this authentication method.
std::optional<Phase1Choice> select_phase1(const std::vector<core::Proposal>& ours, AuthMethod auth,
                                          const SaPayload& offered, std::string& why);

}  // namespace ipsecgw::ike::v1
