// Logging: one line per event, "LEVEL module: message", to stderr.
//
// Thread-safe. Per-packet events go through RateLimited so that a flood of bad
// packets costs a counter increment, not a line each. Never pass key material.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

namespace ipsecgw::core::log {

enum class Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

void set_level(Level l) noexcept;
Level level() noexcept;
bool parse_level(std::string_view s, Level& out) noexcept;
void write(Level l, std::string_view module, std::string_view message);

template <class... Args>
void emit(Level l, std::string_view module, const Args&... args) {
  if (static_cast<int>(l) > static_cast<int>(level())) return;
  std::ostringstream os;
  (os << ... << args);
  write(l, module, os.str());
}

template <class... Args>
void error(std::string_view m, const Args&... a) { emit(Level::kError, m, a...); }
template <class... Args>
void warn(std::string_view m, const Args&... a) { emit(Level::kWarn, m, a...); }
template <class... Args>
void info(std::string_view m, const Args&... a) { emit(Level::kInfo, m, a...); }
template <class... Args>
void debug(std::string_view m, const Args&... a) { emit(Level::kDebug, m, a...); }

// Allows at most one event per interval; counts the ones it suppressed so the
// next line that gets through can say how many were folded into it.
class RateLimited {
 public:
  explicit RateLimited(std::chrono::milliseconds interval = std::chrono::seconds(1))
      : interval_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(interval).count()) {}
  // True when the caller may log now; `suppressed` says how many were not.
  bool allow(std::uint64_t& suppressed) noexcept;

 private:
  std::int64_t interval_ns_;
  std::atomic<std::int64_t> next_ns_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace ipsecgw::core::log
