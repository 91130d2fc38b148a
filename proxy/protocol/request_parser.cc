#include "proxy/protocol/request_parser.h"

#include <charconv>
#include <climits>
#include <cstdint>
#include <cstring>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/client_errors.h"
#include "proxy/protocol/memcached_syntax.h"
#include "proxy/protocol/meta_flags.h"

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
    {"quit", Command::kQuit},       {"bget", Command::kGet},  // memcached's ancient alias
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

ParseResult invalid(size_t consumed, std::string_view reply) {
  return ParseResult{ParseStatus::kInvalid, consumed, reply};
}

ParseResult ok(size_t consumed) { return ParseResult{ParseStatus::kOk, consumed}; }

// memcached counts the terminal token too: a line of n tokens has min(n, 23) + 1.
size_t memcachedTokenCount(const Request& r) {
  return std::min(r.tokens.size(), mc::kMaxTokens) + 1;
}

// set_noreply_maybe: the last token memcached saw is exactly "noreply".
bool lastTokenIsNoreply(const Request& r) {
  return r.tokens[memcachedTokenCount(r) - 2] == "noreply";
}

// The proxy's backend line has the client's flags less O and k, plus its own O: a request at
// memcached's token limit with neither would go over it, and memcached would then refuse it
// without reading its value (an ms value read as commands on the shared connection). The
// proxy refuses it itself, with memcached's words, the value read as the client meant it.
bool backendLineOverflows(const Request& r) {
  return !metaForwardedAsWritten(r) && backendMetaTokens(r) + 1 > mc::kMetaMaxTokens;
}

// What the proxy's backend line may add to the client's tokens: " O" and 8 hex digits.
constexpr size_t kBackendLineExtra = 16;

// Bytes of the line the encoder rebuilds (an upper bound: the length token may shrink).
size_t canonicalLineLength(const Request& r) {
  size_t n = 2;
  for (size_t i = 0; i < r.tokens.size(); ++i) n += r.tokens[i].size() + (i > 0);
  return n;
}

// item_size_ok: whether memcached (with -I equal to the proxy's max item size) refuses the
// item as too large: a 48-byte header, 8 of cas, the key and its NUL, 4 of flags unless they
// are 0, the value and its \r\n.
bool tooLargeForMemcached(size_t key, bool flags, size_t bytes, size_t max_item_size) {
  return size_t{59} + key + (flags ? 4 : 0) + bytes > max_item_size;
}

// memcached stores nothing from a block that does not end in \r\n and answers so (text
// noreply silences it, meta quiet mode does not). The backend always gets \r\n from the
// proxy, so the proxy answers this itself; only a refusal memcached gives first (too large,
// which also deletes the key of a set) is left to memcached.
ParseResult badChunk(const Request& r, size_t consumed) {
  bool silent = r.noreply && r.command != Command::kMetaSet;
  return ParseResult{ParseStatus::kInvalid, consumed, silent ? "" : errors::kBadDataChunk};
}

// Text commands memcached knows but the proxy does not offer (server administration).
bool isAdminCommand(std::string_view name) {
  static constexpr std::string_view kAdmin[] = {
      "shutdown", "slabs",    "cache_memlimit", "lru_crawler", "watch",
      "lru",      "extstore", "refresh_certs",  "misbehave",   "debugtime"};
  for (std::string_view a : kAdmin) {
    if (a == name) return true;
  }
  return false;
}

}  // namespace

std::string_view commandName(Command c) {
  for (const auto& entry : kCommands) {
    if (entry.command == c) return entry.name;
  }
  return "unknown";
}

