// A parsed client request. Every view points into the connection's read buffer and is valid
// only until the parser's `consumed` bytes are released.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

#include "proxy/protocol/command.h"

namespace memzone::protocol {

inline constexpr size_t kMaxKeyLength = 250;

struct Request {
  Command command = Command::kGet;
  std::string_view raw;   // the request exactly as received: line, terminator, data block
  std::string_view line;  // the command line as memcached sees it (see memcached_syntax.h)
  std::vector<std::string_view> tokens;  // space-separated tokens of `line`
  size_t first_key = 1;                  // index in `tokens` of the first key (2 for gat/gats)
  size_t key_count = 0;   // number of keys (more than one only for retrieval commands)
  std::string_view data;  // value bytes of a storage command or ms, without the trailing \r\n
  // The two bytes after the value as received (normally \r\n): forwarded as they are, since
  // memcached reads them whatever they are and answers "bad data chunk" itself.
  std::string_view data_terminator;
  size_t length_token = 0;  // storage/ms: index of the value-length token
  // The raw bytes are not what the proxy forwards (a NUL, a control byte, a bare \n, a length
  // memcached reads through a C quirk): the encoder rebuilds the request from `tokens`, so the
  // server reads exactly the tokens and length the proxy read.
  bool rebuild = false;
  bool noreply = false;  // text protocol `noreply` (the proxy strips it and drops the reply)
  // Meta protocol `q`: forwarded as is; memcached may then send no reply at all, which the
  // backend connection learns from a fence right behind the request.
  bool quiet = false;

  std::string_view key(size_t i = 0) const { return tokens[first_key + i]; }
};

}  // namespace memzone::protocol
