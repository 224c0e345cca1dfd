// libFuzzer target: the JSON configuration parser and validator.
#include <cstdint>
#include <string_view>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto r = ipsecgw::config::parse_config(
      std::string_view(reinterpret_cast<const char*>(data), size));
  if (r.config) (void)ipsecgw::config::explain(*r.config);
  return 0;
}
