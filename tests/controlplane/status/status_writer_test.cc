#include "controlplane/status/status_writer.h"

#include <gtest/gtest.h>

namespace memzone::controlplane {
namespace {

using nlohmann::json;

model::PoolOutcome serving() {
  model::PoolOutcome p;
  p.key = "cache/sessions";
  p.generation = 3;
  p.valid = true;
  p.in_snapshot = true;
  p.ready_backends = {{"a", 2}, {"b", 1}};
  return p;
}

const json* condition(const json& status, const std::string& type) {
  for (const auto& c : status["conditions"]) {
    if (c["type"] == type) return &c;
  }
  return nullptr;
}

TEST(StatusWriter, ReadyWhenEveryProxyAckedAndTransitionTimeKeptWhileUnchanged) {
  json s1 = desiredStatus(serving(), "v1", 2, 2, 0, json::object(), "2026-11-25T10:00:00Z");
  EXPECT_EQ(s1["observedGeneration"], 3);
  EXPECT_EQ(s1["topologyVersion"], "v1");
  EXPECT_EQ(s1["proxies"], (json{{"total", 2}, {"acked", 2}}));
  EXPECT_EQ(s1["zones"],
            json::parse(R"([{"name":"a","readyBackends":2},{"name":"b","readyBackends":1}])"));
  EXPECT_EQ((*condition(s1, "Ready"))["status"], "True");
  EXPECT_EQ((*condition(s1, "Ready"))["reason"], "AllProxiesAcked");
  EXPECT_EQ((*condition(s1, "Degraded"))["status"], "False");

  // Same state later: identical status, so nothing is written.
  json s2 = desiredStatus(serving(), "v1", 2, 2, 0, s1, "2026-11-25T11:00:00Z");
  EXPECT_EQ(s2, s1);

  // A proxy has not applied v2 yet: Ready flips, with a new transition time.
  json s3 = desiredStatus(serving(), "v2", 2, 1, 0, s2, "2026-11-25T12:00:00Z");
  EXPECT_EQ((*condition(s3, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(s3, "Ready"))["reason"], "ProxiesPending");
  EXPECT_EQ((*condition(s3, "Ready"))["lastTransitionTime"], "2026-11-25T12:00:00Z");
  EXPECT_EQ((*condition(s3, "Degraded"))["lastTransitionTime"], "2026-11-25T10:00:00Z");
}

TEST(StatusWriter, InvalidSpecAndNacksAndEmptyZones) {
  model::PoolOutcome p = serving();
  p.valid = false;
  p.reason = "InvalidSpec";
  p.message = "spec.replication.wait: must be local, all or quorum";
  json s = desiredStatus(p, "v1", 1, 1, 0, json::object(), "t");
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "InvalidSpec");
  EXPECT_EQ((*condition(s, "Degraded"))["status"], "True");

  json n = desiredStatus(serving(), "v1", 2, 1, 1, json::object(), "t");
  EXPECT_EQ((*condition(n, "Degraded"))["reason"], "ProxyRejected");

  model::PoolOutcome empty = serving();
  empty.ready_backends = {{"a", 2}, {"b", 0}};
  json e = desiredStatus(empty, "v1", 0, 0, 0, json::object(), "t");
  EXPECT_EQ((*condition(e, "Degraded"))["reason"], "ZoneWithoutBackends");
  EXPECT_EQ((*condition(e, "Ready"))["reason"], "NoProxiesConnected");
}

}  // namespace
}  // namespace memzone::controlplane
