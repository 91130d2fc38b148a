// route_changes.h: which pools a change of routes gives or takes keys, and which keys.
#include "proxy/rebalance/route_changes.h"

#include <gtest/gtest.h>

namespace memzone::rebalance {
namespace {

topology::TopologySpec withRoutes(std::vector<topology::RouteSpec> routes) {
  topology::TopologySpec spec;
  for (const char* name : {"main", "p2", "p3"}) spec.pools.push_back(topology::PoolSpec{name});
  spec.routes = std::move(routes);
  return spec;
}

TEST(RouteChanges, RoutesByTheLongestPrefixByPoolName) {
  auto spec = withRoutes({{"", "main"}, {"s:", "p2"}, {"s:x", "p3"}});
  EXPECT_EQ(routedPool(spec, "m:1"), "main");
  EXPECT_EQ(routedPool(spec, "s:1"), "p2");
  EXPECT_EQ(routedPool(spec, "s:x1"), "p3");
  EXPECT_EQ(routedPool(withRoutes({}), "any"), "main");          // no routes: the first pool
  EXPECT_EQ(routedPool(withRoutes({{"s:", "p2"}}), "m:1"), "");  // no route: no pool
}

TEST(RouteChanges, APoolChangesWhenItLosesOrGainsAnyKey) {
  auto before = withRoutes({{"", "main"}, {"s:", "p2"}});
  auto after = withRoutes({{"", "main"}, {"s:", "main"}});
  EXPECT_TRUE(routingOfPoolChanged(before, after, "p2"));    // loses s:
  EXPECT_TRUE(routingOfPoolChanged(before, after, "main"));  // gains s:
  EXPECT_FALSE(routingOfPoolChanged(before, after, "p3"));
  // A longer prefix carved out of a route: only the two pools concerned.
  auto carved = withRoutes({{"", "main"}, {"s:", "p2"}, {"s:x", "p3"}});
  EXPECT_TRUE(routingOfPoolChanged(before, carved, "p2"));
  EXPECT_TRUE(routingOfPoolChanged(before, carved, "p3"));
  EXPECT_FALSE(routingOfPoolChanged(before, carved, "main"));
  // The same routes written in another order: nothing changes.
  auto reordered = withRoutes({{"s:", "p2"}, {"", "main"}});
  EXPECT_FALSE(routingOfPoolChanged(before, reordered, "p2"));
  EXPECT_FALSE(routingOfPoolChanged(before, reordered, "main"));
}

TEST(RouteChanges, KeysReroutedForAPoolAreThoseNotItsThroughout) {
  auto a = withRoutes({{"", "main"}, {"s:", "p2"}});
  auto b = withRoutes({{"", "main"}, {"s:", "main"}});
  std::vector<const topology::TopologySpec*> away_and_back{&a, &b, &a};
  EXPECT_TRUE(reroutedFor(away_and_back, "p2", "s:1"));     // went away and came back
  EXPECT_TRUE(reroutedFor(away_and_back, "main", "s:1"));   // came and went
  EXPECT_FALSE(reroutedFor(away_and_back, "main", "m:1"));  // main's throughout
  EXPECT_FALSE(reroutedFor(away_and_back, "p2", "m:1"));    // never p2's
  EXPECT_FALSE(reroutedFor({&a, &a}, "p2", "s:1"));
}

}  // namespace
}  // namespace memzone::rebalance
