#include "proxy/server/window_reads.h"

#include <string>

#include "proxy/protocol/request_encoder.h"

namespace memzone::server {
namespace {

// The previous owner of `key` when the zone's migration window is open and the key moved;
// `moved` says whether it moved at all (its previous owner may have left the topology).
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

// A delete sent to a previous owner; nobody waits for it.
class PreviousOwnerDelete final : public backend::ReplySink {
 public:
  PreviousOwnerDelete(backend::BackendRegistry& registry, backend::TopologyView* view)
      : registry_(registry), view_(view) {
    registry_.pin(view_);
  }
  ~PreviousOwnerDelete() override { registry_.unpin(view_); }
  void onBackendReply(uint32_t, std::string_view, protocol::ReplyCode) override { delete this; }
  void onBackendFailure(uint32_t, backend::BackendFailure) override { delete this; }

 private:
  backend::BackendRegistry& registry_;
  backend::TopologyView* view_;
};

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
                              const backend::PoolView& pool, std::string_view key, bool all_zones,
                              int64_t now_us) {
  for (size_t z = 0; z < pool.zones.size(); ++z) {
    if (!all_zones && z != pool.local_zone) continue;
    const backend::ZoneView& zv = pool.zones[z];
    bool moved = false;
    backend::BackendServer* old = previousOwner(zv, key, now_us, moved);
    if (old == nullptr || old->admit()) continue;
    registry.stats().zones[zv.zone->stats_slot].migration_invalidations.add();
    protocol::encodeDelete(key, old->output());
    old->commit(new PreviousOwnerDelete(registry, view), 0, protocol::ReplyShape::kLine);
  }
}

}  // namespace memzone::server
