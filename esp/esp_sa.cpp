#include "esp/esp_sa.hpp"

#include <cstring>

#include "esp/ah.hpp"

namespace ipsecgw::esp {

using core::ByteSpan;
using core::Drop;
using core::MutByteSpan;

namespace {

// AAD for AEAD: SPI || seq (RFC 4106 5), SPI || seq_hi || seq_lo with ESN.
std::size_t build_aad(const std::uint8_t* hdr, bool esn, std::uint32_t seq_hi, std::uint8_t* aad) {
  if (!esn) {
    std::memcpy(aad, hdr, 8);
    return 8;
  }
  std::memcpy(aad, hdr, 4);
  core::store_be32(aad + 4, seq_hi);
  std::memcpy(aad + 8, hdr + 4, 4);
  return 12;
}

bool check_key_len(const core::EspTransform& t, ByteSpan keymat, std::string& why) {
  if (keymat.size() != t.keymat_len()) {
    why = "key for " + t.name() + " must be " + std::to_string(t.keymat_len()) + " bytes (" +
          std::to_string(t.enc.key_bytes) + " encryption" +
          (core::salt_len(t.enc.alg) ? " + 4 salt/nonce" : "") +
          (t.aead() ? "" : " + " + std::to_string(core::integ_key_len(t.integ)) + " integrity") +
          "), got " + std::to_string(keymat.size());
    return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<EspCrypto> EspCrypto::create(const core::EspTransform& t, ByteSpan keymat,
                                             core::CipherDir dir, std::string& why) {
  if (!check_key_len(t, keymat, why)) return nullptr;
  std::unique_ptr<EspCrypto> c(new EspCrypto());
  c->t_ = t;
  const auto enc_key = keymat.first(t.enc.key_bytes);
  const auto salt = keymat.subspan(t.enc.key_bytes, core::salt_len(t.enc.alg));
  if (t.enc.alg == core::EncAlg::kNullAesGmac) {
    c->gmac_ = core::GmacMac::create(keymat.first(t.enc_keymat_len()));
    if (!c->gmac_) why = "cannot set up " + t.name();
    return c->gmac_ ? std::move(c) : nullptr;
  }
  if (t.aead()) {
    c->aead_ = core::Aead::create(t.enc.alg, enc_key, salt, dir);
    if (!c->aead_) why = "cannot set up " + t.name();
    return c->aead_ ? std::move(c) : nullptr;
  }
  c->cipher_ = core::Cipher::create(t.enc.alg, enc_key, salt, dir);
  if (t.integ != core::IntegAlg::kNone) {
    c->hmac_ = core::Hmac::create(core::digest_name(t.integ), keymat.subspan(t.enc_keymat_len()));
  }
  if (!c->cipher_ || (t.integ != core::IntegAlg::kNone && !c->hmac_)) {
    why = "cannot set up " + t.name();
    return nullptr;
  }
  return c;
}

bool EspCrypto::protect(MutByteSpan esp, std::size_t iv_len, std::uint32_t seq_hi) noexcept {
  const std::size_t icv = t_.icv_len();
  const std::size_t pt_off = kEspHeaderLen + iv_len;
  if (esp.size() < pt_off + icv) return false;
  auto iv = ByteSpan(esp.data() + kEspHeaderLen, iv_len);
  auto payload = esp.subspan(pt_off, esp.size() - pt_off - icv);
  auto icv_out = esp.last(icv);
  if (gmac_) {
    std::uint8_t aad[12];
    std::size_t aad_len = build_aad(esp.data(), t_.esn, seq_hi, aad);
    // RFC 4543 3.3: the AAD is SPI, (extended) sequence number, IV and the
    // payload with its trailer, which stays in the clear.
    gmac_->set_iv(iv);
    return gmac_->begin() && gmac_->update(ByteSpan(aad, aad_len)) &&
           gmac_->update(esp.subspan(kEspHeaderLen, esp.size() - kEspHeaderLen - icv)) && gmac_->finish(icv_out);
  }
  if (aead_) {
    std::uint8_t aad[12];
    std::size_t aad_len = build_aad(esp.data(), t_.esn, seq_hi, aad);
    return aead_->seal(iv, ByteSpan(aad, aad_len), payload, icv_out);
  }
  if (!cipher_->run(iv, payload)) return false;
  if (!hmac_) return true;
  std::uint8_t hi[4];
  core::store_be32(hi, seq_hi);
  // RFC 4303 2.2.1: with ESN the high half is appended for the ICV only.
  return hmac_->begin() && hmac_->update(esp.first(esp.size() - icv)) &&
         (!t_.esn || hmac_->update(ByteSpan(hi, 4))) && hmac_->finish(icv_out);
}

bool EspCrypto::unprotect(MutByteSpan esp, std::size_t iv_len, std::uint32_t seq_hi) noexcept {
  const std::size_t icv = t_.icv_len();
  const std::size_t pt_off = kEspHeaderLen + iv_len;
  if (esp.size() < pt_off + icv) return false;
  auto iv = ByteSpan(esp.data() + kEspHeaderLen, iv_len);
  auto payload = esp.subspan(pt_off, esp.size() - pt_off - icv);
  ByteSpan icv_in = esp.last(icv);
  if (gmac_) {
    std::uint8_t aad[12], mac[16];
    std::size_t aad_len = build_aad(esp.data(), t_.esn, seq_hi, aad);
    gmac_->set_iv(iv);
    return gmac_->begin() && gmac_->update(ByteSpan(aad, aad_len)) &&
           gmac_->update(esp.subspan(kEspHeaderLen, esp.size() - kEspHeaderLen - icv)) &&
           gmac_->finish(MutByteSpan(mac, 16)) && core::ct_equal(ByteSpan(mac, 16), icv_in);
  }
  if (aead_) {
    std::uint8_t aad[12];
    std::size_t aad_len = build_aad(esp.data(), t_.esn, seq_hi, aad);
    return aead_->open(iv, ByteSpan(aad, aad_len), payload, icv_in);
  }
  if (hmac_) {
    std::uint8_t hi[4];
    core::store_be32(hi, seq_hi);
    std::uint8_t mac[64];
    auto computed = MutByteSpan(mac, icv);
    if (!hmac_->begin() || !hmac_->update(esp.first(esp.size() - icv)) ||
        (t_.esn && !hmac_->update(ByteSpan(hi, 4))) || !hmac_->finish(computed)) {
      return false;
    }
    // Verify before decrypting anything (RFC 4303 3.4.4), in constant time.
    if (!core::ct_equal(computed, icv_in)) return false;
  }
  return cipher_->run(iv, payload);
}

bool peek_spi(ByteSpan esp, std::uint32_t& spi) noexcept {
  if (esp.size() < 4) return false;
  spi = core::load_be32(esp.data());
  return true;
}

// ---------------------------------------------------------------- outbound

namespace {
bool supported(const core::SaParams& p, std::string& why) {
  if (p.protocol != core::IpsecProtocol::kEsp && p.encap != core::Encap::kNone) {
    why = "AH cannot be UDP-encapsulated (its ICV covers the IP addresses a NAT rewrites)";
    return false;
  }
  return true;
}

std::unique_ptr<core::Mac> ah_mac(const core::AhTransform& t, core::ByteSpan key, std::string& why) {
  if (key.size() != t.keymat_len()) {
    why = "key must be " + std::to_string(t.keymat_len()) + " bytes for AH " + t.name() + ", got " +
          std::to_string(key.size());
    return nullptr;
  }
  auto mac = core::Mac::create(t.integ, key);
  if (!mac) why = "cannot set up the MAC for AH " + t.name();
  return mac;
}

// What a transport SA's payload may be unless its selectors name it: not a
// packet in a packet (IP-in-IP, IPv6, ESP, AH) nor an IPv6 routing or
// fragment header, whose addresses or pieces the selectors never saw.
bool transport_payload_ok(const core::Selectors& sel, std::uint8_t next_header) noexcept {
  if (sel.proto != 0) return true;  // matches_inbound decides
  switch (next_header) {
    case core::ipproto::kIpIp: case core::ipproto::kIpv6: case 50: case 51: case 43: case 44: return false;
    default: return true;
  }
}

// An IPv4 identification for an AH packet: never 0, which the kernel would
// replace on a header-included send (the ID is under the ICV).
std::uint16_t ah_ip_id(std::uint64_t seq) noexcept { return static_cast<std::uint16_t>(1 + seq % 0xffff); }

// Transport mode (RFC 4303 3.1.1): the ESP header goes between the IP header
// and the upper-layer protocol. The kernel writes the outer header from the
// raw ESP socket, so the packet from the TUN device gives up its IP header
// here, and `next_header` is what followed it. A transport SA carries only
// whole packets (no fragments, RFC 4301 7) between its two addresses, and
// no IPv6 extension headers (they would be lost with the header).
Drop strip_for_transport(const core::SaParams& p, core::Packet& pkt, std::uint8_t& next_header) noexcept {
  core::PacketInfo info;
  if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) return Drop::kMalformed;
  if (info.src != p.local_addr || info.dst != p.remote_addr) return Drop::kPolicyMismatch;
  if (info.fragment || (info.family == core::Family::V6 && info.l4_off != 40)) return Drop::kMalformed;
  next_header = info.proto;
  pkt.off += info.l4_off;
  pkt.len = info.total_len - info.l4_off;
  return Drop::kNone;
}
}  // namespace

std::unique_ptr<OutboundSa> OutboundSa::create(const core::SaParams& p, std::string& why, unsigned lanes) {
  if (!supported(p, why)) return nullptr;
  std::unique_ptr<OutboundSa> sa(new OutboundSa());
  sa->state_ = std::make_shared<State>();
  auto& st = *sa->state_;
  st.lanes.resize(std::max(1u, lanes));
  for (auto& lane : st.lanes) {
    if (p.protocol != core::IpsecProtocol::kEsp) {
      lane.ah_mac = ah_mac(p.ah, (p.protocol == core::IpsecProtocol::kAh ? p.out : p.ah_out).keymat.span(), why);
      if (!lane.ah_mac) return nullptr;
    }
    if (p.protocol == core::IpsecProtocol::kAh) continue;
    lane.crypto = EspCrypto::create(p.transform, p.out.keymat.span(), core::CipherDir::kEncrypt, why);
    if (!lane.crypto) return nullptr;
    if (p.transform.enc.alg == core::EncAlg::kAesCbc || p.transform.enc.alg == core::EncAlg::kTripleDesCbc) {
      lane.ivgen = core::IvGenerator::create();
      if (!lane.ivgen) {
        why = "cannot set up the IV generator";
        return nullptr;
      }
    }
  }
  sa->spi_ = p.out.spi;
  if (p.protocol == core::IpsecProtocol::kAh) {
    st.max_seq = p.ah.esn ? ~std::uint64_t{0} : 0xffffffffu;
  } else {
    st.max_seq = p.transform.esn ? ~std::uint64_t{0} : 0xffffffffu;
  }
  sa->params_ = p.without_keys();
  return sa;
}

std::unique_ptr<OutboundSa> OutboundSa::moved(const OutboundSa& sa, const core::SaPath& path) {
  std::unique_ptr<OutboundSa> m(new OutboundSa());
  m->state_ = sa.state_;
  m->spi_ = sa.spi_;
  m->params_ = sa.params_.without_keys();
  m->params_.local_addr = path.local_addr;
  m->params_.remote_addr = path.remote_addr;
  m->params_.encap = path.encap;
  m->params_.remote_port = path.remote_port;
  return m;
}

Drop OutboundSa::encapsulate(core::Packet& pkt, unsigned lane) noexcept {
  auto& st = *state_;
  if (lane >= st.lanes.size()) lane = 0;
  const std::uint64_t seq = st.next_seq.fetch_add(1, std::memory_order_relaxed);
  if (seq > st.max_seq || seq == 0) {
    // Never wrap (RFC 4303 3.3.3): the SA must be rekeyed.
    st.next_seq.store(st.max_seq + (st.max_seq == ~std::uint64_t{0} ? 0 : 1));
    st.counters.drop(Drop::kSeqExhausted);
    return Drop::kSeqExhausted;
  }
  if (params_.protocol == core::IpsecProtocol::kAh) return encapsulate_ah(pkt, seq, lane);
  std::uint8_t iv[16];
  const std::size_t iv_len = core::iv_len(params_.transform.enc.alg);
  if (auto& ivgen = st.lanes[lane].ivgen) {
    if (!ivgen->next(seq, core::MutByteSpan(iv, iv_len))) return Drop::kMalformed;
  } else if (iv_len == 8) {
    core::store_be64(iv, seq);  // counter modes: the IV must only be unique
  }
  const Drop d = encapsulate_with(pkt, seq, ByteSpan(iv, iv_len), lane);
  if (d != Drop::kNone || params_.protocol != core::IpsecProtocol::kAhEsp) return d;
  return bundle_ah(pkt, lane);
}

Drop OutboundSa::bundle_ah(core::Packet& pkt, unsigned lane) noexcept {
  auto& st = *state_;
  const std::uint64_t max = params_.ah.esn ? ~std::uint64_t{0} : 0xffffffffu;
  const std::uint64_t seq = st.ah_next_seq.fetch_add(1, std::memory_order_relaxed);
  if (seq > max || seq == 0) {
    st.ah_next_seq.store(max + (max == ~std::uint64_t{0} ? 0 : 1));
    st.counters.drop(Drop::kSeqExhausted);
    return Drop::kSeqExhausted;
  }
  const bool v6 = !params_.local_addr.is_v4();
  const std::size_t hl = v6 ? 40 : 20;
  if (pkt.headroom() < hl) {
    st.counters.drop(Drop::kTooBig);
    return Drop::kTooBig;
  }
  const std::size_t esp_len = pkt.len;
  pkt.off -= hl;
  pkt.len += hl;
  core::IpHeaderFields f;
  f.id = ah_ip_id(seq);
  core::write_ip_header(pkt.data(), params_.local_addr, params_.remote_addr, core::ipproto::kEsp, esp_len, f);
  return encapsulate_ah(pkt, seq, lane, true);
}

Drop OutboundSa::encapsulate_with(core::Packet& pkt, std::uint64_t seq, ByteSpan iv, unsigned lane) noexcept {
  auto& ctr = state_->counters;
  if (lane >= state_->lanes.size()) lane = 0;
  const auto& t = params_.transform;
  const std::size_t iv_len = core::iv_len(t.enc.alg);
  if (iv.size() != iv_len || pkt.len == 0) {
    ctr.drop(Drop::kMalformed);
    return Drop::kMalformed;
  }
  std::uint8_t next_header = (pkt.data()[0] >> 4) == 6 ? core::ipproto::kIpv6 : core::ipproto::kIpIp;
  if (params_.mode == core::SaMode::kTransport) {
    if (const Drop d = strip_for_transport(params_, pkt, next_header); d != Drop::kNone) {
      ctr.drop(d);
      return d;
    }
  }
  const std::size_t inner_len = pkt.len;
  const std::size_t block = core::block_len(t.enc.alg);
  const std::size_t pad = (block - (inner_len + 2) % block) % block;
  const std::size_t icv = t.icv_len();
  const std::size_t head = kEspHeaderLen + iv_len;
  if (pkt.headroom() < head || pkt.tailroom() < pad + 2 + icv) {
    ctr.drop(Drop::kTooBig);
    return Drop::kTooBig;
  }
  std::uint8_t* trailer = pkt.data() + inner_len;
  for (std::size_t i = 0; i < pad; ++i) trailer[i] = static_cast<std::uint8_t>(i + 1);
  trailer[pad] = static_cast<std::uint8_t>(pad);
  trailer[pad + 1] = next_header;
  pkt.off -= head;
  pkt.len = head + inner_len + pad + 2 + icv;
  std::uint8_t* hdr = pkt.data();
  core::store_be32(hdr, spi_);
  core::store_be32(hdr + 4, static_cast<std::uint32_t>(seq));
  if (iv_len) std::memcpy(hdr + kEspHeaderLen, iv.data(), iv_len);
  if (!state_->lanes[lane].crypto->protect(pkt.span(), iv_len, static_cast<std::uint32_t>(seq >> 32))) {
    ctr.drop(Drop::kMalformed);
    return Drop::kMalformed;
  }
  ctr.out.add(inner_len);
  return Drop::kNone;
}

Drop OutboundSa::encapsulate_ah(core::Packet& pkt, std::uint64_t seq, unsigned lane, bool bundle) noexcept {
  auto& ctr = state_->counters;
  const auto& t = params_.ah;
  const bool v6 = !params_.local_addr.is_v4();
  const std::size_t al = ah_len(t, v6);
  core::PacketInfo info;
  if (pkt.len == 0 || core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) {
    ctr.drop(Drop::kMalformed);
    return Drop::kMalformed;
  }
  const std::size_t inner_len = info.total_len;
  std::size_t ah_off = 0;
  std::uint8_t next_header = 0;
  if (params_.mode == core::SaMode::kTunnel && !bundle) {
    // New outer header: DSCP copied from the inner packet (RFC 4301 5.1.2.1).
    const std::uint8_t* in = pkt.data();
    const std::uint8_t tos = (in[0] >> 4) == 4 ? in[1] : static_cast<std::uint8_t>((in[0] << 4) | (in[1] >> 4));
    const std::size_t hl = v6 ? 40 : 20;
    if (pkt.headroom() < hl + al || inner_len + hl + al > 0xffff + (v6 ? 40 : 0)) {
      ctr.drop(Drop::kTooBig);
      return Drop::kTooBig;
    }
    next_header = info.family == core::Family::V4 ? core::ipproto::kIpIp : core::ipproto::kIpv6;
    pkt.len = inner_len;
    pkt.off -= hl + al;
    pkt.len += hl + al;
    core::IpHeaderFields f;
    f.tos = tos & 0xfc;
    f.id = ah_ip_id(seq);
    core::write_ip_header(pkt.data(), params_.local_addr, params_.remote_addr, 51, al + inner_len, f);
    ah_off = hl;
  } else {
    // Transport: AH goes after the IP header (IPv4 options stay in front).
    if (info.src != params_.local_addr || info.dst != params_.remote_addr) {
      ctr.drop(Drop::kPolicyMismatch);
      return Drop::kPolicyMismatch;
    }
    if (info.fragment) {
      ctr.drop(Drop::kMalformed);
      return Drop::kMalformed;
    }
    if (pkt.headroom() < al || inner_len + al > 0xffff + (v6 ? 40 : 0)) {
      ctr.drop(Drop::kTooBig);
      return Drop::kTooBig;
    }
    // IPv6: after the extension headers (hop-by-hop and destination
    // options are then under the ICV, RFC 4302 3.1.1).
    ah_off = info.l4_off;
    const std::size_t nh_pos = next_header_pos(pkt.span(), ah_off);
    pkt.len = inner_len;
    pkt.off -= al;
    pkt.len += al;
    std::memmove(pkt.data(), pkt.data() + al, ah_off);
    std::uint8_t* h = pkt.data();
    next_header = h[nh_pos];
    h[nh_pos] = 51;
    if (!v6) {
      core::store_be16(h + 2, static_cast<std::uint16_t>(pkt.len));
      if (core::load_be16(h + 4) == 0) core::store_be16(h + 4, ah_ip_id(seq));
      core::store_be16(h + 10, core::ipv4_header_checksum(core::ByteSpan(h, ah_off)));
    } else {
      core::store_be16(h + 4, static_cast<std::uint16_t>(pkt.len - 40));
    }
  }
  std::uint8_t* ah = pkt.data() + ah_off;
  ah[0] = next_header;
  ah[1] = static_cast<std::uint8_t>(al / 4 - 2);
  ah[2] = ah[3] = 0;
  core::store_be32(ah + 4, bundle ? params_.ah_out.spi : spi_);
  core::store_be32(ah + 8, static_cast<std::uint32_t>(seq));
  std::memset(ah + kAhHeaderLen, 0, al - kAhHeaderLen);  // IV, ICV and padding
  const std::size_t iv_len = t.iv_len();
  if (iv_len) core::store_be64(ah + kAhHeaderLen, seq);  // AES-GMAC: the IV must only be unique (RFC 4543 3.1)
  std::uint8_t icv[64];
  if (!ah_icv(*state_->lanes[lane].ah_mac, pkt.span(), ah_off, iv_len, t.icv_len(), t.esn, static_cast<std::uint32_t>(seq >> 32),
              icv)) {
    ctr.drop(Drop::kMalformed);
    return Drop::kMalformed;
  }
  std::memcpy(ah + kAhHeaderLen + iv_len, icv, t.icv_len());
  if (!bundle) ctr.out.add(inner_len);  // a bundle's ESP counted it
  return Drop::kNone;
}

// ----------------------------------------------------------------- inbound

std::unique_ptr<InboundSa> InboundSa::create(const core::SaParams& p, std::string& why) {
  if (!supported(p, why)) return nullptr;
  if (p.replay_window > core::kMaxReplayWindow) {
    why = "replay window larger than " + std::to_string(core::kMaxReplayWindow);
    return nullptr;
  }
  std::unique_ptr<InboundSa> sa(new InboundSa(p.replay_window));
  if (p.protocol == core::IpsecProtocol::kAh) {
    sa->ah_mac_ = ah_mac(p.ah, p.in.keymat.span(), why);
    if (!sa->ah_mac_) return nullptr;
  } else {
    sa->crypto_ = EspCrypto::create(p.transform, p.in.keymat.span(), core::CipherDir::kDecrypt, why);
    if (!sa->crypto_) return nullptr;
  }
  sa->spi_ = p.in.spi;
  if (p.protocol == core::IpsecProtocol::kAhEsp) {
    // Found by its AH SPI (the AH socket); the ESP inside must be ours too.
    sa->ah_mac_ = ah_mac(p.ah, p.ah_in.keymat.span(), why);
    if (!sa->ah_mac_) return nullptr;
    sa->spi_ = p.ah_in.spi;
    sa->esp_spi_ = p.in.spi;
  }
  sa->params_ = p.without_keys();
  return sa;
}

Drop InboundSa::decapsulate(core::Packet& pkt) noexcept {
  if (busy_.exchange(true, std::memory_order_acquire)) {
    counters_.drop(Drop::kContended);
    return Drop::kContended;
  }
  struct Done {
    std::atomic<bool>& busy;
    ~Done() { busy.store(false, std::memory_order_release); }
  } done{busy_};
  Drop d = Drop::kNone;
  switch (params_.protocol) {
    case core::IpsecProtocol::kEsp: d = open(pkt); break;
    case core::IpsecProtocol::kAh: d = open_ah(pkt, false); break;
    case core::IpsecProtocol::kAhEsp:
      d = open_ah(pkt, true);
      if (d != Drop::kNone) break;
      // Now the ESP packet: it must be the bundle's ESP SA.
      if (pkt.len < kEspHeaderLen || core::load_be32(pkt.data()) != esp_spi_) {
        d = Drop::kPolicyMismatch;
        break;
      }
      d = open(pkt);
      break;
  }
  if (d != Drop::kNone) counters_.drop(d);
  return d;
}

Drop InboundSa::open(core::Packet& pkt) noexcept {
  const auto& t = params_.transform;
  const std::size_t iv_len = core::iv_len(t.enc.alg);
  const std::size_t icv = t.icv_len();
  const std::size_t block = core::block_len(t.enc.alg);
  // Structure: header, IV, at least the 2-byte trailer, ICV.
  if (pkt.len < kEspHeaderLen + iv_len + 2 + icv) return Drop::kMalformed;
  const std::size_t ct_len = pkt.len - kEspHeaderLen - iv_len - icv;
  if (block > 4 && ct_len % block != 0) return Drop::kMalformed;

  const std::uint64_t seq = replay_.infer(core::load_be32(pkt.data() + 4), t.esn);
  if (!replay_.check(seq)) return Drop::kReplay;
  if (!crypto_->unprotect(pkt.span(), iv_len, static_cast<std::uint32_t>(seq >> 32))) {
    return Drop::kAuthFailed;
  }

  // Padding (RFC 4303 2.4): pad length and the default 1, 2, 3, ... bytes.
  std::uint8_t* pt = pkt.data() + kEspHeaderLen + iv_len;
  const std::uint8_t pad_len = pt[ct_len - 2];
  const std::uint8_t next_header = pt[ct_len - 1];
  if (std::size_t{pad_len} + 2 > ct_len) return Drop::kBadPadding;
  const std::size_t inner_len = ct_len - 2 - pad_len;
  for (std::size_t i = 0; i < pad_len; ++i) {
    if (pt[inner_len + i] != static_cast<std::uint8_t>(i + 1)) return Drop::kBadPadding;
  }
  if (!replay_.update(seq)) return Drop::kReplay;
  if (next_header == core::ipproto::kNoNext) return Drop::kDummy;

  core::PacketInfo info;
  if (params_.mode == core::SaMode::kTransport) {
    // Transport mode: the IP header the kernel took off on receipt is built
    // again in front of the payload (from the SA's addresses; the payload's
    // own TCP/UDP checksum covers them), then the selectors are checked.
    if (!transport_payload_ok(params_.selectors, next_header)) return Drop::kPolicyMismatch;
    const std::size_t start = pkt.off + kEspHeaderLen + iv_len;
    const std::size_t hl = params_.local_addr.is_v4() ? 20 : 40;
    if (start < hl || inner_len + hl > 0xffff + (hl == 40 ? 40 : 0)) return Drop::kMalformed;
    pkt.off = start - hl;
    pkt.len = hl + inner_len;
    core::write_ip_header(pkt.data(), params_.remote_addr, params_.local_addr, next_header, inner_len);
    // Through a NAT (RFC 3948 3.1.2) the peer's TCP/UDP checksum covers
    // addresses that are not the ones in the rebuilt header (its own
    // private one, or the NAT's public one for ours): it is recomputed,
    // which the decrypted and authenticated payload allows.
    if (params_.encap == core::Encap::kUdp) core::recompute_l4_checksum(pkt.span(), hl);
    if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) return Drop::kMalformed;
    if (!params_.selectors.matches_inbound(info)) return Drop::kPolicyMismatch;
    counters_.in.add(inner_len);
    return Drop::kNone;
  }
  // Inner header sanity: tunnel mode carries a whole IP packet.
  if (next_header != core::ipproto::kIpIp && next_header != core::ipproto::kIpv6) {
    return Drop::kMalformed;
  }
  if (core::parse_ip_packet(ByteSpan(pt, inner_len), info) != core::IpParseError::kNone ||
      (info.family == core::Family::V4) != (next_header == core::ipproto::kIpIp)) {
    return Drop::kMalformed;
  }
  if (!params_.selectors.matches_inbound(info)) return Drop::kPolicyMismatch;
  pkt.off += kEspHeaderLen + iv_len;
  pkt.len = info.total_len;  // anything after it is TFC padding
  counters_.in.add(pkt.len);
  return Drop::kNone;
}

// AH inbound, in RFC 4302 3.4's order: sequence number (replay) check, ICV
// (constant time), then the window update; then what the header carried.
Drop InboundSa::open_ah(core::Packet& pkt, bool bundle) noexcept {
  const auto& t = params_.ah;
  std::size_t total = 0, nh_pos = 0;
  const std::size_t ah_off = find_ah(pkt.span(), total, nh_pos);
  if (ah_off == 0) return Drop::kMalformed;
  const bool v6 = (pkt.data()[0] >> 4) == 6;
  if (v6 == params_.local_addr.is_v4()) return Drop::kMalformed;
  if (!v6 && (core::load_be16(pkt.data() + 6) & 0x3fff) != 0) return Drop::kMalformed;  // a fragment
  const std::size_t al = ah_len(t, v6);
  if (total < ah_off + kAhHeaderLen) return Drop::kMalformed;
  std::uint8_t* ah = pkt.data() + ah_off;
  if ((std::size_t{ah[1]} + 2) * 4 != al || total < ah_off + al) return Drop::kMalformed;
  pkt.len = total;
  ReplayWindow& window = bundle ? ah_replay_ : replay_;
  const std::uint64_t seq = window.infer(core::load_be32(ah + 8), t.esn);
  if (!window.check(seq)) return Drop::kReplay;
  std::uint8_t icv[64];
  if (!ah_icv(*ah_mac_, pkt.span(), ah_off, t.iv_len(), t.icv_len(), t.esn, static_cast<std::uint32_t>(seq >> 32),
              icv))
    return Drop::kMalformed;
  if (!core::ct_equal(core::ByteSpan(icv, t.icv_len()), core::ByteSpan(ah + kAhHeaderLen + t.iv_len(), t.icv_len())))
    return Drop::kAuthFailed;
  if (!window.update(seq)) return Drop::kReplay;
  const std::uint8_t next_header = ah[0];
  if (next_header == core::ipproto::kNoNext) return Drop::kDummy;
  if (bundle) {
    // AH+ESP: what AH protected must be the ESP packet, between the SA's
    // own addresses (AH is in transport mode over them); it goes on alone.
    if (next_header != core::ipproto::kEsp) return Drop::kPolicyMismatch;
    const std::uint8_t* h = pkt.data();
    const auto src = v6 ? core::IpAddress::v6(core::ByteSpan(h + 8, 16)) : core::IpAddress::v4(core::ByteSpan(h + 12, 4));
    const auto dst = v6 ? core::IpAddress::v6(core::ByteSpan(h + 24, 16)) : core::IpAddress::v4(core::ByteSpan(h + 16, 4));
    if (src != params_.remote_addr || dst != params_.local_addr) return Drop::kPolicyMismatch;
    pkt.off += ah_off + al;
    pkt.len = total - ah_off - al;
    return Drop::kNone;
  }
  core::PacketInfo info;
  if (params_.mode == core::SaMode::kTunnel) {
    if (next_header != core::ipproto::kIpIp && next_header != core::ipproto::kIpv6) return Drop::kMalformed;
    const core::ByteSpan inner = pkt.span().subspan(ah_off + al);
    if (core::parse_ip_packet(inner, info) != core::IpParseError::kNone ||
        (info.family == core::Family::V4) != (next_header == core::ipproto::kIpIp)) {
      return Drop::kMalformed;
    }
    if (!params_.selectors.matches_inbound(info)) return Drop::kPolicyMismatch;
    pkt.off += ah_off + al;
    pkt.len = info.total_len;
  } else {
    // Transport: the IP header (and any options) moves up over AH and
    // gets back the protocol AH carried.
    if (!transport_payload_ok(params_.selectors, next_header)) return Drop::kPolicyMismatch;
    std::memmove(pkt.data() + al, pkt.data(), ah_off);
    pkt.off += al;
    pkt.len = total - al;
    std::uint8_t* h = pkt.data();
    h[nh_pos] = next_header;
    if (!v6) {
      neutralise_mutable_v4_options(h, ah_off);
      core::store_be16(h + 2, static_cast<std::uint16_t>(pkt.len));
      core::store_be16(h + 10, core::ipv4_header_checksum(core::ByteSpan(h, ah_off)));
    } else {
      core::store_be16(h + 4, static_cast<std::uint16_t>(pkt.len - 40));
    }
    if (core::parse_ip_packet(pkt.span(), info) != core::IpParseError::kNone) return Drop::kMalformed;
    if (!params_.selectors.matches_inbound(info)) return Drop::kPolicyMismatch;
  }
  counters_.in.add(pkt.len);
  return Drop::kNone;
}

}  // namespace ipsecgw::esp
