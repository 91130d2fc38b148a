#include "proxy/server/window_reads.h"

#include <string>

#include "proxy/protocol/backend_request.h"
#include "proxy/server/background_request.h"

namespace memzone::server {
namespace {

// The previous owner of `key` when the zone's migration window is open and the key moved;
// `moved` says whether it moved at all (its previous owner may be unknown to this view).
backend::BackendServer* previousOwner(const backend::ZoneView& zv, std::string_view key,
                                      int64_t now_us, bool& moved) {
  moved = false;
  if (zv.migrate_until_us <= now_us || !zv.migration) return nullptr;
  const backend::MigrationSource& m = *zv.migration;
  uint32_t now_index = zv.zone->ring.serverFor(key);
  uint32_t old_index = m.zone->ring.serverFor(key);
  if (m.zone->backends[old_index].identity == zv.zone->backends[now_index].identity) {
    return nullptr;
  }
  moved = true;
  backend::BackendServer* old = m.servers[old_index];
  return old == zv.servers[now_index] ? nullptr : old;
}

// A delete sent to a previous owner: the key is gone (HD) or was not there (NF); anything
// else may have left the old value for a migration read or a later ring change to serve.
bool deleteSettled(const protocol::BackendReply& reply) {
  return reply.code == protocol::ReplyCode::kOk || reply.code == protocol::ReplyCode::kNotFound;
}

}  // namespace

WindowRead windowFor(const backend::ZoneView& zv, backend::BackendServer* server,
                     std::string_view key, int64_t now_us, backend::BackendServer** previous) {
  bool moved = false;
  backend::BackendServer* old = previousOwner(zv, key, now_us, moved);
  if (moved) {
    if (previous != nullptr) *previous = old;
    return WindowRead::kMigration;
  }
  return server->warmUntilUs() > now_us ? WindowRead::kWarmup : WindowRead::kNone;
}

void invalidatePreviousOwners(backend::BackendRegistry& registry, backend::TopologyView* view,
                              const backend::PoolView& pool, std::string_view key,
                              std::string_view wire_key, bool all_zones, int64_t now_us) {
  for (size_t z = 0; z < pool.zones.size(); ++z) {
    if (!all_zones && z != pool.local_zone) continue;
    const backend::ZoneView& zv = pool.zones[z];
    bool moved = false;
    backend::BackendServer* old = previousOwner(zv, key, now_us, moved);
    if (old == nullptr) continue;
    registry.stats().zones[zv.zone->stats_slot].migration_invalidations.add();
    if (old->admit()) {
      old->invalidate(wire_key);  // down or saturated: the delete waits for it, and so do reads
      continue;
    }
    protocol::encodeDelete(wire_key, old->opaque().view(), old->output());
    old->commit(new BackgroundRequest(registry, view, old, wire_key, &deleteSettled), 0);
  }
}

}  // namespace memzone::server
