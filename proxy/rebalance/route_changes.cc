#include "proxy/rebalance/route_changes.h"

#include <string>

namespace memzone::rebalance {

std::string_view routedPool(const topology::TopologySpec& spec, std::string_view key) {
  if (spec.routes.empty()) return spec.pools.empty() ? std::string_view() : spec.pools[0].name;
  const topology::RouteSpec* best = nullptr;
  for (const topology::RouteSpec& r : spec.routes) {
    if (key.starts_with(r.prefix) && (best == nullptr || r.prefix.size() > best->prefix.size())) {
      best = &r;
    }
  }
  return best != nullptr ? std::string_view(best->pool) : std::string_view();
}

bool routingOfPoolChanged(const topology::TopologySpec& before, const topology::TopologySpec& now,
                          std::string_view pool) {
  std::vector<std::string_view> probes{""};
  for (const auto* spec : {&before, &now}) {
    for (const topology::RouteSpec& r : spec->routes) probes.push_back(r.prefix);
  }
  for (std::string_view key : probes) {
    if ((routedPool(before, key) == pool) != (routedPool(now, key) == pool)) return true;
  }
  return false;
}

bool reroutedFor(const std::vector<const topology::TopologySpec*>& specs, std::string_view pool,
                 std::string_view key) {
  if (specs.empty()) return false;
  bool first = routedPool(*specs[0], key) == pool;
  for (size_t i = 1; i < specs.size(); ++i) {
    if ((routedPool(*specs[i], key) == pool) != first) return true;
  }
  return false;
}

}  // namespace memzone::rebalance
