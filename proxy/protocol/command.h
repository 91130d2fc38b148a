// The memcached commands the proxy understands (text and meta protocol).
#pragma once

#include <cstdint>
#include <string_view>

namespace memzone::protocol {

enum class Command : uint8_t {
  kGet,
  kGets,
  kGat,
  kGats,
  kSet,
  kAdd,
  kReplace,
  kAppend,
  kPrepend,
  kCas,
  kDelete,
  kIncr,
  kDecr,
  kTouch,
  kMetaGet,
  kMetaSet,
  kMetaDelete,
  kMetaArithmetic,
  kMetaNoop,
  kMetaDebug,
  kVersion,
  kVerbosity,
  kStats,
  kFlushAll,
  kQuit,
  kUnknown,  // a line the parser rejected: counted, never dispatched
};
inline constexpr int kCommandCount = static_cast<int>(Command::kUnknown) + 1;

std::string_view commandName(Command c);

inline bool isRetrieval(Command c) {
  return c == Command::kGet || c == Command::kGets || c == Command::kGat || c == Command::kGats;
}
inline bool isStorage(Command c) { return c >= Command::kSet && c <= Command::kCas; }
inline bool isMeta(Command c) { return c >= Command::kMetaGet && c <= Command::kMetaDebug; }
// Commands that change data on the server (replicated across zones).
inline bool isWrite(Command c) {
  return (c >= Command::kSet && c <= Command::kTouch) || c == Command::kMetaSet ||
         c == Command::kMetaDelete || c == Command::kMetaArithmetic;
}

}  // namespace memzone::protocol
