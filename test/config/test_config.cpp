#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/config.hpp"

using namespace ipsecgw;

namespace {
std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool has_error(const config::LoadResult& r, const std::string& path, const std::string& words) {
  for (const auto& e : r.errors) {
    if (e.path == path && e.message.find(words) != std::string::npos) return true;
  }
  return false;
}

std::string dump(const config::LoadResult& r) {
  std::string s;
  for (const auto& e : r.errors) s += e.to_string() + "\n";
  return s;
}
}  // namespace

TEST_CASE("the issue's example configuration loads as written", "[config]") {
  auto r = config::parse_config(read_file(IPSECGW_SOURCE_DIR "/examples/site-to-site.json"));
  INFO(dump(r));
  REQUIRE(r.config);
  const auto& c = *r.config;
  CHECK(c.tun.name == "ipsec0");
  CHECK(c.tun.mtu == 1400);
  CHECK(c.tun.txqueuelen == 4096);
  REQUIRE(c.manual.size() == 1);
  CHECK(c.manual[0].out.spi == 0x1001);
  CHECK(c.manual[0].in.spi == 0x2001);
  CHECK(c.manual[0].encap == core::Encap::kUdp);
  CHECK(c.manual[0].transform.name() == "aes256gcm16");
  CHECK(c.manual[0].out.keymat.size() == 36);
  REQUIRE(c.policies.size() == 1);
  CHECK(c.policies[0].policy.action == core::PolicyAction::kBypass);
  CHECK(c.policies[0].policy.sel.remote_ports.lo == 53);
  auto text = config::explain(c);
  CHECK(text.find("bypass") != std::string::npos);
  CHECK(text.find("10.2.0.0/24") != std::string::npos);
}

TEST_CASE("configuration errors name the JSON path and the problem", "[config]") {
  auto r = config::parse_config(R"({
    "tun": { "mtu": 20, "colour": "blue", "txqueuelen": 8 },
    "manual": {
      "lan": {
        "local_addr": "198.51.100.1", "remote_addr": "2001:db8::2",
        "local_ts": ["10.1.0.0/33"], "remote_ts": [],
        "esp": "aes256gcm16-sha256", "encap": "tcp", "replay_window": 70000,
        "out": { "spi": "0x10", "key": "00" },
        "in":  { "spi": "banana", "key": "zz" }
      },
      "two": {
        "local_addr": "198.51.100.1", "remote_addr": "198.51.100.3",
        "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.3.0.0/24"],
        "esp": "aes128gcm16", "mode": "transport",
        "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
        "in":  { "spi": 4098, "key": "000102030405060708090a0b0c0d0e0f1011121" }
      }
    },
    "policies": [ { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"],
                    "action": "protect", "sa": "nope", "remote_port": 53 } ]
  })");
  INFO(dump(r));
  CHECK_FALSE(r.config);
  CHECK(has_error(r, "$.tun.mtu", "between"));
  CHECK(has_error(r, "$.tun.colour", "unknown key"));
  CHECK(has_error(r, "$.tun.txqueuelen", "between"));
  CHECK(has_error(r, "$.manual.lan.remote_addr", "same IP version"));
  CHECK(has_error(r, "$.manual.lan.local_ts[0]", "not an address"));
  CHECK(has_error(r, "$.manual.lan.remote_ts", "non-empty"));
  CHECK(has_error(r, "$.manual.lan.esp", "AEAD"));
  CHECK(has_error(r, "$.manual.lan.encap", "udp"));
  CHECK(has_error(r, "$.manual.lan.replay_window", "between"));
  CHECK(has_error(r, "$.manual.lan.out.spi", "reserved"));
  CHECK(has_error(r, "$.manual.lan.in.spi", "not a number"));
  CHECK(has_error(r, "$.manual.two.local_ts", "protects only traffic of its own addresses"));
  CHECK(has_error(r, "$.manual.two.remote_ts", "'10.3.0.0/24' is not 198.51.100.3"));
  CHECK(has_error(r, "$.manual.two.in.key", "is not hex"));
  CHECK(has_error(r, "$.policies[0].sa", "no manual SA"));
  CHECK(has_error(r, "$.policies[0].proto", "ports need a protocol"));
}

