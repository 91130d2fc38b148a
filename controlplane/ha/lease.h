// coordination.k8s.io/v1 Lease objects as client-go's resourcelock.LeaseLock reads and writes
// them: holderIdentity, leaseDurationSeconds, acquireTime and renewTime (MicroTime, RFC 3339
// with microseconds), leaseTransitions. Updates carry the resourceVersion they were read at, so
// the API server refuses (409 Conflict) an update that raced another replica's.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "controlplane/k8s/api_client.h"

namespace memzone::controlplane::ha {

struct LeaseRecord {
  std::string holder_identity;
  int lease_duration_seconds = 0;
  std::string acquire_time;  // MicroTime
  std::string renew_time;    // MicroTime
  int lease_transitions = 0;
  bool operator==(const LeaseRecord&) const = default;
};

// "2006-01-02T15:04:05.000000Z" for now (metav1.MicroTime's wire form).
std::string microTimeNow();

LeaseRecord recordOf(const nlohmann::json& lease);
nlohmann::json specOf(const LeaseRecord& record);

// One Lease by name: get, create, update. Remembers the object last read or written, whose
// resourceVersion the next update is conditional on. Not thread-safe (one owner thread).
class LeaseClient {
 public:
  enum class Result { kOk, kNotFound, kConflict, kError };

  // Every request is bounded by `timeout_ms` (a renewal must not outlive the renew deadline).
  LeaseClient(k8s::ApiClient& client, std::string ns, std::string name, long timeout_ms,
              nlohmann::json labels = nlohmann::json::object());

  Result get(LeaseRecord& out);
  Result create(const LeaseRecord& record, const nlohmann::json& annotations = nullptr);
  // Conditional on the resourceVersion last seen; kConflict when someone else wrote since.
  Result update(const LeaseRecord& record, const nlohmann::json& annotations = nullptr);
  Result remove();
  const std::string& name() const { return name_; }
  const std::string& lastError() const { return last_error_; }

 private:
  Result finish(const k8s::ApiResponse& r, LeaseRecord* out);

  k8s::ApiClient& client_;
  std::string ns_;
  std::string name_;
  long timeout_ms_;
  nlohmann::json labels_;
  nlohmann::json object_;  // last read or written; null before the first
  std::string last_error_;
};

}  // namespace memzone::controlplane::ha
