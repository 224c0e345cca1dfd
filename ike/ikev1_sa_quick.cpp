// Quick Mode tasks of an ISAKMP SA (ikev1_quick_mode), by message ID, both
// roles: starting, answering, replay and budget checks, installing the IPsec SA pair.
#include "ike/ikev1_sa.hpp"

#include <algorithm>
#include <cmath>

#include "ike/ikev1_informational.hpp"
#include "ike/child_sa.hpp"
#include "ike/ikev1_message_rules.hpp"

namespace ipsecgw::ike::v1 {

// ---- Quick Mode --------------------------------------------------------------------

bool IsakmpSa::start_quick(const ChildConfig& cc, TimePoint now, std::uint32_t rekeys) {
  std::uint32_t mid = 0;
  while (mid == 0 || quick_.count(mid)) mgr_.host_.random({reinterpret_cast<std::uint8_t*>(&mid), sizeof mid});
  QuickTask t;
  t.child = &cc;
  t.rekeys = rekeys;
  const bool bundle = !cc.esp_proposals.empty() && !cc.ah_proposals.empty();
  const std::uint32_t spi = mgr_.host_.new_child_spi();
  t.qm = std::make_unique<QuickMode>(true, p1_, quick_config(cc), mid, spi, bundle ? mgr_.host_.new_child_spi() : 0);
  auto m = t.qm->build();
  if (!m) {
    warn(kTag, tag(), ": Quick Mode for ", cc.name, " not started: ", t.qm->error());
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    return false;
  }
  debug(kTag, tag(), ": Quick Mode ", core::hex32(mid), " for ", cc.name, rekeys ? " (rekey)" : "");
  send(*m);
  t.flight.sent(std::move(*m), true, now, mgr_.host_.opt);
  quick_.emplace(mid, std::move(t));
  return true;
}

void IsakmpSa::on_quick_mode(const Datagram& d, const Header& h, TimePoint now) {
  auto it = quick_.find(h.message_id);
  if (it != quick_.end() && d.data == it->second.flight.last_in) {
    if (!it->second.flight.last_out.empty()) {
      ++mgr_.host_.counters.retransmits;
      debug(kTag, tag(), ": repeated Quick Mode message, answer resent");
      send(it->second.flight.last_out);
    }
    return;
  }
  if (it == quick_.end()) {
    if (h.message_id == 0 || peer_mids_.count(h.message_id)) {
      // RFC 2408 5: message IDs are not reused; a repeat after the linger is a replay.
      ++mgr_.host_.counters.dropped_messages;
      debug(kTag, tag(), ": Quick Mode with a used message ID ", core::hex32(h.message_id), " dropped");
      return;
    }
    if (children_.size() >= 2 * conn_.children.size() + 2) {
      // Each child has at most its SA pair and the one replacing it.
      ++mgr_.host_.counters.dropped_messages;
      if (mgr_.log_allowed(now)) warn(kTag, tag(), ": ", children_.size(), " IPsec SAs already; a new Quick Mode is dropped");
      return;
    }
    std::size_t open = 0;
    for (const auto& [mid, q] : quick_) open += q.done_at == TimePoint::max();
    if (open >= kMaxQuickModes) {
      ++mgr_.host_.counters.dropped_messages;
      if (mgr_.log_allowed(now)) warn(kTag, tag(), ": ", open, " Quick Modes under way; a new one is dropped");
      return;
    }
    // A new Quick Mode from the peer: the child whose selectors hold its
    // client IDs. Trying one does not move the IV chain (only a verified
    // message commits it), so each child can be tried in turn.
    const std::uint32_t spi = mgr_.host_.new_child_spi();
    const std::uint32_t ah_spi = mgr_.host_.new_child_spi();  // for a bundle's AH SA
    QuickTask best;
    bool ok = false;
    for (const auto& cc : conn_.children) {
      QuickTask t;
      t.child = &cc;
      t.qm = std::make_unique<QuickMode>(false, p1_, quick_config(cc), h.message_id, spi, ah_spi);
      if (t.qm->process(d.data)) {
        best = std::move(t);
        ok = true;
        break;
      }
      if (!t.qm->failed()) {
        // Does not decrypt or verify: not the peer's; nothing is kept.
        ++mgr_.host_.counters.invalid_messages;
        debug(kTag, tag(), ": Quick Mode message dropped: ", t.qm->error());
        return;
      }
      if (!best.qm || t.qm->notify() != Notify::kInvalidIdInformation) best = std::move(t);
      if (best.qm->notify() != Notify::kInvalidIdInformation) break;
    }
    remember_peer_mid(h.message_id);
    if (!ok) {
      const auto n = best.qm ? best.qm->notify() : Notify::kNoProposalChosen;
      const std::string why = best.qm ? best.qm->error() : "the connection has no children";
      warn(kTag, tag(), ": Quick Mode from the peer refused: ", why);
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      NotifyPayload np;
      np.protocol = kProtoEsp;
      np.type = static_cast<std::uint16_t>(n);
      informational({{Payload::kNotify, encode_notify(np)}});
      p1_.cipher->end_exchange(h.message_id);
      return;
    }
    last_heard_ = now;
    best.flight.last_in = d.data;
    auto m = best.qm->build();  // message 2
    if (!m) {
      warn(kTag, tag(), ": Quick Mode: ", best.qm->error());
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      return;
    }
    send(*m);
    best.flight.sent(std::move(*m), true, now, mgr_.host_.opt);
    // A peer's rekey of a child we have: the new SA replaces it when the peer deletes the old.
    quick_.emplace(h.message_id, std::move(best));
    return;
  }
  QuickTask& t = it->second;
  if (t.done_at != TimePoint::max() || !t.qm->process(d.data)) {
    if (t.done_at == TimePoint::max() && t.qm->failed()) {
      warn(kTag, tag(), ": Quick Mode for ", t.child->name, " failed: ", t.qm->error());
      ++mgr_.host_.counters.ikev1_quick_mode_failed;
      drop_quick(it, now);
    } else {
      // Rejected (does not decrypt or verify): the exchange goes on as it was.
      ++mgr_.host_.counters.invalid_messages;
      debug(kTag, tag(), ": Quick Mode message dropped: ", t.qm->error());
    }
    return;
  }
  last_heard_ = now;
  t.flight.last_in = d.data;
  t.flight.schedule.stop();
  if (t.qm->done()) return quick_done(t, now);  // the responder, after message 3
  auto m = t.qm->build();                        // the initiator's message 3
  if (!m) {
    warn(kTag, tag(), ": Quick Mode for ", t.child->name, " failed: ", t.qm->error());
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    drop_quick(it, now);
    return;
  }
  send(*m);
  t.flight.sent(std::move(*m), false, now, mgr_.host_.opt);
  quick_done(t, now);
}

bool IsakmpSa::initiator_of(const QuickTask& t) { return t.qm->initiator(); }

std::map<std::uint32_t, IsakmpSa::QuickTask>::iterator IsakmpSa::drop_quick(
    std::map<std::uint32_t, QuickTask>::iterator it, TimePoint now) {
  // A rekey that ended without a new SA leaves the old one to be rekeyed again, later.
  if (const auto old = it->second.rekeys)
    for (auto& c : children_)
      if (c.spi_in == old && c.rekeying) {
        c.rekeying = false;
        c.rekey_at = std::min(c.expire_at, now + kRekeyRetry);
      }
  p1_.cipher->end_exchange(it->first);
  return quick_.erase(it);
}

void IsakmpSa::quick_done(QuickTask& t, TimePoint now) {
  t.done_at = now;
  p1_.cipher->end_exchange(t.qm->message_id());
  if (!install(t, now)) {
    ++mgr_.host_.counters.ikev1_quick_mode_failed;
    return;
  }
  ++mgr_.host_.counters.ikev1_quick_mode_done;
  if (!initiator_of(t)) {
    // The peer's rekey: the same child with the same selectors is still up (it deletes the old one).
    // It may still sit on the ISAKMP SA this one replaces (not yet adopted).
    const Child& n = children_.back();
    bool rekey = false;
    auto mark = [&](IsakmpSa& s) {
      for (auto& c : s.children_)
        if (&c != &n && c.cfg == n.cfg && c.local_ts == n.local_ts && c.remote_ts == n.remote_ts) {
          c.replaced = true;
          rekey = true;
        }
    };
    mark(*this);
    for (auto& [k, o] : mgr_.sas_)
      if (o.get() != this && o->state_ == State::kEstablished && same_peer(*o)) mark(*o);
    if (rekey) ++mgr_.host_.counters.child_rekeyed;
  }
  if (t.rekeys) {
    // Make-before-break: the new pair is in; the old one goes, with a DELETE.
    ++mgr_.host_.counters.child_rekeyed;
    delete_child(t.rekeys, "rekeyed", true);
  }
}

bool IsakmpSa::install(const QuickTask& t, TimePoint now) {
  const auto& r = t.qm->result();
  const ChildConfig& cc = *t.child;
  const auto m = r.suite.mode;
  const bool udp = nat() || (m != EncapMode::kTunnel && m != EncapMode::kTransport);
  const bool transport = m == EncapMode::kTransport || m == EncapMode::kUdpTransport || m == EncapMode::kUdpTransportDraft;
  core::SaParams sp = child_sa_params(conn_.name, cc, r.suite.esp, local_, remote_, udp, {r.local_ts}, {r.remote_ts},
                                      r.spi_in, r.spi_out, core::SecureBytes(r.keymat_in.span()),
                                      core::SecureBytes(r.keymat_out.span()));
  sp.mode = transport ? core::SaMode::kTransport : core::SaMode::kTunnel;
  // What the client IDs agreed, no wider: protocol and ports too. Only a
  // configured one leaves the rest between transport hosts in the clear.
  sp.selectors.proto = r.proto;
  if (r.local_port) sp.selectors.local_ports = {r.local_port, r.local_port};
  if (r.remote_port) sp.selectors.remote_ports = {r.remote_port, r.remote_port};
  sp.clear_outside_selectors = cc.ts_proto != 0 || !cc.local_ports.any() || !cc.remote_ports.any();
  if (r.suite.is_ah()) {
    sp.protocol = core::IpsecProtocol::kAh;
    sp.ah = r.suite.ah;
  } else if (r.ah) {
    // AH+ESP: the ESP pair above, the AH pair beside it.
    sp.protocol = core::IpsecProtocol::kAhEsp;
    sp.ah = r.ah->ah;
    sp.ah_in.spi = r.ah_spi_in;
    sp.ah_out.spi = r.ah_spi_out;
    sp.ah_in.keymat = core::SecureBytes(r.ah_keymat_in.span());
    sp.ah_out.keymat = core::SecureBytes(r.ah_keymat_out.span());
  }
  const std::string name = sp.name;
  std::string why;
  if (!mgr_.host_.installer.install(std::move(sp), why)) {
    error(kTag, tag(), ": installing ", name, " failed: ", why);
    return false;
  }
  Child ch;
  ch.cfg = &cc;
  ch.name = name;
  ch.spi_in = r.spi_in;
  ch.spi_out = r.spi_out;
  ch.suite = r.suite;
  ch.ah = r.ah;
  ch.ah_spi_in = r.ah_spi_in;
  ch.ah_spi_out = r.ah_spi_out;
  ch.local_ts = r.local_ts;
  ch.remote_ts = r.remote_ts;
  ch.established = now;
  ch.pfs = r.pfs;
  // Our lifetime, or the shorter one the peer's transform (or RESPONDER-LIFETIME) carried.
  const auto timers = child_timers(cc, now, r.suite.life_seconds, mgr_.host_.random);
  ch.rekey_at = timers.rekey_at;
  ch.expire_at = timers.expire_at;
  children_.push_back(ch);
  ++mgr_.host_.counters.child_installed;
  mgr_.host_.child_up(conn_.name + "/" + cc.name);
  info(kTag, tag(), ": IPsec SA ", name, " installed: ", transport ? "transport " : "tunnel ", ch.algorithms(),
       ", SPIs in ", core::hex32(r.spi_in), " out ", core::hex32(r.spi_out),
       r.ah ? ", AH SPIs in " + core::hex32(r.ah_spi_in) + " out " + core::hex32(r.ah_spi_out) : std::string(), ", ",
       r.local_ts.to_string(), " === ", r.remote_ts.to_string(),
       r.pfs ? ", PFS" : "", udp ? ", UDP-encapsulated" : "");
  return true;
}

}  // namespace ipsecgw::ike::v1
