// Builds the bytes the proxy sends to a backend for a client request. A request is forwarded
// as the client's original bytes when memcached reads those exactly as the proxy did;
// otherwise (and to drop text `noreply`, which the proxy applies itself so that every text
// request gets exactly one reply) it is rebuilt from the parsed tokens: single spaces, \r\n,
// the value length in plain digits. Meta `q` is kept: the backend connection fences quiet
// requests, so memcached itself decides what a quiet request answers.
#pragma once

#include <span>
#include <string_view>

#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/reply_parser.h"
#include "proxy/protocol/request.h"

namespace memzone::protocol {

ReplyShape replyShapeFor(Command command);
// What a quiet meta request's silence means: a miss for mg, success for the others.
inline ReplyCode silentCode(Command command) {
  return command == Command::kMetaGet ? ReplyCode::kMiss : ReplyCode::kOk;
}

// The request for one backend, as the client sent it minus noreply.
void encodeForward(const Request& request, ByteBuffer& out);

// Like encodeForward, also dropping the token at `token` (a meta cas `C` flag).
void encodeForwardWithout(const Request& request, size_t token, ByteBuffer& out);
// Index of a meta command's compare-cas token (`C<cas>`), or 0 when it has none.
size_t metaCasToken(const Request& request);
// "<get|gets|gat|gats> [exptime] k1 k2 ...\r\n" for a subset of a multi-key request's keys.
void encodeRetrieval(const Request& request, std::span<const std::string_view> keys,
                     ByteBuffer& out);

// Plain commands the proxy originates itself.
void encodeSet(std::string_view key, std::string_view flags, std::string_view exptime,
               std::string_view data, ByteBuffer& out);
void encodeDelete(std::string_view key, ByteBuffer& out);

}  // namespace memzone::protocol
