// What a Security Association is, independent of how it was keyed.
//
// This is the interface between keying (manual configuration today, the IKE
// engine next) and the data plane: both produce SaParams and hand them to an
// SaInstaller. `ike` and `esp` never include each other; they meet here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "core/algorithms.hpp"
#include "core/bytes.hpp"
#include "core/ip.hpp"
#include "core/spd.hpp"

namespace ipsecgw::core {

// kAhEsp: an AH+ESP bundle (RFC 4301 4.5): ESP (tunnel or transport) and
// AH in transport mode over it, IP | AH | ESP, two SAs per direction.
enum class IpsecProtocol : std::uint8_t { kEsp, kAh, kAhEsp };
enum class SaMode : std::uint8_t { kTunnel, kTransport };
enum class Encap : std::uint8_t { kNone, kUdp };  // raw IP protocol 50, or RFC 3948

inline constexpr std::uint16_t kNattPort = 4500;
inline constexpr std::uint32_t kDefaultReplayWindow = 64;
inline constexpr std::uint32_t kMaxReplayWindow = 65536;

struct SaDirection {
  std::uint32_t spi = 0;
  SecureBytes keymat;  // encryption key (+ salt), then integrity key
};

// Where an SA's packets go: which may change while the SA lives (a NAT in
// front of the peer that picked a new address or port, RFC 7296 2.23).
struct SaPath {
  IpAddress local_addr;
  IpAddress remote_addr;
  Encap encap = Encap::kNone;
  std::uint16_t remote_port = kNattPort;
};

// A pair of SAs (inbound and outbound) with the selectors they protect.
struct SaParams {
  std::string name;
  IpsecProtocol protocol = IpsecProtocol::kEsp;
  SaMode mode = SaMode::kTunnel;
  EspTransform transform;  // ESP
  AhTransform ah;          // AH (protocol kAh): `out`/`in` hold its SPIs and integrity keys
  IpAddress local_addr;
  IpAddress remote_addr;
  Encap encap = Encap::kNone;
  std::uint16_t remote_port = kNattPort;  // destination port for UDP encap
  Selectors selectors;                    // local_ts / remote_ts
  std::uint32_t replay_window = kDefaultReplayWindow;  // 0 disables anti-replay
  SaDirection out;
  SaDirection in;
  SaDirection ah_out;  // AH+ESP: the AH SAs' SPIs and integrity keys (`out`/`in` are ESP's)
  SaDirection ah_in;
  // Where SAs protect the same traffic (make-before-break during a rekey),
  // which one sends: the newest SA that is not on standby, else the oldest
  // on standby. A rekey's responder installs its new SA on standby, so it
  // goes on sending on the old one until that is deleted: the initiator may
  // not have the new one yet (RFC 7296 2.8; strongSwan delays installing
  // that outbound SA in the same way).
  bool standby = false;
  // Transport mode narrowed to a protocol or ports (L2TP: udp/1701) by the
  // configuration: the rest of the traffic between the two hosts goes on
  // in the clear. Never set for narrowing the peer asked for.
  bool clear_outside_selectors = false;

  // A copy with the key material left out, for what outlives key setup.
  [[nodiscard]] SaParams without_keys() const {
    SaParams c;
    c.name = name;
    c.protocol = protocol;
    c.mode = mode;
    c.transform = transform;
    c.ah = ah;
    c.local_addr = local_addr;
    c.remote_addr = remote_addr;
    c.encap = encap;
    c.remote_port = remote_port;
    c.selectors = selectors;
    c.replay_window = replay_window;
    c.out.spi = out.spi;
    c.in.spi = in.spi;
    c.ah_out.spi = ah_out.spi;
    c.ah_in.spi = ah_in.spi;
    c.standby = standby;
    c.clear_outside_selectors = clear_outside_selectors;
    return c;
  }
};

// How long the inbound half of a rekeyed SA stays (SaInstaller::remove_rekeyed).
inline constexpr std::chrono::seconds kRekeyedInboundDelay{5};

class SaInstaller {
 public:
  virtual ~SaInstaller() = default;
  // Returns false with a reason when the SA cannot be installed (bad key
  // length, SPI in use).
  virtual bool install(SaParams params, std::string& why) = 0;
  virtual bool remove(const std::string& name) = 0;
  // Removes an SA a rekey replaced: its outbound half at once, its inbound
  // half only after kRekeyedInboundDelay, so that what the peer sent on it
  // before it switched (in flight, or queued on another worker behind the
  // DELETE) still decrypts. strongSwan does the same (charon's
  // delete_rekeyed_delay, 5 s). An installer without that delay removes it.
  virtual bool remove_rekeyed(const std::string& name) { return remove(name); }
  // Sends an installed SA's packets along a new path, keeping its sequence
  // numbers, replay window and counters; false when no SA has that name.
  virtual bool update_path(const std::string& name, const SaPath& path) = 0;
};

}  // namespace ipsecgw::core
