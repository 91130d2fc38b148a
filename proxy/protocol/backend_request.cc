#include "proxy/protocol/backend_request.h"

#include <array>
#include <charconv>
#include <cstring>

#include "proxy/protocol/base64.h"
#include "proxy/protocol/memcached_syntax.h"
#include "proxy/protocol/text_commands.h"
#include "proxy/protocol/wire_key.h"

namespace memzone::protocol {
namespace {

template <typename T>
void appendNumber(T value, ByteBuffer& out) {
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), value);
  out.append(std::string_view(digits, static_cast<size_t>(end - digits)));
}

// Numbers go out as the digits the proxy read, never as the client's spelling of them.
void appendI32(std::string_view token, ByteBuffer& out) {
  int32_t v = 0;
  mc::strtol32(token, v);
  appendNumber(v, out);
}

void endLine(std::string_view opaque, ByteBuffer& out) {
  out.append(' ');
  out.append(opaque);
  out.append("\r\n");
}

void appendData(const Request& request, ByteBuffer& out) {
  out.append(request.data);
  out.append("\r\n");
}

// A small line builder over stack memory: a text command's meta line is at most the key (250
// bytes) and a few numbers, so it is written here and appended to the buffer at once.
class Line {
 public:
  void put(std::string_view bytes) {
    std::memcpy(p_, bytes.data(), bytes.size());
    p_ += bytes.size();
  }
  template <typename T>
  void number(T value) {
    p_ = std::to_chars(p_, end(), value).ptr;
  }
  std::string_view view() const { return {buf_, static_cast<size_t>(p_ - buf_)}; }

 private:
  char* end() { return buf_ + sizeof(buf_); }
  char buf_[512];
  char* p_ = buf_;
};

void encodeText(const TextCommand& m, const Request& r, std::string_view opaque, ByteBuffer& out,
                bool drop_cas) {
  const auto& t = r.tokens;
  const bool storage = r.length_token != 0;
  Line line;
  line.put(drop_cas && m.cas ? std::string_view("ms") : m.verb);
  line.put(" ");
  line.put(t[1]);
  if (storage) {
    line.put(" ");
    line.number(r.data.size());
  }
  line.put(m.fixed);
  if (m.flags_exptime) {
    uint32_t flags = 0;
    int32_t exptime = 0;
    mc::strtoul32(t[2], flags);
    mc::strtol32(t[3], exptime);
    line.put(" F");
    line.number(flags);
    line.put(" T");
    line.number(exptime);
  }
  if (m.cas && !drop_cas) {
    uint64_t cas = 0;
    mc::strtoull64(t[5], cas);
    line.put(" C");
    line.number(cas);
  }
  if (m.exptime_flag) {
    int32_t exptime = 0;
    mc::strtol32(t[2], exptime);
    line.put(" T");
    line.number(exptime);
  }
  if (m.delta) {
    uint64_t delta = 0;
    mc::strtoull64(t[2], delta);
    line.put(" D");
    line.number(delta);
  }
  line.put(" ");
  line.put(opaque);
  line.put("\r\n");
  out.append(line.view());
  if (storage) appendData(r, out);
}

// A client meta command: its tokens, less O (the proxy's own goes last) and k (the proxy
// writes the key into the reply), and less C for `drop_cas`. One memcached refuses for its
// O or k (metaForwardedAsWritten) goes as written, without the proxy's opaque. A quiet
// request (q) is followed by `mn`: memcached decides what quiet mode leaves unsaid, and the MN
// proves the silence.
void encodeMeta(const Request& r, std::string_view opaque, ByteBuffer& out, bool drop_cas) {
  const auto& t = r.tokens;
  out.append(t[0]);
  out.append(' ');
  out.append(t[1]);
  size_t first = firstMetaFlag(r.command);
  const bool refused = metaForwardedAsWritten(r);
  if (r.command == Command::kMetaSet) {
    out.append(' ');
    appendNumber(r.data.size(), out);
  }
  for (size_t i = first; i < t.size(); ++i) {
    char flag = t[i][0];
    if (((flag == 'O' || flag == 'k') && !refused) || (drop_cas && flag == 'C')) continue;
    out.append(' ');
    out.append(t[i]);
  }
  if (refused) {
    out.append("\r\n");
  } else {
    endLine(opaque, out);
  }
  if (r.command == Command::kMetaSet) appendData(r, out);
  if (r.quiet && !refused) out.append("mn\r\n");
}

}  // namespace

namespace {
// "00" .. "ff": two hex digits per byte (every request formats an opaque).
constexpr std::array<char, 512> makeHexPairs() {
  std::array<char, 512> t{};
  constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 256; ++i) {
    t[2 * i] = kHex[i >> 4];
    t[2 * i + 1] = kHex[i & 0xf];
  }
  return t;
}
constexpr std::array<char, 512> kHexPairs = makeHexPairs();
}  // namespace

OpaqueToken makeOpaqueToken(uint32_t opaque) {
  OpaqueToken token;
  token.bytes[0] = 'O';
  for (int i = 3; i >= 0; --i) {
    std::memcpy(token.bytes + 1 + 2 * i, &kHexPairs[2 * (opaque & 0xff)], 2);
    opaque >>= 8;
  }
  return token;
}

bool metaForwardedAsWritten(const Request& request) {
  if (!isMeta(request.command) || request.command == Command::kMetaDebug) return false;
  int opaques = 0;
  int keys = 0;
  for (size_t i = firstMetaFlag(request.command); i < request.tokens.size(); ++i) {
    const std::string_view t = request.tokens[i];
    if (t[0] == 'O' && (t.size() > mc::kMetaMaxOpaque || ++opaques > 1)) return true;
    if (t[0] == 'k' && ++keys > 1) return true;
  }
  return false;
}

