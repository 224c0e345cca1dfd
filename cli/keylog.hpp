// Wireshark key logs, off by default: the UAT files Wireshark reads to
// decrypt ESP ("esp_sa") and IKEv2 ("ikev2_decryption_table"), in the
// format of Wireshark 4.0. Files are created with mode 0600 and appended
// to; they hold secrets, which is the point, so they are written only when
// the configuration names them. AH SAs, which Wireshark reads without keys,
// go to a file of their own for tools that verify ICVs: esp_sa's columns
// without the two for encryption.
#pragma once

#include <mutex>
#include <string>

#include "core/sa.hpp"
#include "ike/engine.hpp"

namespace ipsecgw::cli {

class KeyLog {
 public:
  KeyLog(std::string esp_path, std::string ike_path, std::string ikev1_path = {}, std::string ah_path = {})
      : esp_(std::move(esp_path)), ike_(std::move(ike_path)), ikev1_(std::move(ikev1_path)),
        ah_(std::move(ah_path)) {}
  void esp(const core::SaParams& p);    // both directions of an SA pair (ESP or AH)
  void ike(const ike::IkeKeyLog& k);
  // IKEv1: the initiator's cookie and the ISAKMP SA's encryption key
  // (Wireshark's "ikev1_decryption_table").
  void ikev1(std::uint64_t cky_i, core::ByteSpan enc_key);
  [[nodiscard]] bool ikev1_enabled() const { return !ikev1_.empty(); }
  [[nodiscard]] bool esp_enabled() const { return !esp_.empty(); }
  [[nodiscard]] bool ike_enabled() const { return !ike_.empty(); }

 private:
  void append(const std::string& path, const std::string& lines);
  std::mutex mutex_;
  std::string esp_, ike_, ikev1_, ah_;
};

}  // namespace ipsecgw::cli
