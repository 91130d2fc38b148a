#include "proxy/protocol/meta_value.h"

#include <charconv>

namespace memzone::protocol {

bool parseMetaValueHeader(std::string_view line, MetaValueHeader& out) {
  if (line.substr(0, 3) != "VA ") return false;
  line.remove_prefix(3);
  bool first = true;
  while (!line.empty()) {
    size_t space = line.find(' ');
    std::string_view token = line.substr(0, space);
    line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    if (first) {
      auto [p, ec] = std::from_chars(token.data(), token.data() + token.size(), out.length);
      if (ec != std::errc() || p != token.data() + token.size()) return false;
      first = false;
    } else if (token.size() > 1 && token[0] == 't') {
      out.ttl = token.substr(1);
    } else if (token.size() > 1 && token[0] == 'f') {
      out.flags = token.substr(1);
    } else if (token.size() > 1 && token[0] == 'c') {
      auto [p, ec] = std::from_chars(token.data() + 1, token.data() + token.size(), out.cas);
      if (ec != std::errc() || p != token.data() + token.size()) return false;
    }
  }
  return !first;
}

}  // namespace memzone::protocol
