// The flags of issue 12: --max-buffer-memory, --partial-request-timeout-ms, --max-connections.
#include <gtest/gtest.h>

#include "proxy/config/proxy_flags.h"

namespace memzone::config {
namespace {

TEST(LimitFlags, ByteSizesTakeBinarySuffixes) {
  uint64_t n = 0;
  EXPECT_TRUE(parseByteSize("512M", n));
  EXPECT_EQ(n, 512ull << 20);
  EXPECT_TRUE(parseByteSize("64k", n));
  EXPECT_EQ(n, 64ull << 10);
  EXPECT_TRUE(parseByteSize("2G", n));
  EXPECT_EQ(n, 2ull << 30);
  EXPECT_TRUE(parseByteSize("1048576", n));
  EXPECT_EQ(n, 1048576u);
  for (const char* bad : {"", "M", "12X", "-1M", "1.5G", "99999999999999999999G", "1 M"}) {
    EXPECT_FALSE(parseByteSize(bad, n)) << bad;
  }
}

TEST(LimitFlags, DefaultsAndValues) {
  auto d = parseProxyFlags({"--config", "t.yaml"});
  ASSERT_TRUE(d.error.empty()) << d.error;
  EXPECT_EQ(d.options.max_buffer_memory, 512ull << 20);
  EXPECT_EQ(d.options.partial_request_timeout_ms, 30000u);
  EXPECT_EQ(d.options.max_connections, 65536u);
  EXPECT_EQ(d.options.client_send_buffer, 256u << 10);
  auto r = parseProxyFlags({"--config", "t.yaml", "--max-buffer-memory=64M",
                            "--partial-request-timeout-ms", "0", "--max-connections", "100"});
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.options.max_buffer_memory, 64ull << 20);
  EXPECT_EQ(r.options.partial_request_timeout_ms, 0u);
  EXPECT_EQ(r.options.max_connections, 100u);
}

TEST(LimitFlags, OutOfRangeIsAnError) {
  EXPECT_EQ(parseProxyFlags({"--config", "t", "--max-buffer-memory", "512K"}).error,
            "--max-buffer-memory must be from 1M to 1024G (suffix K, M or G)");
  EXPECT_EQ(parseProxyFlags({"--config", "t", "--max-buffer-memory", "lots"}).error,
            "--max-buffer-memory must be from 1M to 1024G (suffix K, M or G)");
  EXPECT_EQ(parseProxyFlags({"--config", "t", "--partial-request-timeout-ms", "-5"}).error,
            "--partial-request-timeout-ms must be from 0 to 86400000");
  EXPECT_EQ(parseProxyFlags({"--config", "t", "--max-connections", "0"}).error,
            "--max-connections must be from 1 to 10000000");
  EXPECT_EQ(parseProxyFlags({"--config", "t", "--client-send-buffer", "100"}).error,
            "--client-send-buffer must be 0 or from 4K to 64M");
  EXPECT_TRUE(parseProxyFlags({"--config", "t", "--client-send-buffer", "0"}).error.empty());
}

}  // namespace
}  // namespace memzone::config
