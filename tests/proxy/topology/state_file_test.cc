// The state files of --state-dir: the last applied snapshot, and the history of switches (a
// proxy restarted inside a ring change's windows keeps them).
#include "proxy/topology/state_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "memzone/v1/topology_yaml.h"
#include "tests/common/topology_snapshots.h"

namespace memzone::topology {
namespace {

using testing::snapshotWith;

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

std::vector<std::string> versions(const std::vector<PastSnapshot>& history) {
  std::vector<std::string> out;
  for (const PastSnapshot& p : history) out.push_back(p.snapshot.version());
  return out;
}

// The history's files in sequence order ("<seq>-<us>.pb").
std::vector<std::filesystem::path> entries(const std::string& dir) {
  std::vector<std::filesystem::path> out;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/history")) out.push_back(e);
  auto seq = [](const std::filesystem::path& p) {
    return std::stoull(p.filename().string().substr(0, p.filename().string().find('-')));
  };
  std::sort(out.begin(), out.end(), [&](const auto& a, const auto& b) { return seq(a) < seq(b); });
  return out;
}

TEST_F(StateFileTest, EverySwitchKeepsTheSnapshotItReplaced) {
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2"),
                       three = snapshotWith("10.0.0.3");
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, one), "");
  EXPECT_TRUE(loadHistory(dir_, error).empty()) << "no switch yet";
  EXPECT_EQ(error, "");
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  ASSERT_EQ(saveSnapshot(dir_, three), "");
  auto saved = loadSnapshot(dir_, error);
  ASSERT_TRUE(saved) << error;
  EXPECT_EQ(saved->version(), three.version());
  auto history = loadHistory(dir_, error);
  EXPECT_EQ(error, "");
  EXPECT_EQ(versions(history), (std::vector<std::string>{one.version(), two.version()}));
  ASSERT_EQ(history.size(), 2u);
  EXPECT_GE(history[0].age_us, history[1].age_us);  // oldest first
  EXPECT_GE(history[1].age_us, 0);
  EXPECT_LT(history[0].age_us, 10'000'000);
}

TEST_F(StateFileTest, TheSameVersionAgainIsNoSwitch) {
  // A restarted proxy gets the version it saved again from the controller: the history, and
  // when its switches were, must survive that.
  v1::TopologySnapshot one = snapshotWith("10.0.0.1"), two = snapshotWith("10.0.0.2");
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, one), "");
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  auto first = loadHistory(dir_, error);
  ASSERT_EQ(first.size(), 1u) << error;
  ::usleep(20'000);
  ASSERT_EQ(saveSnapshot(dir_, two), "");
  auto again = loadHistory(dir_, error);
  ASSERT_EQ(again.size(), 1u) << error;
  EXPECT_EQ(again[0].snapshot.version(), one.version());
  EXPECT_GE(again[0].age_us, first[0].age_us + 20'000);
}

TEST_F(StateFileTest, TheHistoryKeepsTheLastEightSwitches) {
  std::string error;
  for (int i = 0; i < 11; ++i) {
    ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0." + std::to_string(i + 1))), "");
  }
  auto history = loadHistory(dir_, error);
  ASSERT_EQ(history.size(), 8u) << error;
  EXPECT_EQ(history.front().snapshot.version(), snapshotWith("10.0.0.3").version());
  EXPECT_EQ(history.back().snapshot.version(), snapshotWith("10.0.0.10").version());
}

TEST_F(StateFileTest, AnUnreadableEntryDropsItAndEverythingOlder) {
  std::string error;
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0." + std::to_string(i + 1))), "");
  }
  std::ofstream(entries(dir_)[1], std::ios::binary | std::ios::trunc) << "torn";
  auto history = loadHistory(dir_, error);
  EXPECT_NE(error.find("corrupt state file"), std::string::npos) << error;
  EXPECT_EQ(versions(history), (std::vector<std::string>{snapshotWith("10.0.0.3").version()}));
  EXPECT_TRUE(loadSnapshot(dir_, error)) << error;
}

TEST_F(StateFileTest, ASwitchDatedInTheFutureIsNotTrusted) {
  // The clock was fast, or the directory was copied: a "future" switch would reopen a window
  // that ended long ago. It and what came before it are dropped; later switches are kept.
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.1")), "");
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.2")), "");
  auto entry = entries(dir_)[0];
  std::filesystem::rename(entry, entry.parent_path() / "1-99999999999999999.pb");
  EXPECT_TRUE(loadHistory(dir_, error).empty());
  EXPECT_NE(error.find("out of order"), std::string::npos) << error;
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.3")), "");
  auto history = loadHistory(dir_, error);
  EXPECT_EQ(versions(history), (std::vector<std::string>{}));  // follows the future one
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.4")), "");
  history = loadHistory(dir_, error);
  EXPECT_EQ(versions(history), (std::vector<std::string>{snapshotWith("10.0.0.3").version()}));
}

TEST_F(StateFileTest, AClockStepBackBreaksTheChainThere) {
  std::string error;
  for (int i = 1; i <= 4; ++i)
    ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0." + std::to_string(i))), "");
  // The third switch (seq 3) dated before the second: the order of the times is wrong.
  auto third = entries(dir_)[2];
  std::filesystem::rename(third, third.parent_path() / "3-1000.pb");
  auto history = loadHistory(dir_, error);
  EXPECT_TRUE(history.empty());
  EXPECT_NE(error.find("out of order"), std::string::npos) << error;
}

TEST_F(StateFileTest, SwitchesFromTheControllerAreKeptWithTheirTimes) {
  // A proxy that replayed the controller's recent switches keeps them, so a restart inside
  // their windows still has them.
  std::string error;
  std::vector<PastSnapshot> switches = {{snapshotWith("10.0.0.1"), 5'000'000},
                                        {snapshotWith("10.0.0.2"), 2'000'000}};
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.3"), &switches), "");
  auto history = loadHistory(dir_, error);
  ASSERT_EQ(history.size(), 2u) << error;
  EXPECT_EQ(history[0].snapshot.version(), snapshotWith("10.0.0.1").version());
  EXPECT_GE(history[0].age_us, 5'000'000);
  EXPECT_LT(history[0].age_us, 6'000'000);
  EXPECT_GE(history[1].age_us, 2'000'000);
  EXPECT_LT(history[1].age_us, 3'000'000);
}

TEST_F(StateFileTest, OtherFilesInTheHistoryAreNotOurs) {
  std::string error;
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.1")), "");
  ASSERT_EQ(saveSnapshot(dir_, snapshotWith("10.0.0.2")), "");
  std::ofstream(dir_ + "/history/notes.txt") << "x";
  std::ofstream(dir_ + "/history/12.pb.tmp") << "x";
  std::ofstream(dir_ + "/history/12.pb") << "x";
  std::ofstream(dir_ + "/history/99999999999999999999-99999999999999999999.pb") << "x";
  std::ofstream(dir_ + "/history/1-99999999999999999999.pb") << "x";  // no overflow, no throw
  EXPECT_EQ(loadHistory(dir_, error).size(), 1u);
  EXPECT_EQ(error, "");
}

}  // namespace
}  // namespace memzone::topology
