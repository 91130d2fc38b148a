// The client's reply, written from a verified backend reply (backend_reply.h) in the protocol
// and form the client asked in: text replies for text commands (text_commands.h, the table
// backend_request.cc sends by), meta replies with the client's own opaque and key (in the
// encoding the client used) put back where memcached would print them. Pure.
#pragma once

#include <string_view>

#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/backend_reply.h"
#include "proxy/protocol/command.h"

namespace memzone::protocol {

// What of the client's request its reply needs (the request's own views die first).
struct ClientForm {
  Command command = Command::kGet;
  std::string_view key;         // as the client wrote it
  std::string_view meta_flags;  // meta: the client's flag tokens, single spaces between
};

// The reply to a one-key request, appended to `out`.
void appendClientReply(const ClientForm& form, const BackendReply& reply, ByteBuffer& out);
// One key's part of a get/gets/gat/gats reply: a VALUE block on a hit, nothing otherwise.
void appendValueBlock(std::string_view key, const BackendReply& reply, bool with_cas,
                      ByteBuffer& out, std::string_view tail = "\r\n");
}  // namespace memzone::protocol
