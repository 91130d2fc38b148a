// parseDumpLine: memcached's metadump lines as 1.6 writes them, and what a hostile or broken
// server could send instead.
#include "proxy/rebalance/metadump.h"

#include <gtest/gtest.h>

namespace memzone::rebalance {
namespace {

TEST(Metadump, ReadsKeyCasAndSizeOfAnItem) {
  DumpedItem item;
  ASSERT_EQ(parseDumpLine("key=user:42 exp=-1 la=1795663632 cas=17 fetch=no cls=1 size=61", item),
            DumpLine::kItem);
  EXPECT_EQ(item.key, "user:42");
  EXPECT_EQ(item.cas, 17u);
  EXPECT_EQ(item.size, 61u);
}

TEST(Metadump, DecodesPercentEscapes) {
  DumpedItem item;
  ASSERT_EQ(parseDumpLine("key=b%25c%3A1 exp=1795663732 la=1 cas=2 fetch=yes cls=1 size=63", item),
            DumpLine::kItem);
  EXPECT_EQ(item.key, "b%c:1");
}

TEST(Metadump, EndsAtEndWithOrWithoutCarriageReturn) {
  DumpedItem item;
  EXPECT_EQ(parseDumpLine("END\r", item), DumpLine::kEnd);
  EXPECT_EQ(parseDumpLine("END", item), DumpLine::kEnd);
}

TEST(Metadump, ReadsEveryKeyAsTheBytesMemcachedStores) {
  // memcached dumps every key URL-encoded from its raw bytes, a meta `b` key too: binary
  // bytes, a space, CR, LF and NUL are the key's own.
  DumpedItem item;
  ASSERT_EQ(parseDumpLine("key=bin%01 exp=-1 la=1 cas=3 fetch=no cls=1 size=64", item),
            DumpLine::kItem);
  EXPECT_EQ(item.key, "bin\x01");
  ASSERT_EQ(
      parseDumpLine("key=a%20b%0D%0A%00%FF~._- exp=-1 la=1 cas=4 fetch=no cls=1 size=72", item),
      DumpLine::kItem);
  EXPECT_EQ(item.key, std::string("a b\r\n\0\xff~._-", 11));
  EXPECT_EQ(item.cas, 4u);
  // Up to 250 bytes, whatever they are, as long as a meta line can name them: a binary key
  // goes base64-encoded, and memcached takes a key token of 250 bytes at most (186 raw).
  std::string binary_186, binary_187;
  for (int i = 0; i < 186; ++i) binary_186 += "%01";
  binary_187 = binary_186 + "%01";
  ASSERT_EQ(parseDumpLine("key=" + binary_186 + " cas=3", item), DumpLine::kItem);
  EXPECT_EQ(item.key, std::string(186, '\x01'));
  EXPECT_EQ(parseDumpLine("key=" + binary_187 + " cas=3", item), DumpLine::kSkipped);
  EXPECT_EQ(parseDumpLine("key=" + std::string(250, 'k') + " cas=3", item), DumpLine::kItem);
}

TEST(Metadump, SkipsKeysNoMetaLineCanName) {
  DumpedItem item;
  // An empty key, a key over memcached's 250 bytes.
  EXPECT_EQ(parseDumpLine("key= exp=-1 la=1 cas=3 fetch=no cls=1 size=64", item),
            DumpLine::kSkipped);
  EXPECT_EQ(parseDumpLine("key=" + std::string(251, 'k') + " cas=3", item), DumpLine::kSkipped);
}

TEST(Metadump, RejectsWhatIsNotAnItemLine) {
  DumpedItem item;
  for (const char* line :
       {"BUSY currently processing crawler request",
        "ERROR cannot pipeline other commands before metadump", "CLIENT_ERROR lru crawler disabled",
        "", "key=a", "key=a cas=x", "key=a cas=-1", "key=a cas=1 size=1x", "key=%4 cas=1",
        "key=%zz cas=1", "key=a cas=99999999999999999999999", "key=a cas=1 junk"}) {
    EXPECT_EQ(parseDumpLine(line, item), DumpLine::kError) << line;
  }
}

}  // namespace
}  // namespace memzone::rebalance
