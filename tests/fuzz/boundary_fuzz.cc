// Structure-aware libFuzzer target: the request parser must agree with a reference model of
// memcached 1.6's own reading (proto_text.c) on where every request ends, and what the proxy
// forwards must be exactly one request to that model, whatever bytes keys, numbers and values
// hold. The model is written the way memcached is: a NUL-terminated copy of the line, C's
// strtol family, token counts with the terminal token, so it shares no code with the parser.
//
// The fuzzer's bytes are a recipe, not the input: each step picks a command shape from a
// table and fills keys, numbers and values with bytes from the recipe (any byte value, with
// spaces, tabs, \r, NUL and signs more likely), so most inputs are near-valid requests.
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/request_parser.h"

namespace {

constexpr size_t kItemLimit = 4096;

// ---- reference model -------------------------------------------------------------------

bool cStrtol(const char* s, int32_t& out) {
  errno = 0;
  char* end;
  long l = strtol(s, &end, 10);
  if (errno == ERANGE || end == s) return false;
  if (!isspace(static_cast<unsigned char>(*end)) && *end != '\0') return false;
  out = static_cast<int32_t>(l);
  return true;
}

// Bytes memcached consumes for the request at the start of `in`, or 0 when it needs more
// (or would close). Only boundaries are modelled: errors that consume only the line all
// look alike here.
size_t modelBoundary(std::string_view in) {
  const char* nl = static_cast<const char*>(memchr(in.data(), '\n', in.size()));
  if (nl == nullptr) return 0;
  size_t el = nl - in.data();
  std::string line(in.data(), el);
  if (el > 1 && line[el - 1] == '\r') line.resize(el - 1);
  line.resize(strlen(line.c_str()));  // a C string ends at the first NUL
  std::vector<std::string> tokens;
  const size_t max_tokens = 24;  // counting the terminal one
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      if (i > start) tokens.push_back(line.substr(start, i - start));
      start = i + 1;
      if (tokens.size() == max_tokens - 1) break;
    }
  }
  const size_t ntokens = tokens.size() + 1;
  const size_t line_bytes = el + 1;
  if (tokens.empty()) return line_bytes;
  const std::string& cmd = tokens[0];
  auto value_request = [&](size_t length_index) -> size_t {
    int32_t vlen;
    if (!cStrtol(tokens[length_index].c_str(), vlen) || vlen < 0 || vlen > INT_MAX - 2) {
      return line_bytes;
    }
    return line_bytes + static_cast<size_t>(vlen) + 2;
  };
  bool storage =
      cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" || cmd == "prepend";
  if (storage || cmd == "cas") {
    size_t base = cmd == "cas" ? 7 : 6;
    if (ntokens != base && ntokens != base + 1) return line_bytes;
    if (tokens[1].size() > 250) return line_bytes;
    uint32_t flags_ok = 0;
    char* end;
    errno = 0;
    unsigned long flags = strtoul(tokens[2].c_str(), &end, 10);
    flags_ok = !(errno == ERANGE || end == tokens[2].c_str()) &&
               (isspace(static_cast<unsigned char>(*end)) || *end == '\0') &&
               !(static_cast<long>(flags) < 0 && strchr(tokens[2].c_str(), '-'));
    int32_t exptime;
    int32_t vlen;
    if (!flags_ok || !cStrtol(tokens[3].c_str(), exptime) || !cStrtol(tokens[4].c_str(), vlen)) {
      return line_bytes;
    }
    if (cmd == "cas") {
      errno = 0;
      unsigned long long cas = strtoull(tokens[5].c_str(), &end, 10);
      bool ok = !(errno == ERANGE || end == tokens[5].c_str()) &&
                (isspace(static_cast<unsigned char>(*end)) || *end == '\0') &&
                !(static_cast<long long>(cas) < 0 && strchr(tokens[5].c_str(), '-'));
      if (!ok) return line_bytes;
    }
    return value_request(4);
  }
  if (cmd == "ms") {
    if (ntokens < 3 || tokens[1].size() > 250 || ntokens == 3 || ntokens > 20) return line_bytes;
    return value_request(2);
  }
  return line_bytes;
}

