// How memcached 1.6 itself reads a text-protocol command line: where the line ends, which
// bytes of it the server sees, how it splits tokens and how it reads numbers. The proxy must
// read every request exactly as the server behind it will (issue 11: a request that is one
// command to the proxy but two to memcached shifts every later reply on a shared connection),
// so these follow memcached's proto_text.c and util.c rule for rule, not the protocol spec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace memzone::protocol::mc {

// memcached: MAX_TOKENS is 24 including the terminal token, so a line yields at most 23
// tokens at once; get-family commands re-tokenize the rest, other commands see a 24th
// "token" and reject the line.
inline constexpr size_t kMaxTokens = 23;
// memcached closes a connection that sent more than this without a newline, unless the
// buffered bytes start with "get " or "gets " (after at most 100 spaces).
inline constexpr size_t kMaxLineWithoutNewline = 2048;
// Meta commands: more than this many tokens (counting the terminal one) is an error.
inline constexpr size_t kMetaMaxTokens = 20;
// Meta opaque tokens (`O...`) longer than this are an error.
inline constexpr size_t kMetaMaxOpaque = 32;

// The command line as memcached sees it, given the bytes before '\n': one trailing '\r' is
// dropped when the line has more than one byte, and everything from the first NUL on is
// invisible (memcached tokenizes a C string).
std::string_view visibleLine(std::string_view before_newline);

// memcached's tokenize_command: splits on ' ' only (tabs, '\r' and every other byte belong
// to tokens), empty tokens ignored. Returns every token; `capped` tells whether memcached
// would have seen more than kMaxTokens.
void tokenize(std::string_view line, std::vector<std::string_view>& tokens);

// True when memcached would keep waiting for the rest of an unterminated line it already
// holds more than kMaxLineWithoutNewline bytes of (a long multi-get), false when it closes.
bool mayGrowWithoutNewline(std::string_view buffered);

// util.c's safe_strto* on one token: leading white space (isspace in the C locale) and a
// sign are accepted, at least one digit, then the token must end or continue with white
// space; overflow of the C type (long / unsigned long, 64 bits) fails. Each quirk is kept:
// strtol32 truncates a 64-bit value to 32 bits like the C assignment does, the unsigned ones
// accept a negated value unless it is negative as a signed number and has a '-'.
bool strtol32(std::string_view token, int32_t& out);
bool strtoul32(std::string_view token, uint32_t& out);
bool strtoull64(std::string_view token, uint64_t& out);

// C isspace in the "C" locale.
inline bool isSpace(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

}  // namespace memzone::protocol::mc