TEST_CASE("the data plane's keys: workers, offload, uso, tun.txqueuelen", "[config]") {
  const std::string manual = R"("manual": { "lan": {
      "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
      "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"], "esp": "aes128gcm16",
      "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
      "in":  { "spi": 4098, "key": "101112131415161718191a1b1c1d1e1f20212223" } } })";
  auto ok = config::parse_config(R"({ "tun": { "txqueuelen": 10000 },
      "dataplane": { "workers": 3, "offload": true, "uso": false }, )" + manual + "}");
  INFO(dump(ok));
  REQUIRE(ok.config);
  CHECK(ok.config->tun.txqueuelen == 10000);
  CHECK(ok.config->dataplane.workers == 3);
  CHECK(ok.config->dataplane.offload);
  CHECK_FALSE(ok.config->dataplane.uso);
  auto defaults = config::parse_config("{" + manual + "}");
  REQUIRE(defaults.config);
  CHECK(defaults.config->dataplane.uso);
  CHECK(defaults.config->tun.txqueuelen == 4096);
  auto bad = config::parse_config(R"({ "tun": { "txqueuelen": 70000 },
      "dataplane": { "uso": "yes", "gro": true }, )" + manual + "}");
  CHECK_FALSE(bad.config);
  CHECK(has_error(bad, "$.tun.txqueuelen", "between"));
  CHECK(has_error(bad, "$.dataplane.uso", "true or false"));
  CHECK(has_error(bad, "$.dataplane.gro", "unknown key"));
}

TEST_CASE("key length errors say what the algorithm needs", "[config]") {
  auto r = config::parse_config(R"({ "manual": { "x": {
      "local_addr": "192.0.2.1", "remote_addr": "192.0.2.2",
      "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"], "esp": "aes128-sha256",
      "out": { "spi": 4097, "key": "00112233" },
      "in":  { "spi": 4098, "key": "0011223344556677889900112233445566778899001122334455667788990011223344556677889900112233445566778899" } } } })");
  INFO(dump(r));
  CHECK(has_error(r, "$.manual.x.out.key", "must be 48 bytes for aes128-sha256 (16 key + 32 integrity key), got 4"));
}

TEST_CASE("malformed and non-object JSON", "[config][truncation]") {
  const std::string good = R"({"tun":{"name":"ipsec0"},"manual":{}})";
  for (std::size_t n = 0; n < good.size(); ++n) {
    auto r = config::parse_config(good.substr(0, n));
    CHECK_FALSE(r.config);
    CHECK_FALSE(r.errors.empty());
  }
  CHECK(config::parse_config(good).config);
  CHECK(has_error(config::parse_config("[1,2]"), "$", "must be an object"));
  CHECK(has_error(config::parse_config(R"({"connection":{}})"), "$.connection", "unknown key"));
  // Found by fuzz_config: a number too large for a double is an error, not a throw.
  CHECK(has_error(config::parse_config("99999e9999"), "$", "invalid JSON"));
  CHECK(has_error(config::parse_config(R"({"udp_encap":{"port":1e999}})"), "$", "invalid JSON"));
  CHECK(has_error(config::parse_config(R"({"udp_encap":{"port":18446744073709551615}})"),
                  "$.udp_encap.port", "between"));
}

TEST_CASE("strongSwan proposal keywords", "[config][algorithms]") {
  std::string why;
  for (const char* ok : {"aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256",
                         "aes256-sha512", "aes128ctr-sha256", "aes128-sha1", "3des-md5",
                         "null-sha256", "aes256gcm16-esn", "aes128-sha256-esn"}) {
    auto t = core::single_esp_transform(ok, why);
    INFO(ok << ": " << why);
    REQUIRE(t);
    CHECK(t->name() == ok);
  }
  CHECK_FALSE(core::single_esp_transform("aes128", why));  // no integrity
  CHECK(why.find("integrity") != std::string::npos);
  CHECK_FALSE(core::single_esp_transform("aes128-sha256-modp2048", why));
  CHECK_FALSE(core::single_esp_transform("rot13", why));
  CHECK(why.find("rot13") != std::string::npos);
}

