// Writes ReplicatedPool status the way Kubernetes conventions want it: observedGeneration,
// Ready and Degraded conditions (CamelCase reasons, a message, lastTransitionTime kept
// unless the condition's status changed), ready backends per zone (and `zoneSummary`, a
// string for the ZONES printer column), the topology version and how many proxies applied it.
//
// A JSON merge patch to the /status subresource, computed as the difference between what the
// object holds and what it should hold: a field to clear is sent as an explicit null (a merge
// patch keeps an omitted key), so after one write the two are equal and nothing more is sent.
// Right after a write the watch may not have delivered our own change yet; the object the
// PATCH returned stands in for it until the watch moves past it, so no no-op PATCH follows.
// Called from the source's thread only; only the leader (when elected) calls write().
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "controlplane/k8s/api_client.h"
#include "controlplane/model/cluster_model.h"
#include "controlplane/server/proxy_registry.h"

namespace memzone::controlplane {

class StatusWriter {
 public:
  explicit StatusWriter(k8s::ApiClient& client) : client_(client) {}

  // `objects` are the ReplicatedPools as last seen (their current status included); `proxies`
  // is the view over every controller replica.
  void write(const model::ClusterModel& model, const std::string& served_version,
             const std::map<std::string, nlohmann::json>& objects, const ProxyView& proxies);
  // Forget what was written (leadership changed hands: the watch is the only truth).
  void reset() { written_.clear(); }
  uint64_t writes() const { return writes_; }

 private:
  // Our writes the watch has not delivered yet. While the cached object is one of
  // `behind` (the version we first patched, or one of our earlier writes), the status our last
  // PATCH returned is the truth; the cache at `latest` (or at anything else: someone else
  // wrote) is the truth again.
  struct Written {
    std::set<std::string> behind;
    std::string latest;     // resourceVersion our last PATCH returned
    nlohmann::json status;  // and its status
  };
  k8s::ApiClient& client_;
  std::map<std::string, Written> written_;
  uint64_t writes_ = 0;
};

// The status a ReplicatedPool should have; `now` is an RFC 3339 timestamp for conditions that
// change. Pure (exposed for tests).
nlohmann::json desiredStatus(const model::PoolOutcome& pool, const std::string& served_version,
                             const ProxyView& proxies, const nlohmann::json& current_status,
                             const std::string& now);

// RFC 7386: the merge patch that turns `from` into `to` (nulls for keys to remove); an empty
// object when they are equal. Pure (exposed for tests).
nlohmann::json mergePatchDiff(const nlohmann::json& from, const nlohmann::json& to);

}  // namespace memzone::controlplane
