#pragma once

#include <string>

#include "core/sa.hpp"

namespace ipsecgw::test {

// An SA pair with deterministic keys for the given strongSwan keyword.
inline core::SaParams make_sa(const std::string& esp, std::uint32_t window = 64) {
  std::string why;
  auto t = core::single_esp_transform(esp, why);
  if (!t) throw std::runtime_error(esp + ": " + why);
  core::SaParams p;
  p.name = "test";
  p.transform = *t;
  p.local_addr = *core::IpAddress::parse("198.51.100.1");
  p.remote_addr = *core::IpAddress::parse("198.51.100.2");
  p.selectors.local = {core::IpRange::any(core::Family::V4), core::IpRange::any(core::Family::V6)};
  p.selectors.remote = p.selectors.local;
  p.replay_window = window;
  core::Bytes k(t->keymat_len());
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<std::uint8_t>(i * 7 + 1);
  p.out.spi = p.in.spi = 0x1001;
  p.out.keymat = core::SecureBytes(k);
  p.in.keymat = core::SecureBytes(k);
  return p;
}

}  // namespace ipsecgw::test
