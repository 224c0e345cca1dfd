// What both IKE versions do with a negotiated Child (IPsec) SA pair: the
// SaParams the data plane installs, and its soft and hard lifetimes.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "core/sa.hpp"
#include "ike/engine.hpp"

namespace ipsecgw::ike {

// Where a Child SA's packets go: UDP-encapsulated to the peer's port when `udp`.
inline core::SaPath child_sa_path(const Endpoint& local, const Endpoint& remote, bool udp) {
  return {local.addr, remote.addr, udp ? core::Encap::kUdp : core::Encap::kNone, udp ? remote.port : core::kNattPort};
}

// An ESP SA pair named conn/child/spi_in, UDP-encapsulated to the peer's
// port when `udp`, keyed with each direction's KEYMAT.
inline core::SaParams child_sa_params(const std::string& conn, const ChildConfig& cc, const core::EspTransform& t,
                                      const Endpoint& local, const Endpoint& remote, bool udp,
                                      const std::vector<core::IpRange>& local_ts,
                                      const std::vector<core::IpRange>& remote_ts, std::uint32_t spi_in,
                                      std::uint32_t spi_out, core::SecureBytes key_in, core::SecureBytes key_out) {
  core::SaParams sp;
  sp.name = conn + "/" + cc.name + "/" + core::hex32(spi_in);
  sp.protocol = core::IpsecProtocol::kEsp;
  sp.mode = cc.mode;
  sp.transform = t;
  const core::SaPath path = child_sa_path(local, remote, udp);
  sp.local_addr = path.local_addr;
  sp.remote_addr = path.remote_addr;
  sp.encap = path.encap;
  sp.remote_port = path.remote_port;
  for (const auto& r : local_ts) sp.selectors.local.push_back({r.lo, r.hi});
  for (const auto& r : remote_ts) sp.selectors.remote.push_back({r.lo, r.hi});
  sp.replay_window = cc.replay_window;
  sp.in.spi = spi_in;
  sp.out.spi = spi_out;
  sp.in.keymat = std::move(key_in);
  sp.out.keymat = std::move(key_out);
  return sp;
}

struct ChildTimers {
  TimePoint rekey_at = TimePoint::max();
  TimePoint expire_at = TimePoint::max();
};

// The hard lifetime is life_time when set (also with rekey_time 0), else
// rekey_time + 10%, or the peer's when shorter (`peer_life`, 0: none). The
// soft one comes before it, less up to 10% jitter so that both ends do not
// rekey at once.
inline ChildTimers child_timers(const ChildConfig& cc, TimePoint now, std::uint32_t peer_life,
                                const std::function<void(core::MutByteSpan)>& random) {
  ChildTimers t;
  std::uint32_t life = cc.life_time ? cc.life_time : cc.rekey_time + cc.rekey_time / 10;
  if (peer_life && (life == 0 || peer_life < life)) life = peer_life;
  std::uint32_t rekey = cc.rekey_time;
  if (life && rekey >= life) rekey = life - std::max<std::uint32_t>(1, life / 10);
  if (rekey) {
    std::uint32_t r = 0;
    random({reinterpret_cast<std::uint8_t*>(&r), sizeof r});
    t.rekey_at = now + std::chrono::seconds(rekey) - std::chrono::milliseconds(r % (rekey * 100 + 1));
  }
  if (life) t.expire_at = now + std::chrono::seconds(life);
  return t;
}

}  // namespace ipsecgw::ike
