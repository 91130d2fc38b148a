// Churn windows on the request path: warm-up and migration (README "Churn").
//
// Warm-up: a server new to this proxy (added, or back under a new address) starts empty;
// until its window ends a miss on it is read from the pool's other zones and a hit there is
// repaired into it (read_repair.h: true TTL and flags, add semantics, so a newer local value
// is never overwritten). Migration: after a zone's ring changed, a miss on a key whose owner
// changed is read from the previous owner (also one that left the topology), then from the other
// zones, and repaired into the new owner; every write to such a key also deletes it at the
// previous owner, so no later migration read can bring back a value the client replaced or
// deleted. Outside the windows misses stay local: the request path pays one predictable
// branch per request (ZoneView::migrate_until_us, BackendServer::warmUntilUs() are 0).
#pragma once

#include <string_view>

#include "proxy/backend/backend_registry.h"

namespace memzone::server {

enum class WindowRead : uint8_t { kNone, kWarmup, kMigration };

// Whether a miss on `server` (the owner of `key` in zone view `zv`) at time `now_us` is read
// elsewhere, and why. For a migration, `previous` gets the key's previous owner when it is
// known (in the topology, or kept after it left: backend_registry.h) and is not `server` (else
// null).
WindowRead windowFor(const backend::ZoneView& zv, backend::BackendServer* server,
                     std::string_view key, int64_t now_us, backend::BackendServer** previous);

// Deletes `key` at its previous owner in every zone of `pool` its write went to (all zones, or
// the local one) whose migration window is open and whose owner of `key` changed. Fire and forget:
// each delete owns itself and pins `view`; one that cannot be sent, fails or is refused is
// queued as an invalidation of that server (BackendServer::invalidate). Worker thread only.
void invalidatePreviousOwners(backend::BackendRegistry& registry, backend::TopologyView* view,
                              const backend::PoolView& pool, std::string_view key,
                              std::string_view wire_key, bool all_zones, int64_t now_us);

}  // namespace memzone::server
