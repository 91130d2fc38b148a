// The proxy's shared view of its servers (issue 17) and the durable invalidation log.
#include "proxy/backend/server_board.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "proxy/backend/invalidation_log.h"
#include "proxy/event/event_base.h"

namespace memzone::backend {
namespace {

TEST(ServerBoard, OneStatePerAddressSharedByEveryWorker) {
  ServerBoard board;
  auto a1 = board.stateFor("127.0.0.1:1");
  auto a2 = board.stateFor("127.0.0.1:1");
  auto b = board.stateFor("127.0.0.1:2");
  EXPECT_EQ(a1.get(), a2.get());
  EXPECT_NE(a1.get(), b.get());
}

std::vector<std::string> owedAddresses(ServerBoard& board, int64_t now_us) {
  std::vector<std::string> out;
  for (const auto& o : board.owedServers(now_us)) out.push_back(o.address);
  return out;
}

TEST(ServerBoard, OwedServersAreThoseSomeWorkerOwes) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  EXPECT_TRUE(owedAddresses(board, 0).empty());
  a->owe_epoch.fetch_add(1);
  a->owing.fetch_add(1);
  a->owe_epoch.fetch_add(1);
  a->owing.fetch_add(1);  // two workers
  auto owed = board.owedServers(0);
  ASSERT_EQ(owed.size(), 1u);
  EXPECT_EQ(owed[0].address, "a:1");
  EXPECT_EQ(owed[0].epoch, 2u);
  a->owing.fetch_sub(1);
  EXPECT_EQ(owedAddresses(board, 0), std::vector<std::string>{"a:1"});  // one still owes
  a->owing.fetch_sub(1);
  EXPECT_TRUE(owedAddresses(board, 0).empty());
}

TEST(ServerBoard, AnOverflowHoldIsOwedUntilItEnds) {
  // The keys were dropped: the server may hold stale values for everyone, not just us.
  ServerBoard board;
  auto a = board.stateFor("a:1");
  a->distrusted_until_us.store(5'000'000);
  EXPECT_EQ(owedAddresses(board, 4'999'999), std::vector<std::string>{"a:1"});
  EXPECT_TRUE(owedAddresses(board, 5'000'000).empty());
}

TEST(ServerBoard, OwedChangesReachTheListener) {
  ServerBoard board;
  int calls = 0;
  board.setOwedListener([&calls] { ++calls; });
  auto a = board.stateFor("a:1");
  ASSERT_TRUE(a->controller);
  a->controller->notify();
  EXPECT_EQ(calls, 1);
}

TEST(ServerBoard, AServerLearnedAfterTheDirtyListStartsDirty) {
  ServerBoard board;
  board.setDirty({{"b:1", 1}, {"a:1", 1}}, 0);
  auto a = board.stateFor("a:1");
  auto c = board.stateFor("c:1");
  EXPECT_TRUE(a->dirty.load());
  EXPECT_FALSE(c->dirty.load());
}

TEST(ServerBoard, AReportedDebtIsConfirmedOnceEveryProxyAppliedASetHoldingIt) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  a->owe_epoch.store(3);
  a->owing.store(1);
  board.setDirty({{"a:1", 5}}, 4);  // a:1 dirty since 5; every proxy has applied 4
  board.confirm({{"a:1", 3}});
  EXPECT_EQ(a->confirmed_epoch.load(), 0u);
  EXPECT_TRUE(a->controller->coordinated.load());
  board.setDirty({{"a:1", 5}}, 5);  // now every proxy has a set holding a:1
  board.confirm({{"a:1", 3}});
  EXPECT_EQ(a->confirmed_epoch.load(), 3u);
  board.confirm({{"a:1", 2}});  // an older report confirms nothing newer away
  EXPECT_EQ(a->confirmed_epoch.load(), 3u);
  board.controllerLost(6000, 0);  // no confirmation without a controller; nothing to wait for
  EXPECT_EQ(a->confirmed_epoch.load(), 0u);
  EXPECT_FALSE(a->controller->coordinated.load());
}

TEST(ServerBoard, ASkippedGenerationDoesNotConfirmEarly) {
  // a:1 left the set at 6 and came back at 7; this proxy saw 5 and 7 only. Every proxy has
  // applied 6 (where a:1 was clean and readable): not confirmed.
  ServerBoard board;
  auto a = board.stateFor("a:1");
  board.setDirty({{"a:1", 7}}, 6);
  board.confirm({{"a:1", 1}});
  EXPECT_EQ(a->confirmed_epoch.load(), 0u);
}

