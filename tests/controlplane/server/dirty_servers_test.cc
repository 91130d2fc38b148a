// The controller's dirty-server set (issue 17): the union of what every proxy owes, what a
// proxy that disconnects while dirty leaves behind, and how streams hear about changes.
#include "controlplane/server/dirty_servers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "controlplane/config/controller_flags.h"

namespace memzone::controlplane {
namespace {

using namespace std::chrono_literals;

std::vector<std::string> addresses(const DirtyServers& d) {
  auto m = d.message();
  return {m->dirty().addresses().begin(), m->dirty().addresses().end()};
}

TEST(DirtyServers, UnitesWhatEveryProxyOwes) {
  DirtyServers d(60s);
  EXPECT_TRUE(addresses(d).empty());
  EXPECT_TRUE(d.message()->version().empty());  // never mistaken for a topology
  d.report("p1", 1, {"a:1"});
  d.report("p2", 2, {"a:1", "b:1"});
  EXPECT_EQ(addresses(d), (std::vector<std::string>{"a:1", "b:1"}));
  d.report("p2", 2, {});  // p2 replayed everything: a:1 stays, p1 still owes it
  EXPECT_EQ(addresses(d), std::vector<std::string>{"a:1"});
  d.report("p1", 1, {});
  EXPECT_TRUE(addresses(d).empty());
}

TEST(DirtyServers, GenerationGrowsOnlyWhenTheSetChanges) {
  DirtyServers d(60s);
  d.report("p1", 1, {"a:1"});
  uint64_t g = d.message()->dirty().generation();
  d.report("p1", 1, {"a:1"});  // the same report again (every message carries it)
  d.report("p2", 2, {"a:1"});  // another proxy, same server: the union is unchanged
  EXPECT_EQ(d.message()->dirty().generation(), g);
  d.report("p2", 2, {"b:1"});
  EXPECT_GT(d.message()->dirty().generation(), g);
}

TEST(DirtyServers, AProxyThatDisconnectsWhileDirtyKeepsItsServersDirtyForTheRetention) {
  DirtyServers d(60s);
  d.report("p1", 1, {"a:1"});
  d.disconnected("p1", 1);
  d.expire(DirtyServers::Clock::now());
  EXPECT_EQ(addresses(d), std::vector<std::string>{"a:1"});  // not yet
  d.expire(DirtyServers::Clock::now() + 61s);
  EXPECT_TRUE(addresses(d).empty());
}

TEST(DirtyServers, WhatTheLastControllerHeldDirtyStaysUntilTheGraceEnds) {
  // A restarted controller: proxy p2 comes back first and says b:1 was dirty; p1, which owes
  // it, is not back. Its own reports (clean or not) do not end what p2 said, the grace does.
  DirtyServers d(60s);
  auto until = DirtyServers::Clock::now() + 10s;
  d.inherit("p2", {"b:1"}, until);
  EXPECT_EQ(addresses(d), std::vector<std::string>{"b:1"});
  d.report("p2", 2, {});
  d.expire(DirtyServers::Clock::now());
  EXPECT_EQ(addresses(d), std::vector<std::string>{"b:1"});
  d.expire(until + 1ms);
  EXPECT_TRUE(addresses(d).empty());
  d.inherit("p2", {"b:1"}, DirtyServers::Clock::now() - 1s);  // grace over: ignored
  EXPECT_TRUE(addresses(d).empty());
}

TEST(DirtyServers, AProxyThatComesBackReportsForItself) {
  DirtyServers d(60s);
  d.report("p1", 1, {"a:1"});
  d.disconnected("p1", 1);
  d.report("p1", 7, {});  // reconnected (stream 7) and has replayed meanwhile
  EXPECT_TRUE(addresses(d).empty());
  d.report("p1", 7, {"b:1"});
  d.disconnected("p1", 1);  // the old stream's late end does not retain the new report
  d.expire(DirtyServers::Clock::now() + 61s);
  EXPECT_EQ(addresses(d), std::vector<std::string>{"b:1"});  // still connected: kept
}

TEST(DirtyServers, AProxyThatDisconnectsCleanLeavesNothing) {
  DirtyServers d(60s);
  d.report("p1", 1, {});
  d.disconnected("p1", 1);
  EXPECT_TRUE(addresses(d).empty());
  EXPECT_TRUE(d.local().empty());
}

TEST(DirtyServers, OtherReplicasSetsAreUnitedButNotReportedAsLocal) {
  DirtyServers d(60s);
  d.report("p1", 1, {"a:1"});
  d.setPeers({"c:1"});
  EXPECT_EQ(addresses(d), (std::vector<std::string>{"a:1", "c:1"}));
  EXPECT_EQ(d.local(), std::set<std::string>{"a:1"});  // no echo between replicas
}

uint64_t confirmed(const DirtyServers& d) { return d.message()->dirty().confirmed_generation(); }
uint64_t generation(const DirtyServers& d) { return d.message()->dirty().generation(); }

TEST(DirtyServers, ConfirmedOnceEveryAttachedStreamAppliedTheGeneration) {
  DirtyServers d(60s);
  d.attach(1);
  d.attach(2);
  d.report("p1", 1, {"a:1"});
  uint64_t g = generation(d);
  EXPECT_LT(confirmed(d), g);
  d.applied(1, g);
  EXPECT_LT(confirmed(d), g);  // proxy 2 may still read a:1
  d.applied(2, g);
  EXPECT_EQ(confirmed(d), g);
}

TEST(DirtyServers, AStreamThatEndsNoLongerHoldsConfirmationBack) {
  DirtyServers d(60s);
  d.attach(1);
  d.attach(2);
  d.report("p1", 1, {"a:1"});
  d.applied(1, generation(d));
  d.detach(2);  // proxy 2 went away without applying: it reads nothing any more
  EXPECT_EQ(confirmed(d), generation(d));
}

TEST(DirtyServers, ANewStreamWithdrawsConfirmationUntilItApplies) {
  DirtyServers d(60s);
  d.attach(1);
  d.report("p1", 1, {"a:1"});
  d.applied(1, generation(d));
  ASSERT_EQ(confirmed(d), generation(d));
  d.attach(3);  // has not seen the set: it may read a:1
  EXPECT_LT(confirmed(d), generation(d));
  d.applied(3, generation(d));
  EXPECT_EQ(confirmed(d), generation(d));
}

// Issue 24: replicas stream their local sets to each other (ReplicaService).
TEST(DirtyServers, AStreamedReplicaSetReplacesWhatItsLeaseSaid) {
  DirtyServers d(60s);
  d.setLeasePeers({{"r2", {"old:1"}}, {"r3", {"c:1"}}});
  EXPECT_EQ(addresses(d), (std::vector<std::string>{"c:1", "old:1"}));
  d.streamPeer("r2", 7, {"b:1"});  // r2's own word, fresher than its Lease
  EXPECT_EQ(addresses(d), (std::vector<std::string>{"b:1", "c:1"}));
  EXPECT_TRUE(d.local().empty());  // never echoed back as ours
  d.dropStreamPeer("r2");          // the stream ended: its Lease counts again
  EXPECT_EQ(addresses(d), (std::vector<std::string>{"c:1", "old:1"}));
}

TEST(DirtyServers, AReplicaIsAnsweredOnceEveryProxyHereAppliedItsSet) {
  DirtyServers d(60s);
  d.attach(1);
  d.applied(1, generation(d));
  d.streamPeer("r2", 5, {"b:1"});
  EXPECT_EQ(d.appliedFor("r2"), 0u);  // proxy 1 may still read b:1
  d.applied(1, generation(d));
  EXPECT_EQ(d.appliedFor("r2"), 5u);
  d.streamPeer("r2", 6, {"b:1"});  // same set, newer generation: nothing new to apply
  EXPECT_EQ(d.appliedFor("r2"), 6u);
  EXPECT_EQ(d.appliedFor("r3"), 0u);  // not streaming here
}

TEST(DirtyServers, AReplicaWeStreamToHoldsConfirmationBackUntilItAnswers) {
  DirtyServers d(60s);
  d.attach(1);
  d.linkPeer("r2");
  d.report("p1", 1, {"a:1"});
  uint64_t g = generation(d);
  d.applied(1, g);
  EXPECT_LT(confirmed(d), g);  // r2's proxies may still read a:1
  d.peerApplied("r2", g);
  EXPECT_EQ(confirmed(d), g);
  d.report("p1", 1, {"a:1", "b:1"});
  d.applied(1, generation(d));
  EXPECT_LT(confirmed(d), generation(d));
  d.unlinkPeer("r2");  // the stream ended: it holds nothing back
  EXPECT_EQ(confirmed(d), generation(d));
}

TEST(DirtyServers, AppliedBeyondTheCurrentGenerationIsIgnored) {
  DirtyServers d(60s);
  d.attach(1);
  d.attach(2);
  d.report("p1", 1, {"a:1"});
  d.applied(1, 1000);  // a generation of another controller: cannot confirm ours
  d.applied(2, generation(d));
  EXPECT_EQ(confirmed(d), generation(d));
}

TEST(DirtyServers, SinceIsWhenAnAddressLastEnteredTheSet) {
  DirtyServers d(60s);
  d.report("p1", 1, {"a:1"});
  uint64_t entered = generation(d);
  d.report("p2", 2, {"b:1"});
  auto m = d.message()->dirty();
  ASSERT_EQ(m.addresses_size(), 2);
  ASSERT_EQ(m.since_size(), 2);
  EXPECT_EQ(m.since(0), entered);        // a:1 stayed
  EXPECT_EQ(m.since(1), generation(d));  // b:1 is new
  d.report("p1", 1, {});
  d.report("p1", 1, {"a:1"});  // left and came back: since starts again
  m = d.message()->dirty();
  EXPECT_EQ(m.since(0), generation(d));
}

TEST(DirtyServers, ListenersHearOfChangesOnTheSetsOwnThread) {
  DirtyServers d(60s);
  std::atomic<int> calls{0};
  std::atomic<bool> other_thread{true};
  auto reporter = std::this_thread::get_id();
  d.subscribe([&] {
    if (std::this_thread::get_id() == reporter) other_thread = false;
    ++calls;
  });
  d.report("p1", 1, {"a:1"});
  for (int i = 0; i < 200 && calls.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(calls.load(), 1);
  EXPECT_TRUE(other_thread.load());
}

TEST(DirtyServers, RetentionEndsOnItsOwnWithoutFurtherReports) {
  DirtyServers d(50ms);
  std::atomic<int> calls{0};
  d.subscribe([&] { ++calls; });
  d.report("p1", 1, {"a:1"});
  d.disconnected("p1", 1);
  for (int i = 0; i < 300 && !addresses(d).empty(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(addresses(d).empty());
  for (int i = 0; i < 200 && calls.load() < 2; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_GE(calls.load(), 2);  // dirty, then clean again
}

TEST(DirtyRetainFlag, ADurationOrAClearError) {
  auto parse = [](std::string value) {
    return parseControllerFlags(
        {"--source", "file", "--config", "t.yaml", "--dirty-retain", value});
  };
  EXPECT_EQ(
      parseControllerFlags({"--source", "file", "--config", "t.yaml"}).options.dirty_retain_ms,
      60000u);
  EXPECT_EQ(parse("90s").options.dirty_retain_ms, 90000u);
  EXPECT_EQ(parse("0s").options.dirty_retain_ms, 0u);  // forget a gone proxy's debts at once
  EXPECT_EQ(parse("soon").error, "--dirty-retain must be a duration such as 60s or 500ms");
}

}  // namespace
}  // namespace memzone::controlplane
