#include "proxy/protocol/reply_parser.h"

#include <charconv>
#include <cstring>

namespace memzone::protocol {
namespace {

// Lines from memcached end in \r\n; we accept a bare \n too and count it in `consumed`.
bool findLine(std::string_view input, size_t from, std::string_view& line, size_t& next) {
  const void* nl = std::memchr(input.data() + from, '\n', input.size() - from);
  if (nl == nullptr) return false;
  size_t end = static_cast<const char*>(nl) - input.data();
  next = end + 1;
  if (end > from && input[end - 1] == '\r') --end;
  line = input.substr(from, end - from);
  return true;
}

// A value length from a backend. Lengths past 2 GiB (memcached's own ceiling) are refused,
// so `offset + length + 2` can never wrap around on a hostile reply.
bool parseSize(std::string_view token, size_t& out) {
  if (token.empty()) return false;
  auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), out);
  return ec == std::errc() && ptr == token.data() + token.size() && out <= (size_t{1} << 31);
}

std::string_view nextToken(std::string_view& rest) {
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  size_t end = rest.find(' ');
  std::string_view token = rest.substr(0, end);
  rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  return token;
}

bool isNumber(std::string_view line) {
  if (line.empty()) return false;
  for (char c : line) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Error lines are valid replies to any request shape.
bool errorCode(std::string_view line, ReplyCode& code) {
  if (line == "ERROR" || line.starts_with("ERROR ")) {
    code = ReplyCode::kError;
  } else if (line.starts_with("CLIENT_ERROR")) {
    code = ReplyCode::kClientError;
  } else if (line.starts_with("SERVER_ERROR")) {
    code = ReplyCode::kServerError;
  } else {
    return false;
  }
  return true;
}

ReplyResult parseRetrievalReply(std::string_view input) {
  size_t pos = 0;
  bool any = false;
  while (true) {
    std::string_view line;
    size_t next;
    if (!findLine(input, pos, line, next)) return {ReplyStatus::kNeedMore};
    if (line == "END") return {ReplyStatus::kOk, next, any ? ReplyCode::kHit : ReplyCode::kMiss};
    ReplyCode code;
    if (!any && errorCode(line, code)) return {ReplyStatus::kOk, next, code};
    if (!line.starts_with("VALUE ")) return {ReplyStatus::kInvalid};
    std::string_view rest = line.substr(6);
    nextToken(rest);  // key
    nextToken(rest);  // flags
    size_t bytes;
    if (!parseSize(nextToken(rest), bytes)) return {ReplyStatus::kInvalid};
    if (input.size() < next + bytes + 2) return {ReplyStatus::kNeedMore};
    if (input[next + bytes] != '\r' || input[next + bytes + 1] != '\n') {
      return {ReplyStatus::kInvalid};
    }
    pos = next + bytes + 2;
    any = true;
  }
}

ReplyResult parseLineReply(std::string_view input) {
  std::string_view line;
  size_t next;
  if (!findLine(input, 0, line, next)) return {ReplyStatus::kNeedMore};
  ReplyCode code;
  if (errorCode(line, code)) return {ReplyStatus::kOk, next, code};
  struct Entry {
    std::string_view text;
    ReplyCode code;
  };
  static constexpr Entry kLines[] = {
      {"STORED", ReplyCode::kStored},   {"NOT_STORED", ReplyCode::kNotStored},
      {"EXISTS", ReplyCode::kExists},   {"NOT_FOUND", ReplyCode::kNotFound},
      {"DELETED", ReplyCode::kDeleted}, {"TOUCHED", ReplyCode::kTouched},
      {"OK", ReplyCode::kOk},
  };
  for (const auto& e : kLines) {
    if (line == e.text) return {ReplyStatus::kOk, next, e.code};
  }
  if (line.starts_with("VERSION ")) return {ReplyStatus::kOk, next, ReplyCode::kVersion};
  if (isNumber(line)) return {ReplyStatus::kOk, next, ReplyCode::kNumber};
  return {ReplyStatus::kInvalid};
}

ReplyResult parseMetaReply(std::string_view input) {
  std::string_view line;
  size_t next;
  if (!findLine(input, 0, line, next)) return {ReplyStatus::kNeedMore};
  ReplyCode code;
  if (errorCode(line, code)) return {ReplyStatus::kOk, next, code};
  if (line.size() < 2 || (line.size() > 2 && line[2] != ' ')) return {ReplyStatus::kInvalid};
  std::string_view head = line.substr(0, 2);
  if (head == "VA") {
    std::string_view rest = line.substr(2);
    size_t bytes;
    if (!parseSize(nextToken(rest), bytes)) return {ReplyStatus::kInvalid};
    if (input.size() < next + bytes + 2) return {ReplyStatus::kNeedMore};
    if (input[next + bytes] != '\r' || input[next + bytes + 1] != '\n') {
      return {ReplyStatus::kInvalid};
    }
    return {ReplyStatus::kOk, next + bytes + 2, ReplyCode::kHit};
  }
  if (head == "HD") return {ReplyStatus::kOk, next, ReplyCode::kOk};
  if (head == "EN") return {ReplyStatus::kOk, next, ReplyCode::kMiss};
  if (head == "NF") return {ReplyStatus::kOk, next, ReplyCode::kNotFound};
  if (head == "NS") return {ReplyStatus::kOk, next, ReplyCode::kNotStored};
  if (head == "EX") return {ReplyStatus::kOk, next, ReplyCode::kExists};
  if (head == "ME") return {ReplyStatus::kOk, next, ReplyCode::kMetaDebug};
  return {ReplyStatus::kInvalid};
}

}  // namespace

ReplyResult parseReply(std::string_view input, ReplyShape shape) {
  switch (shape) {
    case ReplyShape::kRetrieval:
      return parseRetrievalReply(input);
    case ReplyShape::kLine:
      return parseLineReply(input);
    case ReplyShape::kMeta:
      return parseMetaReply(input);
  }
  return {ReplyStatus::kInvalid};
}

bool parseValueBlock(std::string_view input, ValueBlock& out) {
  std::string_view line;
  size_t next;
  if (!input.starts_with("VALUE ") || !findLine(input, 0, line, next)) return false;
  std::string_view rest = line.substr(6);
  out.key = nextToken(rest);
  out.flags = nextToken(rest);
  size_t bytes;
  if (!parseSize(nextToken(rest), bytes) || input.size() < next + bytes + 2) return false;
  out.data = input.substr(next, bytes);
  out.size = next + bytes + 2;
  return true;
}

}  // namespace memzone::protocol
