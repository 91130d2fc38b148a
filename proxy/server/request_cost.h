// What a client request will hold once dispatched, weighed before it is dispatched, so a
// request that would not fit the buffer budget is refused before anything is built for it
// (issue 22: four 4-million-key gets once took 631 MiB past a 64 MiB budget).
//
// A dispatched multi-get holds per key a reference in ClientRequest (a 40-byte KeyRef in a
// vector that may have doubled), its share of the per-server sub-requests and their backend
// queue entries, and the key's bytes twice: copied into the request and into the backend
// request lines. The copies are ByteBuffers, charged by their owners as they grow; the
// per-key bookkeeping is not, so the connection charges an estimate of it (perKeyCharge)
// while the request is in its FIFO. Requests of a few keys are not weighed at all: what
// they hold is their pooled, charged buffers plus under a KiB (no cost on the request path).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/protocol/request.h"

namespace memzone::server {

// Per-key bookkeeping of a dispatched request beyond its keys' bytes.
inline constexpr uint64_t kBytesPerKey = 64;
// Requests of at most this many keys are not weighed.
inline constexpr size_t kUnweighedKeys = 16;

// Charged to the owning connection while the request is in flight (0: not weighed).
inline uint64_t perKeyCharge(size_t keys) {
  return keys > kUnweighedKeys ? uint64_t{keys} * kBytesPerKey : 0;
}

// What must fit before a parsed request is dispatched (0: not weighed): the per-key
// bookkeeping, the parser's tokens, and the keys' two copies (the line's bytes bound them).
inline uint64_t dispatchCost(const protocol::Request& request) {
  if (request.key_count <= kUnweighedKeys) return 0;
  return perKeyCharge(request.key_count) +
         uint64_t{request.tokens.capacity()} * sizeof(std::string_view) +
         2 * uint64_t{request.line.size()};
}

// The same for a get/gets line not parsed yet, weighed as it arrives: a line long enough to
// arrive in pieces may carry millions of keys (tokenizing it alone costs 16 bytes per key).
// Each byte is looked at once however many pieces the line comes in.
class LineMeter {
 public:
  // `line`: the line so far, which extends what the last call saw.
  uint64_t cost(std::string_view line);
  void reset() { *this = LineMeter(); }

 private:
  size_t counted_ = 0;  // bytes of the line already looked at
  uint64_t tokens_ = 0;
  bool in_token_ = false;
};

}  // namespace memzone::server