ParseResult RequestParser::parse(std::string_view input, Request& out, size_t* scanned) const {
  size_t from = scanned != nullptr ? std::min(*scanned, input.size()) : 0;
  const void* nl = std::memchr(input.data() + from, '\n', input.size() - from);
  if (nl == nullptr) {
    if (scanned != nullptr) *scanned = input.size();
    if (input.size() > mc::kMaxLineWithoutNewline) {
      // memcached closes silently here, unless it looks like a long multi-get.
      if (!mc::mayGrowWithoutNewline(input)) return ParseResult{ParseStatus::kFatal};
      if (input.size() > limits_.max_retrieval_line) {
        return ParseResult{ParseStatus::kFatal, 0, errors::kLineTooLong};
      }
    }
    return ParseResult{ParseStatus::kNeedMore};
  }
  if (scanned != nullptr) *scanned = 0;
  const size_t line_end = static_cast<const char*>(nl) - input.data();
  if (line_end > limits_.max_retrieval_line) {
    return ParseResult{ParseStatus::kFatal, 0, errors::kLineTooLong};
  }
  const size_t consumed = line_end + 1;
  out.line = mc::visibleLine(input.substr(0, line_end));
  out.raw = input.substr(0, consumed);
  out.data = {};
  out.data_terminator = {};
  out.length_token = 0;
  out.noreply = false;
  out.quiet = false;
  out.first_key = 1;
  out.key_count = 0;
  mc::tokenize(out.line, out.tokens);
  const auto& t = out.tokens;
  // process_command_ascii: no command, or one shorter than two bytes.
  if (t.empty() || t[0].size() < 2) return invalid(consumed, errors::kError);
  if (!lookupCommand(t[0], out.command)) {
    // memcached dispatches on the first byte; only commands outside its known families
    // reach the check that hangs up on an HTTP request.
    char first = t[0][0];
    bool known_family = (first == 'm' && t[0].size() == 2) || first == 'g' || first == 's' ||
                        first == 'a' || first == 'c' || first == 'i' || first == 'd' ||
                        first == 't' || isAdminCommand(t[0]);
    if (!known_family && t[memcachedTokenCount(out) - 2].starts_with("HTTP/")) {
      return ParseResult{ParseStatus::kFatal, consumed};
    }
    return invalid(consumed, errors::kError);
  }
  ParseResult r = isRetrieval(out.command)           ? parseRetrieval(consumed, out)
                  : isStorage(out.command)           ? parseStorage(input, consumed, out)
                  : out.command == Command::kMetaSet ? parseMetaSet(input, consumed, out)
                  : isMeta(out.command)              ? parseMetaLine(consumed, out)
                                                     : parseOther(consumed, out);
  if (r.status == ParseStatus::kOk && consumed + kBackendLineExtra > mc::kMaxLineWithoutNewline) {
    // memcached hangs up on a line over 2048 bytes that straddles two of its reads (only
    // get/gets may grow), and on a shared connection our line may straddle anything: the
    // backend line is the proxy's (single spaces, plus its opaque), and a request whose line
    // would still be too long is answered here. Retrievals go key by key anyway.
    if (!isRetrieval(out.command) &&
        canonicalLineLength(out) + kBackendLineExtra > mc::kMaxLineWithoutNewline) {
      return invalid(r.consumed, errors::kLineTooLong);
    }
  }
  return r;
}

ParseResult RequestParser::withData(std::string_view input, size_t consumed, size_t bytes,
                                    std::string_view too_large_reply, Request& out) const {
  if (bytes > limits_.max_item_size) {
    // What memcached does when it cannot allocate the item: answer, then discard the value
    // as it arrives. The caller deletes the key where memcached would.
    return ParseResult{ParseStatus::kTooLarge, consumed, too_large_reply, bytes + 2};
  }
  const size_t total = consumed + bytes + 2;
  if (input.size() < total) return ParseResult{ParseStatus::kNeedMore};
  // The block goes to the server as received, terminator included: memcached reads exactly
  // `bytes + 2` bytes whatever they are and answers "bad data chunk" itself when the last
  // two are not \r\n.
  out.data = input.substr(consumed, bytes);
  out.data_terminator = input.substr(consumed + bytes, 2);
  out.raw = input.substr(0, total);
  return ok(total);
}

