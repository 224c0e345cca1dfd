// libFuzzer target: the IKEv1 side of the engine, as the gateway drives it.
// Two engines set up an ISAKMP SA and an IPsec SA pair (Main Mode + Quick
// Mode, X25519 for speed), then the input, cut into datagrams (2-byte
// length, 1 flag byte, bytes), goes to the responder: with flag bit 0 the
// datagram's cookies are replaced by the established SA's (so that it
// reaches the SA's exchanges, not only the lookup), bit 1 moves the clock on
// by a minute (timers: retransmission, DPD, lifetimes). Nothing may crash,
// hang or leak; whatever the engine sends in answer must parse as ISAKMP.
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "ike/isakmp.hpp"

using namespace ipsecgw;
using namespace std::chrono_literals;

namespace {
struct NullInstaller : core::SaInstaller {
  bool install(core::SaParams, std::string&) override { return true; }
  bool remove(const std::string&) override { return true; }
  bool update_path(const std::string&, const core::SaPath&) override { return true; }
};

ike::ConnectionConfig conn(bool a) {
  std::string bad;
  ike::ConnectionConfig c;
  c.name = a ? "b" : "a";
  c.version = 1;
  c.local_addrs = {*core::IpAddress::parse(a ? "192.0.2.1" : "192.0.2.2")};
  c.remote_addrs = {*core::IpAddress::parse(a ? "192.0.2.2" : "192.0.2.1")};
  c.proposals = {*core::parse_proposal("aes128-sha256-x25519", bad)};
  c.psk = core::SecureBytes(core::Bytes(16, 0x42));
  c.dpd_delay = 10;
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  ch.esp_proposals = {*core::parse_proposal("aes128gcm16", bad)};
  ch.start_action = a ? ike::StartAction::kStart : ike::StartAction::kNone;
  ch.rekey_time = 120;
  c.children.push_back(std::move(ch));
  return c;
}

void check_output(ike::Engine& e) {
  for (const auto& d : e.take_output()) {
    ike::v1::DecodeError err;
    if (!ike::v1::parse_header(d.data, err)) std::abort();
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    core::log::set_level(core::log::Level::kError);
    return true;
  }();
  (void)quiet;
  NullInstaller ia, ib;
  std::vector<ike::ConnectionConfig> va, vb;
  va.push_back(conn(true));
  vb.push_back(conn(false));
  ike::Engine a(std::move(va), ia), b(std::move(vb), ib);
  auto now = ike::TimePoint{} + 1000s;
  a.start(now);
  for (int round = 0; round < 10; ++round) {
    auto fa = a.take_output();
    auto fb = b.take_output();
    for (auto& d : fa) b.receive({d.remote, d.local, d.data}, now);
    for (auto& d : fb) a.receive({d.remote, d.local, d.data}, now);
  }
  const auto st = b.status(now);
  const std::uint64_t cky_i = st.empty() ? 0 : st[0].spi_i, cky_r = st.empty() ? 0 : st[0].spi_r;
  const ike::Endpoint from{*core::IpAddress::parse("192.0.2.1"), 4500}, to{*core::IpAddress::parse("192.0.2.2"), 4500};
  std::size_t off = 0;
  while (off + 3 <= size) {
    const std::size_t len = std::min<std::size_t>((data[off] << 8) | data[off + 1], size - off - 3);
    const std::uint8_t flags = data[off + 2];
    core::Bytes d(data + off + 3, data + off + 3 + len);
    off += 3 + len;
    if ((flags & 1) && d.size() >= 16) {
      for (int i = 0; i < 8; ++i) {
        d[i] = static_cast<std::uint8_t>(cky_i >> (56 - 8 * i));
        d[8 + i] = static_cast<std::uint8_t>(cky_r >> (56 - 8 * i));
      }
    }
    if (flags & 2) {
      now += 60s;
      b.tick(now);
    }
    b.receive({to, from, d}, now);
    check_output(b);
  }
  return 0;
}
