// What a backend reply said, for routing decisions (failover, replication) and counters.
#pragma once

#include <cstdint>

namespace memzone::protocol {

enum class ReplyCode : uint8_t {
  kHit,          // meta VA (a value came back)
  kMiss,         // meta EN
  kStored,       // (unused by meta replies; kept for the counters' vocabulary)
  kNotStored,    // NS
  kExists,       // EX
  kNotFound,     // NF
  kDeleted,      // (unused by meta replies)
  kTouched,      // (unused by meta replies)
  kNumber,       // (unused by meta replies)
  kOk,           // HD; OK (flush_all)
  kVersion,      // VERSION x
  kMetaDebug,    // ME ...
  kError,        // ERROR
  kClientError,  // CLIENT_ERROR ...
  kServerError,  // SERVER_ERROR ...
};

enum class ReplyStatus : uint8_t { kOk, kNeedMore, kInvalid };

// True for codes that mean the server did not do the job (not a protocol-level "no").
inline bool isErrorCode(ReplyCode c) {
  return c == ReplyCode::kError || c == ReplyCode::kClientError || c == ReplyCode::kServerError;
}

}  // namespace memzone::protocol
