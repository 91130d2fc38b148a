// memzone-proxy's Prometheus metrics (names: README "Metrics"). A custom Collectable: the
// request path only bumps per-worker counters (a relaxed load and store, no shared cache
// line, no atomic read-modify-write); a scrape sums them over the workers.
#pragma once

#include <prometheus/collectable.h>

#include <memory>
#include <vector>

#include "proxy/server/stats_text.h"

namespace memzone::metrics {

class ProxyCollector : public prometheus::Collectable {
 public:
  explicit ProxyCollector(std::shared_ptr<server::StatsContext> context)
      : context_(std::move(context)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::shared_ptr<server::StatsContext> context_;
};

}  // namespace memzone::metrics
