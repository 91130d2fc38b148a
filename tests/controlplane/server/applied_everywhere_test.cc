// What the controller tells proxies every proxy has applied (issue 23, ring skew): the word a
// proxy's key mover waits for before moving keys off their old owners.
#include "controlplane/server/applied_everywhere.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/config/controller_flags.h"

namespace memzone::controlplane {
namespace {

using namespace std::chrono_literals;

TEST(AppliedEverywhere, TheVersionOnlyOnceEveryProxyAppliedIt) {
  AppliedEverywhere e;
  EXPECT_EQ(e.version(), "");  // nobody counted
  e.attach(1, "v1");
  e.attach(2, "v1");
  EXPECT_EQ(e.version(), "v1");
  e.applied(1, "v2");  // proxy 1 ACKed v2, proxy 2 not yet: they differ
  EXPECT_EQ(e.version(), "");
  e.applied(2, "v2");
  EXPECT_EQ(e.version(), "v2");
}

TEST(AppliedEverywhere, NoWordWhileAProxyNacks) {
  AppliedEverywhere e;
  e.attach(1, "v1");
  e.attach(2, "v1");
  e.applied(1, "v2");
  // Proxy 2 NACKs v2: the stream reports nothing, it keeps v1. However long that lasts, v2 is
  // not applied everywhere.
  EXPECT_EQ(e.version(), "");
  // The next version both apply is.
  e.applied(1, "v3");
  e.applied(2, "v3");
  EXPECT_EQ(e.version(), "v3");
}

TEST(AppliedEverywhere, ProxiesServingNothingAndGoneOnesAreNotCounted) {
  AppliedEverywhere e;
  e.attach(1, "v1");
  e.attach(2, "");  // just started, no state file: routes no write yet
  EXPECT_EQ(e.version(), "v1");
  e.attach(3, "v0");  // connects mid-change with an older state file
  EXPECT_EQ(e.version(), "");
  e.detach(3);
  EXPECT_EQ(e.version(), "v1");
  e.applied(3, "v0");  // a stream already detached reports nothing
  EXPECT_EQ(e.version(), "v1");
}

TEST(AppliedEverywhere, EveryLiveReplicaMustSayItsProxiesAppliedIt) {
  AppliedEverywhere e;
  e.peersUnknown();  // leader election on, the replica Leases not listed yet
  e.attach(1, "v1");
  EXPECT_EQ(e.version(), "");
  EXPECT_EQ(e.local(), (AppliedEverywhere::Local{true, "v1"}));  // what we tell the others
  e.setPeers({"r2", "r3"});
  EXPECT_EQ(e.version(), "");  // neither said anything yet
  e.peerSaid("r2", true, "v1");
  EXPECT_EQ(e.version(), "");   // r3 has not
  e.peerSaid("r3", false, "");  // r3 serves no proxy
  EXPECT_EQ(e.version(), "v1");
  e.peerSaid("r2", true, "");  // one of r2's proxies is on another version
  EXPECT_EQ(e.version(), "");
  e.peerSaid("r2", true, "v2");
  EXPECT_EQ(e.version(), "");  // ours are still on v1
  e.applied(1, "v2");
  EXPECT_EQ(e.version(), "v2");
  e.dropPeer("r2");  // its stream ended: it is still listed live, and unheard
  EXPECT_EQ(e.version(), "");
  e.setPeers({"r3"});  // its Lease expired
  EXPECT_EQ(e.version(), "v2");
  // A replica streaming to us that the Leases do not list yet serves proxies too.
  e.peerSaid("r4", true, "v1");
  EXPECT_EQ(e.version(), "");
}

TEST(AppliedEverywhere, AReplicaWithoutProxiesTakesTheOthersWord) {
  AppliedEverywhere e;
  e.setPeers({"r2"});
  EXPECT_EQ(e.local(), AppliedEverywhere::Local{});
  e.peerSaid("r2", true, "v1");
  EXPECT_EQ(e.version(), "v1");
}

TEST(AppliedEverywhere, ListenersHearEveryChangeOnItsThread) {
  AppliedEverywhere e;
  std::atomic<int> calls{0};
  std::atomic<std::thread::id> caller{};
  uint64_t id = e.subscribe([&] {
    caller = std::this_thread::get_id();
    calls.fetch_add(1);
  });
  e.attach(1, "v1");
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (calls.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GE(calls.load(), 1);
  EXPECT_NE(caller.load(), std::this_thread::get_id());
  int before = calls.load();
  e.attach(2, "v1");  // the version stays v1: nobody is called
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(calls.load(), before);
  e.unsubscribe(id);
}

TEST(AppliedEverywhere, NothingIsSaidInTheGraceAfterStartUp) {
  // A restarted controller: proxy 1 is back at once, proxy 2 (still on the old ring) only
  // later. The word on proxy 1 alone would let movers move keys proxy 2 still writes to their
  // old owners. Within the grace nothing is said, to proxies or to other replicas, even
  // with no proxy back yet; after it, what the proxies back applied is said, and listeners
  // hear of it without any other change.
  AppliedEverywhere e(1s);  // long enough that the checks below are inside it on any machine
  std::atomic<int> calls{0};
  uint64_t id = e.subscribe([&] { calls.fetch_add(1); });
  EXPECT_EQ(e.local(), (AppliedEverywhere::Local{true, ""}));
  e.attach(1, "v2");
  EXPECT_EQ(e.version(), "");
  EXPECT_EQ(e.local(), (AppliedEverywhere::Local{true, ""}));
  int before = calls.load();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (e.version().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(e.version(), "v2");
  EXPECT_EQ(e.local(), (AppliedEverywhere::Local{true, "v2"}));
  while (calls.load() == before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GT(calls.load(), before);
  e.unsubscribe(id);
}

TEST(AppliedEverywhere, TheGraceStartsAgainWhenTheFirstProxyConnects) {
  // A controller reachable only a while after it started (readiness, DNS): its proxies come
  // back over their backoff from then on, not from its start.
  AppliedEverywhere e(500ms);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (e.local().counted && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  // The grace from start is over: with no proxy, this replica says it has none.
  EXPECT_EQ(e.local(), AppliedEverywhere::Local{});
  e.attach(1, "v1");
  EXPECT_EQ(e.version(), "");  // quiet again, at once
  EXPECT_EQ(e.local(), (AppliedEverywhere::Local{true, ""}));
  while (e.version().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(e.version(), "v1");
  e.attach(2, "v1");  // later streams do not start it again
  EXPECT_EQ(e.version(), "v1");
}

TEST(AppliedEverywhere, TheGraceIsAFlag) {
  auto parse = [](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--source", "file", "--config", "t.yaml"};
    args.insert(args.end(), extra.begin(), extra.end());
    return parseControllerFlags(args);
  };
  EXPECT_EQ(parse({}).options.applied_grace_ms, 12000u);
  EXPECT_EQ(parse({"--applied-grace", "8s"}).options.applied_grace_ms, 8000u);
  EXPECT_EQ(parse({"--applied-grace", "0s"}).options.applied_grace_ms, 0u);
  EXPECT_EQ(parse({"--applied-grace", "soon"}).error,
            "--applied-grace must be a duration such as 12s or 500ms");
  AppliedEverywhere none(0ms);  // no grace: said at once
  none.attach(1, "v1");
  EXPECT_EQ(none.version(), "v1");
}

}  // namespace
}  // namespace memzone::controlplane
