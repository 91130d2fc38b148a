#include "controlplane/model/cluster_model.h"

#include <gtest/gtest.h>

namespace memzone::controlplane::model {
namespace {

using nlohmann::json;

// Specs as JSON text: brace-initialised nlohmann::json objects read differently under gcc
// and clang ({{"k", v}} can become an array of arrays).
json pool(const std::string& name, const char* spec, int64_t generation = 1) {
  return {{"apiVersion", "memzone.io/v1alpha1"},
          {"kind", "ReplicatedPool"},
          {"metadata", {{"name", name}, {"namespace", "cache"}, {"generation", generation}}},
          {"spec", json::parse(spec)}};
}

json ep(const std::string& ip, const char* zone, json conditions = {{"ready", true}}) {
  json e = {{"addresses", {ip}}, {"conditions", conditions}};
  if (zone != nullptr) e["zone"] = zone;
  return e;
}

json slice(const std::string& name, const std::string& service, std::vector<json> endpoints,
           json ports = json::array({{{"name", "memcache"}, {"port", 11211}, {"protocol", "TCP"}}}),
           const std::string& type = "IPv4") {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", name},
            {"namespace", "cache"},
            {"labels", {{"kubernetes.io/service-name", service}}}}},
          {"addressType", type},
          {"endpoints", json(endpoints)},
          {"ports", ports}};
}

std::map<std::string, std::vector<std::string>> zonesOf(const ClusterModel& m,
                                                        const std::string& p) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& pool : m.snapshot.pools()) {
    if (pool.name() != p) continue;
    for (const auto& z : pool.zones()) {
      for (const auto& b : z.backends())
        out[z.zone()].push_back(b.address() + ":" + std::to_string(b.port()));
    }
  }
  return out;
}

TEST(ClusterModel, MergesSlicesDeduplicatesAndDropsUnreadyAndTerminating) {
  std::map<std::string, json> pools = {
      {"cache/p", pool("p", R"({"service": "mc", "port": "memcache"})")}};
  std::map<std::string, json> slices = {
      {"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1"), ep("10.0.0.2", "z2")})},
      {"cache/b", slice("b", "mc",
                        {ep("10.0.0.2", "z2"), ep("10.0.0.3", "z2", {{"ready", false}}),
                         ep("10.0.0.4", "z1", {{"ready", true}, {"terminating", true}}),
                         ep("10.0.0.5", nullptr, json::object())})},
      {"cache/other", slice("o", "other", {ep("10.9.9.9", "z1")})},
      {"cache/fqdn",
       slice("f", "mc", {ep("mc.example", "z1")}, json::array({{{"port", 11211}}}), "FQDN")},
  };
  std::map<std::string, json> last_good;
  ClusterModel m = buildClusterModel(pools, slices, last_good);
  EXPECT_EQ(zonesOf(m, "p"),
            (std::map<std::string, std::vector<std::string>>{{"unknown", {"10.0.0.5:11211"}},
                                                             {"z1", {"10.0.0.1:11211"}},
                                                             {"z2", {"10.0.0.2:11211"}}}));
  ASSERT_EQ(m.snapshot.routes_size(), 1);
  EXPECT_EQ(m.snapshot.routes(0).prefix(), "");  // no prefixes: the default pool
  EXPECT_FALSE(m.snapshot.version().empty());
}

TEST(ClusterModel, SameObjectsSameVersion) {
  std::map<std::string, json> pools = {{"cache/p", pool("p", R"({"service": "mc"})")}};
  std::map<std::string, json> slices = {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}};
  std::map<std::string, json> g1, g2;
  EXPECT_EQ(buildClusterModel(pools, slices, g1).snapshot.version(),
            buildClusterModel(pools, slices, g2).snapshot.version());
  slices["cache/a"]["endpoints"][0]["conditions"]["ready"] = false;
  slices["cache/b"] = slice("b", "mc", {ep("10.0.0.7", "z1")});
  EXPECT_NE(buildClusterModel(pools, slices, g1).snapshot.version(),
            buildClusterModel(pools, {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}}, g2)
                .snapshot.version());
}

