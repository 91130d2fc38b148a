// The controller's snapshot cache: one shared copy per zone and publication, and for a proxy
// that serves nothing yet, the switches published recently (for their windows).
#include "controlplane/server/snapshot_cache.h"

#include <gtest/gtest.h>

#include <string>

#include "memzone/v1/topology_yaml.h"

namespace memzone::controlplane {
namespace {

v1::TopologySnapshot snapshotWith(const std::string& address) {
  v1::TopologySnapshot snapshot;
  v1::Zone* zone = snapshot.add_pools()->add_zones();
  zone->set_zone("a");
  v1::Backend* backend = zone->add_backends();
  backend->set_address(address);
  backend->set_port(11211);
  snapshot.set_version(v1::snapshotVersion(snapshot));
  return snapshot;
}

TEST(SnapshotCache, ANewProxyHearsOfTheRecentSwitchesOldestFirst) {
  SnapshotCache cache;
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2"),
                       three = snapshotWith("10.0.0.3");
  ASSERT_TRUE(cache.publish(one));
  EXPECT_EQ(cache.forNewProxy("a")->recent_size(), 0);  // no switch yet
  ASSERT_TRUE(cache.publish(two));
  ASSERT_TRUE(cache.publish(three));
  auto fresh = cache.forNewProxy("a");
  ASSERT_EQ(fresh->recent_size(), 2);
  EXPECT_EQ(fresh->version(), three.version());
  EXPECT_EQ(fresh->proxy_zone(), "a");
  EXPECT_EQ(fresh->recent(0).snapshot().version(), one.version());
  EXPECT_EQ(fresh->recent(1).snapshot().version(), two.version());
  EXPECT_GE(fresh->recent(0).replaced_ms_ago(), fresh->recent(1).replaced_ms_ago());
  EXPECT_LT(fresh->recent(0).replaced_ms_ago(), 10'000u);
  // Not part of the topology: the version is the same with or without them, and proxies that
  // serve a version get the shared copy without them.
  EXPECT_EQ(v1::snapshotVersion(*fresh), three.version());
  EXPECT_EQ(cache.forZone("a")->recent_size(), 0);
}

TEST(SnapshotCache, RepublishingAVersionIsNoSwitch) {
  SnapshotCache cache;
  ASSERT_TRUE(cache.publish(snapshotWith("10.0.0.1")));
  ASSERT_TRUE(cache.publish(snapshotWith("10.0.0.2")));
  EXPECT_FALSE(cache.publish(snapshotWith("10.0.0.2")));
  EXPECT_EQ(cache.forNewProxy("a")->recent_size(), 1);
}

TEST(SnapshotCache, AtMostTheLastEightSwitches) {
  SnapshotCache cache;
  for (int i = 1; i <= 12; ++i)
    ASSERT_TRUE(cache.publish(snapshotWith("10.0.0." + std::to_string(i))));
  auto fresh = cache.forNewProxy("b");
  ASSERT_EQ(fresh->recent_size(), 8);
  EXPECT_EQ(fresh->recent(0).snapshot().version(), snapshotWith("10.0.0.4").version());
  EXPECT_EQ(fresh->recent(7).snapshot().version(), snapshotWith("10.0.0.11").version());
}

}  // namespace
}  // namespace memzone::controlplane
