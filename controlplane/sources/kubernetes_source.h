// The controller's Kubernetes source: ReplicatedPools (memzone.io/v1alpha1), the Services they
// name and their EndpointSlices, in one namespace, plus Nodes (for the zone of a proxy that
// reports only its node name). Every change marks the model dirty; a debounce window (100 ms)
// folds bursts of slice updates into one snapshot, well inside the 1 s in which a ready/unready
// change must reach the proxies. Once every watch has listed, the snapshot published is always
// the real state (no ReplicatedPools: no pools).
//
// Several replicas may run: each watches and serves streams (equal objects, equal snapshot,
// equal version). With leader election on, only the holder of the Lease writes ReplicatedPool
// status, after each rebuild and every second (proxies ACK asynchronously), counting the
// proxies of every replica (ReplicaRoster).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/ha/leader_elector.h"
#include "controlplane/ha/replica_roster.h"
#include "controlplane/k8s/api_client.h"
#include "controlplane/k8s/resource_watcher.h"
#include "controlplane/model/cluster_model.h"
#include "controlplane/server/controller_collector.h"
#include "controlplane/server/dirty_servers.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/snapshot_cache.h"
#include "controlplane/status/status_writer.h"

namespace memzone::controlplane {

struct KubernetesSourceOptions {
  bool leader_elect = true;           // off: this replica writes status on its own
  ha::LeaderElectionConfig election;  // namespace: the watched one when empty
  // Where the other replicas reach this one's topology port (in our replica Lease); "": they
  // do not stream to it (the Leases carry the dirty sets alone).
  std::string advertise_address;
  // Told, every status period, the other live replicas' identity -> address (the source's
  // thread).
  std::function<void(const std::map<std::string, std::string>&)> on_peer_addresses;
  // Told, every status period, the other live replicas' identities (with an address or not):
  // what is applied everywhere waits for each one's word (applied_everywhere.h).
  std::function<void(std::set<std::string>)> on_peer_identities;
};

class KubernetesSource {
 public:
  // `dirty_servers` is shared with the other replicas through the roster (their proxies'
  // debts join ours).
  KubernetesSource(k8s::ApiConfig config, KubernetesSourceOptions options, SnapshotCache& cache,
                   const ProxyRegistry& proxies, DirtyServers& dirty_servers,
                   SourceCounters& counters);
  ~KubernetesSource();

  void start();
  // The first step of a graceful stop, before the proxy streams end: no status is written any
  // more (it would count the proxies leaving as gone) and this replica's Lease stops changing,
  // so the others keep counting its proxies, once, while they move.
  void beginStop();
  // Releases the leader Lease, lets the proxies reach another replica, deletes this replica's
  // Lease, and asks the watches to stop (each notices within a second).
  void handOver();
  // Whether the watches have stopped, waiting at most until `deadline`.
  bool watchesStopped(std::chrono::steady_clock::time_point deadline);
  void stop();  // handOver() and wait for the watches
  bool synced() const;
  // The zone label of a Node, or "" when unknown.
  std::string zoneOfNode(const std::string& node) const;
  std::vector<const k8s::ResourceWatcher*> watchers() const;
  // Whether this replica writes status: it leads, or there is no election.
  bool writesStatus() const;
  const ha::LeaderElector* elector() const { return elector_.get(); }
  // This replica's identity in the Leases ("" without leader election).
  std::string identity() const { return options_.leader_elect ? options_.election.identity : ""; }

 private:
  void markDirty();
  void run();
  void rebuild();
  void rebuildUnchecked();
  void writeStatus();
  // Under status_mu_.
  ProxyView proxyView(const v1::TopologySnapshot* served);
  // The other replicas' dirty servers into ours.
  void unitePeersDirtyServers();

  k8s::ApiClient client_;
  KubernetesSourceOptions options_;
  SnapshotCache& cache_;
  const ProxyRegistry& proxies_;
  DirtyServers& dirty_servers_;
  SourceCounters& counters_;
  StatusWriter status_;
  std::unique_ptr<k8s::ResourceWatcher> pools_;
  std::unique_ptr<k8s::ResourceWatcher> services_;
  std::unique_ptr<k8s::ResourceWatcher> slices_;
  std::unique_ptr<k8s::ResourceWatcher> nodes_;
  std::unique_ptr<ha::LeaderElector> elector_;
  std::unique_ptr<ha::ReplicaRoster> roster_;
  std::atomic<bool> leadership_changed_{false};
  std::mutex status_mu_;         // held through a status write; beginStop() waits for it
  bool status_stopped_ = false;  // under status_mu_
  // Under status_mu_: when a replica's Lease last listed each proxy (memberKey).
  std::map<std::string, std::chrono::steady_clock::time_point> last_listed_;
  std::map<std::string, nlohmann::json> last_good_;
  std::optional<model::ClusterModel> model_;  // the last one built; the source's thread only
  std::set<std::string> rejected_;            // "key@generation" already reported
  std::mutex mu_;
  std::condition_variable wake_;
  bool dirty_ = false;
  bool stopping_ = false;
  std::vector<std::thread> watcher_stops_;  // handOver()'s, one per watch
  size_t watchers_stopped_ = 0;             // under mu_
  std::thread thread_;
};

}  // namespace memzone::controlplane
