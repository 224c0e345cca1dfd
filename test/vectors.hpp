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

// The path of a vector file; a file that is not there fails the test,
// naming the path and IPSECGW_VECTORS (never a silent pass).
inline std::filesystem::path vector_path(const std::string& rel) {
  auto dir = vectors_dir();
  INFO("vector file " << rel << " (the shared/vectors folder beside the checkout, or IPSECGW_VECTORS)");
  REQUIRE(dir.has_value());
  const auto p = *dir / rel;
  INFO("looked for " << p);
  REQUIRE(std::filesystem::is_regular_file(p));
  return p;
}

// Loads a JSON vector file; a missing or unparsable file fails the test.
inline nlohmann::json load_vectors(const std::string& rel) {
  std::ifstream f(vector_path(rel));
  INFO("reading " << rel);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

inline core::Bytes hex(const std::string& s) {
  auto b = core::from_hex(s);
  REQUIRE(b.has_value());
  return *b;
}

}  // namespace ipsecgw::test
