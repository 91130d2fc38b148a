// The buffer budget's decisions (issue 12) at each pressure level, its wait lists, and the
// request pool's caps and idle trim.
#include "proxy/server/buffer_budget.h"

#include <gtest/gtest.h>

#include <vector>

#include "proxy/server/client_request.h"

namespace memzone::server {
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct Waiter : BudgetWaiter {
  explicit Waiter(std::vector<int>* log, int id) : log(log), id(id) {}
  void onBudgetAvailable(bool large_turn) override { log->push_back(large_turn ? id : -id); }
  std::vector<int>* log;
  int id;
};

class BufferBudgetTest : public ::testing::Test {
 protected:
  // A 32 MiB share: throttling from 80%, allowance 4 MiB, light limit 128 KiB.
  BufferBudget budget{32 * kMiB, 1 * kMiB};
  MemoryAccount held{&budget.memory().client_output};
  void fill(uint64_t bytes) { held.charge(static_cast<int64_t>(bytes)); }
  Admission admit(uint64_t connection_holds, bool owes_nothing, uint64_t reservation,
                  bool unknown = false) {
    BufferBudget::Asker asker;
    asker.held = connection_holds;
    asker.owes_nothing = owes_nothing;
    asker.unknown = unknown;
    return budget.admit(asker, reservation);
  }
};

TEST_F(BufferBudgetTest, Thresholds) {
  EXPECT_EQ(budget.largeAllowance(), 4 * kMiB);
  EXPECT_EQ(budget.lightLimit(), 128u * 1024);
  EXPECT_TRUE(budget.heavy(128 * 1024 + 1));
  EXPECT_FALSE(budget.heavy(128 * 1024));
}

TEST_F(BufferBudgetTest, BelowPressureEverythingGoesAndLargeRepliesShareTheAllowance) {
  EXPECT_EQ(admit(10 * kMiB, false, 100), Admission::kAdmit);
  EXPECT_EQ(admit(0, true, kMiB), Admission::kAdmit);
  for (int i = 0; i < 4; ++i) budget.reserve(kMiB);
  // The allowance is used up: large requests wait, small ones do not.
  EXPECT_EQ(admit(0, true, kMiB), Admission::kWaitLarge);
  EXPECT_EQ(admit(0, true, 1000), Admission::kAdmit);
  budget.unreserve(kMiB);
  EXPECT_EQ(admit(0, true, kMiB), Admission::kAdmit);
  // One request larger than the whole allowance goes alone.
  for (int i = 0; i < 3; ++i) budget.unreserve(kMiB);
  EXPECT_EQ(admit(0, true, 20 * kMiB), Admission::kAdmit);
}

TEST_F(BufferBudgetTest, NearTheBudgetHeavyConnectionsWaitAndAtItTheyAreRefused) {
  fill(27 * kMiB);  // past 80%
  EXPECT_EQ(admit(kMiB, false, 0), Admission::kWait);
  EXPECT_EQ(admit(64 * 1024, false, 100), Admission::kAdmit);
  fill(6 * kMiB);  // past the share
  EXPECT_EQ(admit(kMiB, false, 0), Admission::kReject);
  // A light connection's small request still flows.
  EXPECT_EQ(admit(1000, false, 100), Admission::kAdmit);
  // A large one: only if the connection is owed nothing, and within share + allowance.
  EXPECT_EQ(admit(1000, false, kMiB), Admission::kReject);
  EXPECT_EQ(admit(1000, true, kMiB), Admission::kAdmit);
  budget.reserve(3 * kMiB);  // 33 + 3 = 36 MiB: the allowance is spent past the share
  EXPECT_EQ(admit(0, true, kMiB), Admission::kReject);
  EXPECT_FALSE(budget.overCutoff());
  fill(8 * kMiB);  // 41 MiB buffered: past share + 2 allowances
  EXPECT_TRUE(budget.overCutoff());
}

TEST_F(BufferBudgetTest, MemoryWaitersWakeBelowTheResumeMark) {
  std::vector<int> log;
  Waiter a(&log, 1), b(&log, 2);
  fill(27 * kMiB);
  budget.waitForMemory(&a);
  budget.waitForMemory(&b);
  budget.waitForMemory(&a);  // once
  EXPECT_EQ(budget.counters().throttled_now.get(), 2u);
  EXPECT_FALSE(budget.wake());
  fill(-(4 * static_cast<int64_t>(kMiB)));  // 23 MiB: under 80%, not yet under 70%
  EXPECT_FALSE(budget.wake());
  fill(-(2 * static_cast<int64_t>(kMiB)));  // 21 MiB
  EXPECT_TRUE(budget.wake());
  EXPECT_EQ(log, (std::vector<int>{-1, -2}));
  EXPECT_EQ(budget.counters().throttled_now.get(), 0u);
  EXPECT_EQ(budget.counters().throttled.get(), 2u);
}

TEST_F(BufferBudgetTest, LargeWaitersGoInArrivalOrderAndKeepTheirPlace) {
  std::vector<int> log;
  Waiter a(&log, 1), b(&log, 2), c(&log, 3);
  budget.reserve(4 * kMiB);
  budget.waitForLarge(&a, kMiB, false);
  budget.waitForLarge(&b, kMiB, false);
  budget.waitForLarge(&a, kMiB, false);  // asks again: keeps its place
  budget.waitForLarge(&c, kMiB, false);
  // A newcomer does not overtake the queue even when there is room.
  budget.unreserve(kMiB);
  EXPECT_EQ(admit(0, true, kMiB), Admission::kWaitLarge);
  EXPECT_TRUE(budget.wake());  // room for one: the head (its onBudgetAvailable reserves)
  EXPECT_EQ(log, (std::vector<int>{1, 2, 3}));  // nobody reserved in this test: all go
  budget.forget(&a);
}

TEST_F(BufferBudgetTest, AConnectionWithinItsGuaranteedShareIsNeverRefused) {
  fill(40 * kMiB);  // past the share and past the cutoff
  budget.reserve(8 * kMiB);
  EXPECT_EQ(admit(0, false, 100), Admission::kAdmit);
  EXPECT_EQ(admit(60 * 1024, false, 4 * 1024), Admission::kAdmit);
  EXPECT_EQ(admit(0, false, BufferBudget::kGuaranteedShare), Admission::kAdmit);
  // Beyond it, the rules of the pressure level.
  EXPECT_EQ(admit(BufferBudget::kGuaranteedShare, false, 1), Admission::kAdmit);  // light
  EXPECT_EQ(admit(kMiB, false, 1), Admission::kReject);                           // heavy
  EXPECT_EQ(admit(0, false, BufferBudget::kGuaranteedShare + 1), Admission::kReject);
}

TEST_F(BufferBudgetTest, UnderPressureAGuessInFlightWaitsForItsReply) {
  BufferBudget::Asker asker;
  asker.held = kMiB;  // its first get's reservation, on the guess
  asker.unknown = true;
  asker.guessing = true;
  EXPECT_EQ(budget.admit(asker, kMiB), Admission::kAdmit);  // no pressure: pipelines
  fill(27 * kMiB);
  EXPECT_EQ(budget.admit(asker, kMiB), Admission::kWaitReply);
  fill(6 * kMiB);  // at the share: still waits (is not refused) for its own reply
  EXPECT_EQ(budget.admit(asker, kMiB), Admission::kWaitReply);
  EXPECT_EQ(budget.admit(asker, 100), Admission::kWaitReply);
}

TEST_F(BufferBudgetTest, ARequestIsAffordedWithinTheShareOrTheGuaranteedShare) {
  EXPECT_TRUE(budget.affords(0, 32 * kMiB));
  EXPECT_FALSE(budget.affords(0, 32 * kMiB + 1));
  fill(30 * kMiB);
  EXPECT_TRUE(budget.affords(kMiB, 2 * kMiB));
  EXPECT_FALSE(budget.affords(kMiB, 2 * kMiB + 1));
  fill(10 * kMiB);
  EXPECT_TRUE(budget.affords(1000, BufferBudget::kGuaranteedShare - 1000));
  EXPECT_FALSE(budget.affords(1000, BufferBudget::kGuaranteedShare));
}

TEST(RequestPool, CapsCountAndTrimsWhatStayedUnused) {
  MemoryAccount pooled, orphaned;
  RequestPool pool(&pooled, &orphaned, 1 << 20, 8);
  std::vector<ClientRequest*> taken;
  for (int i = 0; i < 12; ++i) taken.push_back(pool.acquire());
  for (ClientRequest* r : taken) pool.release(r);
  EXPECT_EQ(pool.freeCount(), 8u);  // the rest were freed at once
  EXPECT_EQ(pool.trimIdle(), 0u);   // the burst just ended: nothing idle for a round yet
  ClientRequest* r = pool.acquire();
  pool.release(r);
  EXPECT_EQ(pool.trimIdle(), 7u);  // all but the one in use since the last round
  EXPECT_EQ(pool.freeCount(), 1u);
  EXPECT_EQ(pool.trimIdle(), 1u);
  EXPECT_EQ(pooled.bytes(), 0);
}

}  // namespace
}  // namespace memzone::server