ParseResult RequestParser::parseStorage(std::string_view input, size_t consumed,
                                        Request& out) const {
  // process_command_ascii's token counts, then process_update_command's checks, in order.
  const auto& t = out.tokens;
  const size_t ntokens = memcachedTokenCount(out);
  const bool cas = out.command == Command::kCas;
  if (ntokens != (cas ? 7u : 6u) && ntokens != (cas ? 8u : 7u)) {
    return invalid(consumed, errors::kError);
  }
  out.noreply = lastTokenIsNoreply(out);
  out.key_count = 1;
  const std::string_view bad_format = out.noreply ? "" : errors::kBadFormat;
  if (t[1].size() > kMaxKeyLength) return invalid(consumed, bad_format);
  uint32_t flags;
  int32_t exptime;
  int32_t bytes;
  uint64_t cas_unique;
  if (!mc::strtoul32(t[2], flags) || !mc::strtol32(t[3], exptime) || !mc::strtol32(t[4], bytes)) {
    return invalid(consumed, bad_format);
  }
  if (cas && !mc::strtoull64(t[5], cas_unique)) return invalid(consumed, bad_format);
  if (bytes < 0 || bytes > INT_MAX - 2) return invalid(consumed, bad_format);
  out.length_token = 4;
  // A length memcached reads through a quirk ("+5", "\t5", 2^32 + 5) is sent as plain digits.
  ParseResult r = withData(input, consumed, static_cast<size_t>(bytes),
                           out.noreply ? "" : errors::kTooLarge, out);
  if (r.status == ParseStatus::kTooLarge) r.deletes_key = out.command == Command::kSet;
  // The backend gets an ms, and memcached deletes the key of an ms it finds too large, as it
  // does for a text set but not for add, replace, append, prepend or cas: for those the proxy
  // answers what memcached (with -I equal to --max-item-size) would, keeping the key.
  // item_size_ok: a 48-byte header, 8 of cas, the key and its NUL, 4 of flags unless they are
  // 0, the value and its \r\n.
  if (r.status != ParseStatus::kOk) return r;
  bool too_large = tooLargeForMemcached(t[1].size(), flags != 0, static_cast<size_t>(bytes),
                                        limits_.max_item_size);
  if (too_large && out.command != Command::kSet) {
    r.status = ParseStatus::kTooLarge;
    r.reply = out.noreply ? "" : errors::kTooLarge;
    r.swallow = 0;
    r.deletes_key = false;
  } else if (!too_large && out.data_terminator != "\r\n") {
    return badChunk(out, r.consumed);
  }
  return r;
}

