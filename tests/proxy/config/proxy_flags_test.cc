#include "proxy/config/proxy_flags.h"

#include <gtest/gtest.h>

namespace memzone::config {
namespace {

TEST(ProxyFlags, ParsesTheContract) {
  auto r = parseProxyFlags({"--listen", "127.0.0.1:1", "--zone", "a", "--threads=3", "--config",
                            "t.yaml", "--max-item-size", "2048"});
  ASSERT_TRUE(r.error.empty()) << r.error;
  EXPECT_EQ(r.options.listen, "127.0.0.1:1");
  EXPECT_EQ(r.options.zone, "a");
  EXPECT_EQ(r.options.threads, 3u);
  EXPECT_EQ(r.options.max_item_size, 2048u);
}

TEST(ProxyFlags, BadFlagsAreOneLineErrors) {
  EXPECT_EQ(parseProxyFlags({"--bogus"}).error, "unknown flag --bogus (see --help)");
  EXPECT_EQ(parseProxyFlags({"--config"}).error, "--config needs a value");
  EXPECT_EQ(parseProxyFlags({"--config", "x", "--threads", "0"}).error,
            "--threads must be from 1 to 256");
  EXPECT_EQ(parseProxyFlags({}).error, "exactly one of --config or --controller is required");
  EXPECT_TRUE(parseProxyFlags({"--help"}).help);
  EXPECT_TRUE(parseProxyFlags({"--version"}).version);
}

TEST(ProxyFlags, MoveKeysIsOnUnlessTurnedOff) {
  EXPECT_TRUE(parseProxyFlags({"--config", "x"}).options.move_keys);
  EXPECT_FALSE(parseProxyFlags({"--config", "x", "--move-keys", "off"}).options.move_keys);
  EXPECT_TRUE(parseProxyFlags({"--config", "x", "--move-keys=on"}).options.move_keys);
  EXPECT_EQ(parseProxyFlags({"--config", "x", "--move-keys", "maybe"}).error,
            "--move-keys must be on or off");
}

}  // namespace
}  // namespace memzone::config
