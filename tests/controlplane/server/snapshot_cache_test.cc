// The controller's snapshot cache: one shared copy per zone and publication, and for a proxy
// that serves nothing yet or missed switches, the switches published recently (for their
// windows).
#include "controlplane/server/snapshot_cache.h"

#include <gtest/gtest.h>

#include <string>

#include "memzone/v1/topology_yaml.h"
#include "tests/common/topology_snapshots.h"

namespace memzone::controlplane {
namespace {

using testing::snapshotWith;

TEST(SnapshotCache, ANewProxyHearsOfTheRecentSwitchesOldestFirst) {
  SnapshotCache cache;
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2"),
                       three = snapshotWith("10.0.0.3");
  ASSERT_TRUE(cache.publish(one));
  EXPECT_EQ(cache.withRecent(cache.forZone("a"))->recent_size(), 0);  // no switch yet
  ASSERT_TRUE(cache.publish(two));
  ASSERT_TRUE(cache.publish(three));
  auto fresh = cache.withRecent(cache.forZone("a"));
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
  EXPECT_EQ(cache.withRecent(cache.forZone("a"))->recent_size(), 1);
}

TEST(SnapshotCache, AtMostTheLastEightSwitches) {
  SnapshotCache cache;
  for (int i = 1; i <= 12; ++i)
    ASSERT_TRUE(cache.publish(snapshotWith("10.0.0." + std::to_string(i))));
  auto fresh = cache.withRecent(cache.forZone("b"));
  ASSERT_EQ(fresh->recent_size(), 8);
  EXPECT_EQ(fresh->recent(0).snapshot().version(), snapshotWith("10.0.0.4").version());
  EXPECT_EQ(fresh->recent(7).snapshot().version(), snapshotWith("10.0.0.11").version());
}

TEST(SnapshotCache, OnlyProxiesThatMissedASwitchNeedTheRecentOnes) {
  SnapshotCache cache;
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2"),
                       three = snapshotWith("10.0.0.3");
  EXPECT_FALSE(cache.missedSwitches(""));  // nothing published
  ASSERT_TRUE(cache.publish(one));
  EXPECT_TRUE(cache.missedSwitches(""));  // a new proxy (nothing replaced yet: none to send)
  ASSERT_TRUE(cache.publish(two));
  ASSERT_TRUE(cache.publish(three));
  EXPECT_TRUE(cache.missedSwitches(""));
  EXPECT_FALSE(cache.missedSwitches(three.version()));  // up to date
  EXPECT_FALSE(cache.missedSwitches(two.version()));    // one behind: the switch is this one
  EXPECT_TRUE(cache.missedSwitches(one.version()));     // missed the switch to two
  EXPECT_TRUE(cache.missedSwitches("unknown"));
  // What a restarted controller holds back for its grace: versions it never published.
  EXPECT_TRUE(cache.published(one.version()));
  EXPECT_TRUE(cache.published(three.version()));
  EXPECT_FALSE(cache.published("unknown"));
}

TEST(SnapshotCache, ACopyOfAnOlderPublicationGetsNoRecent) {
  SnapshotCache cache;
  ASSERT_TRUE(cache.publish(snapshotWith("10.0.0.1")));
  ASSERT_TRUE(cache.publish(snapshotWith("10.0.0.2")));
  auto older = cache.forZone("a");
  ASSERT_TRUE(cache.publish(snapshotWith("10.0.0.3")));
  EXPECT_EQ(cache.withRecent(older), older);  // published meanwhile: the next send follows
}

}  // namespace
}  // namespace memzone::controlplane
