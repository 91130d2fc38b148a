#include "controlplane/model/cluster_model.h"

#include <gtest/gtest.h>

#include <tuple>

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

// A Service `name` with one port per entry: {name, port, targetPort}.
json service(const std::string& name,
             std::vector<std::tuple<std::string, int, int>> ports = {{"memcache", 11211, 11211}}) {
  json p = json::array();
  for (const auto& [port_name, port, target] : ports) {
    json entry = {{"port", port}, {"targetPort", target}, {"protocol", "TCP"}};
    if (!port_name.empty()) entry["name"] = port_name;
    p.push_back(entry);
  }
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"name", name}, {"namespace", "cache"}}},
          {"spec", {{"ports", p}, {"ipFamilies", {"IPv4", "IPv6"}}}}};
}

// The usual Services of these tests: "mc" (memcache 11211 -> 11211) and "other".
std::map<std::string, json> services() {
  return {{"cache/mc", service("mc")}, {"cache/other", service("other")}};
}

ClusterModel build(const std::map<std::string, json>& pools,
                   const std::map<std::string, json>& slices,
                   std::map<std::string, json>& last_good,
                   std::map<std::string, json> svcs = services()) {
  return buildClusterModel(ClusterObjects{pools, std::move(svcs), slices}, last_good);
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
  ClusterModel m = build(pools, slices, last_good);
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
  EXPECT_EQ(build(pools, slices, g1).snapshot.version(),
            build(pools, slices, g2).snapshot.version());
  slices["cache/a"]["endpoints"][0]["conditions"]["ready"] = false;
  slices["cache/b"] = slice("b", "mc", {ep("10.0.0.7", "z1")});
  EXPECT_NE(
      build(pools, slices, g1).snapshot.version(),
      build(pools, {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}}, g2).snapshot.version());
}

TEST(ClusterModel, PortByNumberAndZoneAllowListOrder) {
  std::map<std::string, json> pools = {
      {"cache/p", pool("p", R"({"service": "mc", "port": 11300, "zones": ["z2", "z1", "z3"]})")}};
  std::map<std::string, json> slices = {
      {"cache/a",
       slice("a", "mc", {ep("10.0.0.1", "z1"), ep("10.0.0.2", "z2"), ep("10.0.0.9", "z9")},
             json::array({{{"name", "memcache"}, {"port", 11300}}}))}};
  std::map<std::string, json> last_good;
  ClusterModel m =
      build(pools, slices, last_good, {{"cache/mc", service("mc", {{"memcache", 11300, 11300}})}});
  ASSERT_EQ(m.snapshot.pools(0).zones_size(), 2);  // z9 not allowed, z3 has nobody
  EXPECT_EQ(m.snapshot.pools(0).zones(0).zone(), "z2");
  EXPECT_EQ(m.snapshot.pools(0).zones(1).zone(), "z1");
  ASSERT_EQ(m.pools.size(), 1u);
  EXPECT_EQ(m.pools[0].ready_backends,
            (std::vector<std::pair<std::string, int>>{{"z2", 1}, {"z1", 1}, {"z3", 0}}));
}

TEST(ClusterModel, BackendTlsIsCarriedToTheSnapshot) {
  std::map<std::string, json> pools = {
      {"cache/p", pool("p", R"({"service": "mc", "tls": {"caFile": "/tls/ca.crt",
                                "serverName": "mc.cache.svc", "verify": false}})")},
      {"cache/q", pool("q", R"({"service": "mc", "prefixes": ["q:"],
                                "tls": {"enabled": false, "caFile": "/x"}})")},
      {"cache/bad", pool("bad", R"({"service": "mc", "prefixes": ["b:"],
                                   "tls": {"certFile": "/c"}})")}};
  std::map<std::string, json> slices = {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}};
  std::map<std::string, json> last_good;
  ClusterModel m = build(pools, slices, last_good);
  std::map<std::string, v1::Pool> by_name;
  for (const auto& p : m.snapshot.pools()) by_name[p.name()] = p;
  ASSERT_TRUE(by_name.count("p"));
  const v1::BackendTls& t = by_name["p"].tls();
  EXPECT_TRUE(t.enabled());
  EXPECT_EQ(t.ca_file(), "/tls/ca.crt");
  EXPECT_EQ(t.server_name(), "mc.cache.svc");
  EXPECT_TRUE(t.skip_verify());
  EXPECT_FALSE(by_name["q"].has_tls());  // enabled: false is plaintext
  EXPECT_FALSE(by_name.count("bad"));
  for (const auto& outcome : m.pools) {
    if (outcome.name == "bad") {
      EXPECT_EQ(outcome.message, "spec.tls: certFile and keyFile go together");
    }
  }
}

