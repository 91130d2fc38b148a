#include "proxy/backend/backend_registry.h"

#include <algorithm>

#include "memzone/ops/log.h"

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
      drop_timer_(base, [this] { dropIdleRetiredViews(); }) {
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
  for (auto& [address, server] : servers_) server->retire();
}

void BackendRegistry::apply(std::shared_ptr<const topology::Topology> topology) {
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
      ZoneView zv{&zone, {}};
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
  servers_.swap(next);  // servers only in `next` now are referenced by older views alone

  if (current_ != nullptr) {
    current_->retired = true;
    TopologyView* old = current_;
    current_ = nullptr;
    if (old->inflight == 0) dropView(old);
  }
  current_ = view.get();
  views_.push_back(std::move(view));
  if (log_ && !log_written_) rewriteLog();
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
