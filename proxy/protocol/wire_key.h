// Naming a key the proxy did not read from a client (the key mover reads keys from memcached's
// metadump, as the bytes memcached stores): the text protocol carries a key as it is only when
// none of its bytes ends or splits a command line; any other key goes base64-encoded with
// meta's `b` flag, which memcached decodes back to the same stored bytes. Pure.
#pragma once

#include <string>
#include <string_view>

namespace memzone::protocol {

// Whether `stored` (1..250 bytes) can be written on a command line as it is: no control byte,
// space or DEL (memcached splits tokens at spaces and ends a line at "\n"; the others are the
// proxy's caution, since some clients and tools mangle them). Bytes above 0x7f are fine.
bool sendableAsText(std::string_view stored);
// Whether some meta line can name `stored`: 1..250 bytes, and as text or as base64 no longer
// than memcached's 250-byte key token (so a binary key has at most 186 bytes: longer ones
// exist only through the binary protocol, and no text command can reach them).
bool nameableOnMetaLine(std::string_view stored);
// The wire key (backend_request.h) of `stored`: the text itself, or "<base64> b". Only for
// keys nameableOnMetaLine().
std::string wireKeyOf(std::string_view stored);
// A wire key's key token and whether it carries `b`: an ms line puts its flags after the
// data length, so the two are written apart there.
struct WireKeyParts {
  std::string_view token;
  bool base64 = false;
};
WireKeyParts splitWireKey(std::string_view wire_key);

}  // namespace memzone::protocol
