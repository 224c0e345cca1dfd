// ESP Security Associations (RFC 4303), tunnel and transport mode:
// encapsulation of inner IPv4/IPv6 packets and decapsulation with every
// check, in place. In transport mode the packet from the TUN device gives
// up its IP header (the kernel writes the outer one) and decapsulation
// builds it again from the SA's addresses.
//
// Outbound pipeline (encapsulate): sequence number (atomic, no wrap on a
// non-ESN SA), IV (the sequence number for counter modes, an encrypted
// counter for CBC), padding and trailer, encryption, ICV.
//
// Inbound pipeline (decapsulate), in the order RFC 4303 3.4 gives it:
// replay pre-check, length/alignment, ICV or AEAD open, padding check,
// replay window update, inner header sanity, inbound selector check.
// Every failure returns a named core::Drop and is counted on the SA.
//
// Threads: an OutboundSa is shared by every worker (the sequence number and
// the counters are atomic); its crypto contexts are not thread-safe, so it
// has one set per worker ("lane"), and worker w encrypts with lane w only.
// An InboundSa, its replay window included, has exactly one owning worker
// (the data plane steers each SPI to one worker).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/counters.hpp"
#include "core/crypto.hpp"
#include "core/packet.hpp"
#include "core/sa.hpp"
#include "esp/replay.hpp"

namespace ipsecgw::esp {

inline constexpr std::size_t kEspHeaderLen = 8;  // SPI + sequence number

// Crypto state for one direction of an SA.
class EspCrypto {
 public:
  static std::unique_ptr<EspCrypto> create(const core::EspTransform& t, core::ByteSpan keymat,
                                           core::CipherDir dir, std::string& why);
  // Encrypts/authenticates an ESP packet laid out as hdr|iv|payload|icv.
  bool protect(core::MutByteSpan esp, std::size_t iv_len, std::uint32_t seq_hi) noexcept;
  bool unprotect(core::MutByteSpan esp, std::size_t iv_len, std::uint32_t seq_hi) noexcept;
  [[nodiscard]] const core::EspTransform& transform() const noexcept { return t_; }

 private:
  EspCrypto() = default;
  core::EspTransform t_;
  std::unique_ptr<core::Aead> aead_;
  std::unique_ptr<core::Cipher> cipher_;
  std::unique_ptr<core::Hmac> hmac_;
  std::unique_ptr<core::GmacMac> gmac_;  // ENCR_NULL_AUTH_AES_GMAC
};

class OutboundSa {
 public:
  // `lanes`: how many workers may encrypt with it at once (one set of crypto
  // contexts each).
  static std::unique_ptr<OutboundSa> create(const core::SaParams& p, std::string& why, unsigned lanes = 1);
  // The same SA sent along another path (the peer's NAT mapping changed,
  // RFC 7296 2.23): the copy shares the keys, the sequence number and the
  // counters with `sa`, so a worker still holding `sa` in an older snapshot
  // and one holding the copy never send two packets with one sequence number.
  static std::unique_ptr<OutboundSa> moved(const OutboundSa& sa, const core::SaPath& path);

  // Turns the inner IP packet in `pkt` into an ESP packet (SPI..ICV), or
  // for AH into a whole IP packet with its outer header (the AH socket
  // sends it as it is).
  // `lane`: the calling worker's (< lanes).
  core::Drop encapsulate(core::Packet& pkt, unsigned lane = 0) noexcept;
  // As encapsulate, with the sequence number and IV given (known-answer
  // tests); does not touch the SA's counter.
  core::Drop encapsulate_with(core::Packet& pkt, std::uint64_t seq, core::ByteSpan iv, unsigned lane = 0) noexcept;
  [[nodiscard]] unsigned lanes() const noexcept { return static_cast<unsigned>(state_->lanes.size()); }
  // The worker that encrypts this SA's packets (the others hand theirs to
  // it), so that its sequence numbers go out in order: a peer's replay
  // window (32 in Linux, 128 in strongSwan's libipsec) never sees them
  // reordered by two workers racing. Set by the data plane at install.
  [[nodiscard]] unsigned owner() const noexcept { return state_->owner; }
  void set_owner(unsigned w) noexcept { state_->owner = w; }

