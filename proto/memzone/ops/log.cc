#include "memzone/ops/log.h"

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>

namespace memzone::ops {
namespace {

struct KeyState {
  std::chrono::steady_clock::time_point last{};
  unsigned long suppressed = 0;
};

constexpr std::chrono::seconds kInterval(1);
const char* program = "memzone";

}  // namespace

void setLogProgram(const char* name) { program = name; }

void logEvent(LogLevel level, std::string_view key, const char* format, ...) {
  static std::mutex mu;
  static std::map<std::string, KeyState, std::less<>> keys;
  auto now = std::chrono::steady_clock::now();
  unsigned long suppressed = 0;
  {
    std::lock_guard lock(mu);
    auto it = keys.find(key);
    if (it == keys.end()) it = keys.emplace(std::string(key), KeyState{}).first;
    if (it->second.last.time_since_epoch().count() != 0 && now - it->second.last < kInterval) {
      ++it->second.suppressed;
      return;
    }
    it->second.last = now;
    suppressed = it->second.suppressed;
    it->second.suppressed = 0;
    if (keys.size() > 10000) keys.clear();  // keys are addresses and names: bounded anyway
  }
  char message[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  const char* names[] = {"info", "warn", "error"};
  if (suppressed > 0) {
    fprintf(stderr, "%s: %s %s (%lu similar suppressed)\n", program, names[static_cast<int>(level)],
            message, suppressed);
  } else {
    fprintf(stderr, "%s: %s %s\n", program, names[static_cast<int>(level)], message);
  }
}

}  // namespace memzone::ops
