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
