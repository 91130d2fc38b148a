#include "memzone/ops/log.h"

#include <gtest/gtest.h>

#include <thread>

namespace memzone::ops {
namespace {

TEST(Log, FloodOfOneKeyIsRateLimitedWithACount) {
  setLogProgram("memzone-proxy");
  testing::internal::CaptureStderr();
  for (int i = 0; i < 100; ++i) logEvent(LogLevel::kWarn, "flood", "backend %d down", 7);
  logEvent(LogLevel::kInfo, "other", "another event");
  std::this_thread::sleep_for(std::chrono::milliseconds(1050));
  logEvent(LogLevel::kWarn, "flood", "backend %d down", 7);
  std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out,
            "memzone-proxy: warn backend 7 down\n"
            "memzone-proxy: info another event\n"
            "memzone-proxy: warn backend 7 down (99 similar suppressed)\n");
}

}  // namespace
}  // namespace memzone::ops