TEST_CASE("the IKEv2 issue's example configuration loads as written", "[config][ike]") {
  const char* text = R"({
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
    "site-b": {
      "version": 2,
      "local_addrs": ["198.51.100.1"],
      "remote_addrs": ["198.51.100.2"],
      "local":  { "auth": "psk", "id": "gw-a.example" },
      "remote": { "auth": "psk", "id": "gw-b.example" },
      "proposals": ["aes256gcm16-prfsha384-x25519", "aes128-sha256-modp2048"],
      "encap": false,
      "dpd_delay": 10,
      "rekey_time": 14400,
      "children": {
        "lan": {
          "local_ts": ["10.1.0.0/24"],
          "remote_ts": ["10.2.0.0/24"],
          "esp_proposals": ["aes256gcm16", "aes128-sha256"],
          "mode": "tunnel",
          "start_action": "start",
          "rekey_time": 3600,
          "life_bytes": 0,
          "replay_window": 64
        }
      }
    }
  },
  "secrets": {
    "site-b": { "type": "psk", "ids": ["gw-a.example", "gw-b.example"],
                "secret": "a long shared secret" }
  }
})";
  auto r = config::parse_config(text);
  for (const auto& e : r.errors) INFO(e.to_string());
  REQUIRE(r.config);
  REQUIRE(r.config->connections.size() == 1);
  const auto& c = r.config->connections[0];
  CHECK(c.proposals.size() == 2);
  CHECK(c.dpd_delay == 10);
  CHECK(c.psk.size() == 20);
  REQUIRE(c.children.size() == 1);
  CHECK(c.children[0].esp_proposals.size() == 2);
  CHECK(c.children[0].start_action == ike::StartAction::kStart);
  CHECK(config::explain(*r.config).find("site-b") != std::string::npos);
  // Errors name their paths.
  CHECK(has_error(config::parse_config(R"({"connections":{"x":{"local_addrs":["1.2.3.4"],"proposals":["aes128-sha256"],"children":{"c":{"local_ts":["10.0.0.0/8"],"remote_ts":["10.1.0.0/16"]}}}}})"),
                  "$.connections.x.proposals[0]", "DH group"));
  CHECK(has_error(config::parse_config(R"({"connections":{"x":{"local_addrs":["1.2.3.4"],"children":{"c":{"local_ts":["10.0.0.0/8"],"remote_ts":["10.1.0.0/16"]}}}}})"),
                  "$.connections.x", "no PSK"));
}

TEST_CASE("the IKEv1 issue's example configuration loads as written", "[config][ikev1]") {
  const char* text = R"({
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "connections": {
    "branch": {
      "version": 1,
      "local_addrs": ["198.51.100.1"],
      "remote_addrs": ["198.51.100.2"],
      "local":  { "auth": "psk", "id": "gw-a.example" },
      "remote": { "auth": "psk", "id": "gw-b.example" },
      "proposals": ["aes256-sha256-modp2048", "aes128-sha1-modp2048"],
      "dpd_delay": 10,
      "dpd_timeout": 30,
      "rekey_time": 14400,
      "children": {
        "lan": {
          "local_ts": ["10.1.0.0/24"],
          "remote_ts": ["10.2.0.0/24"],
          "esp_proposals": ["aes256-sha256-modp2048", "aes128gcm16"],
          "mode": "tunnel",
          "start_action": "start",
          "rekey_time": 3600,
          "life_bytes": 0
        }
      }
    }
  },
  "secrets": {
    "branch": { "type": "psk", "ids": ["gw-a.example", "gw-b.example"],
                "secret": "a long shared secret" }
  }
})";
  const auto r = config::parse_config(text);
  INFO(dump(r));
  REQUIRE(r.config);
  REQUIRE(r.config->connections.size() == 1);
  const auto& c = r.config->connections[0];
  CHECK(c.version == 1);
  CHECK(c.proposals.size() == 2);
  CHECK(c.dpd_delay == 10);
  CHECK(c.dpd_timeout == 30);
  REQUIRE(c.children.size() == 1);
  CHECK(c.children[0].esp_proposals.size() == 2);
  CHECK(c.children[0].rekey_time == 3600);
  CHECK(c.psk.size() == std::string("a long shared secret").size());
}

