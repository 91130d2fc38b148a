// Incremental, in-place parser for memcached's text and meta protocol, client side.
// It never copies: the Request holds views into the input. It separates "need more bytes"
// from "bad input"; bad input comes with memcached's own error reply.
#pragma once

#include <cstddef>
#include <string_view>

#include "proxy/protocol/request.h"

namespace memzone::protocol {

struct ParserLimits {
  size_t max_item_size = 1024 * 1024;  // largest value accepted, bytes
  size_t max_line = 2048;              // longest command line, bytes
  size_t max_retrieval_line = 65536;   // longest get/gets/gat/gats line (many keys), bytes
};

enum class ParseStatus : uint8_t {
  kOk,        // a request is in `Request`; `consumed` bytes belong to it
  kNeedMore,  // no complete request yet; keep the bytes and read more
  kInvalid,   // bad request: send `reply` (unless empty), drop `consumed` bytes, go on
  kSwallow,   // value too large: send `reply`, drop `consumed`, then discard `swallow` more bytes
  kFatal,     // cannot resynchronise (line too long): send `reply`, then close the connection
};

struct ParseResult {
  ParseStatus status;
  size_t consumed = 0;
  std::string_view reply = {};  // the full error reply including \r\n; empty when suppressed
  size_t swallow = 0;
};

class RequestParser {
 public:
  explicit RequestParser(ParserLimits limits = {}) : limits_(limits) {}
  ParseResult parse(std::string_view input, Request& out) const;
  const ParserLimits& limits() const { return limits_; }

 private:
  ParseResult parseLine(std::string_view input, size_t line_end, Request& out) const;
  ParseResult parseStorage(std::string_view input, size_t line_end, Request& out) const;
  ParseResult parseRetrieval(size_t consumed, Request& out) const;
  ParseResult parseMeta(std::string_view input, size_t line_end, Request& out) const;
  ParseResult parseSimple(size_t consumed, Request& out) const;
  ParseResult withData(std::string_view input, size_t line_end, size_t bytes, bool suppress,
                       Request& out) const;

  ParserLimits limits_;
};

}  // namespace memzone::protocol
