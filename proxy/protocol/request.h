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
  std::string_view line;  // the command line without its terminator
  std::vector<std::string_view> tokens;  // space-separated tokens of `line`
  size_t first_key = 1;                  // index in `tokens` of the first key (2 for gat/gats)
  size_t key_count = 0;    // number of keys (more than one only for retrieval commands)
  std::string_view data;   // value bytes of a storage command or ms, without the trailing \r\n
  bool noreply = false;    // text protocol `noreply`
  bool quiet = false;      // meta protocol `q` flag
  size_t quiet_token = 0;  // index of the `q` token when quiet

  std::string_view key(size_t i = 0) const { return tokens[first_key + i]; }
};

}  // namespace memzone::protocol