TEST(ClusterModel, PortByNumberAndZoneAllowListOrder) {
  std::map<std::string, json> pools = {
      {"cache/p", pool("p", R"({"service": "mc", "port": 11300, "zones": ["z2", "z1", "z3"]})")}};
  std::map<std::string, json> slices = {
      {"cache/a",
       slice("a", "mc", {ep("10.0.0.1", "z1"), ep("10.0.0.2", "z2"), ep("10.0.0.9", "z9")},
             json::array({{{"name", "memcache"}, {"port", 11300}}}))}};
  std::map<std::string, json> last_good;
  ClusterModel m = buildClusterModel(pools, slices, last_good);
  ASSERT_EQ(m.snapshot.pools(0).zones_size(), 2);  // z9 not allowed, z3 has nobody
  EXPECT_EQ(m.snapshot.pools(0).zones(0).zone(), "z2");
  EXPECT_EQ(m.snapshot.pools(0).zones(1).zone(), "z1");
  ASSERT_EQ(m.pools.size(), 1u);
  EXPECT_EQ(m.pools[0].ready_backends,
            (std::vector<std::pair<std::string, int>>{{"z2", 1}, {"z1", 1}, {"z3", 0}}));
}

TEST(ClusterModel, InvalidEditKeepsTheLastValidSpecAndSaysWhy) {
  std::map<std::string, json> slices = {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}};
  std::map<std::string, json> last_good;
  std::map<std::string, json> pools = {
      {"cache/p",
       pool("p", R"({"service": "mc", "replication": {"wait": "all"}, "prefixes": ["s:"]})")}};
  ClusterModel good = buildClusterModel(pools, slices, last_good);
  pools["cache/p"] = pool("p", R"({"service": "mc", "replication": {"wait": "sometimes"}})", 2);
  ClusterModel bad = buildClusterModel(pools, slices, last_good);
  EXPECT_EQ(bad.snapshot.version(), good.snapshot.version());
  ASSERT_EQ(bad.pools.size(), 1u);
  EXPECT_FALSE(bad.pools[0].valid);
  EXPECT_TRUE(bad.pools[0].in_snapshot);
  EXPECT_EQ(bad.pools[0].reason, "InvalidSpec");
  EXPECT_NE(bad.pools[0].message.find("spec.replication.wait"), std::string::npos);
  EXPECT_EQ(bad.pools[0].generation, 2);

  // Never valid: nothing to serve.
  std::map<std::string, json> fresh;
  ClusterModel never =
      buildClusterModel({{"cache/q", pool("q", R"({"port": "x"})")}}, slices, fresh);
  EXPECT_EQ(never.snapshot.pools_size(), 0);
  EXPECT_FALSE(never.pools[0].in_snapshot);
}

TEST(ClusterModel, ConflictingPrefixesAndMissingBackends) {
  std::map<std::string, json> slices = {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}};
  std::map<std::string, json> pools = {
      {"cache/a", pool("a", R"({"service": "mc", "prefixes": ["s:"]})")},
      {"cache/b", pool("b", R"({"service": "mc", "prefixes": ["s:"]})")},
      {"cache/c", pool("c", R"({"service": "nothing-here"})")}};
  std::map<std::string, json> last_good;
  ClusterModel m = buildClusterModel(pools, slices, last_good);
  ASSERT_EQ(m.snapshot.pools_size(), 1);
  EXPECT_EQ(m.snapshot.pools(0).name(), "a");
  EXPECT_EQ(m.pools[1].reason, "PrefixConflict");
  EXPECT_EQ(m.pools[2].reason, "NoReadyBackends");
}

}  // namespace
}  // namespace memzone::controlplane::model
