#include "proxy/rebalance/metadump.h"

#include <charconv>

#include "proxy/protocol/wire_key.h"

namespace memzone::rebalance {
namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes `text` into `out`; false on a malformed escape.
bool urlDecode(std::string_view text, std::string& out) {
  out.clear();
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return false;
    int hi = hexValue(text[i + 1]), lo = hexValue(text[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

bool parseNumber(std::string_view text, uint64_t& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

}  // namespace

DumpLine parseDumpLine(std::string_view line, DumpedItem& item) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line == "END") return DumpLine::kEnd;
  if (line.substr(0, 4) != "key=") return DumpLine::kError;
  bool have_key = false, have_cas = false;
  std::string_view encoded;
  item.size = 0;
  while (!line.empty()) {
    size_t space = line.find(' ');
    std::string_view field = line.substr(0, space);
    line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    size_t eq = field.find('=');
    if (eq == std::string_view::npos) return DumpLine::kError;
    std::string_view name = field.substr(0, eq), value = field.substr(eq + 1);
    if (name == "key") {
      encoded = value;
      have_key = true;
    } else if (name == "cas") {
      if (!parseNumber(value, item.cas)) return DumpLine::kError;
      have_cas = true;
    } else if (name == "size") {
      if (!parseNumber(value, item.size)) return DumpLine::kError;
    }
  }
  if (!have_key || !have_cas) return DumpLine::kError;
  if (!urlDecode(encoded, item.key)) return DumpLine::kError;
  return protocol::nameableOnMetaLine(item.key) ? DumpLine::kItem : DumpLine::kSkipped;
}

}  // namespace memzone::rebalance
