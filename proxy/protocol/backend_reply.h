// Backend replies, each verified against the request it answers (issue 22).
//
// Every request the proxy sends to memcached is one the proxy encoded itself
// (backend_request.h): a meta command whose last flag is `O<opaque>`, 8 hex digits the
// backend connection chose (random per connection, then counted; never shown to a client).
// A reply is taken as the answer to the request at the head of the connection's queue only
// when it has a shape that request allows and, for a meta reply, carries exactly that opaque.
//
// Why nothing a client sends can decide which request a reply belongs to:
//  - the proxy never asks memcached to echo a key (no `k` flag; the proxy writes keys into a
//    client's reply itself) and never forwards `q` (it applies quiet mode itself), so every
//    request gets exactly one reply and every byte of every reply line is memcached's own:
//    codes, numbers, our opaque, fixed error texts;
//  - a value is read by the length in its VA line, and must end in \r\n;
//  - the one command whose reply names its key, `me`, is matched against the key the proxy
//    asked for (raw or base64, as memcached prints it), never scanned for a line end;
//  - replies that memcached sends without an opaque (error lines, `me`, `version`, `OK` of
//    flush_all) hold no client byte either, and the opaques of the requests around them prove
//    their position: one reply too many or too few shifts an opaque and is a desync.
// A reply that fails any check is a desync: the connection is closed and its requests fail
// (the server is not marked down for it: backend_server.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/protocol/reply_code.h"

namespace memzone::protocol {

// The replies a backend request allows.
enum class ReplyKind : uint8_t {
  kMeta,       // VA/HD/EN/NF/NS/EX carrying the request's opaque, or an error line
  kMetaDebug,  // me: "ME <key> exp=...", "EN", or an error line
  kVersion,    // version (health probes): "VERSION ...", or an error line
  kOk,         // flush_all: "OK", or an error line
  kRefusal,    // a request memcached must refuse (an opaque too long): an error line only
};

// The `mn` behind a quiet request.
inline constexpr std::string_view kNoopReply = "MN\r\n";

// Bytes of a reply line, at most (memcached's own are far shorter; a `me` line holds a key
// of up to 250 bytes, base64-encoded).
inline constexpr size_t kMaxReplyLine = 1024;

struct ExpectedReply {
  ReplyKind kind = ReplyKind::kMeta;
  uint32_t opaque = 0;         // kMeta
  std::string_view debug_key;  // kMetaDebug: the key as memcached stores it (decoded bytes)
};

struct BackendReply {
  ReplyCode code = ReplyCode::kError;
  std::string_view head;     // meta: "VA", "HD", "EN", "NF", "NS", "EX", "ME"
  std::string_view flags;    // meta: return flags before the opaque, in request order
  std::string_view trailer;  // meta: flags memcached adds after them (W, X, Z)
  std::string_view value;    // VA: the value, without its \r\n
  // Error lines and VERSION: the whole line; ME: what follows the key (" exp=... size=...").
  // Without \r\n.
  std::string_view line;
  bool has_value = false;
  // A quiet request (meta q) that memcached left unanswered: the `mn` behind it came first.
  // code is then kMiss for mg, kOk for the others.
  bool silent = false;
};

// Parses the reply at the start of `input` for a request that expects `expected`. On kOk,
// `consumed` is its length and `out` views into `input`. Never reads past `input`.
ReplyStatus parseBackendReply(std::string_view input, const ExpectedReply& expected,
                              BackendReply& out, size_t& consumed);

// One return flag's value in `flags` ("f0 t-1 c5" and 't' give "-1"); false when absent.
bool findReturnFlag(std::string_view flags, char flag, std::string_view& value);

}  // namespace memzone::protocol
