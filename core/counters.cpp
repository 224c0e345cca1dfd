#include "core/counters.hpp"

namespace ipsecgw::core {

namespace {
struct DropName {
  std::string_view key;
  std::string_view text;
};
constexpr std::array<DropName, kDropCount> kNames = {{
    {"none", "not dropped"},
    {"bad_spi", "unknown SPI"},
    {"replay", "replayed or too old"},
    {"auth_failed", "ICV/AEAD verification failed"},
    {"bad_padding", "bad padding"},
    {"policy_mismatch", "inner packet outside the SA's selectors"},
    {"malformed", "malformed packet"},
    {"seq_exhausted", "sequence numbers exhausted"},
    {"no_policy", "no matching policy"},
    {"discard_policy", "discarded by policy"},
    {"no_sa", "no SA installed for the policy"},
    {"too_big", "too big to encapsulate"},
    {"send_failed", "send failed"},
    {"dummy", "TFC dummy packet"},
    {"contended", "inbound SA busy on another worker"},
}};
}  // namespace

std::string_view to_string(Drop d) noexcept {
  auto i = static_cast<std::size_t>(d);
  return i < kNames.size() ? kNames[i].text : "?";
}
std::string_view key_of(Drop d) noexcept {
  auto i = static_cast<std::size_t>(d);
  return i < kNames.size() ? kNames[i].key : "?";
}

}  // namespace ipsecgw::core
