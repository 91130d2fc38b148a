// Backend counters of one worker (summed over workers at scrape time).
#pragma once

#include <array>

#include "proxy/backend/backend_failure.h"
#include "proxy/metrics/counter.h"

namespace memzone::backend {

struct BackendStats {
  metrics::Counter requests;
  std::array<metrics::Counter, kBackendFailureCount> failures;  // per request, by kind
  std::array<metrics::Counter, kBackendFailureCount> connection_failures;  // per connection
  metrics::Counter mark_down_events;
  metrics::Counter servers_down;  // gauge
  metrics::Counter probes;
};

}  // namespace memzone::backend
