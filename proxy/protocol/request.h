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
  // The two bytes after the value as received: anything but \r\n is a bad data chunk, which
  // the parser answers (memcached stores nothing either).
  std::string_view data_terminator;
  size_t length_token = 0;  // storage/ms: index of the value-length token
  bool noreply = false;     // text protocol `noreply` (the proxy strips it and drops the reply)
  // Meta protocol `q`: sent on with an `mn` behind it; memcached may then send no reply, which
  // the backend connection learns from the MN (backend_connection.h).
  bool quiet = false;

  std::string_view key(size_t i = 0) const { return tokens[first_key + i]; }
};

}  // namespace memzone::protocol