// ---- recipe -> input -------------------------------------------------------------------

class Recipe {
 public:
  Recipe(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  // A token byte: mostly printable, often one of the bytes memcached treats specially.
  char tokenByte() {
    static const char kSpecial[] = {' ', '\t', '\r', '\0', '\n', '-', '+', '\v', '\f', 'q'};
    uint8_t b = byte();
    if (b < 40) return kSpecial[b % sizeof(kSpecial)];
    return static_cast<char>(b);
  }
  std::string token(size_t max) {
    std::string t;
    size_t n = byte() % (max + 1);
    for (size_t i = 0; i < n; ++i) t += tokenByte();
    return t;
  }
  std::string number() {
    static const char* kNumbers[] = {"0",
                                     "1",
                                     "5",
                                     "+3",
                                     "-1",
                                     "\t4",
                                     "2\t",
                                     "",
                                     "x",
                                     "007",
                                     "4294967297",
                                     "2147483647",
                                     "9999",
                                     "-0",
                                     "1x",
                                     "3 ",
                                     "18446744073709551615"};
    uint8_t b = byte();
    if (b < 200) return kNumbers[b % (sizeof(kNumbers) / sizeof(kNumbers[0]))];
    return token(6);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

std::string buildInput(Recipe& recipe) {
  static const char* kCommands[] = {
      "get", "gets",   "gat",  "set",   "add", "cas", "append",  "ms",        "mg",        "md",
      "ma",  "delete", "incr", "touch", "mn",  "me",  "version", "verbosity", "flush_all", "bogus"};
  std::string in;
  while (!recipe.empty() && in.size() < 20000) {
    std::string cmd = kCommands[recipe.byte() % (sizeof(kCommands) / sizeof(kCommands[0]))];
    std::string line = cmd;
    size_t args = recipe.byte() % 8;
    bool storage = cmd == "set" || cmd == "add" || cmd == "cas" || cmd == "append";
    for (size_t i = 0; i < args; ++i) {
      line += recipe.byte() % 8 == 0 ? "  " : " ";
      bool numeric = (storage && i >= 1 && i <= 4) || (cmd == "ms" && i == 1);
      line += numeric ? recipe.number() : recipe.token(12);
    }
    uint8_t ending = recipe.byte() % 8;
    line += ending == 0 ? "\n" : ending == 1 ? "\r\r\n" : ending == 2 ? " \r\n" : "\r\n";
    in += line;
    if (storage || cmd == "ms") {  // a value block, sometimes of the wrong length
      size_t n = recipe.byte() % 12;
      for (size_t i = 0; i < n; ++i) in += recipe.tokenByte();
      if (recipe.byte() % 4 != 0) in += "\r\n";
    }
  }
  return in;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace memzone::protocol;
  Recipe recipe(data, size);
  const std::string input = buildInput(recipe);
  ParserLimits limits;
  limits.max_item_size = kItemLimit;
  limits.max_retrieval_line = 1 << 16;
  RequestParser parser(limits);
  Request request;
  std::string_view in(input);
  while (!in.empty()) {
    ParseResult r = parser.parse(in, request);
    if (r.status == ParseStatus::kNeedMore || r.status == ParseStatus::kFatal) break;
    // Every answer the parser gives (forward, reject, swallow) ends where memcached's
    // request ends: the line, or the line and its value block.
    size_t ours = r.consumed + r.swallow;
    if (ours != modelBoundary(in)) __builtin_trap();
    if (r.status == ParseStatus::kOk) {
      // What goes to the server must be exactly one request to it (a quiet one: and mn).
      memzone::ByteBuffer out;
      encodeBackendRequest(request, "O89abcdef", out);
      std::string_view sent = out.view();
      if (request.quiet && sent.ends_with("\r\nmn\r\n")) sent.remove_suffix(4);
      if (request.command != Command::kMetaNoop && request.command != Command::kVersion &&
          request.command != Command::kVerbosity && request.command != Command::kStats &&
          request.command != Command::kQuit && modelBoundary(sent) != sent.size()) {
        __builtin_trap();
      }
    }
    if (ours >= in.size()) break;
    in.remove_prefix(ours);
  }
  return 0;
}
