// libFuzzer target: ISAKMP (IKEv1) message decoding. The input is decoded as
// a whole unencrypted message (header, chain, every typed payload), and its
// body as a decrypted chain with padding; whatever decodes must re-encode
// and decode again to the same typed view (SA, IDs, notifies, deletes).
#include <cstdint>
#include <cstdlib>

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
  if (size > v1::kHeaderLen) {
    std::vector<v1::RawPayload> chain;
    v1::Message m;
    if (v1::parse_chain(in.subspan(v1::kHeaderLen), static_cast<v1::Payload>(data[16]), chain, err, true))
      (void)v1::decode_payloads(chain, m, err);
  }
  return 0;
}
