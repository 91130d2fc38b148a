// The backend servers of one worker, keyed by address, and the worker's resolved view of a
// topology (pool -> zone -> server index -> BackendServer*). Applying a new topology keeps the
// servers (and their connections) whose address survives, creates the new ones, and retires
// the removed ones once no request started on an older view still uses them.
// Worker thread only; no locks, no atomics.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/backend/backend_server.h"
#include "proxy/backend/dirty_confirmation.h"
#include "proxy/tls/tls_contexts.h"
#include "proxy/topology/topology.h"

namespace memzone::backend {

// A zone whose ring changed: until `until_us`, keys whose owner changed may still sit on
// their previous owner (server/window_reads.h reads and invalidates them there).
struct MigrationSource {
  int64_t until_us = 0;
  std::shared_ptr<const topology::Topology> topology;  // keeps `zone` (the old ring) alive
  const topology::Zone* zone = nullptr;
  // By old ring index. A server that left the topology (a scale-in) is kept alive by the view
  // (TopologyView::servers) while the window is open: writes must delete moved keys there, or
  // the key mover's copy would undo a delete. Null: unknown to the view this one replaced.
  std::vector<BackendServer*> servers;
};

struct ZoneView {
  const topology::Zone* zone;
  std::vector<BackendServer*> servers;  // same order as zone->backends
  // 0 when no migration window is open: the one branch the request path pays.
  int64_t migrate_until_us = 0;
  std::shared_ptr<const MigrationSource> migration;
};

struct PoolView {
  const topology::Pool* pool;
  std::vector<ZoneView> zones;   // same order as pool->zones
  uint32_t local_zone = 0;       // index of the proxy's zone (the first zone if it has none)
  int64_t migrate_until_us = 0;  // the latest of its zones' (0: no migration window open)
};

// Requests pin the view they started on (`inflight`) so a swap never changes their ring.
struct TopologyView {
  std::shared_ptr<const topology::Topology> topology;
  std::vector<PoolView> pools;
  uint64_t inflight = 0;
  bool retired = false;
  std::vector<std::shared_ptr<BackendServer>> servers;  // keeps every referenced server alive
};

// The files and verification a pool's `tls:` asks of its servers' connections.
tls::TlsFiles backendTlsFiles(const topology::BackendTlsSpec& spec);
class EmptyServerWatch;

class BackendRegistry {
 public:
  // `board` is the proxy's shared server view (a private one when null); with `log_dir`,
  // the deletes this worker (`worker`) owes servers are logged there (invalidation_log.h).
  BackendRegistry(event::EventBase& base, FlushList& flush_list, std::string local_zone,
                  BackendStats& stats, std::shared_ptr<ServerBoard> board = nullptr,
                  const std::string& log_dir = "", int worker = 0);
  ~BackendRegistry();

  // Builds the view for `topology` and makes it current. `replay`: a topology a restarted proxy
  // served before its saved one, applied for its windows only: the invalidation log is first
  // written (and the deletes restored from it but unclaimed dropped) at the first real one,
  // so deletes owed to servers only that one has are kept.
  void apply(std::shared_ptr<const topology::Topology> topology, bool replay = false);
  TopologyView* current() { return current_; }
  BackendStats& stats() { return stats_; }

  void pin(TopologyView* view) { ++view->inflight; }
  // The last request of a retired view lets it go. Dropping it may destroy servers and their
  // connections, and unpin() runs inside their reply callbacks, so the drop waits for the
  // next turn of the event loop.
  void unpin(TopologyView* view) {
    if (--view->inflight == 0 && view->retired) drop_timer_.arm(std::chrono::microseconds(0));
  }

  // A window opened outside apply() (a server found empty): recount and close it in time.
  void windowsChanged() { warming_timer_.arm(std::chrono::microseconds(0)); }

  // Writes waiting for their failed copies to be known dirty by every proxy.
  DirtyConfirmations& confirmations() { return confirmations_; }

  // Every server of every pool and zone of the current view (flush_all, stats).
  std::vector<BackendServer*> allServers() const;
  // Charged with every backend connection's buffers; a connection holding more than
  // `max_input_bytes` of undelivered replies fails (0: no limit). Before the first apply().
  // Where pools with backend TLS find their context (null: TLS pools cannot connect).
  void setTlsContexts(std::shared_ptr<tls::TlsContexts> contexts) {
    tls_contexts_ = std::move(contexts);
  }
  // The most reply bytes one request may gather (a multi-get's values; 0: no limit).
  size_t maxReplyBytes() const { return max_input_bytes_; }
  void setBufferLimits(MemoryAccount* account, size_t max_input_bytes) {
    buffer_account_ = account;
    max_input_bytes_ = max_input_bytes;
  }

 private:
  void dropView(TopologyView* view);
  // Opens or carries the churn windows of `view` (warm-up of new servers, migration of
  // zones whose ring changed) from the view before it (null for the first topology).
  void openWindows(TopologyView& view, const TopologyView* previous,
                   const std::map<std::string, std::shared_ptr<BackendServer>>& servers,
                   const std::map<std::string, std::shared_ptr<BackendServer>>& before);
  // Recounts the servers in warm-up per zone (a gauge) and closes the windows that ended (so
  // the request path's test is against 0 again); every 500 ms while any window is open.
  void tickWindows();
  // Rewrites the log from the servers' queues (after the first topology, and when it grew).
  void rewriteLog();
  void dropIdleRetiredViews();

  event::EventBase& base_;
  FlushList& flush_list_;
  std::string local_zone_;
  BackendStats& stats_;
  std::shared_ptr<ServerBoard> board_;
  std::unique_ptr<InvalidationLog> log_;
  bool log_written_ = false;
  event::Timer compact_timer_;
  std::map<std::string, std::shared_ptr<BackendServer>> servers_;
  TopologyView* current_ = nullptr;
  std::vector<std::unique_ptr<TopologyView>> views_;
  event::Timer drop_timer_;
  event::Timer warming_timer_;
  std::unique_ptr<EmptyServerWatch> empty_watch_;
  event::Timer empty_watch_timer_;  // about once a second
  MemoryAccount* buffer_account_ = nullptr;
  size_t max_input_bytes_ = 0;
  DirtyConfirmations confirmations_{base_};
  std::shared_ptr<tls::TlsContexts> tls_contexts_;
};

}  // namespace memzone::backend