TEST(ClusterModel, InvalidEditKeepsTheLastValidSpecAndSaysWhy) {
  std::map<std::string, json> slices = {{"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")})}};
  std::map<std::string, json> last_good;
  std::map<std::string, json> pools = {
      {"cache/p",
       pool("p", R"({"service": "mc", "replication": {"wait": "all"}, "prefixes": ["s:"]})")}};
  ClusterModel good = build(pools, slices, last_good);
  pools["cache/p"] = pool("p", R"({"service": "mc", "replication": {"wait": "sometimes"}})", 2);
  ClusterModel bad = build(pools, slices, last_good);
  EXPECT_EQ(bad.snapshot.version(), good.snapshot.version());
  ASSERT_EQ(bad.pools.size(), 1u);
  EXPECT_FALSE(bad.pools[0].valid);
  EXPECT_TRUE(bad.pools[0].in_snapshot);
  EXPECT_EQ(bad.pools[0].reason, "InvalidSpec");
  EXPECT_NE(bad.pools[0].message.find("spec.replication.wait"), std::string::npos);
  EXPECT_EQ(bad.pools[0].generation, 2);

  // Never valid: nothing to serve.
  std::map<std::string, json> fresh;
  ClusterModel never = build({{"cache/q", pool("q", R"({"port": "x"})")}}, slices, fresh);
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
  ClusterModel m = build(pools, slices, last_good);
  // c has no Service: in the snapshot without zones (its keys get "no pool"), not Ready.
  ASSERT_EQ(m.snapshot.pools_size(), 2);
  EXPECT_EQ(m.snapshot.pools(0).name(), "a");
  EXPECT_EQ(m.snapshot.pools(1).name(), "c");
  EXPECT_EQ(m.snapshot.pools(1).zones_size(), 0);
  EXPECT_EQ(m.pools[1].reason, "PrefixConflict");
  EXPECT_FALSE(m.pools[1].in_snapshot);
  EXPECT_EQ(m.pools[2].reason, "ServiceNotFound");
  EXPECT_TRUE(m.pools[2].in_snapshot);
  EXPECT_FALSE(m.pools[2].serving);
}

// Defect: `port: 11211` was taken as the pods' port. It is the Service port; the slice carries
// the target port under the Service port's name (kube-proxy's mapping).
TEST(ClusterModel, PortByNumberIsTheServicePortMappedToTheTargetPort) {
  std::map<std::string, json> svcs = {
      {"cache/mc", service("mc", {{"admin", 8080, 9090}, {"memcache", 11211, 21211}})}};
  std::map<std::string, json> slices = {
      {"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")},
                        json::array({{{"name", "admin"}, {"port", 9090}},
                                     {{"name", "memcache"}, {"port", 21211}}}))}};
  std::map<std::string, json> last_good;
  for (const char* spec :
       {R"({"service": "mc", "port": 11211})", R"({"service": "mc", "port": "memcache"})"}) {
    ClusterModel m = build({{"cache/p", pool("p", spec)}}, slices, last_good, svcs);
    EXPECT_EQ(zonesOf(m, "p"),
              (std::map<std::string, std::vector<std::string>>{{"z1", {"10.0.0.1:21211"}}}))
        << spec;
  }
  // Unset: the Service's first port.
  ClusterModel first =
      build({{"cache/p", pool("p", R"({"service": "mc"})")}}, slices, last_good, svcs);
  EXPECT_EQ(zonesOf(first, "p"),
            (std::map<std::string, std::vector<std::string>>{{"z1", {"10.0.0.1:9090"}}}));
  // A number that is only a target port is no Service port.
  ClusterModel wrong = build({{"cache/p", pool("p", R"({"service": "mc", "port": 21211})")}},
                             slices, last_good, svcs);
  ASSERT_EQ(wrong.pools.size(), 1u);
  EXPECT_EQ(wrong.pools[0].reason, "PortNotFound");
  EXPECT_EQ(wrong.snapshot.pools(0).zones_size(), 0);
  // A single unnamed Service port matches the slice's unnamed port.
  std::map<std::string, json> unnamed_svc = {{"cache/mc", service("mc", {{"", 11211, 31211}})}};
  std::map<std::string, json> unnamed_slices = {
      {"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1")}, json::array({{{"port", 31211}}}))}};
  ClusterModel unnamed = build({{"cache/p", pool("p", R"({"service": "mc", "port": 11211})")}},
                               unnamed_slices, last_good, unnamed_svc);
  EXPECT_EQ(zonesOf(unnamed, "p"),
            (std::map<std::string, std::vector<std::string>>{{"z1", {"10.0.0.1:31211"}}}));
}

json podEp(const std::string& ip, const char* zone, const std::string& pod) {
  json e = ep(ip, zone);
  e["targetRef"] = {{"kind", "Pod"}, {"namespace", "cache"}, {"name", pod}};
  return e;
}

