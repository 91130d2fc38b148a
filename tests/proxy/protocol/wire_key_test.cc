// wire_key.h: how the key mover names a key it read as the bytes memcached stores.
#include "proxy/protocol/wire_key.h"

#include <gtest/gtest.h>

#include <string>

#include "proxy/common/byte_buffer.h"
#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/meta_value.h"

namespace memzone::protocol {
namespace {

TEST(WireKey, TextKeysGoAsTheyAre) {
  EXPECT_EQ(wireKeyOf("user:42"), "user:42");
  EXPECT_EQ(wireKeyOf("caf\xc3\xa9"), "caf\xc3\xa9");  // bytes above 0x7f are text
  EXPECT_EQ(wireKeyOf(std::string(250, 'k')), std::string(250, 'k'));
}

TEST(WireKey, KeysNoTextLineCarriesGoInBase64WithB) {
  EXPECT_EQ(wireKeyOf("a b"), "YSBi b");
  EXPECT_EQ(wireKeyOf(std::string("a\r\n\0", 4)), "YQ0KAA== b");
  EXPECT_EQ(wireKeyOf("\x01"), "AQ== b");
  EXPECT_EQ(wireKeyOf("\x7f"), "fw== b");
}

TEST(WireKey, OnlyKeysAMetaLineCanNameAreNameable) {
  EXPECT_FALSE(nameableOnMetaLine(""));
  EXPECT_FALSE(nameableOnMetaLine(std::string(251, 'k')));
  EXPECT_TRUE(nameableOnMetaLine(std::string(186, '\x01')));   // 248 bytes of base64
  EXPECT_FALSE(nameableOnMetaLine(std::string(187, '\x01')));  // 252: memcached refuses it
}

TEST(WireKey, AnAddNamesABase64KeyWithItsFlagAfterTheLength) {
  std::string out;
  appendMetaAddHead(wireKeyOf("a b"), 2, "-1", "7", out);
  EXPECT_EQ(out, "ms YSBi 2 b T0 F7 ME\r\n");
  out.clear();
  appendMetaAddHead(wireKeyOf("k"), 2, "30", "0", out);
  EXPECT_EQ(out, "ms k 2 T30 F0 ME\r\n");
}

TEST(WireKey, ARepairAddsABase64KeyWithItsFlagAfterTheLength) {
  ByteBuffer out;
  encodeAddCopyHead("YSBi b", 2, "30", "7", "O00000001", out);
  EXPECT_EQ(out.view(), "ms YSBi 2 b T30 F7 ME c O00000001\r\n");
}

}  // namespace
}  // namespace memzone::protocol