TEST_CASE("what IKEv1 cannot carry is refused with its path", "[config][ikev1]") {
  nlohmann::json base = nlohmann::json::parse(R"({
  "connections": {
    "x": {
      "version": 1,
      "local_addrs": ["198.51.100.1"], "remote_addrs": ["198.51.100.2"],
      "local": { "auth": "psk", "id": "a" }, "remote": { "auth": "psk", "id": "b" },
      "proposals": ["3des-sha1-modp1024"],
      "children": { "c": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"] } }
    }
  },
  "secrets": { "s": { "ids": ["a", "b"], "secret": "a long shared secret" } }
})");
  REQUIRE(config::parse_config(base.dump()).config);
  for (int v : {0, 2}) {  // 0 answers both versions, 2 only IKEv2
    auto doc = base;
    doc["connections"]["x"]["version"] = v;
    CHECK(config::parse_config(doc.dump()).config);
  }
  {
    auto doc = base;
    doc["connections"]["x"]["aggressive"] = true;
    const auto r = config::parse_config(doc.dump());
    REQUIRE(r.config);
    CHECK(r.config->connections.at(0).aggressive);
  }
  struct Case {
    const char* pointer;
    nlohmann::json value;
    const char* path;
    const char* words;
  };
  const Case cases[] = {
      {"/connections/x/proposals", nlohmann::json::array({"aes256gcm16-prfsha256-x25519"}), "$.connections.x.proposals",
       "no proposal is possible in IKEv1 phase 1"},
      {"/connections/x/encap", true, "$.connections.x.encap", "not implemented for IKEv1"},
      {"/connections/x/fragment_size", 1000, "$.connections.x.fragment_size", "IKEv1 fragmentation"},
      {"/connections/x/children/c/local_ts", nlohmann::json::array({"10.1.0.0/24", "10.3.0.0/24"}),
       "$.connections.x.children.c.local_ts", "one selector per side"},
      {"/connections/x/aggressive", "yes", "$.connections.x.aggressive", "true or false"},
  };
  for (const auto& c : cases) {
    INFO(c.path);
    auto doc = base;
    doc[nlohmann::json::json_pointer(c.pointer)] = c.value;
    const auto r = config::parse_config(doc.dump());
    INFO(dump(r));
    CHECK_FALSE(r.config);
    CHECK(has_error(r, c.path, c.words));
  }
}

