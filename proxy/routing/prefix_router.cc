#include "proxy/routing/prefix_router.h"

#include <algorithm>

namespace memzone::routing {

PrefixRouter::PrefixRouter(std::vector<PrefixRoute> routes, bool has_pools)
    : routes_(std::move(routes)), has_pools_(has_pools) {
  std::stable_sort(routes_.begin(), routes_.end(), [](const PrefixRoute& a, const PrefixRoute& b) {
    return a.prefix.size() > b.prefix.size();
  });
}

uint32_t PrefixRouter::poolFor(std::string_view key) const {
  if (routes_.empty()) return has_pools_ ? 0 : kNoPool;
  for (const auto& route : routes_) {
    if (key.starts_with(route.prefix)) return route.pool;
  }
  return kNoPool;
}

}  // namespace memzone::routing
