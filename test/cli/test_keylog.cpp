// The Wireshark key log never follows a symlink: a link planted at its path
// (to a file someone else can read) gets no keys.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "cli/keylog.hpp"

using namespace ipsecgw;

TEST_CASE("key log: written with mode 0600, never through a symlink", "[cli][keylog][secrets]") {
  char dir_template[] = "/tmp/ipsecgw-keylog-XXXXXX";
  REQUIRE(::mkdtemp(dir_template));
  const std::string dir = dir_template;
  const std::string target = dir + "/elsewhere", link = dir + "/esp_sa", real = dir + "/esp_sa2";
  std::ofstream(target).close();
  REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
  const core::Bytes key(16, 0xab);
  {
    cli::KeyLog kl({}, {}, link);
    kl.ikev1(0x1122334455667788ULL, key);
  }
  std::ifstream t(target);
  CHECK(std::string(std::istreambuf_iterator<char>(t), {}).empty());
  {
    cli::KeyLog kl({}, {}, real);
    kl.ikev1(0x1122334455667788ULL, key);
  }
  std::ifstream r(real);
  const std::string text(std::istreambuf_iterator<char>(r), {});
  CHECK(text.find("abababab") != std::string::npos);
  std::remove(link.c_str());
  std::remove(target.c_str());
  std::remove(real.c_str());
  ::rmdir(dir.c_str());
}
