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

TEST(ServerBoard, OwedAddressesAreThoseSomeWorkerOwes) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  EXPECT_TRUE(board.owedAddresses(0).empty());
  a->owing.fetch_add(1);
  a->owing.fetch_add(1);  // two workers
  EXPECT_EQ(board.owedAddresses(0), std::vector<std::string>{"a:1"});
  a->owing.fetch_sub(1);
  EXPECT_EQ(board.owedAddresses(0), std::vector<std::string>{"a:1"});  // one still owes
  a->owing.fetch_sub(1);
  EXPECT_TRUE(board.owedAddresses(0).empty());
}

TEST(ServerBoard, AnOverflowHoldIsOwedUntilItEnds) {
  // The keys were dropped: the server may hold stale values for everyone, not just us.
  ServerBoard board;
  auto a = board.stateFor("a:1");
  a->distrusted_until_us.store(5'000'000);
  EXPECT_EQ(board.owedAddresses(4'999'999), std::vector<std::string>{"a:1"});
  EXPECT_TRUE(board.owedAddresses(5'000'000).empty());
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
  board.setDirty({"b:1", "a:1"});  // unsorted on the wire is fine
  auto a = board.stateFor("a:1");
  auto c = board.stateFor("c:1");
  EXPECT_TRUE(a->dirty.load());
  EXPECT_FALSE(c->dirty.load());
}

TEST(ServerBoard, ADirtyServerIsConfirmedOnceEveryProxyAppliedASetHoldingIt) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  board.setDirty({"a:1"}, 5, 4);  // a:1 dirty since 5; every proxy has applied 4
  EXPECT_TRUE(a->dirty.load());
  EXPECT_FALSE(a->dirty_confirmed.load());
  EXPECT_TRUE(a->controller->coordinated.load());
  board.setDirty({"a:1", "b:1"}, 6, 5);  // a:1 since 5 is confirmed; b:1 since 6 is not
  EXPECT_TRUE(a->dirty_confirmed.load());
  EXPECT_FALSE(b->dirty_confirmed.load());
  board.setDirty({"b:1"}, 7, 7);
  EXPECT_FALSE(a->dirty_confirmed.load());
  EXPECT_TRUE(b->dirty_confirmed.load());
  board.setDirty({"a:1", "b:1"}, 8, 7);  // a:1 dirty again: since 8, not confirmed yet
  EXPECT_FALSE(a->dirty_confirmed.load());
  board.controllerLost(6000, 0);  // no confirmation without a controller; nothing to wait for
  EXPECT_FALSE(b->dirty_confirmed.load());
  EXPECT_FALSE(b->controller->coordinated.load());
}

TEST(ServerBoard, DirtyListFromTheControllerReplacesThePreviousOne) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  board.setDirty({"a:1"});
  EXPECT_TRUE(a->dirty.load());
  EXPECT_FALSE(b->dirty.load());
  board.setDirty({"b:1"});
  EXPECT_FALSE(a->dirty.load());
  EXPECT_TRUE(b->dirty.load());
}

TEST(ServerBoard, LosingTheControllerWhileDirtyFallsBackToTheTimeHold) {
  ServerBoard board;
  auto a = board.stateFor("a:1");
  auto b = board.stateFor("b:1");
  board.setDirty({"a:1"});
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
