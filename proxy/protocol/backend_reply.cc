#include "proxy/protocol/backend_reply.h"

#include <charconv>
#include <cstring>
#include <string>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/base64.h"

namespace memzone::protocol {
namespace {

// The line at the start of `input`, without its \r\n. kNeedMore while no \n has come within
// kMaxReplyLine bytes; kInvalid for a longer line or one not ending in \r\n.
ReplyStatus takeLine(std::string_view input, size_t from, std::string_view& line, size_t& next) {
  size_t limit = std::min(input.size(), from + kMaxReplyLine);
  const void* nl = std::memchr(input.data() + from, '\n', limit - from);
  if (nl == nullptr)
    return limit < from + kMaxReplyLine ? ReplyStatus::kNeedMore : ReplyStatus::kInvalid;
  size_t end = static_cast<const char*>(nl) - input.data();
  if (end == from || input[end - 1] != '\r') return ReplyStatus::kInvalid;
  line = input.substr(from, end - 1 - from);
  next = end + 1;
  return ReplyStatus::kOk;
}

bool printable(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) return false;
  }
  return true;
}

// Error lines are valid replies to any request.
bool errorLine(std::string_view line, ReplyCode& code) {
  if (line == "ERROR" || line.starts_with("ERROR ")) {
    code = ReplyCode::kError;
  } else if (line.starts_with("CLIENT_ERROR ")) {
    code = ReplyCode::kClientError;
  } else if (line.starts_with("SERVER_ERROR ")) {
    code = ReplyCode::kServerError;
  } else {
    return false;
  }
  return printable(line);
}

bool parseLength(std::string_view token, size_t& out) {
  if (token.empty() || token.size() > 10) return false;
  auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), out);
  // memcached's ceiling is 2 GiB: `offset + length + 2` can never wrap on a hostile reply.
  return ec == std::errc() && ptr == token.data() + token.size() && out <= (size_t{1} << 31);
}

struct MetaHead {
  std::string_view text;
  ReplyCode code;
};
constexpr MetaHead kMetaHeads[] = {
    {"VA", ReplyCode::kHit},      {"HD", ReplyCode::kOk},        {"EN", ReplyCode::kMiss},
    {"NF", ReplyCode::kNotFound}, {"NS", ReplyCode::kNotStored}, {"EX", ReplyCode::kExists},
};

// The value of a VA reply (its length read from the line, which ends at `next`).
ReplyStatus finishMeta(std::string_view input, size_t next, size_t length, BackendReply& out,
                       size_t& consumed) {
  if (out.code == ReplyCode::kHit) {
    if (input.size() < next + length + 2) return ReplyStatus::kNeedMore;
    if (input[next + length] != '\r' || input[next + length + 1] != '\n') {
      return ReplyStatus::kInvalid;
    }
    out.value = input.substr(next, length);
    out.has_value = true;
    next += length + 2;
  }
  consumed = next;
  return ReplyStatus::kOk;
}

ReplyStatus parseMeta(std::string_view input, uint32_t opaque, BackendReply& out,
                      size_t& consumed) {
  std::string_view line;
  size_t next = 0;
  ReplyStatus s = takeLine(input, 0, line, next);
  if (s != ReplyStatus::kOk) return s;
  // Error lines: ERROR, CLIENT_ERROR, SERVER_ERROR (EN is a meta code).
  const char first = line.empty() ? '\0' : line[0];
  if ((first == 'C' || first == 'S' || (first == 'E' && line.size() > 1 && line[1] == 'R')) &&
      errorLine(line, out.code)) {
    out.line = line;
    consumed = next;
    return ReplyStatus::kOk;
  }
  if (line.size() < 2) return ReplyStatus::kInvalid;
  out.head = line.substr(0, 2);
  bool known = false;
  for (const MetaHead& h : kMetaHeads) {
    if (h.text[0] == out.head[0] && h.text[1] == out.head[1]) {
      out.code = h.code;
      known = true;
      break;
    }
  }
  if (!known) return ReplyStatus::kInvalid;
  std::string_view rest = line.substr(2);
  size_t length = 0;
  if (out.code == ReplyCode::kHit) {
    if (!rest.starts_with(' ')) return ReplyStatus::kInvalid;
    rest.remove_prefix(1);
    size_t sp = rest.find(' ');
    if (!parseLength(rest.substr(0, sp), length)) return ReplyStatus::kInvalid;
    rest.remove_prefix(sp == std::string_view::npos ? rest.size() : sp);
  }
  // " <flag>..." with our opaque among them: what precedes it came from the request's own
  // flags; only W, X and Z may follow it. Mostly it ends the line: checked first.
  if (!rest.starts_with(' ')) return ReplyStatus::kInvalid;
  const OpaqueToken expected = makeOpaqueToken(opaque);
  const std::string_view token = expected.view();
  const std::string_view token_text = token;
  if (rest.size() > token.size() && rest.ends_with(token) &&
      rest[rest.size() - token.size() - 1] == ' ') {
    // " <flags> O...", or " O..." alone.
    std::string_view flags = rest.size() == token.size() + 1
                                 ? std::string_view{}
                                 : rest.substr(1, rest.size() - token.size() - 2);
    if (rest.size() == token.size() + 1 ||
        (!flags.empty() && flags.front() != ' ' && flags.back() != ' ' && printable(flags) &&
         flags.find("  ") == std::string_view::npos &&
         flags.find(token) == std::string_view::npos)) {
      out.flags = flags;
      return finishMeta(input, next, length, out, consumed);
    }
  }
  if (!printable(rest)) return ReplyStatus::kInvalid;
  size_t flags_begin = 1;
  size_t pos = 1;
  bool found = false;
  while (pos <= rest.size()) {
    size_t sp = rest.find(' ', pos);
    size_t end = sp == std::string_view::npos ? rest.size() : sp;
    std::string_view token = rest.substr(pos, end - pos);
    if (token.empty()) return ReplyStatus::kInvalid;
    if (!found && token == token_text) {
      found = true;
      out.flags = rest.substr(flags_begin, pos > flags_begin ? pos - 1 - flags_begin : 0);
      out.trailer = end < rest.size() ? rest.substr(end + 1) : std::string_view{};
    } else if (token[0] == 'O') {
      // No other opaque can be in a reply: the client's is never sent on (another request's,
      // or ours spelled otherwise, means the reply is not this request's).
      return ReplyStatus::kInvalid;
    } else if (found &&
               !(token.size() == 1 && (token[0] == 'W' || token[0] == 'X' || token[0] == 'Z'))) {
      return ReplyStatus::kInvalid;
    }
    pos = end + 1;
  }
  if (!found) return ReplyStatus::kInvalid;
  return finishMeta(input, next, length, out, consumed);
}

