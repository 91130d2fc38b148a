// memzone-controller's Prometheus metrics (names: README "Metrics"), read at scrape from the
// proxy registry, the snapshot cache and the source's counters.
#pragma once

#include <prometheus/collectable.h>

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {

// Counters a topology source keeps for the metrics.
struct SourceCounters {
  std::atomic<uint64_t> rejected{0};  // source states refused (bad file, invalid objects)
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

 private:
  std::function<void(std::vector<prometheus::MetricFamily>&)> extra_;
  const ProxyRegistry& registry_;
  const SnapshotCache& cache_;
  const SourceCounters& source_;
};

}  // namespace memzone::controlplane