TEST_CASE("keys ipsecgw does not do yet are refused, naming the path and saying so", "[config]") {
  const nlohmann::json base = nlohmann::json::parse(R"({
  "connections": {
    "x": {
      "local_addrs": ["198.51.100.1"], "remote_addrs": ["198.51.100.2"],
      "local": { "auth": "psk", "id": "a" }, "remote": { "auth": "psk", "id": "b" },
      "proposals": ["aes128-sha256-x25519"],
      "children": { "c": { "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"] } }
    }
  },
  "secrets": { "s": { "ids": ["a", "b"], "secret": "a long shared secret" } }
})");
  REQUIRE(config::parse_config(base.dump()).config);  // the base is valid
  struct Case {
    const char* pointer;  // JSON pointer of the key to add
    nlohmann::json value;
    const char* path;     // the error's JSON path
    const char* words;
  };
  const Case cases[] = {
      {"/connections/x/pools", nlohmann::json::array({"rw"}), "$.connections.x.pools", "not implemented yet"},
      {"/connections/x/vips", nlohmann::json::array({"0.0.0.0"}), "$.connections.x.vips", "not implemented yet"},
      {"/connections/x/reauth_time", 3600, "$.connections.x.reauth_time", "reauthentication is not implemented yet"},
      {"/connections/x/mobike", true, "$.connections.x.mobike", "not implemented yet"},
      {"/connections/x/over_time", 600, "$.connections.x.over_time", "not implemented yet"},
      {"/connections/x/local/certs", nlohmann::json::array({"a.pem"}), "$.connections.x.local.certs", "not implemented yet"},
      {"/connections/x/remote/cacerts", nlohmann::json::array({"ca.pem"}), "$.connections.x.remote.cacerts", "not implemented yet"},
      {"/connections/x/children/c/ah_proposals", nlohmann::json::array({"sha256-aes128"}), "$.connections.x.children.c.ah_proposals[0]", "AH takes integrity algorithms"},
      {"/connections/x/children/c/ah_proposals", nlohmann::json::array(), "$.connections.x.children.c.ah_proposals", "at least one"},
      {"/connections/x/version", 3, "$.connections.x.version", ""},
      {"/connections/x/aggressive", true, "$.connections.x.aggressive", "an IKEv1 setting"},
      {"/connections/x/children/c/mode", "transport", "$.connections.x.children.c.local_ts", "protects only its hosts' own traffic"},
      {"/connections/x/children/c/mode", "bus", "$.connections.x.children.c.mode", "\"tunnel\" or \"transport\""},
      {"/connections/x/children/c/local_ts", nlohmann::json::array({"dynamic", "10.1.0.0/24"}), "$.connections.x.children.c.local_ts[0]", "stands alone"},
      {"/connections/x/children/c/remote_ts", nlohmann::json::array({"10.2.0.0/24[udp]", "10.3.0.0/24[tcp]"}), "$.connections.x.children.c.remote_ts[1]", "same protocol and ports"},
      {"/connections/x/local/auth", "pubkey", "$.connections.x.local.auth", "not implemented yet"},
      {"/connections/x/frobnicate", 1, "$.connections.x.frobnicate", "unknown key"},
  };
  for (const auto& c : cases) {
    INFO(c.path);
    auto doc = base;
    doc[nlohmann::json::json_pointer(c.pointer)] = c.value;
    const auto r = config::parse_config(doc.dump());
    INFO(dump(r));
    CHECK_FALSE(r.config);
    CHECK(has_error(r, c.path, c.words));
  }
  // reauth_time 0 means "never", which is what ipsecgw does: accepted.
  auto doc = base;
  doc["connections"]["x"]["reauth_time"] = 0;
  CHECK(config::parse_config(doc.dump()).config);
}

TEST_CASE("a JSON syntax error says where, never what: the text may be a secret", "[config][secrets]") {
  // An unterminated string that holds a PSK, and a stray comma after a key.
  const char* broken[] = {
      "{\"secrets\": {\"s\": {\"type\": \"psk\", \"secret\": \"hunter2-very-secret\n\"}}}",
      "{\"secrets\": {\"s\": {\"secret\": \"0x00112233445566778899\" ,, }}}",
      "{\"manual\": {\"m\": {\"out\": {\"key\": \"deadbeefcafe0123456789\" \"spi\": 1}}}}",
  };
  for (const char* text : broken) {
    INFO(text);
    auto r = config::parse_config(text);
    REQUIRE(r.errors.size() == 1);
    const std::string msg = r.errors[0].to_string();
    CHECK(msg.find("invalid JSON at line") != std::string::npos);
    CHECK(msg.find("hunter2") == std::string::npos);
    CHECK(msg.find("00112233") == std::string::npos);
    CHECK(msg.find("deadbeef") == std::string::npos);
  }
  auto r = config::parse_config("{\n  \"tun\": {\n    \"name\": \"x\",,\n  }\n}");
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].message.find("line 3") != std::string::npos);
}

