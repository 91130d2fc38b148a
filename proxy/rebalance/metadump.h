// Lines of memcached's `lru_crawler metadump` (1.4.31+): one item per line,
// "key=<url-encoded key> exp=<unix|-1> la=<unix> cas=<n> fetch=<yes|no> cls=<n> size=<n>\n",
// then "END\r\n". The key moves (key_mover.h) read a server's keys from it.
//
// A server's bytes are untrusted input: a line that does not parse is an error, never a
// guess, and a key the text protocol cannot carry (control bytes, spaces, over 250 bytes)
// is skipped rather than sent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace memzone::rebalance {

enum class DumpLine : uint8_t {
  kItem,     // `item` is filled in
  kEnd,      // the dump is complete
  kSkipped,  // an item whose key cannot be sent as a text-protocol key
  kError,    // not a metadump line (the server refused the dump, or garbage)
};

struct DumpedItem {
  std::string key;  // decoded
  uint64_t cas = 0;
  uint64_t size = 0;  // memcached's item size (key, value and header), to bound a batch
};

// `line` without its "\n" (a trailing '\r' is ignored).
DumpLine parseDumpLine(std::string_view line, DumpedItem& item);

}  // namespace memzone::rebalance
