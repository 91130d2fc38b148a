#include "proxy/protocol/request_encoder.h"

#include <cstdint>
#include <cstdio>

namespace memzone::protocol {
namespace {

void appendTokensExcept(const Request& request, size_t skip, ByteBuffer& out,
                        size_t skip_too = SIZE_MAX) {
  bool first = true;
  for (size_t i = 0; i < request.tokens.size(); ++i) {
    if (i == skip || i == skip_too) continue;
    if (!first) out.append(' ');
    out.append(request.tokens[i]);
    first = false;
  }
  out.append("\r\n");
}

}  // namespace

ReplyShape replyShapeFor(Command command) {
  if (isRetrieval(command)) return ReplyShape::kRetrieval;
  if (isMeta(command)) return ReplyShape::kMeta;
  return ReplyShape::kLine;
}

void encodeForward(const Request& request, ByteBuffer& out) {
  if (!request.noreply && !request.quiet) {
    out.append(request.raw);
    return;
  }
  size_t skip = request.noreply ? request.tokens.size() - 1 : request.quiet_token;
  appendTokensExcept(request, skip, out);
  if (isStorage(request.command) || request.command == Command::kMetaSet) {
    out.append(request.data);
    out.append("\r\n");
  }
}

void encodeForwardWithout(const Request& request, size_t token, ByteBuffer& out) {
  size_t skip = request.noreply ? request.tokens.size() - 1
                : request.quiet ? request.quiet_token
                                : SIZE_MAX;
  appendTokensExcept(request, skip, out, token);
  if (isStorage(request.command) || request.command == Command::kMetaSet) {
    out.append(request.data);
    out.append("\r\n");
  }
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

bool quietSuppresses(Command command, ReplyCode code) {
  switch (command) {
    case Command::kMetaGet:
      return code == ReplyCode::kMiss;
    case Command::kMetaSet:
    case Command::kMetaDelete:
      return code == ReplyCode::kOk;
    case Command::kMetaArithmetic:
      return code == ReplyCode::kOk || code == ReplyCode::kHit;
    default:
      return false;
  }
}

}  // namespace memzone::protocol
