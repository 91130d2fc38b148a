#include "proxy/protocol/client_reply.h"

#include <charconv>
#include <cstring>

#include "proxy/protocol/text_commands.h"

namespace memzone::protocol {
namespace {

void appendLine(std::string_view line, ByteBuffer& out) {
  out.append(line);
  out.append("\r\n");
}

void appendText(const ClientForm& form, const BackendReply& r, ByteBuffer& out) {
  if (isRetrieval(form.command)) {
    if (r.code != ReplyCode::kHit) {
      out.append("END\r\n");
      return;
    }
    appendValueBlock(form.key, r, form.command == Command::kGets || form.command == Command::kGats,
                     out, "\r\nEND\r\n");
    return;
  }
  if (const TextCommand* row = textCommand(form.command)) {
    const TextCommand& t = *row;
    switch (r.code) {
      case ReplyCode::kHit:
        out.append(r.value);  // incr/decr
        out.append("\r\n");
        return;
      case ReplyCode::kOk:
        out.append(t.hd);
        return;
      case ReplyCode::kMiss:
        out.append(t.en);
        return;
      case ReplyCode::kNotFound:
        out.append(t.nf);
        return;
      case ReplyCode::kNotStored:
        out.append(t.ns);
        return;
      case ReplyCode::kExists:
        out.append(t.ex);
        return;
      default:
        return;
    }
  }
}

// The client's flags in order, each replaced by what memcached prints for it: its own opaque,
// its key, or the backend's return flag of the same letter (the backend printed those in the
// same order, since the proxy sent the client's flags in the client's order).
void appendMetaFlags(const ClientForm& form, const BackendReply& r, ByteBuffer& out) {
  std::string_view client = form.meta_flags;
  std::string_view backend = r.flags;
  bool base64 = false;
  for (std::string_view rest = client; !rest.empty();) {
    size_t sp = rest.find(' ');
    std::string_view token = rest.substr(0, sp);
    if (!token.empty() && token[0] == 'b') base64 = true;
    rest.remove_prefix(sp == std::string_view::npos ? rest.size() : sp + 1);
  }
  while (!client.empty()) {
    size_t sp = client.find(' ');
    std::string_view token = client.substr(0, sp);
    client.remove_prefix(sp == std::string_view::npos ? client.size() : sp + 1);
    if (token.empty()) continue;
    if (token[0] == 'O') {
      out.append(' ');
      out.append(token);
    } else if (token[0] == 'k') {
      out.append(" k");
      out.append(form.key);
      if (base64) out.append(" b");
    } else if (!backend.empty() && backend[0] == token[0]) {
      size_t bsp = backend.find(' ');
      std::string_view flag = bsp == std::string_view::npos ? backend : backend.substr(0, bsp);
      out.append(' ');
      out.append(flag);
      backend.remove_prefix(bsp == std::string_view::npos ? backend.size() : bsp + 1);
    }
  }
  if (!backend.empty()) {  // nothing memcached 1.6.18 prints, but never dropped silently
    out.append(' ');
    out.append(backend);
  }
  if (!r.trailer.empty()) {
    out.append(' ');
    out.append(r.trailer);
  }
}

void appendMeta(const ClientForm& form, const BackendReply& r, ByteBuffer& out) {
  if (form.command == Command::kMetaDebug) {
    if (r.code == ReplyCode::kMetaDebug) {
      out.append("ME ");
      out.append(form.key);
      appendLine(r.line, out);
    } else {
      out.append("EN\r\n");
    }
    return;
  }
  out.append(r.head);
  if (r.has_value) {
    char digits[24];
    int n = 0;
    size_t v = r.value.size();
    do {
      digits[sizeof(digits) - 1 - n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    out.append(' ');
    out.append(std::string_view(digits + sizeof(digits) - n, static_cast<size_t>(n)));
  }
  appendMetaFlags(form, r, out);
  out.append("\r\n");
  if (r.has_value) {
    out.append(r.value);
    out.append("\r\n");
  }
}

}  // namespace

void appendClientReply(const ClientForm& form, const BackendReply& reply, ByteBuffer& out) {
  if (isErrorCode(reply.code)) {
    appendLine(reply.line, out);
  } else if (isMeta(form.command)) {
    appendMeta(form, reply, out);
  } else if (form.command == Command::kFlushAll) {
    out.append("OK\r\n");
  } else {
    appendText(form, reply, out);
  }
}

void appendValueBlock(std::string_view key, const BackendReply& reply, bool with_cas,
                      ByteBuffer& out, std::string_view tail) {
  if (reply.code != ReplyCode::kHit) return;
  // One write into the buffer: "VALUE <key> <flags> <bytes>[ <cas>]\r\n<data>" and `tail`.
  std::string_view flags = "0";
  std::string_view cas;
  findReturnFlag(reply.flags, 'f', flags);
  if (with_cas) findReturnFlag(reply.flags, 'c', cas);
  char digits[24];
  size_t n = static_cast<size_t>(
      std::to_chars(digits, digits + sizeof(digits), reply.value.size()).ptr - digits);
  const size_t len = 6 + key.size() + 1 + flags.size() + 1 + n +
                     (cas.empty() ? 0 : 1 + cas.size()) + 2 + reply.value.size() + tail.size();
  char* p = out.prepare(len);
  auto put = [&p](std::string_view bytes) {
    std::memcpy(p, bytes.data(), bytes.size());
    p += bytes.size();
  };
  put("VALUE ");
  put(key);
  *p++ = ' ';
  put(flags);
  *p++ = ' ';
  put(std::string_view(digits, n));
  if (!cas.empty()) {
    *p++ = ' ';
    put(cas);
  }
  put("\r\n");
  put(reply.value);
  put(tail);
  out.commit(len);
}

}  // namespace memzone::protocol
