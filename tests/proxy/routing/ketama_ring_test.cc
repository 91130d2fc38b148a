// Our ring must place keys exactly where libmemcached's weighted ketama does.
#include "proxy/routing/ketama_ring.h"

#include <gtest/gtest.h>
#include <libmemcached/memcached.h>

#include <string>
#include <vector>

#include "proxy/routing/md5.h"

namespace memzone::routing {
namespace {

std::string hex(const std::array<uint8_t, 16>& d) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

TEST(Md5, KnownVectors) {
  EXPECT_EQ(hex(md5("")), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(hex(md5("abc")), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(hex(md5("The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6");
  std::string long_input(1000, 'a');
  EXPECT_EQ(hex(md5(long_input)), "cabe45dcc9ae5b66ba86600cca6b8ba8");
  std::string boundary(56, 'x');  // padding spills into a second block
  EXPECT_EQ(hex(md5(boundary)), hex(md5(std::string(56, 'x'))));
}

void expectSameAsLibmemcached(const std::vector<RingServer>& servers) {
  memcached_st* memc = memcached_create(nullptr);
  ASSERT_NE(memc, nullptr);
  for (const auto& s : servers) {
    ASSERT_EQ(memcached_server_add_with_weight(memc, s.host.c_str(), s.port, s.weight),
              MEMCACHED_SUCCESS);
  }
  ASSERT_EQ(memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1), MEMCACHED_SUCCESS);
  KetamaRing ring(servers);
  int mismatches = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string key = "key:" + std::to_string(i) + ":" + std::to_string(i * 7919);
    uint32_t theirs = memcached_generate_hash(memc, key.data(), key.size());
    uint32_t ours = ring.serverFor(key);
    if (theirs != ours) ++mismatches;
  }
  memcached_free(memc);
  EXPECT_EQ(mismatches, 0);
}

TEST(KetamaRing, MatchesLibmemcachedEqualWeights) {
  expectSameAsLibmemcached(
      {{"127.0.0.1", 21211, 1}, {"127.0.0.1", 21212, 1}, {"127.0.0.1", 21213, 1}});
}

TEST(KetamaRing, MatchesLibmemcachedDefaultPortAndWeights) {
  expectSameAsLibmemcached({{"10.0.0.1", 11211, 1},
                            {"10.0.0.2", 11211, 3},
                            {"cache-3.example", 11212, 2},
                            {"10.0.0.4", 11211, 5}});
}

TEST(KetamaRing, MatchesLibmemcachedManyServers) {
  std::vector<RingServer> servers;
  for (int i = 0; i < 17; ++i) servers.push_back({"192.168.1." + std::to_string(i), 11211, 1});
  expectSameAsLibmemcached(servers);
}

TEST(KetamaRing, RemovingAServerMovesOnlyItsKeys) {
  std::vector<RingServer> four = {{"a", 1, 1}, {"b", 2, 1}, {"c", 3, 1}, {"d", 4, 1}};
  std::vector<RingServer> three = {four[0], four[1], four[2]};
  KetamaRing before(four), after(three);
  for (int i = 0; i < 5000; ++i) {
    std::string key = "k" + std::to_string(i);
    uint32_t b = before.serverFor(key);
    if (b != 3) {
      EXPECT_EQ(after.serverFor(key), b) << key;
    }
  }
}

TEST(KetamaRing, NamedServerKeepsItsArcAtANewAddress) {
  std::vector<RingServer> before = {{"10.0.0.1", 11211, 1, "memcached-0"},
                                    {"10.0.0.2", 11211, 1, "memcached-1"},
                                    {"10.0.0.3", 11211, 1, "memcached-2"}};
  std::vector<RingServer> after = before;
  after[1].host = "10.0.9.9";  // memcached-1 rescheduled: new IP and port, same name
  after[1].port = 21999;
  KetamaRing a(before), b(after);
  for (int i = 0; i < 5000; ++i) {
    std::string key = "k" + std::to_string(i);
    EXPECT_EQ(a.serverFor(key), b.serverFor(key)) << key;
  }
  // By address the same move reshuffles the moved server's arc.
  for (auto& s : before) s.name.clear();
  for (auto& s : after) s.name.clear();
  KetamaRing c(before), d(after);
  int moved = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string key = "k" + std::to_string(i);
    moved += c.serverFor(key) != d.serverFor(key);
  }
  EXPECT_GT(moved, 500);
}

TEST(KetamaRing, NameOrderDoesNotMatter) {
  KetamaRing a({{"10.0.0.1", 1, 1, "x"}, {"10.0.0.2", 2, 1, "y"}});
  KetamaRing b({{"10.0.0.2", 2, 1, "y"}, {"10.0.0.1", 1, 1, "x"}});
  for (int i = 0; i < 2000; ++i) {
    std::string key = "k" + std::to_string(i);
    EXPECT_EQ(a.serverFor(key), 1 - b.serverFor(key)) << key;
  }
}

TEST(KetamaRing, SingleServerTakesEverything) {
  KetamaRing ring({{"127.0.0.1", 11211, 1}});
  EXPECT_EQ(ring.serverFor("anything"), 0u);
  EXPECT_EQ(ring.pointCount(), 160u);
}

}  // namespace
}  // namespace memzone::routing
