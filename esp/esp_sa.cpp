#include "esp/esp_sa.hpp"

#include <cstring>

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
  if (p.protocol != core::IpsecProtocol::kEsp) {
    why = "only ESP is implemented in the data plane";
    return false;
  }
  if (p.mode == core::SaMode::kTransport && p.encap != core::Encap::kNone) {
    why = "transport mode in UDP (RFC 3948 3.1.2) is not implemented yet";
    return false;
  }
  return true;
}

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

std::unique_ptr<OutboundSa> OutboundSa::create(const core::SaParams& p, std::string& why) {
  if (!supported(p, why)) return nullptr;
  std::unique_ptr<OutboundSa> sa(new OutboundSa());
  sa->state_ = std::make_shared<State>();
  auto& st = *sa->state_;
  st.crypto = EspCrypto::create(p.transform, p.out.keymat.span(), core::CipherDir::kEncrypt, why);
  if (!st.crypto) return nullptr;
  if (p.transform.enc.alg == core::EncAlg::kAesCbc ||
      p.transform.enc.alg == core::EncAlg::kTripleDesCbc) {
    st.ivgen = core::IvGenerator::create();
    if (!st.ivgen) {
      why = "cannot set up the IV generator";
      return nullptr;
    }
  }
  sa->spi_ = p.out.spi;
  st.max_seq = p.transform.esn ? ~std::uint64_t{0} : 0xffffffffu;
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

Drop OutboundSa::encapsulate(core::Packet& pkt) noexcept {
  auto& st = *state_;
  const std::uint64_t seq = st.next_seq.fetch_add(1, std::memory_order_relaxed);
  if (seq > st.max_seq || seq == 0) {
    // Never wrap (RFC 4303 3.3.3): the SA must be rekeyed.
    st.next_seq.store(st.max_seq + (st.max_seq == ~std::uint64_t{0} ? 0 : 1));
    st.counters.drop(Drop::kSeqExhausted);
    return Drop::kSeqExhausted;
  }
  std::uint8_t iv[16];
  const std::size_t iv_len = core::iv_len(params_.transform.enc.alg);
  if (st.ivgen) {
    if (!st.ivgen->next(seq, core::MutByteSpan(iv, iv_len))) return Drop::kMalformed;
  } else if (iv_len == 8) {
    core::store_be64(iv, seq);  // counter modes: the IV must only be unique
  }
  return encapsulate_with(pkt, seq, ByteSpan(iv, iv_len));
}

Drop OutboundSa::encapsulate_with(core::Packet& pkt, std::uint64_t seq, ByteSpan iv) noexcept {
  auto& ctr = state_->counters;
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
  if (!state_->crypto->protect(pkt.span(), iv_len, static_cast<std::uint32_t>(seq >> 32))) {
    ctr.drop(Drop::kMalformed);
    return Drop::kMalformed;
  }
  ctr.out.add(inner_len);
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
  sa->crypto_ = EspCrypto::create(p.transform, p.in.keymat.span(), core::CipherDir::kDecrypt, why);
  if (!sa->crypto_) return nullptr;
  sa->spi_ = p.in.spi;
  sa->params_ = p.without_keys();
  return sa;
}

Drop InboundSa::decapsulate(core::Packet& pkt) noexcept {
  Drop d = open(pkt);
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
    const std::size_t start = pkt.off + kEspHeaderLen + iv_len;
    const std::size_t hl = params_.local_addr.is_v4() ? 20 : 40;
    if (start < hl || inner_len + hl > 0xffff + (hl == 40 ? 40 : 0)) return Drop::kMalformed;
    pkt.off = start - hl;
    pkt.len = hl + inner_len;
    core::write_ip_header(pkt.data(), params_.remote_addr, params_.local_addr, next_header, inner_len);
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

}  // namespace ipsecgw::esp
