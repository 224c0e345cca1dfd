// esp_tool: encapsulates or decapsulates packets with one ESP SA, for the
// oracle tests (scapy checks what ipsecgw writes and writes what ipsecgw
// must read). Reads one JSON request on stdin, writes one JSON answer:
//   {"op":"encap"|"decap", "esp":"aes128-sha256", "spi":4097, "key":"hex",
//    "seq":1, "packets":["hex", ...],
//    optional: "mode":"transport", "local":"198.51.100.1", "remote":"198.51.100.2"}
// With "ah":"sha256" instead of "esp", the SA is AH and packets are whole IP
// packets both ways (the outer header is under the ICV). With both "esp" and
// "ah" (and "ah_spi", "ah_key") it is an AH+ESP bundle: whole IP packets,
// IP | AH | ESP.
// In transport mode encap takes whole IP packets from local to remote and
// decap gives back whole IP packets from remote to local.
//   -> {"packets":["hex", ...], "drops":["none"|reason, ...]}
#include <iostream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "core/packet.hpp"
#include "esp/esp_sa.hpp"

using namespace ipsecgw;

int main() {
  try {
    std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    auto req = nlohmann::json::parse(input);
    std::string why;
    core::SaParams p;
    p.name = "oracle";
    if (req.contains("ah") && req.contains("esp")) {
      auto t = core::single_ah_transform(req.at("ah").get<std::string>(), why);
      auto e = core::single_esp_transform(req.at("esp").get<std::string>(), why);
      if (!t || !e) throw std::runtime_error(why);
      p.protocol = core::IpsecProtocol::kAhEsp;
      p.ah = *t;
      p.transform = *e;
      p.ah_out.spi = p.ah_in.spi = req.at("ah_spi").get<std::uint32_t>();
      auto k = core::from_hex(req.at("ah_key").get<std::string>());
      if (!k) throw std::runtime_error("ah_key is not hex");
      p.ah_out.keymat = core::SecureBytes(*k);
      p.ah_in.keymat = core::SecureBytes(*k);
    } else if (req.contains("ah")) {
      // AH: encap takes and gives whole IP packets (outer header included), decap too.
      auto t = core::single_ah_transform(req.at("ah").get<std::string>(), why);
      if (!t) throw std::runtime_error(why);
      p.protocol = core::IpsecProtocol::kAh;
      p.ah = *t;
    } else {
      auto t = core::single_esp_transform(req.at("esp").get<std::string>(), why);
      if (!t) throw std::runtime_error(why);
      p.transform = *t;
    }
    p.selectors.local = {core::IpRange::any(core::Family::V4), core::IpRange::any(core::Family::V6)};
    p.selectors.remote = p.selectors.local;
    p.replay_window = req.value("replay_window", 64u);
    if (req.value("mode", std::string("tunnel")) == "transport") p.mode = core::SaMode::kTransport;
    auto addr = [&](const char* key, const char* dflt) {
      auto a = core::IpAddress::parse(req.value(key, std::string(dflt)));
      if (!a) throw std::runtime_error(std::string(key) + " is not an address");
      return *a;
    };
    p.local_addr = addr("local", "198.51.100.1");
    p.remote_addr = addr("remote", "198.51.100.2");
    p.out.spi = p.in.spi = req.at("spi").get<std::uint32_t>();
    auto key = core::from_hex(req.at("key").get<std::string>());
    if (!key) throw std::runtime_error("key is not hex");
    p.out.keymat = core::SecureBytes(*key);
    p.in.keymat = core::SecureBytes(*key);
    nlohmann::json out = {{"packets", nlohmann::json::array()}, {"drops", nlohmann::json::array()}};
    const bool encap = req.at("op") == "encap";
    auto osa = esp::OutboundSa::create(p, why);
    auto isa = esp::InboundSa::create(p, why);
    if (!osa || !isa) throw std::runtime_error(why);
    osa->set_next_seq(req.value("seq", std::uint64_t{1}));
    for (const auto& h : req.at("packets")) {
      auto bytes = core::from_hex(h.get<std::string>());
      if (!bytes) throw std::runtime_error("packet is not hex");
      core::Packet pkt;
      pkt.assign(*bytes);
      core::Drop d = encap ? osa->encapsulate(pkt) : isa->decapsulate(pkt);
      out["drops"].push_back(std::string(core::key_of(d)));
      out["packets"].push_back(d == core::Drop::kNone ? core::to_hex(pkt.span()) : "");
    }
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "esp_tool: " << e.what() << "\n";
    return 2;
  }
}
