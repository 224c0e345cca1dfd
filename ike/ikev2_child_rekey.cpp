// Child SA rekey (RFC 7296 1.3.3, 2.8): a CREATE_CHILD_SA with REKEY_SA; the
// new SA is installed before the old one is deleted.
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

void IkeSa::rekey_child(ChildSa& ch, TimePoint now) {
  Pending p;
  p.exchange = Exchange::kCreateChildSa;
  p.message_id = next_out_id_++;
  p.child = ch.cfg;
  p.new_spi_in = eng_.new_child_spi();
  p.rekeyed_spi_in = ch.spi_in;
  p.nonce.resize(eng_.opt_.nonce_len);
  eng_.random_bytes(p.nonce);
  std::vector<Payload> pl;
  pl.push_back(notify(Notify::kRekeySa, {}, ProtocolId::kEsp, u32_bytes(ch.spi_in)));
  if (ch.cfg->mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
  SaPayload sa;
  std::uint8_t n = 1;
  const bool pfs = !ch.cfg->esp_proposals.empty() && !ch.cfg->esp_proposals[0].dh.empty();
  for (const auto& pr : ch.cfg->esp_proposals) sa.proposals.push_back(esp_offer(pr, n++, p.new_spi_in, pfs));
  pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
  pl.push_back(make(PayloadType::kNonce, p.nonce));
  if (pfs) {
    std::string why;
    p.dh = DhKey::generate(ch.cfg->esp_proposals[0].dh[0], why);
    if (!p.dh) return;
    pl.push_back(make(PayloadType::kKe, encode_ke({static_cast<std::uint16_t>(p.dh->group()), p.dh->public_value()})));
  }
  pl.push_back(make(PayloadType::kTsi, encode_ts(ch.local_ts)));
  pl.push_back(make(PayloadType::kTsr, encode_ts(ch.remote_ts)));
  p.message = sealed(Exchange::kCreateChildSa, false, p.message_id, pl);
  ch.rekeying = true;
  info(kTag, tag(), ": rekeying Child SA ", ch.name, pfs ? " with PFS" : "");
  send_request(std::move(p), now);
}

}  // namespace ipsecgw::ike
