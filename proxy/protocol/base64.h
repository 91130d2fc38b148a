// Base64 as memcached 1.6 reads and writes meta `b` keys (base64.c): decoding skips bytes
// outside the alphabet and stops at padding. Pure.
#pragma once

#include <string>
#include <string_view>

namespace memzone::protocol {

// The bytes memcached stores for the `b` key `text`; false where memcached fails to decode.
bool base64Decode(std::string_view text, std::string& out);
// Appends the canonical (padded) encoding of `bytes`.
void base64Encode(std::string_view bytes, std::string& out);

}  // namespace memzone::protocol
