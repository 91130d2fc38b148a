// The state files of --state-dir: the last applied snapshot, and the one it replaced (a
// proxy restarted inside a ring change's windows keeps them).
#include "proxy/topology/state_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "memzone/v1/topology_yaml.h"

namespace memzone::topology {
namespace {

v1::TopologySnapshot snapshotWith(const std::string& address) {
  v1::TopologySnapshot snapshot;
  v1::Pool* pool = snapshot.add_pools();
  pool->set_name("main");
  v1::Zone* zone = pool->add_zones();
  zone->set_zone("a");
  v1::Backend* backend = zone->add_backends();
  backend->set_address(address);
  backend->set_port(11211);
  snapshot.set_version(v1::snapshotVersion(snapshot));
  return snapshot;
}

class StateFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char name[] = "/tmp/memzone-state-XXXXXX";
    ASSERT_NE(::mkdtemp(name), nullptr);
    dir_ = name;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(StateFileTest, ANewVersionKeepsTheOneItReplaces) {
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2");
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, one), "");
  EXPECT_FALSE(loadPreviousSnapshot(dir_, error)) << "no switch yet";
  EXPECT_EQ(error, "");
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  auto saved = loadSnapshot(dir_, error);
  ASSERT_TRUE(saved) << error;
  EXPECT_EQ(saved->version(), two.version());
  auto previous = loadPreviousSnapshot(dir_, error);
  ASSERT_TRUE(previous) << error;
  EXPECT_EQ(previous->snapshot.version(), one.version());
  EXPECT_GE(previous->age_us, 0);
  EXPECT_LT(previous->age_us, 10'000'000);
}

TEST_F(StateFileTest, TheSameVersionAgainKeepsThePreviousAndItsAge) {
  // A restarted proxy gets the version it saved again from the controller: that is no
  // switch, and the previous one (and when the switch was) must survive it.
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2");
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, one), "");
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  auto first = loadPreviousSnapshot(dir_, error);
  ASSERT_TRUE(first) << error;
  ::usleep(20'000);
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  auto again = loadPreviousSnapshot(dir_, error);
  ASSERT_TRUE(again) << error;
  EXPECT_EQ(again->snapshot.version(), one.version());
  EXPECT_GE(again->age_us, first->age_us + 20'000);
}

TEST_F(StateFileTest, ACorruptPreviousIsReportedNotUsed) {
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.1")), "");
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.2")), "");
  std::ofstream(dir_ + "/previous-topology.pb", std::ios::binary | std::ios::trunc) << "torn";
  std::string error;
  EXPECT_FALSE(loadPreviousSnapshot(dir_, error));
  EXPECT_NE(error.find("corrupt state file"), std::string::npos) << error;
  EXPECT_TRUE(loadSnapshot(dir_, error)) << error;
}

}  // namespace
}  // namespace memzone::topology