ParseResult RequestParser::parseRetrieval(size_t consumed, Request& out) const {
  const auto& t = out.tokens;
  if (t.size() < 2) return invalid(consumed, errors::kError);  // WANT_TOKENS_MIN(3)
  const bool touch = out.command == Command::kGat || out.command == Command::kGats;
  out.first_key = touch ? 2 : 1;
  int32_t exptime;
  if (touch && !mc::strtol32(t[1], exptime)) return invalid(consumed, errors::kBadExptime);
  // "gat 10" with no key: memcached answers an empty result.
  if (t.size() <= out.first_key) return invalid(consumed, errors::kEnd);
  out.key_count = t.size() - out.first_key;
  for (size_t i = out.first_key; i < t.size(); ++i) {
    if (t[i].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
  }
  return ok(consumed);
}

ParseResult RequestParser::parseMetaSet(std::string_view input, size_t consumed,
                                        Request& out) const {
  // process_mset_command: these errors come before the value length is known, so memcached
  // reads the value that follows as commands, and so do we.
  const auto& t = out.tokens;
  const size_t ntokens = memcachedTokenCount(out);
  if (ntokens < 3) return invalid(consumed, errors::kError);
  if (t[1].size() > kMaxKeyLength || ntokens == 3) return invalid(consumed, errors::kBadFormat);
  if (ntokens > mc::kMetaMaxTokens) return invalid(consumed, errors::kMetaFlagsTooLong);
  int32_t bytes;
  if (!mc::strtol32(t[2], bytes) || bytes < 0 || bytes > INT_MAX - 2) {
    return invalid(consumed, errors::kBadFormat);
  }
  out.key_count = 1;
  out.length_token = 2;
  out.quiet = meta::hasQuietFlag(t, 3);
  ParseResult r = withData(input, consumed, static_cast<size_t>(bytes), errors::kTooLarge, out);
  if (r.status == ParseStatus::kTooLarge) {
    // Errors memcached finds in the flags come first (and are always answered, q or not);
    // otherwise it deletes the key whatever the mode and says the value is too large.
    std::string_view flag_error = meta::setFlagError(t);
    if (!flag_error.empty()) {
      r.status = ParseStatus::kSwallow;
      r.reply = flag_error;
    } else {
      r.deletes_key = true;
    }
  }
  if (r.status == ParseStatus::kOk && backendLineOverflows(out)) {
    // The value is read as memcached would read it for the client's own line (a value), and
    // an error memcached would have found in that line is the one answered.
    std::string_view flag_error = meta::setFlagError(t);
    return invalid(r.consumed, flag_error.empty() ? errors::kMetaFlagsTooLong : flag_error);
  }
  if (r.status == ParseStatus::kOk && out.data_terminator != "\r\n") {
    std::string_view flag_error = meta::setFlagError(t);
    if (!flag_error.empty()) return invalid(r.consumed, flag_error);
    uint32_t flags = 0;
    for (size_t i = 3; i < t.size() && i < mc::kMaxTokens; ++i) {
      if (t[i][0] == 'F') mc::strtoul32(t[i].substr(1), flags);
    }
    if (!tooLargeForMemcached(t[1].size(), flags != 0, static_cast<size_t>(bytes),
                              limits_.max_item_size)) {
      return badChunk(out, r.consumed);
    }
  }
  return r;
}

ParseResult RequestParser::parseMetaLine(size_t consumed, Request& out) const {
  const auto& t = out.tokens;
  const size_t ntokens = memcachedTokenCount(out);
  switch (out.command) {
    case Command::kMetaNoop:
      return ok(consumed);
    case Command::kMetaDebug:
      if (ntokens < 3 || t[1].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
      out.key_count = 1;
      return ok(consumed);
    default:  // mg, md, ma
      if (ntokens < 3) return invalid(consumed, errors::kError);
      if (t[1].size() > kMaxKeyLength) return invalid(consumed, errors::kBadFormat);
      if (ntokens > mc::kMetaMaxTokens) {
        return invalid(consumed, out.command == Command::kMetaGet ? errors::kMetaGetFlagsTooLong
                                                                  : errors::kMetaFlagsTooLong);
      }
      out.key_count = 1;
      out.quiet = meta::hasQuietFlag(t, 2);
      if (backendLineOverflows(out)) {
        return invalid(consumed, out.command == Command::kMetaGet ? errors::kMetaGetFlagsTooLong
                                                                  : errors::kMetaFlagsTooLong);
      }
      return ok(consumed);
  }
}

ParseResult RequestParser::parseOther(size_t consumed, Request& out) const {
  const auto& t = out.tokens;
  const size_t ntokens = memcachedTokenCount(out);
  switch (out.command) {
    case Command::kDelete: {
      if (ntokens < 3 || ntokens > 5) return invalid(consumed, errors::kError);
      out.key_count = 1;
      if (ntokens > 3) {
        bool hold_is_zero = t[2] == "0";
        out.noreply = lastTokenIsNoreply(out);
        bool valid = (ntokens == 4 && (hold_is_zero || out.noreply)) ||
                     (ntokens == 5 && hold_is_zero && out.noreply);
        if (!valid) return invalid(consumed, out.noreply ? "" : errors::kBadDeleteFormat);
      }
      if (t[1].size() > kMaxKeyLength) {
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      }
      return ok(consumed);
    }
    case Command::kIncr:
    case Command::kDecr:
    case Command::kTouch: {
      if (ntokens != 4 && ntokens != 5) return invalid(consumed, errors::kError);
      out.key_count = 1;
      out.noreply = lastTokenIsNoreply(out);
      if (t[1].size() > kMaxKeyLength) {
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      }
      if (out.command == Command::kTouch) {
        int32_t exptime;
        if (!mc::strtol32(t[2], exptime)) {
          return invalid(consumed, out.noreply ? "" : errors::kBadExptime);
        }
      } else {
        uint64_t delta;
        if (!mc::strtoull64(t[2], delta)) {
          return invalid(consumed, out.noreply ? "" : errors::kBadDelta);
        }
      }
      return ok(consumed);
    }
    case Command::kVerbosity: {
      if (ntokens != 3 && ntokens != 4) return invalid(consumed, errors::kError);
      out.noreply = lastTokenIsNoreply(out);
      uint32_t level;
      if (!mc::strtoul32(t[1], level)) {
        return invalid(consumed, out.noreply ? "" : errors::kBadFormat);
      }
      return ok(consumed);
    }
    case Command::kFlushAll: {
      if (ntokens < 2 || ntokens > 4) return invalid(consumed, errors::kError);
      out.noreply = lastTokenIsNoreply(out);
      int32_t delay;
      if (ntokens != (out.noreply ? 3u : 2u) && !mc::strtol32(t[1], delay)) {
        return invalid(consumed, out.noreply ? "" : errors::kBadExptime);
      }
      return ok(consumed);
    }
    case Command::kVersion:  // memcached ignores extra tokens here
    case Command::kQuit:
    case Command::kStats:
      return ok(consumed);
    default:
      return invalid(consumed, errors::kError);
  }
}

}  // namespace memzone::protocol
