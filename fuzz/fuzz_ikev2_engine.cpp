// libFuzzer target: the IKEv2 engine behind its SK payload. Two engines set
// up an IKE SA and a Child SA (X25519 for speed); the responder's key
// logger hands over SK_ei/SK_ai, so that the input reaches what only a
// peer holding the keys can send: CREATE_CHILD_SA, INFORMATIONAL (DELETE,
// notifies, DPD), rekeys, fragments after authentication, responses to the
// responder's own requests.
//
// The input is a list of messages: flags (1 byte), exchange (1 byte), message
// ID (1 byte), payload count (1 byte), then for each payload its type
// (1 byte), a critical flag (1 byte) and a 1-byte length with its body.
// Flags: bit 0 the message ID is the next one the responder expects (else the
// byte as given), bit 1 moves the clock on by a minute (timers: rekeys,
// DPD, lifetimes), bit 2 marks the message a response (to the responder's
// newest request, whose ID it takes), bit 3 sends it as RFC 7383 fragments.
// Nothing may crash, hang or leak; what the engine sends must parse.
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "core/log.hpp"
#include "ike/engine.hpp"
#include "ike/ike_crypto.hpp"
#include "ike/message.hpp"

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
  c.name = a ? "a" : "b";
  c.local_addrs = {*core::IpAddress::parse(a ? "192.0.2.1" : "192.0.2.2")};
  c.remote_addrs = {*core::IpAddress::parse(a ? "192.0.2.2" : "192.0.2.1")};
  c.proposals = {*core::parse_proposal("aes128gcm16-prfsha256-x25519", bad)};
  c.psk = core::SecureBytes(core::Bytes(16, 0x42));
  c.dpd_delay = 30;
  ike::ChildConfig ch;
  ch.name = "lan";
  ch.local_ts = {*core::IpRange::parse(a ? "10.1.0.0/24" : "10.2.0.0/24")};
  ch.remote_ts = {*core::IpRange::parse(a ? "10.2.0.0/24" : "10.1.0.0/24")};
  ch.esp_proposals = {*core::parse_proposal("aes128gcm16-x25519", bad)};
  ch.start_action = a ? ike::StartAction::kStart : ike::StartAction::kNone;
  ch.rekey_time = 120;
  c.children.push_back(std::move(ch));
  return c;
}

struct Keys {
  std::uint64_t spi_i = 0, spi_r = 0;
  ike::IkeTransform t;
  core::Bytes ei, ai;
};
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
  Keys keys;
  ike::EngineOptions ob;
  ob.key_logger = [&keys](const ike::IkeKeyLog& k) {
    keys = {k.spi_i, k.spi_r, k.transform, core::Bytes(k.sk_ei.begin(), k.sk_ei.end()),
            core::Bytes(k.sk_ai.begin(), k.sk_ai.end())};
  };
  ike::Engine a(std::move(va), ia), b(std::move(vb), ib, ob);
  auto now = ike::TimePoint{} + 1000s;
  a.start(now);
  for (int round = 0; round < 6; ++round) {
    for (auto& d : a.take_output()) b.receive({d.remote, d.local, d.data}, now);
    for (auto& d : b.take_output()) a.receive({d.remote, d.local, d.data}, now);
  }
  if (keys.ei.empty()) std::abort();  // the IKE SA must come up
  auto cipher = ike::SkCipher::create(keys.t, keys.ei, keys.ai, core::CipherDir::kEncrypt);
  const ike::Endpoint from{*core::IpAddress::parse("192.0.2.1"), 500}, to{*core::IpAddress::parse("192.0.2.2"), 500};
  std::uint32_t next_id = 2, peer_request_id = 0;
  std::size_t off = 0;
  while (off + 4 <= size) {
    const std::uint8_t flags = data[off], exchange = data[off + 1], id = data[off + 2];
    std::size_t count = data[off + 3];
    off += 4;
    std::vector<ike::Payload> inner;
    while (count-- > 0 && off + 3 <= size) {
      ike::Payload p;
      p.type = static_cast<ike::PayloadType>(data[off]);
      p.critical = data[off + 1] & 1;
      const std::size_t len = std::min<std::size_t>(data[off + 2], size - off - 3);
      p.body.assign(data + off + 3, data + off + 3 + len);
      off += 3 + len;
      inner.push_back(std::move(p));
    }
    if (flags & 2) {
      now += 60s;
      b.tick(now);
    }
    ike::Header h;
    h.spi_i = keys.spi_i;
    h.spi_r = keys.spi_r;
    h.exchange = static_cast<ike::Exchange>(exchange);
    h.flags = ike::kFlagInitiator;
    if (flags & 4) {
      h.flags |= ike::kFlagResponse;
      h.message_id = peer_request_id;
    } else {
      h.message_id = (flags & 1) ? next_id++ : id;
    }
    std::vector<core::Bytes> msgs;
    if (flags & 8)
      msgs = cipher->seal_fragmented(h, inner, 120);
    else
      msgs.push_back(cipher->seal(h, inner));
    for (auto& m : msgs) b.receive({to, from, std::move(m)}, now);
    for (const auto& d : b.take_output()) {
      std::string why;
      auto oh = ike::parse_header(d.data, why);
      if (!oh) std::abort();
      if (!oh->is_response() && oh->spi_i == keys.spi_i) peer_request_id = oh->message_id;
    }
  }
  return 0;
}
