#include "proxy/protocol/request_encoder.h"

#include <cstdint>
#include <cstdio>

namespace memzone::protocol {
namespace {

// Tokens joined by single spaces, without `skip` and `skip_too`; a storage request's value
// length as plain digits; then the value block as received.
void rebuild(const Request& request, size_t skip, size_t skip_too, ByteBuffer& out) {
  bool first = true;
  for (size_t i = 0; i < request.tokens.size(); ++i) {
    if (i == skip || i == skip_too) continue;
    if (!first) out.append(' ');
    first = false;
    if (i == request.length_token && i != 0) {
      char digits[16];
      int n = snprintf(digits, sizeof(digits), "%zu", request.data.size());
      out.append(std::string_view(digits, static_cast<size_t>(n)));
    } else {
      out.append(request.tokens[i]);
    }
  }
  out.append("\r\n");
  if (request.length_token != 0) {
    out.append(request.data);
    out.append(request.data_terminator);
  }
}

size_t noreplyToken(const Request& request) {
  return request.noreply ? request.tokens.size() - 1 : SIZE_MAX;
}

}  // namespace

ReplyShape replyShapeFor(Command command) {
  if (isRetrieval(command)) return ReplyShape::kRetrieval;
  if (isMeta(command)) return ReplyShape::kMeta;
  return ReplyShape::kLine;
}

void encodeForward(const Request& request, ByteBuffer& out) {
  if (!request.noreply && !request.rebuild) {
    out.append(request.raw);
    return;
  }
  rebuild(request, noreplyToken(request), SIZE_MAX, out);
}

void encodeForwardWithout(const Request& request, size_t token, ByteBuffer& out) {
  rebuild(request, noreplyToken(request), token, out);
}

size_t metaCasToken(const Request& request) {
  if (request.command != Command::kMetaSet && request.command != Command::kMetaDelete &&
      request.command != Command::kMetaArithmetic) {
    return 0;
  }
  // ms <key> <datalen> <flags>*; md/ma <key> <flags>*
  size_t first_flag = request.command == Command::kMetaSet ? 3 : 2;
  for (size_t i = first_flag; i < request.tokens.size(); ++i) {
    if (request.tokens[i].size() > 1 && request.tokens[i][0] == 'C') return i;
  }
  return 0;
}

void encodeRetrieval(const Request& request, std::span<const std::string_view> keys,
                     ByteBuffer& out) {
  out.append(request.tokens[0]);
  if (request.first_key == 2) {
    out.append(' ');
    out.append(request.tokens[1]);
  }
  for (std::string_view key : keys) {
    out.append(' ');
    out.append(key);
  }
  out.append("\r\n");
}

void encodeSet(std::string_view key, std::string_view flags, std::string_view exptime,
               std::string_view data, ByteBuffer& out) {
  char len[24];
  int n = snprintf(len, sizeof(len), "%zu", data.size());
  out.append("set ");
  out.append(key);
  out.append(' ');
  out.append(flags);
  out.append(' ');
  out.append(exptime);
  out.append(' ');
  out.append(std::string_view(len, static_cast<size_t>(n)));
  out.append("\r\n");
  out.append(data);
  out.append("\r\n");
}

void encodeDelete(std::string_view key, ByteBuffer& out) {
  out.append("delete ");
  out.append(key);
  out.append("\r\n");
}

}  // namespace memzone::protocol
