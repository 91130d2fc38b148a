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
  // With no routes every key goes to pool 0.
  explicit PrefixRouter(std::vector<PrefixRoute> routes);
  // The pool for `key`, or kNoPool when routes exist and none matches.
  uint32_t poolFor(std::string_view key) const;
  static constexpr uint32_t kNoPool = UINT32_MAX;

 private:
  std::vector<PrefixRoute> routes_;  // longest prefix first
};

}  // namespace memzone::routing