size_t backendMetaTokens(const Request& request) {
  size_t n = request.tokens.size() + 1;
  for (size_t i = firstMetaFlag(request.command); i < request.tokens.size(); ++i) {
    const char flag = request.tokens[i][0];
    n -= flag == 'O' || flag == 'k';
  }
  return n;
}

std::string_view placementKey(const Request& request, std::string& scratch) {
  if (isMeta(request.command) && request.command != Command::kMetaDebug &&
      hasMetaFlag(request, 'b') && base64Decode(request.key(), scratch)) {
    return scratch;
  }
  if (request.command == Command::kMetaDebug && request.tokens.size() > 2 &&
      request.tokens[2] == "b" && base64Decode(request.key(), scratch)) {
    return scratch;
  }
  return request.key();
}

bool hasMetaFlag(const Request& request, char flag) {
  for (size_t i = firstMetaFlag(request.command); i < request.tokens.size(); ++i) {
    if (request.tokens[i][0] == flag) return true;
  }
  return false;
}

void encodeBackendRequest(const Request& request, std::string_view opaque, ByteBuffer& out) {
  switch (request.command) {
    case Command::kMetaNoop:
    case Command::kVersion:
    case Command::kVerbosity:
    case Command::kStats:
    case Command::kQuit:
    case Command::kUnknown:
      return;  // answered by the proxy, never sent
    default:
      break;
  }
  if (isRetrieval(request.command)) {
    encodeKeyRead(request.command, request.first_key == 2 ? request.tokens[1] : "", request.key(),
                  opaque, out);
  } else if (const TextCommand* m = textCommand(request.command)) {
    encodeText(*m, request, opaque, out, false);
  } else if (request.command == Command::kMetaDebug) {
    out.append("me ");
    out.append(request.tokens[1]);
    if (request.tokens.size() > 2 && request.tokens[2] == "b") out.append(" b");
    out.append("\r\n");
  } else if (request.command == Command::kFlushAll) {
    out.append("flush_all");
    // "flush_all <delay>" (noreply is the proxy's to apply)
    if (request.tokens.size() > (request.noreply ? 2u : 1u)) {
      out.append(' ');
      appendI32(request.tokens[1], out);
    }
    out.append("\r\n");
  } else {
    encodeMeta(request, opaque, out, false);
  }
}

void encodeBackendCopyWithoutCas(const Request& request, std::string_view opaque, ByteBuffer& out) {
  if (const TextCommand* m = textCommand(request.command)) {
    encodeText(*m, request, opaque, out, true);
  } else {
    encodeMeta(request, opaque, out, true);
  }
}

void encodeKeyRead(Command command, std::string_view exptime, std::string_view key,
                   std::string_view opaque, ByteBuffer& out) {
  // One write into the buffer: this runs once per key of every get.
  const bool cas = command == Command::kGets || command == Command::kGats;
  const bool touch = command == Command::kGat || command == Command::kGats;
  char ttl[16];
  size_t ttl_len = 0;
  if (touch) {
    int32_t v = 0;
    mc::strtol32(exptime, v);
    ttl_len = static_cast<size_t>(std::to_chars(ttl, ttl + sizeof(ttl), v).ptr - ttl);
  }
  const size_t len =
      3 + key.size() + 4 + (cas ? 2 : 0) + (touch ? 2 + ttl_len : 0) + 1 + opaque.size() + 2;
  char* p = out.prepare(len);
  std::memcpy(p, "mg ", 3);
  p += 3;
  std::memcpy(p, key.data(), key.size());
  p += key.size();
  std::memcpy(p, " v f", 4);
  p += 4;
  if (cas) {
    std::memcpy(p, " c", 2);
    p += 2;
  }
  if (touch) {
    std::memcpy(p, " T", 2);
    std::memcpy(p + 2, ttl, ttl_len);
    p += 2 + ttl_len;
  }
  *p++ = ' ';
  std::memcpy(p, opaque.data(), opaque.size());
  p += opaque.size();
  std::memcpy(p, "\r\n", 2);
  out.commit(len);
}

void encodeDelete(std::string_view wire_key, std::string_view opaque, ByteBuffer& out) {
  out.append("md ");
  out.append(wire_key);
  endLine(opaque, out);
}

void encodeFetchForCopy(std::string_view wire_key, std::string_view opaque, ByteBuffer& out) {
  out.append("mg ");
  out.append(wire_key);
  out.append(" v t f c");
  endLine(opaque, out);
}

void encodeCasRead(std::string_view wire_key, std::string_view opaque, ByteBuffer& out) {
  out.append("mg ");
  out.append(wire_key);
  out.append(" c");
  endLine(opaque, out);
}

void encodeDeleteIfCas(std::string_view wire_key, std::string_view cas, std::string_view opaque,
                       ByteBuffer& out) {
  out.append("md ");
  out.append(wire_key);
  out.append(" C");
  out.append(cas);
  endLine(opaque, out);
}

void encodeAddCopyHead(std::string_view wire_key, size_t length, std::string_view ttl,
                       std::string_view flags, std::string_view opaque, ByteBuffer& out) {
  // ms takes its flags after the length: a `b` key's flag goes there, not after the key.
  WireKeyParts key = splitWireKey(wire_key);
  out.append("ms ");
  out.append(key.token);
  out.append(' ');
  appendNumber(length, out);
  if (key.base64) out.append(" b");
  out.append(" T");
  out.append(ttl == "-1" ? std::string_view("0") : ttl);  // T0: no expiry
  out.append(" F");
  out.append(flags);
  out.append(" ME c");
  endLine(opaque, out);
}

}  // namespace memzone::protocol
