// libFuzzer target: what a backend sends is untrusted too. The reply parser, the VALUE block
// parser and the reply classifier must never crash, read out of bounds or claim more bytes
// than they were given, for any bytes and any expected reply shape; nor may the key mover's
// metadump line parser, for any line.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/protocol/meta_value.h"
#include "proxy/protocol/reply_parser.h"
#include "proxy/protocol/reply_result.h"
#include "proxy/rebalance/metadump.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memzone::protocol;
  if (size == 0) return 0;
  memzone::rebalance::DumpedItem item;
  if (memzone::rebalance::parseDumpLine(std::string_view(reinterpret_cast<const char*>(data), size),
                                        item) == memzone::rebalance::DumpLine::kItem &&
      (item.key.empty() || item.key.size() > 250)) {
    __builtin_trap();
  }
  // The first byte picks the shape the proxy expects, the rest is the backend's stream.
  ReplyShape shape = static_cast<ReplyShape>(data[0] % 3);
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  while (!input.empty()) {
    ReplyResult r = parseReply(input, shape);
    if (r.status != ReplyStatus::kOk) break;
    if (r.consumed == 0 || r.consumed > input.size()) __builtin_trap();
    std::string_view reply = input.substr(0, r.consumed);
    (void)classifyReply(Command::kGet, reply);
    (void)classifyReply(Command::kMetaSet, reply);
    MetaValueHeader head;
    if (parseMetaValueHeader(reply.substr(0, reply.find("\r\n")), head) && head.ttl.empty()) {
      __builtin_trap();
    }
    ValueBlock block;
    if (parseValueBlock(reply, block) && block.size > reply.size()) __builtin_trap();
    input.remove_prefix(r.consumed);
  }
  return 0;
}
