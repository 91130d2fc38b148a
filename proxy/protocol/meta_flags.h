// Meta-protocol flags as memcached 1.6 reads them (_meta_flag_preparse): a flag is the first
// byte of a token, so "q" and "qx" are both the quiet flag, and every flag may appear once.
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace memzone::protocol::meta {

// True when a token from `first_flag` on is memcached's `q` flag: the server may then send
// no reply at all.
bool hasQuietFlag(const std::vector<std::string_view>& tokens, size_t first_flag);

// The error memcached answers an `ms` with before it would store anything (flags that do not
// parse, a duplicate or unknown flag, an opaque too long, a bad mode), with \r\n; empty when
// the flags are fine. The proxy needs it only where it answers for memcached: a value too
// large to forward.
std::string_view setFlagError(const std::vector<std::string_view>& tokens);

// memcached's base64_decode fails (returns 0) on this key.
bool base64DecodeFails(std::string_view key);

}  // namespace memzone::protocol::meta
