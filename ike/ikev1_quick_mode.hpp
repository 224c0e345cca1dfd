// IKEv1 Quick Mode (RFC 2409 5.5), both roles, one ESP or AH SA pair per
// exchange, or an AH+ESP bundle (an AH and an ESP proposal with one number,
// RFC 2408 4.2: both SAs, each with its own SPI and KEYMAT), tunnel or
// transport mode,
// as one exchange object beside MainMode (strongSwan's quick_mode task):
//
//   Initiator                                   Responder
//   (1) HDR*, HASH(1), SA, Ni [, KE] , IDci, IDcr  -->
//                                               <--  (2) HDR*, HASH(2), SA, Nr [, KE], IDci, IDcr
//   (3) HDR*, HASH(3)                           -->
//
// Every message is encrypted on the exchange's own IV chain (Ikev1Cipher,
// keyed by the message ID) and authenticated by its HASH, checked in
// constant time before anything in it is used. With a DH group in the ESP
// proposal the exchange carries KE payloads (PFS) and KEYMAT includes the
// new shared secret. The result is what the data plane installs: SPIs,
// KEYMAT for each direction, the transform and the selectors.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/ip.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/ikev1_main_mode.hpp"
#include "ike/ikev1_phase2.hpp"

namespace ipsecgw::ike::v1 {

struct QuickModeConfig {
  std::vector<core::Proposal> esp_proposals;  // our preference first; a DH group means PFS
  std::vector<core::Proposal> ah_proposals;   // AH alone (no esp_proposals), or with ESP: a bundle
  core::IpRange local_ts, remote_ts;          // our side's and the peer's client networks
  std::uint8_t proto = 0;                     // the client IDs' protocol, 0: any
  std::uint16_t local_port = 0, remote_port = 0;  // one port per ID (RFC 2407 4.6.2), 0: any
  EncapMode mode = EncapMode::kTunnel;        // kUdpTunnel when NAT-T is in use; k(Udp)Transport
  std::uint32_t life_seconds = 3600;
  std::uint64_t life_kilobytes = 0;
  std::function<void(core::MutByteSpan)> random;  // empty: OpenSSL's DRBG
};

struct QuickModeResult {
  Phase2Suite suite;                      // ESP, or AH when there is no ESP
  std::uint32_t spi_in = 0, spi_out = 0;  // ours (the peer sends with it), the peer's
  core::SecureBytes keymat_in, keymat_out;
  std::optional<Phase2Suite> ah;          // an AH+ESP bundle's AH SA
  std::uint32_t ah_spi_in = 0, ah_spi_out = 0;
  core::SecureBytes ah_keymat_in, ah_keymat_out;
  core::IpRange local_ts, remote_ts;      // as agreed in IDci/IDcr
  std::uint8_t proto = 0;
  std::uint16_t local_port = 0, remote_port = 0;
  bool pfs = false;
};

class QuickMode {
 public:
  // `sa`: the ISAKMP SA from Main Mode (its cipher carries the IV chains);
  // `message_id`: the initiator's fresh non-zero M-ID (the responder takes
  // it from message 1); `spi_in`: our inbound SPI for the new SA.
  // `ah_spi_in`: a bundle's inbound AH SPI.
  QuickMode(bool initiator, Phase1Sa& sa, QuickModeConfig cfg, std::uint32_t message_id, std::uint32_t spi_in,
            std::uint32_t ah_spi_in = 0);

  std::optional<Bytes> build();
  // False when the message was rejected (it does not decrypt or verify:
  // failed() stays false, the exchange goes on) or failed the exchange
  // (failed(): an authenticated message the exchange cannot accept).
  bool process(ByteSpan datagram);

  [[nodiscard]] bool done() const noexcept { return step_ == 3 && !failed_; }
  [[nodiscard]] bool failed() const noexcept { return failed_; }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] Notify notify() const noexcept { return notify_; }
  [[nodiscard]] std::uint32_t message_id() const noexcept { return mid_; }
  [[nodiscard]] bool initiator() const noexcept { return initiator_; }
  // After done(): the SA pair to install.
  [[nodiscard]] const QuickModeResult& result() const noexcept { return result_; }

 private:
  bool fail(Notify n, std::string why);
  bool reject(std::string why);  // not the peer's (does not verify): the exchange goes on
  void random(core::MutByteSpan out);
  Header header() const;
  std::vector<RawPayload> body(const Bytes& nonce);  // SA, nonce, [KE], IDci, IDcr
  bool finish();
  [[nodiscard]] bool primary_is_ah() const noexcept { return cfg_.esp_proposals.empty(); }
  [[nodiscard]] bool bundle() const noexcept { return !cfg_.esp_proposals.empty() && !cfg_.ah_proposals.empty(); }
  // Our suites: the primary SA's (ESP, or AH alone), or (`ah_part`) a bundle's AH.
  std::vector<Phase2Suite> suites_of(bool ah_part, std::uint32_t life_s, std::uint64_t life_kb, std::string& why) const;

  bool initiator_;
  Phase1Sa& sa_;
  QuickModeConfig cfg_;
  std::uint32_t mid_;
  int step_ = 0;
  bool failed_ = false;
  std::string error_;
  Notify notify_ = Notify::kPayloadMalformed;
  std::vector<Phase2Suite> offered_;  // initiator: what message 1 offers
  std::optional<Phase2Suite> chosen_;
  std::uint8_t chosen_number_ = 1;
  std::vector<Phase2Suite> offered_ah_;  // a bundle's AH part
  std::optional<Phase2Suite> chosen_ah_;
  std::uint8_t chosen_ah_number_ = 1;
  std::uint8_t chosen_prop_number_ = 1;  // the responder answers with the offer's proposal number
  std::unique_ptr<DhKey> dh_;
  Bytes peer_ke_, ni_, nr_;
  std::optional<core::SecureBytes> gxy_;
  std::uint32_t resp_life_s_ = 0;   // responder: RESPONDER-LIFETIME to send (0: none)
  std::uint64_t resp_life_kb_ = 0;
  QuickModeResult result_;
};

}  // namespace ipsecgw::ike::v1
