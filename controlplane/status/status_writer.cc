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

json mergePatchDiff(const json& from, const json& to) {
  if (!from.is_object() || !to.is_object()) return to;
  json patch = json::object();
  for (const auto& [key, value] : from.items()) {
    if (!to.contains(key)) patch[key] = nullptr;  // explicit null: remove it
  }
  for (const auto& [key, value] : to.items()) {
    auto it = from.find(key);
    if (it == from.end()) {
      patch[key] = value;
    } else if (*it != value) {
      // Objects merge key by key; anything else (arrays included) is replaced whole.
      patch[key] = it->is_object() && value.is_object() ? mergePatchDiff(*it, value) : value;
    }
  }
  return patch;
}

json desiredStatus(const model::PoolOutcome& pool, const std::string& served_version,
                   const ProxyView& proxies, const json& current_status, const std::string& now) {
  json zones = json::array();
  std::string summary;
  bool zone_empty = false;
  std::string down_zone;
  int down_proxies = 0;
  for (const auto& [zone, count] : pool.ready_backends) {
    zones.push_back({{"name", zone}, {"readyBackends", count}});
    summary += (summary.empty() ? "" : ",") + zone + ":" + std::to_string(count);
    zone_empty |= count == 0;
    auto it = proxies.zones_down.find(pool.name + "/" + zone);
    if (count > 0 && it != proxies.zones_down.end() && it->second > down_proxies) {
      down_zone = zone;
      down_proxies = it->second;
    }
  }
  std::string counts = std::to_string(proxies.acked) + " of " + std::to_string(proxies.total) +
                       " proxies serve topology " + served_version;
  std::string down_message = std::to_string(down_proxies) + " of " + std::to_string(proxies.total) +
                             " proxies report every backend of zone " + down_zone + " down";
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
  } else if (!pool.serving) {
    ready = false;
    reason = pool.reason;
    message = pool.message + " (its keys get SERVER_ERROR no pool for this key)";
  } else if (down_proxies > 0) {
    ready = false;
    reason = "BackendsUnreachable";
    message = down_message;
  } else if (proxies.acked < proxies.total) {
    ready = false;
    reason = "ProxiesPending";
    message = counts;
  } else {
    ready = true;
    reason = proxies.total == 0 ? "NoProxiesConnected" : "AllProxiesAcked";
    message = counts;
  }
  bool degraded = false;
  std::string d_reason = "AsExpected", d_message = "all zones have ready backends";
  if (proxies.nacked > 0) {
    degraded = true;
    d_reason = "ProxyRejected";
    d_message = std::to_string(proxies.nacked) + " proxies refused topology " + served_version;
  } else if (pool.in_snapshot && down_proxies > 0) {
    degraded = true;
    d_reason = "BackendsUnreachable";
    d_message = down_message;
  } else if (pool.serving && zone_empty) {
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
                 {"zoneSummary", summary},
                 {"proxies", {{"total", proxies.total}, {"acked", proxies.acked}}},
                 {"conditions", json::array({condition("Ready", ready, reason, message,
                                                       pool.generation, current_status, now),
                                             condition("Degraded", degraded, d_reason, d_message,
                                                       pool.generation, current_status, now)})}};
  if (pool.in_snapshot) status["topologyVersion"] = served_version;
  return status;
}

void StatusWriter::write(const model::ClusterModel& model, const std::string& served_version,
                         const std::map<std::string, json>& objects, const ProxyView& proxies) {
  std::string now = rfc3339Now();
  for (const auto& pool : model.pools) {
    auto it = objects.find(pool.key);
    if (it == objects.end()) continue;
    const json meta = it->second.value("metadata", json::object());
    std::string rv = meta.value("resourceVersion", "");
    json current = it->second.value("status", json::object());
    auto w = written_.find(pool.key);
    if (w != written_.end()) {
      if (rv != w->second.latest && w->second.behind.count(rv)) {
        current = w->second.status;  // the watch has not caught up with our write yet
      } else {
        written_.erase(w);
      }
    }
    json desired = desiredStatus(pool, served_version, proxies, current, now);
    json diff = mergePatchDiff(current, desired);
    if (diff.is_object() && diff.empty()) continue;  // nothing new to say: no write
    std::string path = "/apis/memzone.io/v1alpha1/namespaces/" + meta.value("namespace", "") +
                       "/replicatedpools/" + meta.value("name", "") + "/status";
    k8s::ApiResponse r = client_.mergePatch(path, json::object({{"status", diff}}).dump());
    ++writes_;
    if (r.status != 200) {
      ops::logEvent(ops::LogLevel::kError, "status:" + pool.key, "status of ReplicatedPool %s: %s",
                    pool.key.c_str(), k8s::describeFailure(r).c_str());
      continue;
    }
    json returned = json::parse(r.body, nullptr, false);
    if (!returned.is_object()) returned = json::object();
    json status = returned.value("status", json());
    Written& record = written_[pool.key];
    record.behind.insert(rv);
    if (!record.latest.empty()) record.behind.insert(record.latest);
    record.latest = returned.value("metadata", json::object()).value("resourceVersion", "");
    record.status = status.is_object() ? status : desired;
    const json* ready = nullptr;
    for (const auto& c : desired["conditions"]) {
      if (c["type"] == "Ready") ready = &c;
    }
    std::string summary =
        ready ? (*ready)["status"].get<std::string>() + " " + (*ready)["reason"].get<std::string>()
              : "";
    ops::logEvent(ops::LogLevel::kInfo, "status-written:" + pool.key + summary,
                  "wrote status of ReplicatedPool %s (Ready=%s)", pool.key.c_str(),
                  summary.c_str());
  }
}

}  // namespace memzone::controlplane
