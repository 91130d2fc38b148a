// The topology YAML: good files load with defaults; bad files fail with FILE:LINE: field: reason.
#include "proxy/config/topology_file.h"

#include <gtest/gtest.h>

namespace memzone::config {
namespace {

TEST(TopologyFile, FullExampleFromDesign) {
  auto r = parseTopologyYaml(R"(pools:
  - name: main
    zones:
      zone-a: ["127.0.0.1:21211", "127.0.0.1:21212"]
      zone-b: ["127.0.0.1:21221"]
      zone-c: [{address: "127.0.0.1:21231", weight: 2}]
    hash: ketama
    replication:
      writes: all-zones
      wait: quorum
      readFailover: [error, miss]
      repair: false
  - name: local
    zones:
      zone-a: ["127.0.0.1:21311"]
    replication: {writes: local-zone}
routes:
  - prefix: "session:"
    pool: main
  - prefix: ""
    pool: local
timeouts: { connectMs: 100, requestMs: 50 }
health: { failureLimit: 5, downRetryMs: 200 }
allowFlushAll: true
)",
                             "t.yaml");
  ASSERT_TRUE(r.errors.empty()) << r.errors[0];
  const auto& spec = r.spec;
  ASSERT_EQ(spec.pools.size(), 2u);
  EXPECT_EQ(spec.pools[0].zones.size(), 3u);
  EXPECT_EQ(spec.pools[0].zones[2].backends[0].weight, 2u);
  EXPECT_EQ(spec.pools[0].replication.wait, topology::WaitPolicy::kQuorum);
  EXPECT_TRUE(spec.pools[0].replication.failover_on_miss);
  EXPECT_FALSE(spec.pools[0].replication.repair);
  EXPECT_EQ(spec.pools[1].replication.writes, topology::WritePolicy::kLocalZone);
  EXPECT_EQ(spec.request_timeout_ms, 50u);
  EXPECT_EQ(spec.health.failure_limit, 5u);
  EXPECT_TRUE(spec.allow_flush_all);
  EXPECT_EQ(spec.version.size(), 16u);

  auto built = topology::buildTopology(spec);
  ASSERT_TRUE(built.topology) << built.error;
  EXPECT_EQ(built.topology->router.poolFor("session:1"), 0u);
  EXPECT_EQ(built.topology->router.poolFor("other"), 1u);
}

TEST(TopologyFile, DefaultsFollowDesign) {
  auto r =
      parseTopologyYaml("pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n", "t.yaml");
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.spec.pools[0].replication.writes, topology::WritePolicy::kAllZones);
  EXPECT_EQ(r.spec.pools[0].replication.wait, topology::WaitPolicy::kLocal);
  EXPECT_FALSE(r.spec.pools[0].replication.failover_on_miss);
  EXPECT_TRUE(r.spec.pools[0].replication.repair);
  EXPECT_EQ(r.spec.connect_timeout_ms, 200u);
  EXPECT_EQ(r.spec.request_timeout_ms, 250u);
  EXPECT_FALSE(r.spec.allow_flush_all);
  EXPECT_EQ(r.spec.consistency.read_hold_ms, 6000u);  // valid with the default health settings
}

TEST(TopologyFile, DefaultReadHoldFollowsLongerRetries) {
  auto r = parseTopologyYaml(
      "pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\nhealth: {maxDownRetryMs: "
      "10000}\n",
      "t.yaml");
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.spec.consistency.read_hold_ms, 12000u + 200u + 250u);
}

TEST(TopologyFile, VersionIsAContentHash) {
  std::string a = "pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n";
  std::string b = "pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:2\"]\n";
  EXPECT_EQ(parseTopologyYaml(a, "x").spec.version, parseTopologyYaml(a, "y").spec.version);
  EXPECT_NE(parseTopologyYaml(a, "x").spec.version, parseTopologyYaml(b, "x").spec.version);
}

struct BadFile {
  const char* yaml;
  const char* error;  // exact "FILE:LINE: field: reason" prefix
};

TEST(TopologyFile, ServerNamesHashByAndWindows) {
  auto r = parseTopologyYaml(
      "pools:\n"
      "  - name: p\n"
      "    zones:\n"
      "      a:\n"
      "        - {address: \"10.0.0.5:11211\", name: memcached-0}\n"
      "        - \"10.0.0.6:11211\"\n"
      "      b: [\"10.0.1.5:11211\"]\n"
      "  - name: q\n"
      "    hashBy: address\n"
      "    warmup: {durationMs: 0}\n"
      "    migration: {durationMs: 5000}\n"
      "    zones:\n"
      "      a: [{address: \"10.0.0.7:11211\", name: memcached-1}]\n",
      "t.yaml");
  ASSERT_TRUE(r.errors.empty()) << r.errors[0];
  const auto& p = r.spec.pools[0];
  EXPECT_EQ(p.hash_by, topology::HashBy::kName);  // the default
  EXPECT_EQ(p.zones[0].backends[0].name, "memcached-0");
  EXPECT_EQ(p.zones[0].backends[1].name, "");
  EXPECT_FALSE(p.warmup_ms.has_value());
  const auto& q = r.spec.pools[1];
  EXPECT_EQ(q.hash_by, topology::HashBy::kAddress);
  EXPECT_EQ(q.warmup_ms, 0u);
  EXPECT_EQ(q.migration_ms, 5000u);
  auto built = topology::buildTopology(r.spec);
  ASSERT_TRUE(built.topology) << built.error;
  const auto& pools = built.topology->pools;
  // Multi-zone pools get both windows by default; one zone gets neither unless asked.
  EXPECT_EQ(pools[0].warmup_ms, topology::kDefaultWarmupMs);
  EXPECT_EQ(pools[0].migration_ms, topology::kDefaultMigrationMs);
  EXPECT_EQ(pools[1].warmup_ms, 0u);
  EXPECT_EQ(pools[1].migration_ms, 5000u);
  // Named servers are placed by name, unnamed ones (and hashBy: address) by address.
  EXPECT_EQ(pools[0].zones[0].backends[0].identity, "memcached-0");
  EXPECT_EQ(pools[0].zones[0].backends[1].identity, "10.0.0.6:11211");
  EXPECT_EQ(pools[1].zones[0].backends[0].identity, "10.0.0.7:11211");
}

