// Incremental, in-place parser for memcached's text and meta protocol, client side.
//
// It reads every request exactly as memcached 1.6 would (memcached_syntax.h): the same line
// end, the same visible bytes, the same tokens, numbers and checks in the same order, so a
// request the proxy forwards is one request to the server too, and a request the proxy
// rejects gets memcached's own reply and consumes the same bytes. It never copies: the
// Request holds views into the input. It separates "need more bytes" from "bad input".
#pragma once

#include <cstddef>
#include <string_view>

#include "proxy/protocol/request.h"

namespace memzone::protocol {

struct ParserLimits {
  // Largest value the proxy buffers. A longer one is answered like memcached answers a value
  // over its item size (and the key is deleted, as memcached does for set/ms).
  size_t max_item_size = 1024 * 1024;
  // Longest get/gets line (memcached grows its buffer for these without limit; the proxy
  // stops here and closes, bytes).
  size_t max_retrieval_line = 8 * 1024 * 1024;
};

enum class ParseStatus : uint8_t {
  kOk,        // a request is in `Request`; `consumed` bytes belong to it
  kNeedMore,  // no complete request yet; keep the bytes and read more
  kInvalid,   // bad request: send `reply` (unless empty), drop `consumed` bytes, go on
  kSwallow,   // send `reply`, drop `consumed`, then discard `swallow` more bytes
  // A storage request whose value is over max_item_size: `Request` holds the command and its
  // key; answer `reply` (empty with noreply), delete the key where memcached would
  // (`deletes_key`), drop `consumed` and discard `swallow` more bytes.
  kTooLarge,
  kFatal,  // memcached would close: send `reply` (may be empty), then close the connection
};

struct ParseResult {
  ParseStatus status;
  size_t consumed = 0;
  std::string_view reply = {};  // the full reply including \r\n; empty when suppressed
  size_t swallow = 0;
  bool deletes_key = false;  // kTooLarge
};

class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits = {}) : limits_(limits) {}
  // `scanned` (in/out) is how many leading bytes of `input` are known to hold no newline,
  // so a long line arriving in pieces is not searched from its start each time.
  ParseResult parse(std::string_view input, Request& out, size_t* scanned = nullptr) const;
  const ParserLimits& limits() const { return limits_; }

 private:
  ParseResult parseStorage(std::string_view input, size_t consumed, Request& out) const;
  ParseResult parseRetrieval(size_t consumed, Request& out) const;
  ParseResult parseMetaSet(std::string_view input, size_t consumed, Request& out) const;
  ParseResult parseMetaLine(size_t consumed, Request& out) const;
  ParseResult parseOther(size_t consumed, Request& out) const;
  ParseResult withData(std::string_view input, size_t consumed, size_t bytes,
                       std::string_view bad_chunk_reply, Request& out) const;

  ParserLimits limits_;
};

}  // namespace memzone::protocol
