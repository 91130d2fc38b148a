// The requests the proxy sends to memcached: always meta commands it encodes itself from what
// it parsed and verified, each ending in the connection's opaque (backend_reply.h says why).
// Text commands are translated here by one table (text_commands.h), whose reply side
// client_reply.cc reads. Client meta commands keep their flags except `O` and
// `k`, which the proxy applies itself; a quiet one (`q`) is followed by `mn` (the backend
// connection expects its reply or the MN alone). Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/request.h"

namespace memzone::protocol {

// "O" and 8 hex digits: the opaque a backend request carries (32 bits: random per connection,
// then counted; it proves a reply's position, and no client ever sees it).
struct OpaqueToken {
  char bytes[9];
  std::string_view view() const { return {bytes, sizeof(bytes)}; }
};
OpaqueToken makeOpaqueToken(uint32_t opaque);

// A "wire key" names a key on a meta line: text, or base64 followed by " b" (the bytes
// memcached stores are then the decoded ones). A text key never holds a space, so the two
// forms cannot be confused.

// The client's request, for one backend. A multi-key retrieval is sent key by key
// (encodeKeyRead); everything else with this, except what the proxy answers itself (mn,
// version, verbosity, stats, quit), for which it writes nothing.
void encodeBackendRequest(const Request& request, std::string_view opaque, ByteBuffer& out);
// A cas (text cas, or a meta ms/md/ma with C) that succeeded in the local zone, copied to the
// other zones without its compare: a plain set (ms), delete, or arithmetic.
void encodeBackendCopyWithoutCas(const Request& request, std::string_view opaque, ByteBuffer& out);
// One key of a get/gets/gat/gats: "mg <key> v f [c] [T<exptime>] O..".
void encodeKeyRead(Command command, std::string_view exptime, std::string_view key,
                   std::string_view opaque, ByteBuffer& out);

// Requests the proxy originates.
void encodeDelete(std::string_view wire_key, std::string_view opaque, ByteBuffer& out);
// "mg <key> v t f c O..": a value with its TTL left, flags and cas, for a copy elsewhere.
void encodeFetchForCopy(std::string_view wire_key, std::string_view opaque, ByteBuffer& out);
// "mg <key> c O..": is the item still the one with that cas?
void encodeCasRead(std::string_view wire_key, std::string_view opaque, ByteBuffer& out);
// "md <key> C<cas> O..": deletes the item only if nobody wrote it since.
void encodeDeleteIfCas(std::string_view wire_key, std::string_view cas, std::string_view opaque,
                       ByteBuffer& out);
// "ms <key> <length> [b] T<ttl> F<flags> ME c O..\r\n" (add: a value written meanwhile wins;
// the stored item's cas comes back); the caller appends the value and "\r\n". `ttl` as
// memcached's `t` flag ("-1": no expiry).
void encodeAddCopyHead(std::string_view wire_key, size_t length, std::string_view ttl,
                       std::string_view flags, std::string_view opaque, ByteBuffer& out);

// A meta request memcached refuses before it does anything, for what the proxy would
// otherwise take out of it: an opaque over 32 bytes, or a duplicate O or k flag. It goes as
// the client wrote it, without the proxy's opaque, and only an error line may answer it
// (ReplyKind::kRefusal).
bool metaForwardedAsWritten(const Request& request);
// Tokens of the meta line the proxy sends for `request` (not counting memcached's terminal
// token): the client's, less its O and k, plus the proxy's O.
size_t backendMetaTokens(const Request& request);
// The bytes memcached stores as the request's key, which place it on the ring and route it:
// a meta `b` key decoded (into `scratch`), any other key as written.
std::string_view placementKey(const Request& request, std::string& scratch);
// Whether the client's meta request carries `flag` (a flag is a token's first byte).
bool hasMetaFlag(const Request& request, char flag);
// Index of the first flag token of a meta request (ms: after key and length).
inline size_t firstMetaFlag(Command command) { return command == Command::kMetaSet ? 3 : 2; }

}  // namespace memzone::protocol
