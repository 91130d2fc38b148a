#include "proxy/routing/prefix_router.h"

#include <algorithm>

namespace memzone::routing {

PrefixRouter::PrefixRouter(std::vector<PrefixRoute> routes) : routes_(std::move(routes)) {
  std::stable_sort(routes_.begin(), routes_.end(), [](const PrefixRoute& a, const PrefixRoute& b) {
    return a.prefix.size() > b.prefix.size();
  });
}

uint32_t PrefixRouter::poolFor(std::string_view key) const {
  if (routes_.empty()) return 0;
  for (const auto& route : routes_) {
    if (key.starts_with(route.prefix)) return route.pool;
  }
  return kNoPool;
}

}  // namespace memzone::routing
