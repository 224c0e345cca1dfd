// libFuzzer target: IKEv2 message decoding. The input is parsed as a whole
// message (header, payload chain, every typed payload), and also fed to a
// responder engine, so that IKE_SA_INIT handling and the SA lookup for
// other exchanges see hostile bytes too.
#include <cstdint>
#include <memory>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "ike/message.hpp"

using namespace ipsecgw;

namespace {
struct NullInstaller : core::SaInstaller {
  bool install(core::SaParams, std::string&) override { return true; }
  bool remove(const std::string&) override { return true; }
  bool update_path(const std::string&, const core::SaPath&) override { return true; }
};

std::unique_ptr<ike::Engine> make_engine(NullInstaller& inst) {
  core::log::set_level(core::log::Level::kError);
  ike::ConnectionConfig c;
  c.name = "fuzz";
  c.local_addrs = {*core::IpAddress::parse("198.51.100.1")};
  std::string bad;
  c.proposals = {*core::parse_proposal("aes128gcm16-prfsha256-x25519", bad),
                 *core::parse_proposal("aes128-sha256-modp2048", bad)};
  c.psk = core::SecureBytes(core::Bytes(16, 0x33));
  ike::ChildConfig ch;
  ch.name = "c";
  ch.local_ts = {*core::IpRange::parse("10.1.0.0/16")};
  ch.remote_ts = {*core::IpRange::parse("10.2.0.0/16")};
  ch.esp_proposals = {*core::parse_proposal("aes128gcm16", bad)};
  c.children.push_back(std::move(ch));
  std::vector<ike::ConnectionConfig> v;
  v.push_back(std::move(c));
  ike::EngineOptions o;
  o.cookie_threshold = 1000000;
  return std::make_unique<ike::Engine>(std::move(v), inst, o);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static NullInstaller inst;
  static auto engine = make_engine(inst);
  core::ByteSpan msg(data, size);
  std::string why;
  if (auto h = ike::parse_header(msg, why)) {
    std::vector<ike::Payload> pl;
    if (ike::parse_chain(msg.subspan(ike::kHeaderLen), h->next, pl, why)) {
      for (const auto& p : pl) {
        switch (p.type) {
          case ike::PayloadType::kSa: (void)ike::decode_sa(p.body, why); break;
          case ike::PayloadType::kKe: (void)ike::decode_ke(p.body, why); break;
          case ike::PayloadType::kNotify: (void)ike::decode_notify(p.body, why); break;
          case ike::PayloadType::kIdi:
          case ike::PayloadType::kIdr: (void)ike::decode_id(p.body, why); break;
          case ike::PayloadType::kAuth: (void)ike::decode_auth(p.body, why); break;
          case ike::PayloadType::kTsi:
          case ike::PayloadType::kTsr: (void)ike::decode_ts(p.body, why); break;
          case ike::PayloadType::kDelete: (void)ike::decode_delete(p.body, why); break;
          default: break;
        }
      }
    }
  }
  static auto now = ike::Clock::now();
  now += std::chrono::milliseconds(10);
  engine->receive({{*core::IpAddress::parse("198.51.100.1"), 500},
                   {*core::IpAddress::parse("198.51.100.2"), 500},
                   core::Bytes(data, data + size)},
                  now);
  (void)engine->take_output();
  engine->tick(now);
  return 0;
}
