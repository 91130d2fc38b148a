#include "proxy/server/request_cost.h"

#include <algorithm>

namespace memzone::server {

uint64_t LineMeter::cost(std::string_view line) {
  // Space-separated tokens, as the parser splits them; the command counts too (it is a
  // token), a harmless overestimate of one key.
  for (size_t i = counted_; i < line.size(); ++i) {
    bool space = line[i] == ' ';
    tokens_ += !space && !in_token_;
    in_token_ = !space;
  }
  counted_ = std::max(counted_, line.size());
  return tokens_ * (kBytesPerKey + sizeof(std::string_view)) + 2 * uint64_t{line.size()};
}

}  // namespace memzone::server
