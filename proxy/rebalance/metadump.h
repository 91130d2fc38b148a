// Lines of memcached's `lru_crawler metadump` (1.4.31+): one item per line,
// "key=<url-encoded key> exp=<unix|-1> la=<unix> cas=<n> fetch=<yes|no> cls=<n> size=<n>\n",
// then "END\r\n". The key moves (key_mover.h) read a server's keys from it.
//
// memcached URL-encodes every key from the bytes it stores, a key written with meta's `b`
// flag too: the decoded key is what places and routes it, as the proxy places a `b` key by
// its decoded bytes (backend_request.h, placementKey). The crawl names it on its own lines
// with protocol::wireKeyOf (text, or base64 with `b`).
//
// A server's bytes are untrusted input: a line that does not parse is an error, never a
// guess, and a key no meta line can name (empty, over 250 bytes, or binary and over 186:
// wire_key.h) is skipped rather than sent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace memzone::rebalance {

enum class DumpLine : uint8_t {
  kItem,     // `item` is filled in
  kEnd,      // the dump is complete
  kSkipped,  // an item whose key no meta line can name (protocol::nameableOnMetaLine)
  kError,    // not a metadump line (the server refused the dump, or garbage)
};

struct DumpedItem {
  std::string key;  // decoded: the bytes memcached stores, 1..250 of them
  uint64_t cas = 0;
  uint64_t size = 0;  // memcached's item size (key, value and header), to bound a batch
};

// `line` without its "\n" (a trailing '\r' is ignored).
DumpLine parseDumpLine(std::string_view line, DumpedItem& item);

}  // namespace memzone::rebalance