TEST_CASE("a transport-mode manual SA protects its two addresses, routed from its own", "[config][transport]") {
  auto r = config::parse_config(R"({ "manual": {
    "host": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2", "mode": "transport",
              "esp": "aes128gcm16",
              "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
              "in":  { "spi": 4098, "key": "000102030405060708090a0b0c0d0e0f10111214" } },
    "lan": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.3",
             "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.3.0.0/24"], "esp": "aes128gcm16",
             "out": { "spi": 4099, "key": "000102030405060708090a0b0c0d0e0f10111213" },
             "in":  { "spi": 4100, "key": "000102030405060708090a0b0c0d0e0f10111214" } } } })");
  INFO(dump(r));
  REQUIRE(r.config);
  const auto& host = r.config->manual[0].name == "host" ? r.config->manual[0] : r.config->manual[1];
  CHECK(host.mode == core::SaMode::kTransport);
  CHECK(host.selectors.to_string() == "198.51.100.1 <-> 198.51.100.2");
  const auto routes = config::protected_routes(*r.config);
  REQUIRE(routes.size() == 2);
  bool saw_host = false;
  for (const auto& rt : routes) {
    if (rt.dst.to_string() == "198.51.100.2/32") {
      saw_host = true;
      REQUIRE(rt.src);
      CHECK(rt.src->to_string() == "198.51.100.1");
    } else {
      CHECK(rt.dst.to_string() == "10.3.0.0/24");
      CHECK_FALSE(rt.src);
    }
  }
  CHECK(saw_host);
  CHECK(config::explain(*r.config).find("host: ESP transport 198.51.100.1 <-> 198.51.100.2") != std::string::npos);

  auto u = config::parse_config(R"({ "manual": {
    "host": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2", "mode": "transport",
              "esp": "aes128gcm16", "encap": "udp",
              "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
              "in":  { "spi": 4098, "key": "000102030405060708090a0b0c0d0e0f10111214" } },
    "ah": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.3", "mode": "transport",
            "protocol": "ah", "ah": "sha256", "encap": "udp",
            "out": { "spi": 4099, "key": "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f" },
            "in":  { "spi": 4100, "key": "000102030405060708090a0b0c0d0e0f000102030405060708090a0b0c0d0e0f" } } } })");
  CHECK_FALSE(u.config);
  CHECK_FALSE(has_error(u, "$.manual.host.encap", ""));  // ESP transport in UDP is fine
  CHECK(has_error(u, "$.manual.ah.encap", "RFC 3948 covers ESP only"));
}

TEST_CASE("traffic selectors with protocol and ports, in strongSwan's syntax", "[config][ts]") {
  auto r = config::parse_config(R"({ "manual": {
    "web": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
             "local_ts": ["10.1.0.0/24[tcp]"], "remote_ts": ["10.2.0.5[tcp/443]", "10.2.0.6[tcp/443]"],
             "esp": "aes128gcm16",
             "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
             "in":  { "spi": 4098, "key": "000102030405060708090a0b0c0d0e0f10111214" } },
    "l2tp": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.3", "mode": "transport",
              "local_ts": ["[udp/1701]"], "remote_ts": ["[17/%any]"], "esp": "aes128gcm16",
              "out": { "spi": 4099, "key": "000102030405060708090a0b0c0d0e0f10111213" },
              "in":  { "spi": 4100, "key": "000102030405060708090a0b0c0d0e0f10111214" } } } })");
  INFO(dump(r));
  REQUIRE(r.config);
  for (const auto& sa : r.config->manual) {
    if (sa.name == "web") {
      CHECK(sa.selectors.proto == 6);
      CHECK(sa.selectors.local_ports.any());
      CHECK(sa.selectors.remote_ports == core::PortRange{443, 443});
      CHECK(sa.selectors.remote.size() == 2);
    } else {
      CHECK(sa.selectors.proto == 17);
      CHECK(sa.selectors.local_ports == core::PortRange{1701, 1701});
      CHECK(sa.selectors.remote_ports.any());
      REQUIRE(sa.selectors.local.size() == 1);
      CHECK(sa.selectors.local[0].to_string() == "198.51.100.1");
      CHECK(sa.selectors.remote[0].to_string() == "198.51.100.3");
    }
  }
  auto bad = config::parse_config(R"({ "manual": {
    "x": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
           "local_ts": ["10.1.0.0/24[tcp/80]", "10.1.1.0/24[tcp/81]"], "remote_ts": ["10.2.0.0/24[udp]"],
           "esp": "aes128gcm16",
           "out": { "spi": 4097, "key": "000102030405060708090a0b0c0d0e0f10111213" },
           "in":  { "spi": 4098, "key": "000102030405060708090a0b0c0d0e0f10111214" } },
    "y": { "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
           "local_ts": ["10.1.0.0/24[gre/80]"], "remote_ts": ["10.2.0.0/24[tcp/99999]", "10.3.0.0/24[nope]"],
           "esp": "aes128gcm16",
           "out": { "spi": 4099, "key": "000102030405060708090a0b0c0d0e0f10111213" },
           "in":  { "spi": 4100, "key": "000102030405060708090a0b0c0d0e0f10111214" } } } })");
  INFO(dump(bad));
  CHECK_FALSE(bad.config);
  CHECK(has_error(bad, "$.manual.x.local_ts[1]", "same protocol and ports"));
  CHECK(has_error(bad, "$.manual.x.remote_ts", "another protocol"));
  CHECK(has_error(bad, "$.manual.y.local_ts[0]", "ports need a protocol"));
  CHECK(has_error(bad, "$.manual.y.remote_ts[0]", "'99999' is not a port"));
  CHECK(has_error(bad, "$.manual.y.remote_ts[1]", "'nope' is not an IP protocol"));
}