// Defect: a dual-stack Service has an IPv4 and an IPv6 slice; each pod was counted twice.
TEST(ClusterModel, DualStackCountsEachPodOnceInTheChosenFamily) {
  std::map<std::string, json> slices = {
      {"cache/v4",
       slice("v4", "mc", {podEp("10.0.0.1", "z1", "mc-0"), podEp("10.0.0.2", "z2", "mc-1")})},
      {"cache/v6",
       slice("v6", "mc", {podEp("fd00::1", "z1", "mc-0"), podEp("fd00::2", "z2", "mc-1")},
             json::array({{{"name", "memcache"}, {"port", 11211}}}), "IPv6")},
      // During a rebalance a pod sits in two slices of one family.
      {"cache/v4b", slice("v4b", "mc", {podEp("10.0.0.1", "z1", "mc-0")})},
  };
  std::map<std::string, json> last_good;
  ClusterModel v4 = build({{"cache/p", pool("p", R"({"service": "mc"})")}}, slices, last_good);
  EXPECT_EQ(zonesOf(v4, "p"), (std::map<std::string, std::vector<std::string>>{
                                  {"z1", {"10.0.0.1:11211"}}, {"z2", {"10.0.0.2:11211"}}}));
  ClusterModel v6 = build({{"cache/p", pool("p", R"({"service": "mc", "addressType": "IPv6"})")}},
                          slices, last_good);
  EXPECT_EQ(zonesOf(v6, "p"), (std::map<std::string, std::vector<std::string>>{
                                  {"z1", {"fd00::1:11211"}}, {"z2", {"fd00::2:11211"}}}));
  ClusterModel bad = build({{"cache/q", pool("q", R"({"service": "mc", "addressType": "FQDN"})")}},
                           slices, last_good);
  EXPECT_EQ(bad.pools[0].reason, "InvalidSpec");
}

// Defect: with no ReplicatedPool left nothing was published, and proxies kept the deleted
// pool. The real state is published: no pools; a pool without ready backends has no zones.
TEST(ClusterModel, NoPoolsAndNoBackendsArePublishedAsTheyAre) {
  std::map<std::string, json> last_good;
  ClusterModel none = build({}, {}, last_good);
  EXPECT_EQ(none.snapshot.pools_size(), 0);
  EXPECT_EQ(none.snapshot.routes_size(), 0);
  EXPECT_FALSE(none.snapshot.version().empty());

  std::map<std::string, json> slices = {
      {"cache/a", slice("a", "mc", {ep("10.0.0.1", "z1", {{"ready", false}})})}};
  ClusterModel empty = build({{"cache/p", pool("p", R"({"service": "mc", "prefixes": ["s:"]})")}},
                             slices, last_good);
  ASSERT_EQ(empty.snapshot.pools_size(), 1);
  EXPECT_EQ(empty.snapshot.pools(0).zones_size(), 0);
  ASSERT_EQ(empty.snapshot.routes_size(), 1);
  EXPECT_EQ(empty.snapshot.routes(0).prefix(), "s:");
  EXPECT_EQ(empty.pools[0].reason, "NoReadyBackends");
  EXPECT_NE(empty.snapshot.version(), none.snapshot.version());
}

// Placement names come from the EndpointSlice: `hostname` (StatefulSet pods behind a headless
// Service) first, else the pod's name (targetRef); an endpoint with neither is placed by address.
TEST(ClusterModel, BackendNamesFromHostnameElseTargetRef) {
  json stateful = ep("10.0.0.1", "zone-a");
  stateful["hostname"] = "memcached-0";
  stateful["targetRef"] = {{"kind", "Pod"}, {"namespace", "cache"}, {"name", "memcached-0"}};
  json deployment = ep("10.0.0.2", "zone-a");
  deployment["targetRef"] = {{"kind", "Pod"}, {"namespace", "cache"}, {"name", "mc-7d9f-x2k"}};
  json bare = ep("10.0.0.3", "zone-a");
  std::map<std::string, json> last_good;
  auto m = build({{"cache/p", pool("p", R"({"service": "mc", "warmup": {"durationMs": 0}})")}},
                 {{"cache/s", slice("s", "mc", {stateful, deployment, bare})}}, last_good);
  ASSERT_EQ(m.snapshot.pools_size(), 1);
  const auto& pool_out = m.snapshot.pools(0);
  EXPECT_EQ(pool_out.hash_by(), "name");
  EXPECT_TRUE(pool_out.has_warmup());
  EXPECT_EQ(pool_out.warmup().duration_ms(), 0u);
  EXPECT_FALSE(pool_out.has_migration());  // unset: the proxy's default
  const auto& backends = pool_out.zones(0).backends();
  ASSERT_EQ(backends.size(), 3);
  EXPECT_EQ(backends[0].name(), "memcached-0");
  EXPECT_EQ(backends[1].name(), "mc-7d9f-x2k");
  EXPECT_EQ(backends[2].name(), "");

  auto bad =
      build({{"cache/p", pool("p", R"({"service": "mc", "hashBy": "pod"})")}}, {}, last_good = {});
  EXPECT_EQ(bad.pools[0].message, "spec.hashBy: must be name or address");
}

}  // namespace
}  // namespace memzone::controlplane::model
