// What a reply the client received said, for the requests-by-result counters. Pure.
#pragma once

#include <cstdint>
#include <string_view>

#include "proxy/protocol/command.h"

namespace memzone::protocol {

enum class RequestResult : uint8_t {
  kHit,
  kMiss,
  kStored,
  kNotStored,
  kExists,
  kNotFound,
  kDeleted,
  kTouched,
  kOk,
  kClientError,  // ERROR, CLIENT_ERROR: the request was wrong
  kServerError,  // SERVER_ERROR: the proxy or a backend failed
  kNoReply,      // noreply / quiet: nothing was sent back
};
inline constexpr int kRequestResultCount = static_cast<int>(RequestResult::kNoReply) + 1;

std::string_view resultName(RequestResult result);
// Classifies by the reply's first token; `reply` is what the client gets (may be empty).
RequestResult classifyReply(Command command, std::string_view reply);

}  // namespace memzone::protocol
