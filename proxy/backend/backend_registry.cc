#include "proxy/backend/backend_registry.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <set>

#include "memzone/ops/log.h"
#include "proxy/backend/empty_server_watch.h"
#include "proxy/event/event_base.h"

namespace memzone::backend {

tls::TlsFiles backendTlsFiles(const topology::BackendTlsSpec& spec) {
  tls::TlsFiles files;
  files.ca = spec.ca_file;
  files.cert = spec.cert_file;
  files.key = spec.key_file;
  files.verify = spec.verify ? tls::Verify::kRequire : tls::Verify::kNone;
  return files;
}

BackendRegistry::BackendRegistry(event::EventBase& base, FlushList& flush_list,
                                 std::string local_zone, BackendStats& stats,
                                 std::shared_ptr<ServerBoard> board, const std::string& log_dir,
                                 int worker)
    : base_(base),
      flush_list_(flush_list),
      local_zone_(std::move(local_zone)),
      stats_(stats),
      board_(board ? std::move(board) : std::make_shared<ServerBoard>()),
      compact_timer_(base, [this] { rewriteLog(); }),
      drop_timer_(base, [this] { dropIdleRetiredViews(); }),
      warming_timer_(base, [this] { tickWindows(); }),
      empty_watch_timer_(base, [this] {
        empty_watch_->check();
        empty_watch_timer_.arm(std::chrono::seconds(1));
      }) {
  char host[256] = "proxy";
  gethostname(host, sizeof(host) - 1);
  empty_watch_ = std::make_unique<EmptyServerWatch>(*this, "memzone:sentinel:" + std::string(host) +
                                                               ":" + std::to_string(getpid()) +
                                                               ":" + std::to_string(worker));
  if (!log_dir.empty()) log_ = std::make_unique<InvalidationLog>(base, log_dir, worker);
}

void BackendRegistry::rewriteLog() {
  if (!log_) return;
  if (!log_written_ || log_->wantsCompaction()) {
    std::map<std::string, OwedDeletes> owed;
    for (const auto& [address, server] : servers_) {
      OwedDeletes o = server->owed();
      if (!o.keys.empty() || o.overflowed) owed[address] = std::move(o);
    }
    log_->rewrite(owed);
    if (!log_written_) {
      log_written_ = true;
      board_->workerLogWritten();
    }
  }
  compact_timer_.arm(std::chrono::seconds(1));
}

BackendRegistry::~BackendRegistry() {
  empty_watch_timer_.cancel();
  for (auto& [address, server] : servers_) server->retire();
}

void BackendRegistry::apply(std::shared_ptr<const topology::Topology> topology, bool replay) {
  ServerOptions options;
  options.connection.connect_timeout_ms = topology->connect_timeout_ms;
  options.connection.request_timeout_ms = topology->request_timeout_ms;
  options.connection.buffer_account = buffer_account_;
  options.connection.max_input_bytes = max_input_bytes_;
  options.health = topology->health;
  options.consistency = topology->consistency;
  options.allow_flush = topology->allow_flush_all;

  // --zone wins; without it, the zone the controller found for this proxy's node.
  const std::string& local_zone = local_zone_.empty() ? topology->proxy_zone : local_zone_;
  auto view = std::make_unique<TopologyView>();
  std::map<std::string, std::shared_ptr<BackendServer>> next;
  const ConnectionOptions plain = options.connection;
  for (const topology::Pool& pool : topology->pools) {
    PoolView pv{&pool, {}, 0};
    options.connection = plain;
    if (pool.tls.enabled) {
      // Built (and its files checked) when the topology was accepted; a lookup here.
      std::string error;
      options.connection.tls =
          tls_contexts_ ? tls_contexts_->backend(backendTlsFiles(pool.tls), error) : nullptr;
      if (!options.connection.tls) {
        ops::logEvent(ops::LogLevel::kError, "tls-pool:" + pool.name,
                      "pool %s: backend TLS unusable: %s", pool.name.c_str(), error.c_str());
      }
      // Without a context connections fail by name (kTlsHandshake), never in plaintext.
      options.connection.tls_enabled = true;
      options.connection.tls_server_name = pool.tls.server_name;
      options.connection.tls_counters = &stats_.tls;
    }
    for (uint32_t z = 0; z < pool.zones.size(); ++z) {
      const topology::Zone& zone = pool.zones[z];
      if (zone.name == local_zone) pv.local_zone = z;
      ZoneView zv{&zone, {}, 0, nullptr};
      for (const topology::Backend& b : zone.backends) {
        auto& slot = next[b.address];
        if (!slot) {
          auto it = servers_.find(b.address);
          if (it != servers_.end()) {
            slot = it->second;
            slot->setOptions(options);
          } else {
            slot = std::make_shared<BackendServer>(base_, flush_list_, b, options, stats_,
                                                   board_->stateFor(b.address));
            slot->setLog(log_.get());
            // Deletes a previous run of the proxy still owed this server: replayed before it
            // serves reads, like any queued delete.
            OwedDeletes restored = board_->takeRestored(b.address);
            if (!restored.keys.empty() || restored.overflowed) slot->restore(restored);
            slot->connectAhead();  // in the background: the first request finds it ready
          }
          view->servers.push_back(slot);
        }
        slot->setZoneSlot(zone.stats_slot);
        zv.servers.push_back(slot.get());
      }
      pv.zones.push_back(std::move(zv));
    }
    view->pools.push_back(std::move(pv));
  }
  view->topology = std::move(topology);
  openWindows(*view, current_, next, servers_);
  servers_.swap(next);  // servers only in `next` now are referenced by older views alone

  if (current_ != nullptr) {
    current_->retired = true;
    TopologyView* old = current_;
    current_ = nullptr;
    if (old->inflight == 0) dropView(old);
  }
  current_ = view.get();
  views_.push_back(std::move(view));
  if (!empty_watch_timer_.armed()) empty_watch_timer_.arm(std::chrono::seconds(1));
  if (log_ && !log_written_ && !replay) rewriteLog();
}

namespace {

const ZoneView* findZone(const TopologyView* view, const std::string& pool,
                         const std::string& zone) {
  if (view == nullptr) return nullptr;
  for (const PoolView& pv : view->pools) {
    if (pv.pool->name != pool) continue;
    for (const ZoneView& zv : pv.zones) {
      if (zv.zone->name == zone) return &zv;
    }
  }
  return nullptr;
}

// A previous owner of a zone's keys: a server of the new topology, else one the view being
// replaced knew (a server of its topology, or a departed previous owner it kept), else null.
std::shared_ptr<BackendServer> previousOwner(
    const std::string& address,
    const std::map<std::string, std::shared_ptr<BackendServer>>& servers,
    const TopologyView& previous) {
  if (auto it = servers.find(address); it != servers.end()) return it->second;
  for (const std::shared_ptr<BackendServer>& s : previous.servers) {
    if (s->address() == address) return s;
  }
  return nullptr;
}

// Keeps a departed previous owner alive as long as `view` (dropView retires it with the last
// view that holds it).
void keepDeparted(TopologyView& view, const std::shared_ptr<BackendServer>& server) {
  if (std::find(view.servers.begin(), view.servers.end(), server) == view.servers.end()) {
    view.servers.push_back(server);
  }
}

}  // namespace

void BackendRegistry::openWindows(
    TopologyView& view, const TopologyView* previous,
    const std::map<std::string, std::shared_ptr<BackendServer>>& servers,
    const std::map<std::string, std::shared_ptr<BackendServer>>& before) {
  // The first topology opens nothing: the proxy has no "before" to compare with (and a whole
  // cluster starting empty has no copies to warm from anyway).
  if (previous == nullptr) return;
  const int64_t now = event::nowMicros();
  // Windows open at the change: now, or earlier for a proxy restarted inside them (then a
  // window already over opens nothing).
  const int64_t opened =
      view.topology->changed_at_us != 0 ? std::min(now, view.topology->changed_at_us) : now;
  bool warming = false;  // or migrating: tickWindows() has windows to close
  for (PoolView& pv : view.pools) {
    const topology::Pool& pool = *pv.pool;
    for (ZoneView& zv : pv.zones) {
      // Warm-up: a server this proxy did not know a moment ago is new or came back (a pod
      // rescheduled under the same name has a new address): it starts empty.
      if (pool.warmup_ms > 0) {
        for (BackendServer* server : zv.servers) {
          const int64_t warm_until = opened + int64_t{pool.warmup_ms} * 1000;
          if (before.count(server->address()) == 0 && warm_until > now) {
            server->setWarmUntilUs(warm_until);
          }
          warming |= server->warmUntilUs() > now;
        }
      }
      if (pool.migration_ms == 0) continue;
      const ZoneView* old = findZone(previous, pool.name, zv.zone->name);
      if (old == nullptr) continue;  // a new zone: nothing moved inside it
      std::shared_ptr<MigrationSource> source;
      const int64_t migrate_until = opened + int64_t{pool.migration_ms} * 1000;
      if (topology::placementOf(*old->zone) != topology::placementOf(*zv.zone)) {
        if (migrate_until <= now) continue;
        source = std::make_shared<MigrationSource>();
        source->until_us = migrate_until;
        source->topology = previous->topology;
        source->zone = old->zone;
      } else if (old->migration && old->migrate_until_us > now) {
        source = std::make_shared<MigrationSource>(*old->migration);  // still open: carry it
      } else {
        continue;
      }
      // Previous owners by old ring index (their address may be new). One that left the
      // topology (a scale-in) is kept, connections and all, while the window is open: the key
      // mover moves its copies with add semantics, so a write here must delete the key there
      // too, or a client's delete that found nothing at the new owner is undone by the move
      // (chaos test with ring changes, issue 23).
      source->servers.clear();
      for (const topology::Backend& b : source->zone->backends) {
        std::shared_ptr<BackendServer> server = previousOwner(b.address, servers, *previous);
        if (server && servers.count(b.address) == 0) keepDeparted(view, server);
        source->servers.push_back(server.get());
      }
      zv.migrate_until_us = source->until_us;
      pv.migrate_until_us = std::max(pv.migrate_until_us, source->until_us);
      zv.migration = std::move(source);
      warming = true;
    }
  }
  if (warming) warming_timer_.arm(std::chrono::microseconds(0));  // once this view is current
}

void BackendRegistry::tickWindows() {
  if (current_ == nullptr) return;
  const int64_t now = event::nowMicros();
  std::array<uint64_t, topology::kMaxZoneSlots> counts{};
  std::set<BackendServer*> seen;
  bool any = false;
  for (PoolView& pv : current_->pools) {
    if (pv.migrate_until_us != 0 && pv.migrate_until_us <= now) pv.migrate_until_us = 0;
    any |= pv.migrate_until_us != 0;
    for (ZoneView& zv : pv.zones) {
      if (zv.migrate_until_us != 0 && zv.migrate_until_us <= now) {
        zv.migrate_until_us = 0;
        zv.migration.reset();
      }
      for (BackendServer* server : zv.servers) {
        if (server->warmUntilUs() != 0 && server->warmUntilUs() <= now) server->setWarmUntilUs(0);
        if (server->warmUntilUs() != 0 && seen.insert(server).second) {
          ++counts[zv.zone->stats_slot];
          any = true;
        }
      }
    }
  }
  for (size_t z = 0; z < counts.size(); ++z) stats_.zones[z].servers_warming.set(counts[z]);
  if (any) warming_timer_.arm(std::chrono::milliseconds(500));
}

void BackendRegistry::dropIdleRetiredViews() {
  std::vector<TopologyView*> idle;
  for (const auto& v : views_) {
    if (v->retired && v->inflight == 0) idle.push_back(v.get());
  }
  for (TopologyView* v : idle) dropView(v);
}

void BackendRegistry::dropView(TopologyView* view) {
  // Servers that only this view referenced are drained now: nothing started on it is pending.
  for (auto& server : view->servers) {
    if (server.use_count() == 1) server->retire();
  }
  views_.erase(std::remove_if(views_.begin(), views_.end(),
                              [view](const auto& v) { return v.get() == view; }),
               views_.end());
}

std::vector<BackendServer*> BackendRegistry::allServers() const {
  std::vector<BackendServer*> out;
  for (const auto& [address, server] : servers_) out.push_back(server.get());
  return out;
}

}  // namespace memzone::backend
