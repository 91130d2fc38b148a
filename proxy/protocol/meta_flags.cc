#include "proxy/protocol/meta_flags.h"

#include <array>
#include <cstdint>

#include "proxy/protocol/client_errors.h"
#include "proxy/protocol/memcached_syntax.h"

namespace memzone::protocol::meta {
namespace {

bool isBase64Symbol(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/' || c == '=';
}

}  // namespace

bool hasQuietFlag(const std::vector<std::string_view>& tokens, size_t first_flag) {
  for (size_t i = first_flag; i < tokens.size() && i < mc::kMaxTokens; ++i) {
    if (tokens[i][0] == 'q') return true;
  }
  return false;
}

bool base64DecodeFails(std::string_view key) {
  // base64.c: count the alphabet symbols (others are skipped); none, or not a multiple of
  // four, fails; so does a block of four with more than two '='.
  size_t count = 0;
  for (char c : key) count += isBase64Symbol(static_cast<unsigned char>(c));
  if (count == 0 || count % 4 != 0) return true;
  size_t in_block = 0;
  int pad = 0;
  for (char c : key) {
    if (!isBase64Symbol(static_cast<unsigned char>(c))) continue;
    if (c == '=') ++pad;
    if (++in_block == 4) {
      in_block = 0;
      if (pad > 2) return true;
      if (pad > 0) break;
    }
  }
  return false;
}

std::string_view setFlagError(const std::vector<std::string_view>& tokens) {
  // _meta_flag_preparse from the first flag (ms: after key and length), in memcached's
  // order: a duplicate or unknown flag stops at once; a bad value marks an error, keeps
  // going, and the last message set wins.
  const size_t end = std::min(tokens.size(), mc::kMaxTokens);
  std::string_view error = errors::kBadFormat;
  bool has_error = false;
  char mode = 0;
  std::array<bool, 127> seen{};
  for (size_t i = 3; i < end; ++i) {
    std::string_view token = tokens[i];
    auto flag = static_cast<unsigned char>(token[0]);
    if (flag >= 127 || seen[flag]) return errors::kMetaDuplicateFlag;
    seen[flag] = true;
    std::string_view value = token.substr(1);
    int32_t i32;
    uint32_t u32;
    uint64_t u64;
    switch (flag) {
      case 'b':
        if (base64DecodeFails(tokens[1])) {
          error = errors::kMetaBadKeyEncoding;
          has_error = true;
        }
        break;
      case 'N':
      case 'T':
      case 'R':
        if (!mc::strtol32(value, i32)) {
          error = errors::kMetaBadToken;
          has_error = true;
        }
        break;
      case 'F':
        if (!mc::strtoul32(value, u32)) has_error = true;  // memcached keeps the message
        break;
      case 'C':
        if (!mc::strtoull64(value, u64)) {
          error = errors::kMetaBadToken;
          has_error = true;
        }
        break;
      case 'M':
        if (token.size() != 2) {
          error = errors::kMetaBadModeLength;
          has_error = true;
        } else {
          mode = token[1];
        }
        break;
      case 'J':
        if (!mc::strtoull64(value, u64)) {
          error = errors::kMetaBadInitial;
          has_error = true;
        }
        break;
      case 'D':
        if (!mc::strtoull64(value, u64)) {
          error = errors::kMetaBadDelta;
          has_error = true;
        }
        break;
      case 'l':
      case 'O':
      case 'P':
      case 'L':
      case 'k':
      case 's':
      case 't':
      case 'c':
      case 'f':
      case 'v':
      case 'h':
      case 'u':
      case 'q':
      case 'I':
        break;
      default:
        return errors::kMetaInvalidFlag;
    }
  }
  if (has_error) return error;
  // process_mset_command: opaque lengths, then the mode (whose error is reported first).
  for (size_t i = 2; i < end; ++i) {
    if (tokens[i][0] == 'O' && tokens[i].size() > mc::kMetaMaxOpaque) {
      error = errors::kMetaOpaqueTooLong;
      has_error = true;
    }
  }
  switch (mode) {
    case 0:
    case 'E':
    case 'A':
    case 'P':
    case 'R':
    case 'S':
      break;
    default:
      return errors::kMetaSetBadMode;
  }
  return has_error ? error : std::string_view{};
}

}  // namespace memzone::protocol::meta
