#include "proxy/protocol/memcached_syntax.h"

#include <cstring>
#include <limits>

namespace memzone::protocol::mc {
namespace {

// strtol/strtoul's scan: white space, sign, decimal digits (magnitude saturates to flag
// ERANGE). `end` is the index after the last digit; 0 digits means "no number".
struct Scan {
  bool negative = false;
  bool overflow = false;
  size_t digits = 0;
  size_t end = 0;
  uint64_t magnitude = 0;
};

Scan scan(std::string_view token, uint64_t limit) {
  Scan s;
  size_t i = 0;
  while (i < token.size() && isSpace(token[i])) ++i;
  if (i < token.size() && (token[i] == '+' || token[i] == '-')) {
    s.negative = token[i] == '-';
    ++i;
  }
  for (; i < token.size() && token[i] >= '0' && token[i] <= '9'; ++i, ++s.digits) {
    uint64_t digit = static_cast<uint64_t>(token[i] - '0');
    if (s.overflow || s.magnitude > (limit - digit) / 10) {
      s.overflow = true;
    } else {
      s.magnitude = s.magnitude * 10 + digit;
    }
  }
  s.end = i;
  return s;
}

// util.c: accepted when the number is followed by the end of the token or white space.
bool endsWell(std::string_view token, const Scan& s) {
  return s.digits > 0 && (s.end == token.size() || isSpace(token[s.end]));
}

// safe_strtoul / safe_strtoull (unsigned long is 64 bits on Linux).
bool strtoulCommon(std::string_view token, uint64_t& out) {
  Scan s = scan(token, std::numeric_limits<uint64_t>::max());
  if (s.digits == 0 || s.overflow || !endsWell(token, s)) return false;
  uint64_t value = s.negative ? uint64_t{0} - s.magnitude : s.magnitude;
  if (static_cast<int64_t>(value) < 0 && token.find('-') != std::string_view::npos) return false;
  out = value;
  return true;
}

}  // namespace

std::string_view visibleLine(std::string_view line) {
  if (line.size() > 1 && line.back() == '\r') line.remove_suffix(1);
  if (const void* nul = std::memchr(line.data(), '\0', line.size())) {
    line = line.substr(0, static_cast<const char*>(nul) - line.data());
  }
  return line;
}

void tokenize(std::string_view line, std::vector<std::string_view>& tokens) {
  tokens.clear();
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') ++i;
    size_t start = i;
    while (i < line.size() && line[i] != ' ') ++i;
    if (i > start) tokens.push_back(line.substr(start, i - start));
  }
}

bool mayGrowWithoutNewline(std::string_view buffered) {
  size_t spaces = 0;
  while (spaces < buffered.size() && buffered[spaces] == ' ') ++spaces;
  if (spaces > 100) return false;
  std::string_view rest = buffered.substr(spaces);
  return rest.starts_with("get ") || rest.starts_with("gets ");
}

bool strtol32(std::string_view token, int32_t& out) {
  // long's range: the magnitude may reach 2^63 for a negative number.
  Scan s = scan(token, uint64_t{1} << 63);
  if (s.digits == 0 || s.overflow || !endsWell(token, s)) return false;
  if (!s.negative && s.magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return false;  // ERANGE
  }
  uint64_t value = s.negative ? uint64_t{0} - s.magnitude : s.magnitude;
  out = static_cast<int32_t>(static_cast<uint32_t>(value));  // the C assignment's truncation
  return true;
}

bool strtoul32(std::string_view token, uint32_t& out) {
  uint64_t value;
  if (!strtoulCommon(token, value)) return false;
  out = static_cast<uint32_t>(value);
  return true;
}

bool strtoull64(std::string_view token, uint64_t& out) { return strtoulCommon(token, out); }

}  // namespace memzone::protocol::mc
