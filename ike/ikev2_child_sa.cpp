// Child SAs of an IKEv2 SA, below the tasks that negotiate them (IKE_AUTH,
// CREATE_CHILD_SA, rekeys): selection for a request, KEYMAT (RFC 7296 2.17),
// the install into the data plane and removal.
#include "ike/child_sa.hpp"
#include "ike/ikev2_sa.hpp"

namespace ipsecgw::ike {

bool IkeSa::child_from_response(const ChildConfig& cc, std::uint32_t spi_in, ByteSpan ni, ByteSpan nr,
                                const Parsed& p, TimePoint now, const SecureBytes* pfs) {
  if (!p.sa || !p.tsi || !p.tsr) {
    warn(kTag, tag(), ": Child SA response without SA or TS");
    return false;
  }
  auto c = select_child(cc.proposals(), cc.protocol(), *p.sa, pfs != nullptr);
  if (!c || p.sa->proposals.size() != 1) {
    warn(kTag, tag(), ": Child SA response chose a proposal we did not offer");
    return false;
  }
  auto lts = narrow(*p.tsi, our_ts(cc, true));
  auto rts = narrow(*p.tsr, our_ts(cc, false));
  if (lts.empty() || rts.empty() || !ts_pair_ok(lts, rts)) {
    warn(kTag, tag(), ": Child SA response has selectors outside ours");
    return false;
  }
  // A responder that declines transport mode answers without
  // USE_TRANSPORT_MODE: the Child SA is then a tunnel (RFC 7296 1.3.1),
  // which carries the same traffic between the same hosts; we take it, as
  // strongSwan does, and say so.
  core::SaMode mode = core::SaMode::kTunnel;
  if (cc.mode == core::SaMode::kTunnel && p.find(Notify::kUseTransportMode)) {
    warn(kTag, tag(), ": the peer answered our tunnel-mode request with USE_TRANSPORT_MODE");
    return false;
  }
  if (cc.mode == core::SaMode::kTransport) {
    if (p.find(Notify::kUseTransportMode)) mode = core::SaMode::kTransport;
    else info(kTag, tag(), ": the peer declined transport mode for child ", cc.name,
              ": tunnel mode (RFC 7296 1.3.1)");
  }
  if (mode == core::SaMode::kTransport && !transport_selectors(lts, rts)) {
    warn(kTag, tag(), ": transport-mode Child SA response with selectors ", ts_string(lts), " === ", ts_string(rts),
         " not between the two hosts");
    return false;
  }
  return install_child(cc, c->t, mode, spi_in, c->peer_spi, lts, rts, ni, nr, true, pfs, now);
}

// Transport mode carries the two hosts' own traffic: one address per side,
// the one IKE runs on; behind a NAT the peer's may be its private one
// (RFC 7296 2.23: NAT-OA is IKEv1's), which stands for the address we see.
bool IkeSa::transport_selectors(std::vector<TrafficSelector>& lts, std::vector<TrafficSelector>& rts) const {
  if (lts.size() != 1 || rts.size() != 1 || lts[0].start != lts[0].end || rts[0].start != rts[0].end) return false;
  if (lts[0].start != local_.addr && !(nat_local_ && lts[0].start.family() == local_.addr.family())) return false;
  if (rts[0].start != remote_.addr && !(nat_remote_ && rts[0].start.family() == remote_.addr.family())) return false;
  lts[0].start = lts[0].end = local_.addr;
  rts[0].start = rts[0].end = remote_.addr;
  return true;
}

bool IkeSa::install_child(const ChildConfig& cc, const ChildSuite& t, core::SaMode mode, std::uint32_t spi_in,
                          std::uint32_t spi_out, const std::vector<TrafficSelector>& lts,
                          const std::vector<TrafficSelector>& rts, ByteSpan ni, ByteSpan nr,
                          bool exchange_initiator, const SecureBytes* pfs, TimePoint now) {
  Bytes seed;
  if (pfs) seed.assign(pfs->span().begin(), pfs->span().end());
  seed.insert(seed.end(), ni.begin(), ni.end());
  seed.insert(seed.end(), nr.begin(), nr.end());
  const std::size_t half = t.keymat_len();
  SecureBytes km = prf_plus(t_.prf, keys_.d.span(), seed, 2 * half);
  core::secure_wipe(seed.data(), seed.size());
  std::vector<core::IpRange> lr, rr;
  for (const auto& x : lts) lr.push_back({x.start, x.end});
  for (const auto& x : rts) rr.push_back({x.start, x.end});
  core::SaParams sp = child_sa_params(conn_.name, cc, t.esp, local_, remote_, encap(), lr, rr, spi_in, spi_out,
                                      SecureBytes(km.subspan(exchange_initiator ? half : 0, half)),
                                      SecureBytes(km.subspan(exchange_initiator ? 0 : half, half)));
  sp.protocol = t.proto;
  sp.ah = t.ah;
  sp.mode = mode;
  // A transport SA narrowed to a protocol or ports leaves the rest between
  // the hosts in the clear only when the configuration says so (L2TP), not
  // when the peer narrowed it.
  sp.clear_outside_selectors = cc.ts_proto != 0 || !cc.local_ports.any() || !cc.remote_ports.any();
  // What was negotiated, no wider: the protocol and ports too.
  sp.selectors.proto = lts.front().ip_proto ? lts.front().ip_proto : rts.front().ip_proto;
  sp.selectors.local_ports = {lts.front().start_port, lts.front().end_port};
  sp.selectors.remote_ports = {rts.front().start_port, rts.front().end_port};
  // The exchange's responder sends on the old SA until the initiator, who
  // has the new one once our answer arrives, deletes it (make-before-break).
  sp.standby = !exchange_initiator;
  std::string why;
  const std::string name = sp.name;
  if (!eng_.installer_.install(std::move(sp), why)) {
    error(kTag, tag(), ": installing Child SA ", name, " failed: ", why);
    return false;
  }
  ChildSa ch;
  ch.cfg = &cc;
  ch.name = name;
  ch.spi_in = spi_in;
  ch.spi_out = spi_out;
  ch.transform = t;
  ch.mode = mode;
  ch.local_ts = lts;
  ch.remote_ts = rts;
  ch.established = now;
  ch.pfs = pfs != nullptr;
  const auto timers = child_timers(cc, now, 0, [this](core::MutByteSpan out) { eng_.random_bytes(out); });
  ch.rekey_at = timers.rekey_at;
  ch.expire_at = timers.expire_at;
  children_.push_back(ch);
  eng_.acquiring_.erase(conn_.name + "/" + cc.name);
  ++eng_.counters_.child_installed;
  info(kTag, tag(), ": Child SA ", name, " installed: ", t.is_ah() ? "AH " : "ESP ",
       mode == core::SaMode::kTransport ? "transport " : "tunnel ", t.name(), ", SPIs in ", core::hex32(spi_in),
       " out ", core::hex32(spi_out), ", ", ts_string(lts), " === ", ts_string(rts), pfs ? ", PFS" : "");
  return true;
}

std::vector<Payload> IkeSa::respond_child(const Parsed& p, ByteSpan ni, ByteSpan nr, TimePoint now,
                                          std::optional<std::uint32_t>* spi_in_out, ChildRequest kind,
                                          const ChildSa* rekeyed) {
  // A rekey makes its new SA before the old one goes: room for one each.
  const std::size_t cap = eng_.opt_.max_children_per_ike_sa * (kind == ChildRequest::kRekey ? 2 : 1);
  if (children_.size() >= cap) {
    ++eng_.counters_.children_refused;
    warn(kTag, tag(), ": Child SA refused: ", children_.size(), " already (max_children_per_ike_sa)");
    return {notify(Notify::kNoAdditionalSas)};
  }
  const bool transport_asked = p.find(Notify::kUseTransportMode) != nullptr;
  // The candidates: a rekey keeps its SA's child; a transport request
  // tries transport children first, then tunnel ones (which answer it in
  // tunnel mode, RFC 7296 1.3.1).
  std::vector<const ChildConfig*> candidates;
  // (`rekeyed` points into children_, which install_child grows: read it here.)
  const bool rekeys_tunnel = rekeyed && rekeyed->mode == core::SaMode::kTunnel;
  if (rekeyed) {
    candidates.push_back(rekeyed->cfg);
  } else {
    for (const auto& cc : conn_.children)
      if (!transport_asked || cc.mode == core::SaMode::kTransport) candidates.push_back(&cc);
    if (transport_asked)
      for (const auto& cc : conn_.children)
        if (cc.mode == core::SaMode::kTunnel) candidates.push_back(&cc);
  }
  const ChildConfig* wants_transport = nullptr;
  std::string refused;  // why the last child whose selectors matched was not taken
  for (const ChildConfig* ccp : candidates) {
    const ChildConfig& cc = *ccp;
    // Behind a NAT, a transport-mode peer names its own (private) address;
    // it stands for the address we see (RFC 7296 2.23), which the SA gets.
    auto ours_remote = our_ts(cc, false);
    if (transport_asked && cc.mode == core::SaMode::kTransport && cc.remote_ts.empty() && nat_remote_ &&
        p.tsi->size() == 1 && p.tsi->front().start == p.tsi->front().end)
      ours_remote = child_ts(cc, false, p.tsi->front().start);
    auto lts = narrow(*p.tsr, our_ts(cc, true));
    auto rts = narrow(*p.tsi, ours_remote);
    if (lts.empty() || rts.empty() || !ts_pair_ok(lts, rts)) continue;
    // The mode (RFC 7296 1.3.1): transport when asked for and the child is
    // one, between the two hosts; a tunnel child answers a transport
    // request in tunnel mode (the initiator may then delete it). A
    // transport child is not given to a peer that insists on a tunnel,
    // unless it rekeys an SA that is a tunnel already (an earlier fallback).
    core::SaMode mode = core::SaMode::kTunnel;
    const auto reply_lts = lts, reply_rts = rts;  // as the peer named them
    if (cc.mode == core::SaMode::kTransport && !rekeys_tunnel) {
      if (!transport_asked) {
        if (!wants_transport) wants_transport = &cc;
        continue;
      }
      if (!transport_selectors(lts, rts)) {
        refused = "child " + cc.name + " is transport mode, but " + ts_string(rts) + " === " + ts_string(lts) +
                  " is not between the two hosts";
        continue;
      }
      mode = core::SaMode::kTransport;
    } else if (transport_asked) {
      info(kTag, tag(), ": the peer asked for transport mode; child ", cc.name,
           " is tunnel mode: answering in tunnel mode (RFC 7296 1.3.1)");
    }
    const auto protocol = cc.protocol();
    if (protocol == core::IpsecProtocol::kAh && encap()) {
      refused = "child " + cc.name + " is AH, which cannot cross the NAT between us (UDP encapsulation)";
      continue;
    }
    // A child whose proposals name a DH group demands PFS in every
    // CREATE_CHILD_SA (the one in IKE_AUTH has none by design, RFC 7296 1.2).
    if (kind != ChildRequest::kAuth && !p.ke && cc.pfs()) {
      refused = "Child SA " + cc.name + " requested without KE, but its proposals demand PFS";
      continue;
    }
    auto choice = select_child(cc.proposals(), protocol, *p.sa, p.ke.has_value());
    if (!choice) {
      const bool other = std::any_of(p.sa->proposals.begin(), p.sa->proposals.end(), [&](const Proposal& x) {
        return x.protocol == (protocol == core::IpsecProtocol::kAh ? ProtocolId::kEsp : ProtocolId::kAh);
      });
      refused = std::string("no acceptable ") + (protocol == core::IpsecProtocol::kAh ? "AH" : "ESP") +
                " proposal for child " + cc.name +
                (other ? std::string(": the peer proposes ") + (protocol == core::IpsecProtocol::kAh ? "ESP" : "AH") +
                             ", the child is " + (protocol == core::IpsecProtocol::kAh ? "AH" : "ESP")
                       : std::string());
      continue;
    }
    std::unique_ptr<DhKey> dh;
    std::optional<SecureBytes> shared;
    if (p.ke) {
      if (!choice->dh || static_cast<core::DhGroup>(p.ke->group) != *choice->dh) {
        Bytes g;
        core::ByteAppender{g}.u16(static_cast<std::uint16_t>(choice->dh ? *choice->dh : t_.dh));
        return {notify(Notify::kInvalidKePayload, g)};
      }
      std::string why;
      dh = DhKey::generate(*choice->dh, why);
      if (dh) shared = dh->shared_secret(p.ke->data, why);
      if (!shared) return {notify(Notify::kNoProposalChosen)};
    }
    const std::uint32_t spi_in = eng_.new_child_spi();
    std::vector<Payload> pl;
    if (mode == core::SaMode::kTransport) pl.push_back(notify(Notify::kUseTransportMode));
    Proposal reply = choice->reply;
    reply.spi = u32_bytes(spi_in);
    SaPayload sa;
    sa.proposals.push_back(reply);
    if (!install_child(cc, choice->t, mode, spi_in, choice->peer_spi, lts, rts, ni, nr, false,
                       shared ? &*shared : nullptr, now))
      return {notify(Notify::kNoProposalChosen)};
    if (spi_in_out) *spi_in_out = spi_in;
    pl.push_back(make(PayloadType::kSa, encode_sa(sa)));
    if (p.ke) pl.push_back(make(PayloadType::kKe, encode_ke({p.ke->group, dh->public_value()})));
    pl.push_back(make(PayloadType::kTsi, encode_ts(reply_rts)));
    pl.push_back(make(PayloadType::kTsr, encode_ts(reply_lts)));
    return pl;
  }
  if (!refused.empty()) {
    warn(kTag, tag(), ": ", refused, ": NO_PROPOSAL_CHOSEN");
    return {notify(Notify::kNoProposalChosen)};
  }
  if (wants_transport) {
    warn(kTag, tag(), ": child ", wants_transport->name, " is transport mode; the peer asks for tunnel mode: ",
         "refused (NO_PROPOSAL_CHOSEN)");
    return {notify(Notify::kNoProposalChosen)};
  }
  warn(kTag, tag(), ": no child matches the proposed selectors ", ts_string(*p.tsi), " === ", ts_string(*p.tsr));
  return {notify(Notify::kTsUnacceptable)};
}

ChildSa* IkeSa::child_by_spi_in(std::uint32_t spi) {
  auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_in == spi; });
  return it == children_.end() ? nullptr : &*it;
}

bool IkeSa::remove_child(std::uint32_t spi_in, const char* why, bool linger) {
  auto it = std::find_if(children_.begin(), children_.end(), [&](const ChildSa& c) { return c.spi_in == spi_in; });
  if (it == children_.end()) return false;
  if (why) info(kTag, tag(), ": Child SA ", it->name, " ", why);
  if (it->transform.is_ah()) note_removed_ah(spi_in);
  if (it->replaced && linger)
    eng_.installer_.remove_rekeyed(it->name);
  else
    eng_.installer_.remove(it->name);
  children_.erase(it);
  return true;
}

}  // namespace ipsecgw::ike
