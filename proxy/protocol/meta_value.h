// A meta `VA` reply's header, and the add that copies such a value to another server with
// its remaining TTL and flags (read repair, key moves). Pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/protocol/wire_key.h"

namespace memzone::protocol {

// "VA <n> [t<ttl>] [f<flags>] [c<cas>] ...": views into the line given.
struct MetaValueHeader {
  size_t length = 0;
  std::string_view ttl = "-1";  // seconds left; "-1": no expiry
  std::string_view flags = "0";
  uint64_t cas = 0;
};

// `line` without its "\r\n"; false when it is not a well-formed VA line.
bool parseMetaValueHeader(std::string_view line, MetaValueHeader& out);

// Whether a value with `ttl` left is worth copying: "0" expires this second.
inline bool worthCopying(std::string_view ttl) { return ttl != "0"; }

// Appends "ms <key> <length> [b ]T<ttl> F<flags> ME\r\n": add semantics, so a value written at
// the target meanwhile is never overwritten. `wire_key` as backend_request.h names keys (text,
// or "<base64> b"): the `b` goes among the flags, after the length. The caller appends the
// data and "\r\n".
template <typename Out>
void appendMetaAddHead(std::string_view wire_key, size_t length, std::string_view ttl,
                       std::string_view flags, Out& out) {
  WireKeyParts key = splitWireKey(wire_key);
  out.append("ms ");
  out.append(key.token);
  out.append(" ");
  out.append(std::to_string(length));
  out.append(key.base64 ? " b T" : " T");
  out.append(ttl == "-1" ? std::string_view("0") : ttl);  // T0: no expiry
  out.append(" F");
  out.append(flags);
  out.append(" ME\r\n");
}

}  // namespace memzone::protocol
