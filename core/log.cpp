#include "core/log.hpp"

#include <cstdio>
#include <ctime>
#include <mutex>

namespace ipsecgw::core::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_mutex;
constexpr const char* kNames[] = {"ERROR", "WARN", "INFO", "DEBUG"};
}  // namespace

void set_level(Level l) noexcept { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
Level level() noexcept { return static_cast<Level>(g_level.load(std::memory_order_relaxed)); }

bool parse_level(std::string_view s, Level& out) noexcept {
  if (s == "error") out = Level::kError;
  else if (s == "warn" || s == "warning") out = Level::kWarn;
  else if (s == "info") out = Level::kInfo;
  else if (s == "debug") out = Level::kDebug;
  else return false;
  return true;
}

void write(Level l, std::string_view module, std::string_view message) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  char when[32];
  std::snprintf(when, sizeof when, "%02d:%02d:%02d.%03ld", t.tm_hour, t.tm_min, t.tm_sec,
                ts.tv_nsec / 1000000);
  std::lock_guard lock(g_mutex);
  std::fprintf(stderr, "%s %-5s %.*s: %.*s\n", when, kNames[static_cast<int>(l)],
               static_cast<int>(module.size()), module.data(), static_cast<int>(message.size()),
               message.data());
  std::fflush(stderr);
}

bool RateLimited::allow(std::uint64_t& suppressed) noexcept {
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                 std::chrono::steady_clock::now().time_since_epoch())
                 .count();
  auto next = next_ns_.load(std::memory_order_relaxed);
  if (now >= next &&
      next_ns_.compare_exchange_strong(next, now + interval_ns_, std::memory_order_relaxed)) {
    suppressed = suppressed_.exchange(0, std::memory_order_relaxed);
    return true;
  }
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace ipsecgw::core::log
