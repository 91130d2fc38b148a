#include "controlplane/status/status_writer.h"

#include <gtest/gtest.h>

namespace memzone::controlplane {
namespace {

using nlohmann::json;

model::PoolOutcome serving() {
  model::PoolOutcome p;
  p.key = "cache/sessions";
  p.name = "sessions";
  p.generation = 3;
  p.valid = true;
  p.in_snapshot = true;
  p.serving = true;
  p.ready_backends = {{"a", 2}, {"b", 1}};
  return p;
}

ProxyView view(int total, int acked, int nacked = 0, std::map<std::string, int> down = {}) {
  ProxyView v;
  v.total = total;
  v.acked = acked;
  v.nacked = nacked;
  v.zones_down = std::move(down);
  return v;
}

const json* condition(const json& status, const std::string& type) {
  for (const auto& c : status["conditions"]) {
    if (c["type"] == type) return &c;
  }
  return nullptr;
}

TEST(StatusWriter, ReadyWhenEveryProxyAckedAndTransitionTimeKeptWhileUnchanged) {
  json s1 = desiredStatus(serving(), "v1", view(2, 2), json::object(), "2026-11-25T10:00:00Z");
  EXPECT_EQ(s1["observedGeneration"], 3);
  EXPECT_EQ(s1["topologyVersion"], "v1");
  EXPECT_EQ(s1["proxies"], (json{{"total", 2}, {"acked", 2}}));
  EXPECT_EQ(s1["zones"],
            json::parse(R"([{"name":"a","readyBackends":2},{"name":"b","readyBackends":1}])"));
  EXPECT_EQ(s1["zoneSummary"], "a:2,b:1");  // the ZONES column: a string, not a list
  EXPECT_EQ((*condition(s1, "Ready"))["status"], "True");
  EXPECT_EQ((*condition(s1, "Ready"))["reason"], "AllProxiesAcked");
  EXPECT_EQ((*condition(s1, "Degraded"))["status"], "False");
  EXPECT_EQ((*condition(s1, "Degraded"))["reason"], "AsExpected");

  // Same state later: identical status, so nothing is written.
  json s2 = desiredStatus(serving(), "v1", view(2, 2), s1, "2026-11-25T11:00:00Z");
  EXPECT_EQ(s2, s1);
  EXPECT_EQ(mergePatchDiff(s1, s2), json::object());

  // A proxy has not applied v2 yet: Ready flips, with a new transition time.
  json s3 = desiredStatus(serving(), "v2", view(2, 1), s2, "2026-11-25T12:00:00Z");
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
  json s = desiredStatus(p, "v1", view(1, 1), json::object(), "t");
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "InvalidSpec");
  EXPECT_EQ((*condition(s, "Degraded"))["status"], "True");

  json n = desiredStatus(serving(), "v1", view(2, 1, 1), json::object(), "t");
  EXPECT_EQ((*condition(n, "Degraded"))["reason"], "ProxyRejected");

  model::PoolOutcome empty = serving();
  empty.ready_backends = {{"a", 2}, {"b", 0}};
  json e = desiredStatus(empty, "v1", view(0, 0), json::object(), "t");
  EXPECT_EQ((*condition(e, "Degraded"))["reason"], "ZoneWithoutBackends");
  EXPECT_EQ((*condition(e, "Ready"))["reason"], "NoProxiesConnected");
}

// Defect: Ready/AllProxiesAcked while every proxy had every backend of a zone down.
TEST(StatusWriter, NeverReadyWhileProxiesReportAZoneDown) {
  json s = desiredStatus(serving(), "v1", view(3, 3, 0, {{"sessions/b", 2}}), json::object(), "t");
  EXPECT_EQ((*condition(s, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "BackendsUnreachable");
  EXPECT_NE((*condition(s, "Ready"))["message"].get<std::string>().find("zone b"),
            std::string::npos);
  EXPECT_EQ((*condition(s, "Degraded"))["reason"], "BackendsUnreachable");
  // Another pool's zone is not ours.
  json other = desiredStatus(serving(), "v1", view(3, 3, 0, {{"other/b", 3}}), json::object(), "t");
  EXPECT_EQ((*condition(other, "Ready"))["status"], "True");
}

// Defect: the status of a pool without backends omitted topologyVersion; a merge patch keeps an
// omitted key, so the stored status never matched and the controller patched once a second.
TEST(StatusWriter, PatchClearsRemovedFieldsWithExplicitNull) {
  json before = desiredStatus(serving(), "v1", view(1, 1), json::object(), "t");
  model::PoolOutcome gone = serving();
  gone.in_snapshot = false;
  gone.serving = false;
  gone.valid = false;
  gone.reason = "PrefixConflict";
  gone.message = "taken";
  gone.ready_backends = {};
  json after = desiredStatus(gone, "v1", view(1, 1), before, "t2");
  ASSERT_FALSE(after.contains("topologyVersion"));
  json patch = mergePatchDiff(before, after);
  ASSERT_TRUE(patch.contains("topologyVersion"));
  EXPECT_TRUE(patch["topologyVersion"].is_null());
  EXPECT_EQ(patch["zones"], json::array());            // arrays are replaced whole
  EXPECT_FALSE(patch.contains("observedGeneration"));  // unchanged: not sent
  // Applying the patch the way the API server does gives exactly `after`: no second write.
  json applied = before;
  applied.merge_patch(patch);
  EXPECT_EQ(applied, after);
  EXPECT_EQ(mergePatchDiff(applied, after), json::object());
}

TEST(StatusWriter, MergePatchDiffOfNestedObjects) {
  json from = json::parse(R"({"a": {"x": 1, "y": 2}, "b": [1, 2], "c": "k"})");
  json to = json::parse(R"({"a": {"x": 1, "z": 3}, "b": [1, 2], "d": true})");
  EXPECT_EQ(mergePatchDiff(from, to),
            json::parse(R"({"a": {"y": null, "z": 3}, "c": null, "d": true})"));
  EXPECT_EQ(mergePatchDiff(json::object(), to), to);
}

}  // namespace
}  // namespace memzone::controlplane
