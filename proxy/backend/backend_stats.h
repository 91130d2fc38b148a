// Backend counters of one worker (summed over workers at scrape time).
#pragma once

#include <array>

#include "proxy/backend/backend_failure.h"
#include "proxy/metrics/counter.h"
#include "proxy/tls/tls_counters.h"
#include "proxy/topology/zone_slots.h"

namespace memzone::backend {

// Replication and consistency counters of one zone (see topology/zone_slots.h).
struct ZoneCounters {
  metrics::Counter copies_sent;    // writes sent to this zone as copies
  metrics::Counter copies_failed;  // ... that failed or diverged (then invalidated)
  metrics::Counter invalidations_queued;
  metrics::Counter invalidations_replayed;    // deletes the server confirmed
  metrics::Counter invalidations_dropped;     // lost to a queue overflow (server then held/flushed)
  metrics::Counter invalidation_queue_depth;  // gauge
  metrics::Counter overflow_flushes;
  // Churn windows (server/window_reads.h), counted in the zone of the server being filled.
  metrics::Counter warmup_reads;             // misses on a warming server read elsewhere
  metrics::Counter keys_warmed;              // ... whose value was repaired into it
  metrics::Counter migration_reads;          // misses on a key's new owner read elsewhere
  metrics::Counter migration_hits;           // ... that found the key (previous owner or zone)
  metrics::Counter migration_repairs;        // ... repaired into the new owner
  metrics::Counter migration_invalidations;  // writes in the window deleted at the old owner
  metrics::Counter servers_warming;          // gauge (this worker's view; every worker agrees)
};

struct BackendStats {
  std::array<ZoneCounters, topology::kMaxZoneSlots> zones;
  metrics::Counter requests;
  std::array<metrics::Counter, kBackendFailureCount> failures;             // per request, by kind
  std::array<metrics::Counter, kBackendFailureCount> connection_failures;  // per connection
  metrics::Counter mark_down_events;
  metrics::Counter servers_down;  // gauge
  metrics::Counter probes;
  tls::TlsCounters tls;
};

}  // namespace memzone::backend
