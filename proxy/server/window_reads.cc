#include "proxy/server/window_reads.h"

#include <string>

#include "proxy/protocol/backend_request.h"

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

// A delete sent to a previous owner; nobody waits for it. One that fails (or is answered
// with an error) may have left the old value there, for a migration read or a later ring
// change to serve: the key is queued as an invalidation, so the server is not read until the
// delete is replayed (as a failed write copy is, replicated_write.cc). Hence the key is kept:
// one small heap object per delete, sent only inside migration windows.
class PreviousOwnerDelete final : public backend::ReplySink {
 public:
  PreviousOwnerDelete(backend::BackendRegistry& registry, backend::TopologyView* view,
                      backend::BackendServer* server, std::string_view key)
      : registry_(registry), view_(view), server_(server), key_(key) {
    registry_.pin(view_);
  }
  ~PreviousOwnerDelete() override { registry_.unpin(view_); }
  void onBackendReply(uint32_t, const protocol::BackendReply& reply) override {
    if (reply.code != protocol::ReplyCode::kOk && reply.code != protocol::ReplyCode::kNotFound) {
      server_->invalidate(key_);
    }
    delete this;
  }
  void onBackendFailure(uint32_t, backend::BackendFailure failure) override {
    // A server that left the topology is read by no one any more.
    if (failure != backend::BackendFailure::kRemoved) server_->invalidate(key_);
    delete this;
  }

 private:
  backend::BackendRegistry& registry_;
  backend::TopologyView* view_;  // pinned: server_ lives as long as we do
  backend::BackendServer* server_;
  std::string key_;
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
    old->commit(new PreviousOwnerDelete(registry, view, old, wire_key), 0);
  }
}

}  // namespace memzone::server