// "ME <key> exp=...\r\n": the key is the one asked for, as raw bytes or base64 (memcached
// prints an item's key raw unless the item carries its binary-key flag), so the line's end is
// found after it, never inside it.
ReplyStatus parseMetaDebug(std::string_view input, std::string_view key, BackendReply& out,
                           size_t& consumed) {
  size_t have = std::min(input.size(), size_t{3});
  if (input.substr(0, have) == std::string_view("ME ", have)) {
    if (input.size() < 3) return ReplyStatus::kNeedMore;
    std::string encoded;
    base64Encode(key, encoded);
    for (std::string_view form : {key, std::string_view(encoded)}) {
      std::string_view after = input.substr(3);
      size_t n = std::min(after.size(), form.size() + 1);
      if (after.substr(0, n) != (std::string(form) + " ").substr(0, n)) continue;
      if (n < form.size() + 1) return ReplyStatus::kNeedMore;
      std::string_view line;
      size_t next = 0;
      ReplyStatus s = takeLine(input, 3 + form.size(), line, next);
      if (s != ReplyStatus::kOk) return s;
      if (!line.starts_with(" exp=") || !printable(line)) return ReplyStatus::kInvalid;
      out.code = ReplyCode::kMetaDebug;
      out.head = "ME";
      out.line = line;
      consumed = next;
      return ReplyStatus::kOk;
    }
    return ReplyStatus::kInvalid;
  }
  std::string_view line;
  size_t next = 0;
  ReplyStatus s = takeLine(input, 0, line, next);
  if (s != ReplyStatus::kOk) return s;
  if (line == "EN") {
    out.code = ReplyCode::kMiss;
    out.head = "EN";
  } else if (errorLine(line, out.code)) {
    out.line = line;
  } else {
    return ReplyStatus::kInvalid;
  }
  consumed = next;
  return ReplyStatus::kOk;
}

ReplyStatus parseSimple(std::string_view input, ReplyKind kind, BackendReply& out,
                        size_t& consumed) {
  std::string_view line;
  size_t next = 0;
  ReplyStatus s = takeLine(input, 0, line, next);
  if (s != ReplyStatus::kOk) return s;
  if (errorLine(line, out.code)) {
    out.line = line;
  } else if (kind == ReplyKind::kRefusal) {
    return ReplyStatus::kInvalid;
  } else if (kind == ReplyKind::kOk && line == "OK") {
    out.code = ReplyCode::kOk;
  } else if (kind == ReplyKind::kVersion && line.starts_with("VERSION ") && printable(line)) {
    out.code = ReplyCode::kVersion;
    out.line = line;
  } else {
    return ReplyStatus::kInvalid;
  }
  consumed = next;
  return ReplyStatus::kOk;
}

}  // namespace

ReplyStatus parseBackendReply(std::string_view input, const ExpectedReply& expected,
                              BackendReply& out, size_t& consumed) {
  out = BackendReply{};
  consumed = 0;
  switch (expected.kind) {
    case ReplyKind::kMeta:
      return parseMeta(input, expected.opaque, out, consumed);
    case ReplyKind::kMetaDebug:
      return parseMetaDebug(input, expected.debug_key, out, consumed);
    case ReplyKind::kVersion:
    case ReplyKind::kOk:
    case ReplyKind::kRefusal:
      return parseSimple(input, expected.kind, out, consumed);
  }
  return ReplyStatus::kInvalid;
}

bool findReturnFlag(std::string_view flags, char flag, std::string_view& value) {
  while (!flags.empty()) {
    size_t sp = flags.find(' ');
    std::string_view token = flags.substr(0, sp);
    if (!token.empty() && token[0] == flag) {
      value = token.substr(1);
      return true;
    }
    if (sp == std::string_view::npos) break;
    flags.remove_prefix(sp + 1);
  }
  return false;
}

}  // namespace memzone::protocol
