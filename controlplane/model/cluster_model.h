// The pure heart of the Kubernetes source: (ReplicatedPools, EndpointSlices) -> a topology
// snapshot plus, per ReplicatedPool, what its status should say. No I/O, no clocks: the same
// objects always give the same snapshot (and so the same content-hash version).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "memzone/v1/topology.pb.h"

namespace memzone::controlplane::model {

// Endpoints that carry no zone are put in this zone.
inline constexpr const char* kUnknownZone = "unknown";

struct PoolOutcome {
  std::string key;  // namespace/name of the ReplicatedPool
  int64_t generation = 0;
  bool valid = false;  // spec passed validation
  std::string reason;  // CamelCase, when not valid or not serving
  std::string message;
  std::vector<std::pair<std::string, int>> ready_backends;  // zone -> count, in pool order
  bool in_snapshot = false;
};

struct ClusterModel {
  v1::TopologySnapshot snapshot;  // versioned; empty pools when nothing can be served
  std::vector<PoolOutcome> pools;
};

// `last_good` holds, per ReplicatedPool key, the last spec that validated: an invalid edit
// keeps serving it (and the ReplicatedPool reports why it is not Ready).
ClusterModel buildClusterModel(const std::map<std::string, nlohmann::json>& pools,
                               const std::map<std::string, nlohmann::json>& slices,
                               std::map<std::string, nlohmann::json>& last_good);

}  // namespace memzone::controlplane::model
