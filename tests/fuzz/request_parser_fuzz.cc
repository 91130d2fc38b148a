// libFuzzer target: the request parser must never crash, read out of bounds, loop, or
// consume more than it was given, whatever the bytes and however they are split; and the
// backend line the proxy encodes from what it accepted stays within memcached's line limit.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/request_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memzone::protocol;
  ParserLimits limits;
  limits.max_item_size = 4096;
  limits.max_retrieval_line = 1024;
  RequestParser parser(limits);
  Request request;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  size_t swallow = 0;
  while (!input.empty()) {
    if (swallow > 0) {
      size_t n = swallow < input.size() ? swallow : input.size();
      input.remove_prefix(n);
      swallow -= n;
      continue;
    }
    ParseResult r = parser.parse(input, request);
    if (r.status == ParseStatus::kNeedMore || r.status == ParseStatus::kFatal) break;
    if (r.consumed == 0 || r.consumed > input.size()) __builtin_trap();
    if (r.status == ParseStatus::kOk) {
      memzone::ByteBuffer out;
      encodeBackendRequest(request, "O01234567", out);
      // Never a line memcached would hang up on (a shared connection) nor one over its token
      // limit that the parser let through.
      std::string_view line = out.view().substr(0, out.view().find('\n') + 1);
      if (line.size() > 2048) __builtin_trap();
      for (size_t i = 0; i < request.key_count; ++i) {
        if (request.key(i).size() > kMaxKeyLength && !isMeta(request.command)) __builtin_trap();
      }
    }
    input.remove_prefix(r.consumed);
    swallow = r.swallow;
  }
  return 0;
}