  [[nodiscard]] std::uint32_t spi() const noexcept { return spi_; }
  [[nodiscard]] const core::SaParams& params() const noexcept { return params_; }
  [[nodiscard]] core::TrafficCounters& counters() noexcept { return state_->counters; }
  [[nodiscard]] const core::TrafficCounters& counters() const noexcept { return state_->counters; }
  [[nodiscard]] std::uint64_t next_seq() const noexcept { return state_->next_seq.load(); }
  void set_next_seq(std::uint64_t s) noexcept { state_->next_seq.store(s); }
  // True when no other OutboundSa (an earlier path of this SA) shares the
  // state: its counters are final once this object is unreferenced.
  [[nodiscard]] bool sole_holder() const noexcept { return state_.use_count() == 1; }

 private:
  OutboundSa() = default;
  // AH over the IP packet in `pkt`: the SA's mode, or (`bundle`) transport
  // mode with the AH SA of an AH+ESP bundle over the ESP packet.
  core::Drop encapsulate_ah(core::Packet& pkt, std::uint64_t seq, unsigned lane, bool bundle = false) noexcept;
  // AH+ESP: an IP header to the peer around the ESP packet in `pkt`, then AH.
  core::Drop bundle_ah(core::Packet& pkt, unsigned lane) noexcept;
  // What every path of the SA shares.
  struct State {
    std::uint64_t max_seq = 0;
    std::atomic<std::uint64_t> next_seq{1};
    std::atomic<std::uint64_t> ah_next_seq{1};  // AH+ESP: the AH SA's own sequence numbers
    unsigned owner = 0;  // set before the SA is published, read-only after
    // One worker's crypto contexts.
    struct Lane {
      std::unique_ptr<EspCrypto> crypto;  // ESP
      std::unique_ptr<core::Mac> ah_mac;  // AH
      std::unique_ptr<core::IvGenerator> ivgen;
    };
    std::vector<Lane> lanes;
    core::TrafficCounters counters;
  };
  core::SaParams params_;  // keymat cleared after the crypto is set up
  std::uint32_t spi_ = 0;
  std::shared_ptr<State> state_;
};

class InboundSa {
 public:
  static std::unique_ptr<InboundSa> create(const core::SaParams& p, std::string& why);

  // `pkt` holds an ESP packet whose SPI maps to this SA, or for AH the whole
  // IP packet; on kNone it holds the inner IP packet (transport mode: the
  // packet with its header rebuilt). One worker owns the SA (the data
  // plane steers its SPI to it); should a packet of it reach another worker
  // at the same time (the peer switched between raw ESP and UDP, or an
  // attacker's copy), that one is dropped (kContended), never decrypted
  // alongside: a try-only flag, no waiting.
  core::Drop decapsulate(core::Packet& pkt) noexcept;

  [[nodiscard]] std::uint32_t spi() const noexcept { return spi_; }
  [[nodiscard]] const core::SaParams& params() const noexcept { return params_; }
  [[nodiscard]] core::TrafficCounters& counters() noexcept { return counters_; }
  [[nodiscard]] const core::TrafficCounters& counters() const noexcept { return counters_; }
  [[nodiscard]] const ReplayWindow& replay() const noexcept { return replay_; }

 private:
  explicit InboundSa(std::uint32_t window) : replay_(window), ah_replay_(window) {}
  core::Drop open(core::Packet& pkt) noexcept;
  // AH alone, or (`bundle`) the AH of an AH+ESP bundle, which leaves the ESP
  // packet (from its SPI on) for open().
  core::Drop open_ah(core::Packet& pkt, bool bundle) noexcept;
  core::SaParams params_;
  std::uint32_t spi_ = 0;
  std::unique_ptr<EspCrypto> crypto_;
  std::unique_ptr<core::Mac> ah_mac_;
  ReplayWindow replay_;
  ReplayWindow ah_replay_;  // AH+ESP: the AH SA's window (replay_ is ESP's)
  std::uint32_t esp_spi_ = 0;  // AH+ESP: the ESP SA inside (spi_ is the AH SA's)
  core::TrafficCounters counters_;
  std::atomic<bool> busy_{false};  // a worker is in decapsulate()
};

// Reads the SPI of an ESP packet; false when too short to have one.
bool peek_spi(core::ByteSpan esp, std::uint32_t& spi) noexcept;

}  // namespace ipsecgw::esp