TEST_CASE("the manual AH and AH+ESP bundle SAs of issue 12 load as written", "[config][bundle]") {
  const std::string k32(64, 'a'), k20(40, 'b');
  const auto doc = nlohmann::json::parse(R"({
  "tun": { "name": "ipsec0", "mtu": 1400 },
  "manual": {
    "host-ah": {
      "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
      "mode": "transport", "protocol": "ah", "ah": "sha256", "encap": "none",
      "out": { "spi": "0x00003001", "key": ")" + k32 + R"(" },
      "in":  { "spi": "0x00004001", "key": ")" + std::string(64, 'e') + R"(" }
    },
    "lan-bundle": {
      "local_addr": "198.51.100.1", "remote_addr": "198.51.100.2",
      "local_ts": ["10.1.0.0/24"], "remote_ts": ["10.2.0.0/24"],
      "mode": "tunnel", "protocol": "ah+esp", "esp": "aes128-sha256", "ah": "sha256", "encap": "none",
      "out": { "spi": "0x00005001", "key": ")" + std::string(96, 'c') + R"(", "ah_spi": "0x00005002", "ah_key": ")" + k32 + R"(" },
      "in":  { "spi": "0x00006001", "key": ")" + std::string(96, 'd') + R"(", "ah_spi": "0x00006002", "ah_key": ")" + std::string(64, 'f') + R"(" }
    }
  }
})");
  auto r = config::parse_config(doc.dump());
  INFO(dump(r));
  REQUIRE(r.config);
  REQUIRE(r.config->manual.size() == 2);
  const auto& b = r.config->manual[1].name == "lan-bundle" ? r.config->manual[1] : r.config->manual[0];
  CHECK(b.protocol == core::IpsecProtocol::kAhEsp);
  CHECK(b.out.spi == 0x5001);
  CHECK(b.ah_out.spi == 0x5002);
  CHECK(b.in.spi == 0x6001);
  CHECK(b.ah_in.spi == 0x6002);
  CHECK(b.ah_in.keymat.size() == 32);
  CHECK(config::explain(*r.config).find("lan-bundle: AH+ESP tunnel") != std::string::npos);
  // A bundle without its AH keys, or in UDP, is refused by path.
  auto bad = doc;
  bad["manual"]["lan-bundle"]["out"].erase("ah_key");
  CHECK(has_error(config::parse_config(bad.dump()), "$.manual.lan-bundle.out.ah_key", "required"));
  bad = doc;
  bad["manual"]["lan-bundle"]["in"]["ah_key"] = k32;  // out.ah_key again
  CHECK(has_error(config::parse_config(bad.dump()), "$.manual.lan-bundle.in.ah_key", "each direction needs its own"));
  bad = doc;
  bad["manual"]["host-ah"]["in"]["key"] = k32;
  CHECK(has_error(config::parse_config(bad.dump()), "$.manual.host-ah.in.key", "each direction needs its own"));
  bad = doc;
  bad["manual"]["lan-bundle"]["in"]["ah_spi"] = "0x00004001";  // host-ah's inbound SPI
  CHECK(has_error(config::parse_config(bad.dump()), "$.manual.lan-bundle.in.ah_spi", "used by another SA"));
  bad = doc;
  bad["manual"]["lan-bundle"]["encap"] = "udp";
  CHECK(has_error(config::parse_config(bad.dump()), "$.manual.lan-bundle.encap", "cannot be UDP"));
}
