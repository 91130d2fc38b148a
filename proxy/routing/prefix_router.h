// Longest-prefix routing of keys to pools. Immutable; built with the topology.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace memzone::routing {

struct PrefixRoute {
  std::string prefix;
  uint32_t pool;
};

class PrefixRouter {
 public:
  // With no routes every key goes to pool 0 (when `has_pools`; else to none). A route's pool
  // may be kNoPool: its keys have no pool (a pool without servers).
  explicit PrefixRouter(std::vector<PrefixRoute> routes, bool has_pools = true);
  // The pool for `key`, or kNoPool when none serves it.
  uint32_t poolFor(std::string_view key) const;
  static constexpr uint32_t kNoPool = UINT32_MAX;

 private:
  std::vector<PrefixRoute> routes_;  // longest prefix first
  bool has_pools_;
};

}  // namespace memzone::routing
