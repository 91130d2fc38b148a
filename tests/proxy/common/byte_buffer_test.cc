// ByteBuffer's memory accounting (issue 12): every capacity change is charged, moves follow.
#include "proxy/common/byte_buffer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/common/intrusive_list.h"
#include "proxy/common/memory_account.h"

namespace memzone {
namespace {

TEST(ByteBuffer, ChargesCapacityToItsAccountAndParents) {
  MemoryAccount total;
  MemoryAccount kind(&total);
  {
    ByteBuffer b(&kind);
    EXPECT_EQ(kind.bytes(), 0);
    b.append(std::string(100, 'x'));
    EXPECT_EQ(static_cast<size_t>(kind.bytes()), b.capacity());
    EXPECT_EQ(total.bytes(), kind.bytes());
    b.append(std::string(100000, 'y'));
    EXPECT_EQ(static_cast<size_t>(total.bytes()), b.capacity());
    EXPECT_EQ(b.size(), 100100u);
    b.consume(100000);
    b.shrinkIfSparse(4096);  // 100 bytes left in ~100 KiB: give most of it back
    EXPECT_EQ(b.view(), std::string(100, 'y'));
    EXPECT_EQ(b.capacity(), 4096u);
    EXPECT_EQ(total.bytes(), 4096);
    b.release();  // not empty: kept
    EXPECT_EQ(total.bytes(), 4096);
    b.clear();
    b.release();
    EXPECT_EQ(b.capacity(), 0u);
    EXPECT_EQ(total.bytes(), 0);
    b.append("again");
  }
  EXPECT_EQ(total.bytes(), 0);  // the destructor gives it back
}

TEST(ByteBuffer, ChargeMovesWithTheBufferAndBetweenAccounts) {
  MemoryAccount a, b;
  std::vector<ByteBuffer> buffers;
  buffers.emplace_back(&a);
  buffers.back().append(std::string(5000, 'z'));
  int64_t charged = a.bytes();
  EXPECT_GT(charged, 0);
  for (int i = 0; i < 20; ++i) buffers.emplace_back(&a);  // reallocations move buffers
  EXPECT_EQ(a.bytes(), charged);
  EXPECT_EQ(buffers[0].view(), std::string(5000, 'z'));
  buffers[0].setAccount(&b);
  EXPECT_EQ(a.bytes(), 0);
  EXPECT_EQ(b.bytes(), charged);
  buffers.clear();
  EXPECT_EQ(b.bytes(), 0);
}

TEST(ByteBuffer, ShrinkIfAboveKeepsTheBytes) {
  MemoryAccount a;
  ByteBuffer b(&a);
  b.append(std::string(300000, 'q'));
  b.consume(299990);
  b.shrinkIfAbove(1024);
  EXPECT_EQ(b.capacity(), 1024u);
  EXPECT_EQ(b.view(), std::string(10, 'q'));
  EXPECT_EQ(a.bytes(), 1024);
}

struct Item : ListLink<struct ItemTag> {
  explicit Item(int v) : value(v) {}
  int value;
};

TEST(IntrusiveList, OrderUnlinkAndSelfRemovalOnDestruction) {
  IntrusiveList<Item, ItemTag> list;
  Item one(1), two(2), three(3);
  list.push_back(&one);
  list.push_back(&two);
  list.push_front(&three);
  std::vector<int> seen;
  list.forEach([&](Item* i) { seen.push_back(i->value); });
  EXPECT_EQ(seen, (std::vector<int>{3, 1, 2}));
  two.unlink();
  EXPECT_EQ(list.size(), 2u);
  {
    Item four(4);
    list.push_back(&four);
    EXPECT_EQ(list.size(), 3u);
  }  // unlinks itself
  EXPECT_EQ(list.size(), 2u);
  IntrusiveList<Item, ItemTag> other;
  list.spliceTo(other);
  EXPECT_TRUE(list.empty());
  EXPECT_EQ(other.front()->value, 3);
}

}  // namespace
}  // namespace memzone
