// The pure heart of the Kubernetes source: (ReplicatedPools, Services, EndpointSlices) -> a
// topology snapshot plus, per ReplicatedPool, what its status should say. No I/O, no clocks:
// the same objects always give the same snapshot (and so the same content-hash version), which
// is what lets several controller replicas serve proxies byte for byte alike.
//
// Backends follow kube-proxy's reading of a Service: `spec.port` names a Service port (by name
// or by its `port` number); the EndpointSlice port with that Service port's name carries the
// pods' target port. Endpoints are counted once per pod (targetRef), from slices of the pool's
// one address family (`spec.addressType`, default IPv4), so a dual-stack Service does not put a
// memcached on the ring twice.
//
// The snapshot is the real state, always: a ReplicatedPool without ready backends stays in it
// with no zones (its keys get `SERVER_ERROR no pool for this key` from the proxies instead of
// falling through to another pool), and with no ReplicatedPools left the snapshot has no pools.
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
  std::string key;   // namespace/name of the ReplicatedPool
  std::string name;  // the pool's name in the snapshot
  int64_t generation = 0;
  bool valid = false;  // spec passed validation
  std::string reason;  // CamelCase, when not valid or not serving
  std::string message;
  std::vector<std::pair<std::string, int>> ready_backends;  // zone -> count, in pool order
  bool in_snapshot = false;  // the pool and its routes are in the snapshot (maybe with no zones)
  bool serving = false;      // ... with at least one zone of ready backends
};

struct ClusterObjects {
  std::map<std::string, nlohmann::json> pools;  // ReplicatedPools by namespace/name
  std::map<std::string, nlohmann::json> services;
  std::map<std::string, nlohmann::json> slices;  // EndpointSlices
};

struct ClusterModel {
  v1::TopologySnapshot snapshot;  // versioned; no pools when there is nothing to serve
  std::vector<PoolOutcome> pools;
};

// `last_good` holds, per ReplicatedPool key, the last spec that validated: an invalid edit
// keeps serving it (and the ReplicatedPool reports why it is not Ready).
ClusterModel buildClusterModel(const ClusterObjects& objects,
                               std::map<std::string, nlohmann::json>& last_good);

}  // namespace memzone::controlplane::model
