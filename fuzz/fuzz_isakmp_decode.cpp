// libFuzzer target: ISAKMP (IKEv1) message decoding. The input is decoded as
// a whole unencrypted message (header, chain, every typed payload), and its
// body as a decrypted chain with padding; whatever decodes must re-encode
// and decode again to the same typed view (SA, IDs, notifies, deletes).
// The input is also message 1 to a Main Mode responder, which must fail or
// answer, never crash.
#include <cstdint>
#include <cstdlib>

#include "ike/ikev1_main_mode.hpp"
#include "ike/isakmp.hpp"

using namespace ipsecgw;
using namespace ipsecgw::ike;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const core::ByteSpan in(data, size);
  v1::DecodeError err;
  if (auto m = v1::decode_plain(in, err)) {
    const auto again = v1::encode_plain(m->header, m->raw);
    auto m2 = v1::decode_plain(again, err);
    if (!m2 || m2->sa != m->sa || m2->ids != m->ids || m2->notifies != m->notifies || m2->deletes != m->deletes)
      std::abort();
    if (m->sa) {
      auto sa = v1::decode_sa(v1::encode_sa(*m->sa), err);
      if (!sa || *sa != *m->sa) std::abort();
    }
    for (const auto& id : m->ids) {
      (void)id.to_string();
      (void)id.range();
    }
  }
  {
    static const auto cfg = [] {
      v1::MainModeConfig c;
      std::string bad;
      c.proposals = {*core::parse_proposal("aes128-sha256-modp2048", bad), *core::parse_proposal("3des-sha1-modp1024", bad)};
      c.psk = core::SecureBytes(core::Bytes(16, 0x42));
      c.local_id = {v1::IdType::kFqdn, 17, 500, core::Bytes{'r'}};
      return c;
    }();
    v1::MainModeConfig c;
    c.proposals = cfg.proposals;
    c.psk = cfg.psk.clone();
    c.local_id = cfg.local_id;
    v1::MainMode r(false, std::move(c));
    if (r.process(in)) (void)r.build();
  }
  if (size > v1::kHeaderLen) {
    std::vector<v1::RawPayload> chain;
    v1::Message m;
    if (v1::parse_chain(in.subspan(v1::kHeaderLen), static_cast<v1::Payload>(data[16]), chain, err, true))
      (void)v1::decode_payloads(chain, m, err);
  }
  return 0;
}
