// memcached's own reading of a line, checked against the C library it is modelled on: the
// number parsers against glibc's strtol/strtoul/strtoull wrapped the way memcached's util.c
// wraps them, on random tokens made of the bytes that matter (digits, signs, white space).
#include "proxy/protocol/memcached_syntax.h"

#include <gtest/gtest.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

namespace memzone::protocol::mc {
namespace {

// util.c's safe_strtol / safe_strtoul / safe_strtoull, on a NUL-terminated copy.
bool refStrtol(const std::string& s, int32_t& out) {
  errno = 0;
  char* end;
  long l = strtol(s.c_str(), &end, 10);
  if (errno == ERANGE || end == s.c_str()) return false;
  if (isspace(static_cast<unsigned char>(*end)) || (*end == '\0' && end != s.c_str())) {
    out = static_cast<int32_t>(l);
    return true;
  }
  return false;
}

template <typename T>
bool refStrtoul(const std::string& s, T& out) {
  errno = 0;
  char* end;
  unsigned long long l = strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE || end == s.c_str()) return false;
  if (isspace(static_cast<unsigned char>(*end)) || (*end == '\0' && end != s.c_str())) {
    if (static_cast<long long>(l) < 0 && std::strchr(s.c_str(), '-') != nullptr) return false;
    out = static_cast<T>(l);
    return true;
  }
  return false;
}

std::string randomToken(std::mt19937& rng) {
  static const char kAlphabet[] = "0123456789+-\t\v\f\rx9";
  std::string s;
  size_t n = rng() % 4 == 0 ? 15 + rng() % 10 : rng() % 6;  // long ones overflow
  for (size_t i = 0; i < n; ++i) {
    bool digit = rng() % 3 != 0;
    s += digit ? static_cast<char>('0' + rng() % 10) : kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  }
  return s;
}

TEST(MemcachedNumbers, AgreeWithTheCLibraryAsMemcachedUsesIt) {
  std::mt19937 rng(20261125);
  std::vector<std::string> tokens = {"0",
                                     "-0",
                                     "+5",
                                     "5\t",
                                     "\t5",
                                     "5\tx",
                                     "5x",
                                     "-",
                                     "+",
                                     "",
                                     "-1",
                                     "4294967296",
                                     "4294967297",
                                     "2147483648",
                                     "-2147483649",
                                     "18446744073709551615",
                                     "18446744073709551616",
                                     "-18446744073709551615",
                                     "9223372036854775807",
                                     "9223372036854775808",
                                     "-9223372036854775808",
                                     "-9223372036854775809"};
  for (int i = 0; i < 200000; ++i) tokens.push_back(randomToken(rng));
  for (const std::string& t : tokens) {
    SCOPED_TRACE("token '" + t + "'");
    int32_t a32 = 0, b32 = 0;
    ASSERT_EQ(strtol32(t, a32), refStrtol(t, b32));
    ASSERT_EQ(a32, b32);  // both left alone (0) on failure
    uint32_t u1 = 0, u2 = 0;
    ASSERT_EQ(strtoul32(t, u1), refStrtoul(t, u2));
    ASSERT_EQ(u1, u2);
    uint64_t l1 = 0, l2 = 0;
    ASSERT_EQ(strtoull64(t, l1), refStrtoul(t, l2));
    ASSERT_EQ(l1, l2);
  }
}

TEST(MemcachedLine, VisibleBytesEndAtNulAndLoseOneCarriageReturn) {
  EXPECT_EQ(visibleLine("get a\r"), "get a");
  EXPECT_EQ(visibleLine("get a\r\r"), "get a\r");
  EXPECT_EQ(visibleLine("\r"), "\r");  // memcached strips only from lines of two bytes or more
  EXPECT_EQ(visibleLine(std::string_view("set k\0junk\r", 11)), "set k");
  EXPECT_EQ(visibleLine(std::string_view("\0get a", 6)), "");
}

TEST(MemcachedLine, TokensSplitOnSpacesOnly) {
  std::vector<std::string_view> t;
  tokenize("  get a\tb  c\r ", t);
  EXPECT_EQ(t, (std::vector<std::string_view>{"get", "a\tb", "c\r"}));
  tokenize("", t);
  EXPECT_TRUE(t.empty());
}

TEST(MemcachedLine, OnlyLongGetsMayGrowWithoutANewline) {
  EXPECT_TRUE(mayGrowWithoutNewline("get a b c"));
  EXPECT_TRUE(mayGrowWithoutNewline("   gets a"));
  EXPECT_FALSE(mayGrowWithoutNewline(std::string(101, ' ') + "get a"));
  EXPECT_FALSE(mayGrowWithoutNewline("gat 1 a"));
  EXPECT_FALSE(mayGrowWithoutNewline("set a 0 0 1"));
}

}  // namespace
}  // namespace memzone::protocol::mc
