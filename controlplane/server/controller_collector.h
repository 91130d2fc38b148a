// memzone-controller's Prometheus metrics (names: README "Metrics"), read at scrape from the
// proxy registry, the snapshot cache and the source's counters.
#pragma once

#include <prometheus/collectable.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "controlplane/server/dirty_servers.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {

// Ready backends of one zone of a pool, as the source last computed them.
struct ZoneReadyBackends {
  std::string pool;
  std::string zone;
  int ready = 0;
};

// Counters a topology source keeps for the metrics. Any thread.
struct SourceCounters {
  std::atomic<uint64_t> rejected{0};  // source states refused (bad file, invalid objects)

  // The Kubernetes source reports every zone a ReplicatedPool's status lists, 0 included: a
  // zone without ready backends is left out of the snapshot, and alerts need to see it.
  // Never set (file source): the served snapshot's zones are reported.
  void setReadyBackends(std::vector<ZoneReadyBackends> ready) {
    std::lock_guard lock(mu_);
    ready_ = std::move(ready);
  }
  std::optional<std::vector<ZoneReadyBackends>> readyBackends() const {
    std::lock_guard lock(mu_);
    return ready_;
  }

 private:
  mutable std::mutex mu_;
  std::optional<std::vector<ZoneReadyBackends>> ready_;
};

class ControllerCollector : public prometheus::Collectable {
 public:
  ControllerCollector(const ProxyRegistry& registry, const SnapshotCache& cache,
                      const SourceCounters& source)
      : registry_(registry), cache_(cache), source_(source) {}
  std::vector<prometheus::MetricFamily> Collect() const override;
  // Families a source adds (the Kubernetes watchers' restarts and errors).
  void setExtra(std::function<void(std::vector<prometheus::MetricFamily>&)> extra) {
    extra_ = std::move(extra);
  }
  void setDirtyServers(const DirtyServers* dirty) { dirty_ = dirty; }

 private:
  std::function<void(std::vector<prometheus::MetricFamily>&)> extra_;
  const DirtyServers* dirty_ = nullptr;
  const ProxyRegistry& registry_;
  const SnapshotCache& cache_;
  const SourceCounters& source_;
};

}  // namespace memzone::controlplane
