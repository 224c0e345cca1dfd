// Locating and reading the third-party vectors in ../shared/vectors.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/bytes.hpp"

namespace ipsecgw::test {

inline std::optional<std::filesystem::path> vectors_dir() {
  if (const char* env = std::getenv("IPSECGW_VECTORS")) return std::filesystem::path(env);
  std::filesystem::path p(IPSECGW_VECTORS_DIR);
  if (std::filesystem::is_directory(p)) return p;
  return std::nullopt;
}

// Loads a JSON vector file, or returns nullopt after a visible warning.
inline std::optional<nlohmann::json> load_vectors(const std::string& rel) {
  auto dir = vectors_dir();
  if (!dir || !std::filesystem::exists(*dir / rel)) {
    WARN("SKIPPED: vector file " << rel << " not found (set IPSECGW_VECTORS to the shared/vectors folder)");
    return std::nullopt;
  }
  std::ifstream f(*dir / rel);
  return nlohmann::json::parse(f);
}

inline core::Bytes hex(const std::string& s) {
  auto b = core::from_hex(s);
  REQUIRE(b.has_value());
  return *b;
}

}  // namespace ipsecgw::test
