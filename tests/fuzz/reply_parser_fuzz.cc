// libFuzzer target: what a backend sends is untrusted too, and a client chooses the keys that
// come back in replies. The backend reply parser must never crash, read out of bounds or
// claim more bytes than it was given, for any bytes, any expected reply and any key; a reply
// it accepts must carry the expected opaque; the client reply written from it must never
// hold a line end the proxy did not put there; nor may the key mover's metadump line parser
// misbehave, for any line.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/backend_reply.h"
#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/client_reply.h"
#include "proxy/protocol/reply_result.h"
#include "proxy/protocol/wire_key.h"
#include "proxy/rebalance/metadump.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memzone::protocol;
  if (size < 3) return 0;
  memzone::rebalance::DumpedItem item;
  if (memzone::rebalance::parseDumpLine(std::string_view(reinterpret_cast<const char*>(data), size),
                                        item) == memzone::rebalance::DumpLine::kItem &&
      (item.key.empty() || item.key.size() > 250 ||
       !memzone::protocol::nameableOnMetaLine(item.key))) {
    __builtin_trap();
  }
  // Byte 0 picks the expected reply and the client's command; byte 1 the length of a key the
  // client chose (taken from the input, so it may hold CR, LF, NUL, spaces or a whole fake
  // reply); the rest is the backend's stream.
  ReplyKind kind = static_cast<ReplyKind>(data[0] % 5);
  const Command commands[] = {Command::kGet,       Command::kGets, Command::kMetaGet,
                              Command::kSet,       Command::kIncr, Command::kMetaArithmetic,
                              Command::kMetaDebug, Command::kTouch};
  const Command command = commands[(data[0] / 5) % 8];
  // The proxy expects what it asked for: an `me` is answered by ME/EN or, refused, an error.
  if (command == Command::kMetaDebug && kind != ReplyKind::kRefusal) kind = ReplyKind::kMetaDebug;
  size_t key_len = std::min<size_t>(data[1], size - 2);
  std::string_view key(reinterpret_cast<const char*>(data + 2), key_len);
  std::string_view input(reinterpret_cast<const char*>(data + 2 + key_len), size - 2 - key_len);
  const uint32_t opaque = 0x5eed5eedU;
  const std::string token(makeOpaqueToken(opaque).view());
  while (!input.empty()) {
    BackendReply reply;
    size_t consumed = 0;
    ReplyStatus s = parseBackendReply(input, {kind, opaque, key}, reply, consumed);
    if (s != ReplyStatus::kOk) break;
    if (consumed == 0 || consumed > input.size()) __builtin_trap();
    std::string_view whole = input.substr(0, consumed);
    if (kind == ReplyKind::kMeta && !isErrorCode(reply.code) &&
        whole.substr(0, whole.find("\r\n")).find(token) == std::string_view::npos) {
      __builtin_trap();  // accepted without its opaque
    }
    // The client's reply: with a text-safe key, every line end in it is one the proxy wrote,
    // so a client reading it sees exactly the frames the proxy meant.
    memzone::ByteBuffer out;
    ClientForm form{command, "k", command == Command::kMetaGet ? "v k O1 f t" : ""};
    appendClientReply(form, reply, out);
    std::string_view text = out.view();
    if (isRetrieval(command) && !isErrorCode(reply.code)) {
      if (!text.ends_with("END\r\n")) __builtin_trap();
      text.remove_suffix(5);
    }
    if (reply.has_value && !text.empty()) {
      // The value is framed by its length: take it (and its \r\n) off the end.
      if (text.size() < reply.value.size() + 2 || !text.ends_with("\r\n")) __builtin_trap();
      text.remove_suffix(reply.value.size() + 2);
    }
    // What is left is one line, or none.
    if (!text.empty() && (!text.ends_with("\r\n") ||
                          text.substr(0, text.size() - 2).find('\n') != std::string_view::npos)) {
      __builtin_trap();
    }
    (void)classifyReply(command, out.view());
    input.remove_prefix(consumed);
  }
  return 0;
}
