#include "controlplane/status/status_writer.h"

#include <cstdio>
#include <ctime>

#include "memzone/ops/log.h"

namespace memzone::controlplane {
namespace {

using nlohmann::json;

std::string rfc3339Now() {
  std::time_t t = std::time(nullptr);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json condition(const char* type, bool status, const std::string& reason, const std::string& message,
               int64_t generation, const json& current_status, const std::string& now) {
  std::string value = status ? "True" : "False";
  std::string since = now;
  for (const auto& c : current_status.value("conditions", json::array())) {
    if (c.value("type", "") == type && c.value("status", "") == value) {
      since = c.value("lastTransitionTime", now);  // unchanged status: keep its time
    }
  }
  return json{{"type", type},
              {"status", value},
              {"reason", reason},
              {"message", message},
              {"observedGeneration", generation},
              {"lastTransitionTime", since}};
}

}  // namespace

json desiredStatus(const model::PoolOutcome& pool, const std::string& served_version,
                   int proxies_total, int proxies_acked, int proxies_nacked,
                   const json& current_status, const std::string& now) {
  json zones = json::array();
  bool zone_empty = false;
  for (const auto& [zone, count] : pool.ready_backends) {
    zones.push_back({{"name", zone}, {"readyBackends", count}});
    zone_empty |= count == 0;
  }
  bool ready;
  std::string reason, message;
  if (!pool.in_snapshot) {
    ready = false;
    reason = pool.reason;
    message = pool.message;
  } else if (!pool.valid) {
    ready = false;
    reason = pool.reason;
    message = pool.message + " (still serving the last valid spec)";
  } else if (proxies_acked < proxies_total) {
    ready = false;
    reason = "ProxiesPending";
    message = std::to_string(proxies_acked) + " of " + std::to_string(proxies_total) +
              " proxies serve topology " + served_version;
  } else {
    ready = true;
    reason = proxies_total == 0 ? "NoProxiesConnected" : "AllProxiesAcked";
    message = std::to_string(proxies_acked) + " of " + std::to_string(proxies_total) +
              " proxies serve topology " + served_version;
  }
  bool degraded = false;
  std::string d_reason = "AsExpected", d_message = "all zones have ready backends";
  if (proxies_nacked > 0) {
    degraded = true;
    d_reason = "ProxyRejected";
    d_message = std::to_string(proxies_nacked) + " proxies refused topology " + served_version;
  } else if (pool.in_snapshot && zone_empty) {
    degraded = true;
    d_reason = "ZoneWithoutBackends";
    d_message = "a listed zone has no ready backends";
  } else if (pool.in_snapshot && !pool.valid) {
    degraded = true;
    d_reason = pool.reason;
    d_message = pool.message;
  }
  json status = {{"observedGeneration", pool.generation},
                 {"zones", zones},
                 {"proxies", {{"total", proxies_total}, {"acked", proxies_acked}}},
                 {"conditions", json::array({condition("Ready", ready, reason, message,
                                                       pool.generation, current_status, now),
                                             condition("Degraded", degraded, d_reason, d_message,
                                                       pool.generation, current_status, now)})}};
  if (pool.in_snapshot) status["topologyVersion"] = served_version;
  return status;
}

void StatusWriter::write(const model::ClusterModel& model, const std::string& served_version,
                         const std::map<std::string, json>& objects, const ProxyRegistry& proxies) {
  int total = 0, acked = 0, nacked = 0;
  for (const auto& p : proxies.proxies()) {
    ++total;
    acked += p.applied_version == served_version;
    nacked += p.last_nack_version == served_version && p.applied_version != served_version;
  }
  std::string now = rfc3339Now();
  for (const auto& pool : model.pools) {
    auto it = objects.find(pool.key);
    if (it == objects.end()) continue;
    json current = it->second.value("status", json::object());
    json desired = desiredStatus(pool, served_version, total, acked, nacked, current, now);
    if (desired == current) continue;  // nothing new to say: no write
    const json meta = it->second.value("metadata", json::object());
    std::string path = "/apis/memzone.io/v1alpha1/namespaces/" + meta.value("namespace", "") +
                       "/replicatedpools/" + meta.value("name", "") + "/status";
    k8s::ApiResponse r = client_.mergePatch(path, json::object({{"status", desired}}).dump());
    if (r.status != 200) {
      ops::logEvent(ops::LogLevel::kError, "status:" + pool.key, "status of ReplicatedPool %s: %s",
                    pool.key.c_str(),
                    r.status ? ("HTTP " + std::to_string(r.status)).c_str() : r.error.c_str());
    }
  }
}

}  // namespace memzone::controlplane
