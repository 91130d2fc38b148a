#include "proxy/protocol/request_parser.h"

#include <charconv>
#include <cstdint>
#include <cstring>

#include "proxy/protocol/client_errors.h"

namespace memzone::protocol {
namespace {

struct CommandEntry {
  std::string_view name;
  Command command;
};

constexpr CommandEntry kCommands[] = {
    {"get", Command::kGet},         {"gets", Command::kGets},
    {"gat", Command::kGat},         {"gats", Command::kGats},
    {"set", Command::kSet},         {"add", Command::kAdd},
    {"replace", Command::kReplace}, {"append", Command::kAppend},
    {"prepend", Command::kPrepend}, {"cas", Command::kCas},
    {"delete", Command::kDelete},   {"incr", Command::kIncr},
    {"decr", Command::kDecr},       {"touch", Command::kTouch},
    {"mg", Command::kMetaGet},      {"ms", Command::kMetaSet},
    {"md", Command::kMetaDelete},   {"ma", Command::kMetaArithmetic},
    {"mn", Command::kMetaNoop},     {"me", Command::kMetaDebug},
    {"version", Command::kVersion}, {"verbosity", Command::kVerbosity},
    {"stats", Command::kStats},     {"flush_all", Command::kFlushAll},
    {"quit", Command::kQuit},
};

bool lookupCommand(std::string_view name, Command& out) {
  for (const auto& entry : kCommands) {
    if (entry.name == name) {
      out = entry.command;
      return true;
    }
  }
  return false;
}

template <typename T>
bool parseNumber(std::string_view token, T& out) {
  if (token.empty()) return false;
  auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), out);
  return ec == std::errc() && ptr == token.data() + token.size();
}

// memcached splits on single spaces and ignores empty tokens.
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

bool startsWithRetrieval(std::string_view input) {
  size_t i = 0;
  while (i < input.size() && input[i] == ' ') ++i;
  std::string_view rest = input.substr(i);
  return rest.starts_with("get ") || rest.starts_with("gets ") || rest.starts_with("gat ") ||
         rest.starts_with("gats ");
}

ParseResult invalid(size_t consumed, std::string_view reply) {
  return ParseResult{ParseStatus::kInvalid, consumed, reply, 0};
}

}  // namespace

std::string_view commandName(Command c) {
  for (const auto& entry : kCommands) {
    if (entry.command == c) return entry.name;
  }
  return "unknown";
}

ParseResult RequestParser::parse(std::string_view input, Request& out) const {
  const void* nl = std::memchr(input.data(), '\n', input.size());
  if (nl == nullptr) {
    size_t limit = startsWithRetrieval(input) ? limits_.max_retrieval_line : limits_.max_line;
    if (input.size() > limit) return ParseResult{ParseStatus::kFatal, 0, errors::kLineTooLong, 0};
    return ParseResult{ParseStatus::kNeedMore};
  }
  size_t line_end = static_cast<const char*>(nl) - input.data();
  size_t limit = startsWithRetrieval(input) ? limits_.max_retrieval_line : limits_.max_line;
  if (line_end > limit) return ParseResult{ParseStatus::kFatal, 0, errors::kLineTooLong, 0};
  return parseLine(input, line_end, out);
}

ParseResult RequestParser::parseLine(std::string_view input, size_t line_end, Request& out) const {
  std::string_view line = input.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  out.line = line;
  out.data = {};
  out.noreply = false;
  out.quiet = false;
  out.quiet_token = 0;
  out.first_key = 1;
  out.key_count = 0;
  tokenize(line, out.tokens);
  const size_t consumed = line_end + 1;
  out.raw = input.substr(0, consumed);
  if (out.tokens.empty() || !lookupCommand(out.tokens[0], out.command)) {
    return invalid(consumed, errors::kError);
  }
  if (isStorage(out.command)) return parseStorage(input, line_end, out);
  if (isRetrieval(out.command)) return parseRetrieval(consumed, out);
  if (isMeta(out.command)) return parseMeta(input, line_end, out);
  return parseSimple(consumed, out);
}

ParseResult RequestParser::withData(std::string_view input, size_t line_end, size_t bytes,
                                    bool suppress, Request& out) const {
  const size_t header = line_end + 1;
  if (bytes > limits_.max_item_size) {
    // Like memcached: answer now and discard the value as it arrives, keeping the connection.
    return ParseResult{ParseStatus::kSwallow, header, suppress ? "" : errors::kTooLarge, bytes + 2};
  }
  if (input.size() < header + bytes + 2) return ParseResult{ParseStatus::kNeedMore};
  const size_t total = header + bytes + 2;
  if (input[header + bytes] != '\r' || input[header + bytes + 1] != '\n') {
    return invalid(total, suppress ? "" : errors::kBadDataChunk);
  }
  out.data = input.substr(header, bytes);
  out.raw = input.substr(0, total);
  return ParseResult{ParseStatus::kOk, total};
}

