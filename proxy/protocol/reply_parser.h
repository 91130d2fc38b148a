// Incremental parser for one memcached reply, backend side. The caller says what shape of
// reply the request it sent expects; the parser says how many bytes that reply spans and
// what kind of answer it was.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace memzone::protocol {

enum class ReplyShape : uint8_t {
  kRetrieval,  // VALUE blocks, then END (get, gets, gat, gats)
  kLine,       // exactly one line (storage, delete, incr/decr, touch, flush_all, version, ...)
  kMeta,       // one line; "VA <n> ..." is followed by n bytes and \r\n
};

// What the reply said, for routing decisions (failover, replication) and counters.
enum class ReplyCode : uint8_t {
  kHit,          // VALUE... END with at least one value, mg VA/HD
  kMiss,         // END alone, mg EN
  kStored,       // STORED, ms HD
  kNotStored,    // NOT_STORED, ms NS
  kExists,       // EXISTS, EX
  kNotFound,     // NOT_FOUND, NF
  kDeleted,      // DELETED, md HD
  kTouched,      // TOUCHED
  kNumber,       // incr/decr result
  kOk,           // OK, HD for other meta commands
  kVersion,      // VERSION x
  kMetaDebug,    // ME ...
  kError,        // ERROR
  kClientError,  // CLIENT_ERROR ...
  kServerError,  // SERVER_ERROR ...
};

enum class ReplyStatus : uint8_t { kOk, kNeedMore, kInvalid };

struct ReplyResult {
  ReplyStatus status;
  size_t consumed = 0;
  ReplyCode code = ReplyCode::kError;
};

// Parses the reply at the start of `input`. Never reads past `input`.
ReplyResult parseReply(std::string_view input, ReplyShape shape);

// One "VALUE <key> <flags> <bytes> [<cas>]\r\n<data>\r\n" block at the start of `input`.
struct ValueBlock {
  std::string_view key;
  std::string_view flags;
  std::string_view data;
  size_t size = 0;  // bytes of the whole block
};
// Returns false when `input` does not start with a complete, well-formed VALUE block.
bool parseValueBlock(std::string_view input, ValueBlock& out);

// True for codes that mean the server did not do its job (not a protocol-level "no").
inline bool isErrorCode(ReplyCode c) {
  return c == ReplyCode::kError || c == ReplyCode::kClientError || c == ReplyCode::kServerError;
}

}  // namespace memzone::protocol
