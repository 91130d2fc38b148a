// Writes ReplicatedPool status the way Kubernetes conventions want it: observedGeneration,
// Ready and Degraded conditions (CamelCase reasons, a message, lastTransitionTime kept
// unless the condition's status changed), ready backends per zone, the topology version and
// how many proxies applied it. A JSON merge patch to the /status subresource, sent only when
// the status differs from what the object already says. Called from the source's thread.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "controlplane/k8s/api_client.h"
#include "controlplane/model/cluster_model.h"
#include "controlplane/server/proxy_registry.h"

namespace memzone::controlplane {

class StatusWriter {
 public:
  explicit StatusWriter(k8s::ApiClient& client) : client_(client) {}

  // `objects` are the ReplicatedPools as last seen (their current status included).
  void write(const model::ClusterModel& model, const std::string& served_version,
             const std::map<std::string, nlohmann::json>& objects, const ProxyRegistry& proxies);

 private:
  k8s::ApiClient& client_;
};

// The status a ReplicatedPool should have; `now` is an RFC 3339 timestamp for conditions that
// change. Pure (exposed for tests).
nlohmann::json desiredStatus(const model::PoolOutcome& pool, const std::string& served_version,
                             int proxies_total, int proxies_acked, int proxies_nacked,
                             const nlohmann::json& current_status, const std::string& now);

}  // namespace memzone::controlplane