TEST(TopologyFile, BadFilesNameFileLineFieldAndReason) {
  const BadFile cases[] = {
      {"pools: []\n", "bad.yaml:1: pools: must be a non-empty list"},
      {"routes: []\n", "bad.yaml:1: pools: is required"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\nextra: 1\n",
       "bad.yaml:5: extra: unknown field"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"localhost:1\"]\n",
       "bad.yaml:4: pools[0].zones.a[0]: bad server address \"localhost:1\" (want numeric "
       "IP:port)"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:99999\"]\n",
       "bad.yaml:4: pools[0].zones.a[0]: bad server address"},
      {"pools:\n  - name: p\n    zones:\n      a: []\n",
       "bad.yaml:4: pools[0].zones.a: must be a non-empty list of servers"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    replication:\n      wait: "
       "sometimes\n",
       "bad.yaml:6: pools[0].replication.wait: must be local, all or quorum, not sometimes"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\n    replication:\n      "
       "readFailover: [miss]\n",
       "bad.yaml:6: pools[0].replication.readFailover: must include error"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\nroutes:\n  - prefix: x\n    "
       "pool: nope\n",
       "bad.yaml:7: routes[0].pool: no pool named \"nope\""},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\ntimeouts: {requestMs: 0}\n",
       "bad.yaml:5: timeouts.requestMs: must be an integer from 1 to 60000"},
      {"pools:\n  - name: p\n    hash: crc32\n    zones:\n      a: [\"127.0.0.1:1\"]\n",
       "bad.yaml:3: pools[0].hash: must be ketama"},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"\n", "bad.yaml:5: yaml: "},
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n",
       "bad.yaml:4: pools[0].zones.a[1]: duplicate server 127.0.0.1:1"},
      {"pools:\n  - name: p\n    zones:\n      a:\n        - {address: \"127.0.0.1:1\", name: \"a "
       "b\"}\n",
       "bad.yaml:5: pools[0].zones.a[0].name: must be 1-253 characters"},
      {"pools:\n  - name: p\n    zones:\n      a:\n        - {address: \"127.0.0.1:1\", name: "
       "m-0}\n"
       "        - {address: \"127.0.0.1:2\", name: m-0}\n",
       "bad.yaml:6: pools[0].zones.a[1].name: duplicate server name m-0 in the zone"},
      {"pools:\n  - name: p\n    zones:\n      a:\n        - {address: \"127.0.0.1:1\", nam: "
       "m-0}\n",
       "bad.yaml:5: pools[0].zones.a[0].nam: unknown field"},
      {"pools:\n  - name: p\n    hashBy: pod\n    zones:\n      a: [\"127.0.0.1:1\"]\n",
       "bad.yaml:3: pools[0].hashBy: must be name or address, not pod"},
      {"pools:\n  - name: p\n    warmup: {durationMs: -1}\n    zones:\n      a: "
       "[\"127.0.0.1:1\"]\n",
       "bad.yaml:3: pools[0].warmup.durationMs: must be an integer from 0 to 86400000"},
      {"pools:\n  - name: p\n    migration: {}\n    zones:\n      a: [\"127.0.0.1:1\"]\n",
       "bad.yaml:3: pools[0].migration.durationMs: is required (0 turns it off)"},
      // The recovery hold must outlast another proxy's probe backoff: 1.2 x 4000 + 200 + 250.
      {"pools:\n  - name: p\n    zones:\n      a: [\"127.0.0.1:1\"]\nconsistency: {readHoldMs: "
       "4000}\n",
       "bad.yaml:5: consistency.readHoldMs: must be 0 (off) or at least 1.2 x "
       "health.maxDownRetryMs + timeouts.connectMs + timeouts.requestMs = 5250 ms"},
  };
  for (const auto& c : cases) {
    auto r = parseTopologyYaml(c.yaml, "bad.yaml");
    ASSERT_FALSE(r.errors.empty()) << c.yaml;
    EXPECT_EQ(r.errors[0].rfind(c.error, 0), 0u) << "got: " << r.errors[0] << "\nwant: " << c.error;
  }
}

TEST(TopologyFile, CollectsEveryErrorNotJustTheFirst) {
  auto r = parseTopologyYaml(
      "pools:\n  - name: p\n    zones:\n      a: [\"nope\"]\n    bogus: 1\ntimeouts: {connectMs: "
      "x}\n",
      "f.yaml");
  EXPECT_EQ(r.errors.size(), 3u);
}

TEST(TopologyFile, MissingFile) {
  auto r = loadTopologyFile("/nonexistent/topology.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0], "/nonexistent/topology.yaml:0: file: cannot be read");
}

}  // namespace
}  // namespace memzone::config
