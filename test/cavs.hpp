// NIST CAVS response files ("[SHA-256]" and "[x length = n]" section lines,
// then "COUNT = n" and "name = hex" lines), plain or gzip-compressed, read
// record by record. A file that cannot be read fails the calling test.
#pragma once

#include <zlib.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include <catch2/catch.hpp>

namespace ipsecgw::test {

struct CavsRecord {
  std::map<std::string, std::string> section;  // "SHA" -> "SHA-256", "g^xy length" -> "256", ...
  std::map<std::string, std::string> fields;   // "CKY_I" -> hex, ...
};

// Calls `f` for every record; returns the number of records.
inline std::size_t for_each_cavs(const std::filesystem::path& path,
                                 const std::function<void(const CavsRecord&)>& f) {
  gzFile gz = gzopen(path.c_str(), "rb");  // reads plain files too
  INFO("vector file " << path << " (IPSECGW_VECTORS points at the shared/vectors folder)");
  REQUIRE(gz != nullptr);
  std::size_t n = 0;
  CavsRecord rec;
  auto flush = [&] {
    if (rec.fields.empty()) return;
    f(rec);
    ++n;
    rec.fields.clear();
  };
  std::string line;
  char buf[65536];
  while (gzgets(gz, buf, sizeof buf)) {
    line = buf;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      flush();
      const std::string inner = line.substr(1, line.size() - 2);
      const auto eq = inner.find(" = ");
      if (eq == std::string::npos) rec.section["SHA"] = inner;
      else rec.section[inner.substr(0, eq)] = inner.substr(eq + 3);
      continue;
    }
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq);
    if (key == "COUNT") {
      flush();
      continue;
    }
    rec.fields[key] = line.substr(eq + 3);
  }
  flush();
  const bool eof = gzeof(gz);
  gzclose(gz);
  REQUIRE(eof);  // a line longer than the buffer or a read error ends early
  return n;
}

}  // namespace ipsecgw::test
