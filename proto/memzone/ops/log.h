// One line per event on stderr: "<program>: <level> <message>", for both binaries. Lines with the
// same key are rate-limited to one per second; the next line that gets through says how many were
// suppressed, so a flapping backend or an unreachable controller cannot flood the log.
// Any thread (a mutex; events are rare by construction: nothing here runs per request).
#pragma once

#include <string_view>

namespace memzone::ops {

enum class LogLevel { kInfo, kWarn, kError };

// The program name that starts every line (set once in main; default "memzone").
void setLogProgram(const char* name);

[[gnu::format(printf, 3, 4)]] void logEvent(LogLevel level, std::string_view key,
                                            const char* format, ...);

}  // namespace memzone::ops