ParseResult RequestParser::parseStorage(std::string_view input, size_t line_end,
                                        Request& out) const {
  const auto& t = out.tokens;
  const size_t consumed = line_end + 1;
  const size_t base = out.command == Command::kCas ? 6 : 5;
  if (t.size() != base && t.size() != base + 1) return invalid(consumed, errors::kError);
  out.noreply = t.back() == "noreply";
  out.key_count = 1;
  std::string_view reply = out.noreply ? "" : errors::kBadFormat;
  uint32_t flags;
  int64_t exptime;
  int32_t bytes;
  uint64_t cas;
  if (t[1].size() > kMaxKeyLength || !parseNumber(t[2], flags) || !parseNumber(t[3], exptime) ||
      !parseNumber(t[4], bytes) || bytes < 0 ||
      (out.command == Command::kCas && !parseNumber(t[5], cas))) {
    return invalid(consumed, reply);
  }
  return withData(input, line_end, static_cast<size_t>(bytes), out.noreply, out);
}

ParseResult RequestParser::parseRetrieval(size_t consumed, Request& out) const {
  const auto& t = out.tokens;
  const bool touch = out.command == Command::kGat || out.command == Command::kGats;
  out.first_key = touch ? 2 : 1;
  if (t.size() <= out.first_key) return invalid(consumed, errors::kError);
  int64_t exptime;
  if (touch && !parseNumber(t[1], exptime)) return invalid(consumed, errors::kBadExptime);
  out.key_count = t.size() - out.first_key;
  for (size_t i = out.first_key; i < t.size(); ++i) {
    if (t[i].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
  }
  return ParseResult{ParseStatus::kOk, consumed};
}

ParseResult RequestParser::parseMeta(std::string_view input, size_t line_end, Request& out) const {
  auto& t = out.tokens;
  const size_t consumed = line_end + 1;
  if (out.command == Command::kMetaNoop) return ParseResult{ParseStatus::kOk, consumed};
  if (t.size() < 2) return invalid(consumed, errors::kError);
  if (t[1].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
  out.key_count = 1;
  size_t first_flag = 2;
  int64_t bytes = 0;
  if (out.command == Command::kMetaSet) {
    if (t.size() < 3) return invalid(consumed, errors::kBadFormat);
    if (!parseNumber(t[2], bytes) || bytes < 0) return invalid(consumed, errors::kBadDataChunk);
    first_flag = 3;
  }
  for (size_t i = first_flag; i < t.size(); ++i) {
    if (t[i] == "q") {
      out.quiet = true;
      out.quiet_token = i;
    }
  }
  if (out.command != Command::kMetaSet) return ParseResult{ParseStatus::kOk, consumed};
  return withData(input, line_end, static_cast<size_t>(bytes), false, out);
}

ParseResult RequestParser::parseSimple(size_t consumed, Request& out) const {
  const auto& t = out.tokens;
  switch (out.command) {
    case Command::kDelete: {
      if (t.size() < 2 || t.size() > 4) return invalid(consumed, errors::kError);
      out.key_count = 1;
      out.noreply = t.back() == "noreply" && t.size() > 2;
      if (t[1].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
      bool hold_is_zero = t.size() > 2 && t[2] == "0";
      bool valid = t.size() == 2 || (t.size() == 3 && (hold_is_zero || out.noreply)) ||
                   (t.size() == 4 && hold_is_zero && out.noreply);
      if (!valid) return invalid(consumed, errors::kBadDeleteFormat);
      return ParseResult{ParseStatus::kOk, consumed};
    }
    case Command::kIncr:
    case Command::kDecr: {
      if (t.size() != 3 && t.size() != 4) return invalid(consumed, errors::kError);
      out.key_count = 1;
      out.noreply = t.back() == "noreply" && t.size() == 4;
      if (t[1].size() > kMaxKeyLength)
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      uint64_t delta;
      if (!parseNumber(t[2], delta)) return invalid(consumed, out.noreply ? "" : errors::kBadDelta);
      return ParseResult{ParseStatus::kOk, consumed};
    }
    case Command::kTouch: {
      if (t.size() != 3 && t.size() != 4) return invalid(consumed, errors::kError);
      out.key_count = 1;
      out.noreply = t.back() == "noreply" && t.size() == 4;
      if (t[1].size() > kMaxKeyLength)
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      int64_t exptime;
      if (!parseNumber(t[2], exptime))
        return invalid(consumed, out.noreply ? "" : errors::kBadExptime);
      return ParseResult{ParseStatus::kOk, consumed};
    }
    case Command::kVerbosity:
      if (t.size() != 2 && t.size() != 3) return invalid(consumed, errors::kError);
      out.noreply = t.back() == "noreply";
      return ParseResult{ParseStatus::kOk, consumed};
    case Command::kFlushAll: {
      if (t.size() > 3) return invalid(consumed, errors::kError);
      out.noreply = t.size() > 1 && t.back() == "noreply";
      size_t numeric = out.noreply ? t.size() - 1 : t.size();
      int64_t delay;
      if (numeric == 2 && !parseNumber(t[1], delay)) {
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      }
      if (t.size() == 3 && !out.noreply) return invalid(consumed, errors::kBadFormat);
      return ParseResult{ParseStatus::kOk, consumed};
    }
    case Command::kVersion:  // memcached ignores extra tokens here
    case Command::kQuit:
    case Command::kStats:
      return ParseResult{ParseStatus::kOk, consumed};
    default:
      return invalid(consumed, errors::kError);
  }
}

}  // namespace memzone::protocol
