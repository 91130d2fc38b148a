// The proxy's side of the ring-skew gate (issue 23): which controller word covers a change.
#include "proxy/rebalance/ring_agreement.h"

#include <gtest/gtest.h>

namespace memzone::rebalance {
namespace {

TEST(RingAgreement, CoversTheChangeOrOneAppliedAfterIt) {
  RingAgreement a;
  EXPECT_FALSE(a.heard());
  a.applied("A");
  a.applied("B");  // the change
  a.agreed("A");   // every proxy on the ring before it: not yet
  EXPECT_TRUE(a.heard());
  EXPECT_FALSE(a.covers("B"));
  a.agreed("");  // they differ
  EXPECT_FALSE(a.covers("B"));
  a.agreed("B");
  EXPECT_TRUE(a.covers("B"));
  a.applied("C");  // another change (another zone's): every proxy on C includes B's ring
  a.agreed("C");
  EXPECT_TRUE(a.covers("B"));
  EXPECT_FALSE(a.covers("unknown"));
}

TEST(RingAgreement, AVersionThatComesBackCountsFromItsLatestApplication) {
  RingAgreement a;
  a.applied("A");
  a.applied("B");
  a.applied("A");  // back to A: the change to wait for is this one
  a.agreed("B");   // every proxy on B: some may not have come back to A
  EXPECT_FALSE(a.covers("A"));
  a.agreed("A");
  EXPECT_TRUE(a.covers("A"));
}

}  // namespace
}  // namespace memzone::rebalance