TEST(ServerBoard, ABuildingReportWithdrawsTheConfirmationOfWhatItFindsClean) {
  // The report about to say "clean" may reach the controller before a debt that starts now:
  // no write may rely on the old confirmation from here on.
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  a->confirmed_epoch.store(4);
  b->confirmed_epoch.store(2);
  b->owe_epoch.store(2);
  b->owing.store(1);  // b still owed: its confirmation stays
  board.owedServers(0);
  EXPECT_EQ(a->confirmed_epoch.load(), 0u);
  EXPECT_EQ(b->confirmed_epoch.load(), 2u);
}

TEST(ServerBoard, AProxyOnTheControllerReadsNothingReplicatedBeforeTheFirstSet) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  board.awaitDirtySet(5'000'000);
  auto b = board.stateFor("b:1");  // learned from the state file's topology meanwhile
  EXPECT_TRUE(a->dirty.load());
  EXPECT_TRUE(b->dirty.load());
  board.setDirty({{"b:1", 3}}, 3);  // the first set: only b:1 is owed
  EXPECT_FALSE(a->dirty.load());
  EXPECT_TRUE(b->dirty.load());
}

TEST(ServerBoard, NoFirstSetWithinTheBoundFallsBackToTheTimeHold) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  board.awaitDirtySet(5'000'000);
  board.expireAwaiting(4'999'999);
  EXPECT_TRUE(a->dirty.load());
  board.expireAwaiting(5'000'000);
  EXPECT_FALSE(a->dirty.load());
}

TEST(ServerBoard, DirtyListFromTheControllerReplacesThePreviousOne) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  board.setDirty({{"a:1", 1}}, 0);
  EXPECT_TRUE(a->dirty.load());
  EXPECT_FALSE(b->dirty.load());
  board.setDirty({{"b:1", 2}}, 0);
  EXPECT_FALSE(a->dirty.load());
  EXPECT_TRUE(b->dirty.load());
}

TEST(ServerBoard, LosingTheControllerWhileDirtyFallsBackToTheTimeHold) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  board.setDirty({{"a:1", 1}}, 0);
  board.controllerLost(6000, 1'000'000);
  EXPECT_FALSE(a->dirty.load());
  EXPECT_EQ(a->readable_at_us.load(), 1'000'000 + 6'000'000);  // held, not read at once
  EXPECT_EQ(b->readable_at_us.load(), 0);                      // was clean: untouched
}

class InvalidationLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/memzone-invlog-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
  event::EventBase base_;
};

TEST_F(InvalidationLogTest, OwedKeysSurviveAndClearedOnesDoNot) {
  {
    InvalidationLog log(base_, dir_, 0);
    ASSERT_TRUE(log.ok());
    log.queued("a:1", "k1");
    log.queued("a:1", "k2");
    log.queued("b:1", "x");
    log.cleared("b:1");  // b's queue emptied
    log.queued("b:1", "y");
    log.overflowed("c:1");
  }
  {
    InvalidationLog log(base_, dir_, 1);  // another worker's file counts too
    log.queued("a:1", "k2");              // duplicate across files
    log.queued("a:1", "k3");
  }
  auto owed = InvalidationLog::load(dir_);
  std::vector<std::string> a = owed["a:1"].keys;  // files are read in directory order
  std::sort(a.begin(), a.end());
  EXPECT_EQ(a, (std::vector<std::string>{"k1", "k2", "k3"}));
  EXPECT_EQ(owed["b:1"].keys, std::vector<std::string>{"y"});
  EXPECT_TRUE(owed["c:1"].overflowed);
  // Set aside until the new logs are written, then dropped.
  EXPECT_FALSE(InvalidationLog::load(dir_).empty());
  InvalidationLog::dropOld(dir_);
  EXPECT_TRUE(InvalidationLog::load(dir_).empty());
}

TEST_F(InvalidationLogTest, ATornLastRecordIsIgnored) {
  {
    InvalidationLog log(base_, dir_, 0);
    log.queued("a:1", "whole");
    log.queued("a:1", "torn-away");
  }
  std::string path = dir_ + "/invalidations-0.log";
  auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 3);  // a crash mid-write
  auto owed = InvalidationLog::load(dir_);
  EXPECT_EQ(owed["a:1"].keys, std::vector<std::string>{"whole"});
}

TEST_F(InvalidationLogTest, RewriteKeepsOnlyWhatIsOwedNow) {
  InvalidationLog log(base_, dir_, 0);
  for (int i = 0; i < 100; ++i) log.queued("a:1", "k" + std::to_string(i));
  std::map<std::string, OwedDeletes> now;
  now["a:1"].keys = {"k99"};
  log.rewrite(now);
  log.queued("b:1", "z");  // appends go to the new file
  auto owed = InvalidationLog::load(dir_);
  EXPECT_EQ(owed["a:1"].keys, std::vector<std::string>{"k99"});
  EXPECT_EQ(owed["b:1"].keys, std::vector<std::string>{"z"});
}

}  // namespace
}  // namespace memzone::backend
