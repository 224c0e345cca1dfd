// IKEv1 Main Mode with pre-shared keys (RFC 2409 5, 5.4), both roles, as
// one exchange object in the manner of strongSwan's ikev1 main_mode task:
// build() gives the next message of this side, process() takes the peer's.
//
//   Initiator                          Responder
//   (1) HDR, SA, VID            -->
//                               <--    (2) HDR, SA, VID
//   (3) HDR, KE, Ni             -->
//                               <--    (4) HDR, KE, Nr
//   (5) HDR*, IDii, HASH_I      -->
//                               <--    (6) HDR*, IDir, HASH_R
//
// Messages 5 and 6 are encrypted (Ikev1Cipher); HASH_I/HASH_R are checked
// in constant time. Sans-I/O: bytes in and out; randomness injected. The
// authentication step is one function (psk_skeyid) so that signatures can
// replace it (RFC 2409 5.1) without touching the rest.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/ikev1_cipher.hpp"
#include "ike/ikev1_crypto.hpp"
#include "ike/ikev1_proposals.hpp"
#include "ike/isakmp.hpp"

namespace ipsecgw::ike::v1 {

struct MainModeConfig {
  std::vector<core::Proposal> proposals;  // phase-1 keywords, our preference first
  core::SecureBytes psk;
  IdPayload local_id;                     // what we send as IDii/IDir
  std::optional<IdPayload> remote_id;     // what the peer must send; empty: anything
  std::uint32_t life_seconds = 28800;
  std::function<void(core::MutByteSpan)> random;  // empty: OpenSSL's DRBG
  // NAT traversal (RFC 3947): the addresses and ports of this exchange as
  // this side sees them. With both set, NAT-D payloads go into messages 3
  // and 4 when both ends announced RFC 3947's vendor ID.
  std::optional<core::IpAddress> local_addr, remote_addr;
  std::uint16_t local_port = 500, remote_port = 500;
  // The initiator adds N(INITIAL-CONTACT) to message 5 (RFC 2407 4.6.3.3):
  // the peer may drop whatever SAs it still holds with us. Not when this
  // ISAKMP SA replaces one of ours (phase-1 rekey).
  bool initial_contact = false;
  // Aggressive Mode (RFC 2409 5, 5.4) instead of Main Mode: three messages,
  // identities in the clear, HASH_R in message 2 (see the README on why a
  // responder refuses it unless the connection allows it):
  //   (1) HDR, SA, KE, Ni, IDii, VIDs         -->
  //                                            <--  (2) HDR, SA, KE, Nr, IDir, HASH_R, VIDs [, NAT-D x2]
  //   (3) HDR*, HASH_I [, NAT-D x2]           -->
  // Message 3 is encrypted, as strongSwan requires. All offered suites share
  // the first one's DH group (message 1 carries the KE).
  bool aggressive = false;
};

// What a completed Main Mode leaves for Quick Mode and the ISAKMP SA.
struct Phase1Sa {
  std::uint64_t cky_i = 0, cky_r = 0;
  Phase1Suite suite;
  Phase1Keys keys;  // SKEYID, SKEYID_d, _a, _e
  std::unique_ptr<Ikev1Cipher> cipher;
  IdPayload peer_id;
  bool natt = false;        // both ends speak RFC 3947 (or, natt_draft, only its drafts)
  bool natt_draft = false;  // NAT-D/NAT-OA 130/131, UDP encapsulation modes 61443/61444
  bool nat_local = false;   // we are behind a NAT: float to 4500, send keepalives
  bool nat_remote = false;  // the peer is
  bool peer_dpd = false;              // the peer sent RFC 3706's vendor ID
  bool peer_initial_contact = false;  // its message 5 carried INITIAL-CONTACT
};

class MainMode {
 public:
  MainMode(bool initiator, MainModeConfig cfg);

  // This side's next message, or nullopt when it waits for the peer (or is
  // done, or failed).
  std::optional<Bytes> build();
  // The peer's next message (a whole ISAKMP datagram). False when the
  // exchange failed: error() says why, notify() what to tell the peer.
  bool process(ByteSpan datagram);

  [[nodiscard]] bool done() const noexcept { return step_ == last_step() && !failed_; }
  [[nodiscard]] bool aggressive() const noexcept { return cfg_.aggressive; }
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  // The last message was rejected because it does not decrypt or its hash
  // does not verify: not authenticated, so the exchange goes on (a forged
  // packet cannot end it), but with the same PSK this does not happen.
  [[nodiscard]] bool auth_suspect() const noexcept { return auth_suspect_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] Notify notify() const noexcept { return notify_; }
  [[nodiscard]] std::uint64_t cky_i() const noexcept { return cky_i_; }
  [[nodiscard]] std::uint64_t cky_r() const noexcept { return cky_r_; }
  // After messages 3 and 4: a NAT lies between us (RFC 3947 3.2), so the
  // initiator floats to port 4500 for message 5 (RFC 3947 4).
  [[nodiscard]] bool nat_detected() const noexcept { return sa_.nat_local || sa_.nat_remote; }
  // After done(): the ISAKMP SA's keys and cipher (moved out once).
  Phase1Sa take_sa();

 private:
  bool fail(Notify n, std::string why);
  bool reject_auth(Notify n, std::string why);
  [[nodiscard]] int last_step() const noexcept { return cfg_.aggressive ? 3 : 6; }
  std::optional<Bytes> build_aggressive();
  bool process_aggressive(ByteSpan datagram, const Header& h);
  bool choose(const Message& m);             // the responder picks a suite from message 1's SA
  bool accept_choice(const Message& m);      // the initiator checks the responder's choice
  std::vector<RawPayload> vendor_ids() const;
  void note_vendor_ids(const Message& m);
  void random(core::MutByteSpan out);
  Header header() const;
  bool derive_keys();
  bool check_hash(const Message& m);
  Bytes my_hash() const;
  std::vector<RawPayload> nat_d_payloads() const;
  void check_nat_d(const Message& m);

  bool initiator_;
  MainModeConfig cfg_;
  int step_ = 0;  // messages exchanged so far (0..6)
  bool failed_ = false;
  bool auth_suspect_ = false;
  std::string error_;
  Notify notify_ = Notify::kPayloadMalformed;
  std::uint64_t cky_i_ = 0, cky_r_ = 0;
  Bytes sai_b_;  // the initiator's SA payload body, for HASH_I/HASH_R
  SaPayload offer_;
  std::optional<Phase1Suite> suite_;
  Transform chosen_;
  std::unique_ptr<DhKey> dh_;
  Bytes gxi_, gxr_, ni_, nr_;
  Bytes my_id_b_;
  Bytes peer_id_b_;  // Aggressive Mode: IDii's body from message 1, for HASH_I in message 3
  bool peer_natt_ = false;        // the peer sent RFC 3947's vendor ID
  bool peer_natt_draft_ = false;  // ... or one of the drafts' (02, 02\n, 03)
  [[nodiscard]] bool natt() const noexcept { return peer_natt_ || peer_natt_draft_; }
  bool peer_dpd_ = false;
  Phase1Sa sa_;
};

}  // namespace ipsecgw::ike::v1
