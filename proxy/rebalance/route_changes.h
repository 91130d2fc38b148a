// What a change of `routes` does to a pool's keys, for the key mover (key_mover.h): a pool
// that loses a prefix keeps the copies it holds of those keys, and they are served again if
// the prefix comes back; a pool that gains one may hold copies from an earlier time it had
// it. Both are purged after the change. Routes are compared by pool name (a pool left out of
// the topology for a while, say with no ready server, is no route change). Pure.
#pragma once

#include <string_view>
#include <vector>

#include "proxy/topology/topology.h"

namespace memzone::rebalance {

// The name of the pool `spec`'s routes send `key` to (longest prefix; without routes, the
// first pool), or "" when none.
std::string_view routedPool(const topology::TopologySpec& spec, std::string_view key);

// Whether any key goes to `pool` under one of the routes and not under the other. Exact:
// routing depends only on the longest matching prefix of the two route sets together, so it
// is enough to try each prefix of either (and "").
bool routingOfPoolChanged(const topology::TopologySpec& before, const topology::TopologySpec& now,
                          std::string_view pool);

// Whether `key` went to `pool` under some of `specs` and not under all of them: a copy of it
// on the pool's servers, written before the last of them, may be stale.
bool reroutedFor(const std::vector<const topology::TopologySpec*>& specs, std::string_view pool,
                 std::string_view key);

}  // namespace memzone::rebalance
