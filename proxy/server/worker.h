// A worker thread: its own event base, listening socket (SO_REUSEPORT: the kernel spreads
// connections, no hand-off between threads), client connections, backend connections,
// request pool and share of the buffer budget. Nothing on the request path is shared with
// other workers; the connection count (--max-connections) is shared, on the accept path only.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/backend/backend_registry.h"
#include "proxy/backend/backend_stats.h"
#include "proxy/event/event_base.h"
#include "proxy/protocol/request_parser.h"
#include "proxy/server/buffer_budget.h"
#include "proxy/server/client_connection.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/request_dispatcher.h"
#include "proxy/tls/tls_contexts.h"

namespace memzone::server {

// Client connections of the whole proxy against --max-connections. Any thread.
class ConnectionSlots {
 public:
  explicit ConnectionSlots(uint64_t max) : max_(max) {}
  bool tryTake() {
    if (open_.fetch_add(1, std::memory_order_relaxed) < max_) return true;
    open_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  void give() { open_.fetch_sub(1, std::memory_order_relaxed); }
  uint64_t max() const { return max_; }

 private:
  std::atomic<uint64_t> open_{0};
  uint64_t max_;
};

// A listening socket of this worker; connections accepted on a `tls` one handshake first.
struct WorkerListener {
  int fd;
  bool tls = false;
};

struct WorkerOptions {
  std::string zone;
  protocol::ParserLimits parser_limits;
  ConnectionLimits connection_limits;
  std::shared_ptr<ConnectionSlots> slots;  // shared by every worker of the proxy
  uint64_t buffer_share = 256ull << 20;    // this worker's part of --max-buffer-memory
  int client_send_buffer = 0;              // SO_SNDBUF of client sockets; 0: autotuned
  bool backend_samples = false;            // refresh backendSamples() every second
  // The proxy's shared view of each server (read trust); one per proxy, shared by workers.
  std::shared_ptr<backend::ServerBoard> server_board;
  std::string state_dir;  // with it, deletes owed to servers are logged there (durable)
  // TLS: the client-facing context (tls: listeners) and the backend contexts of pools.
  std::shared_ptr<tls::TlsContexts> tls;
  uint32_t tls_handshake_timeout_ms = 5000;
};

// One backend as this worker sees it, sampled off the request path for per-backend metrics.
struct BackendSample {
  std::string address;
  bool up = false;
  bool readable = false;
  size_t pending_invalidations = 0;
};

class Worker {
 public:
  // Takes ownership of the listeners' fds (already bound and listening, non-blocking).
  Worker(int index, std::vector<WorkerListener> listeners, WorkerOptions options,
         StatsRenderer render_stats);
  ~Worker();

  void start();
  // Thread-safe: the worker switches to `topology` between two events. `replay`: a topology a
  // restarted proxy served before the saved one, applied first only for its windows.
  void setTopology(std::shared_ptr<const topology::Topology> topology, bool replay = false);
  // Thread-safe: stop accepting, answer what was read, close connections; the thread exits
  // when every connection is closed.
  void drain();
  // Thread-safe: stop now.
  void stop();
  void join();
  bool finished() const { return finished_.load(); }

  const ProxyStats& stats() const { return stats_; }
  const backend::BackendStats& backendStats() const { return backend_stats_; }
  // Thread-safe reads (relaxed counters and accounts).
  const BufferBudget& budget() const { return budget_; }
  // Thread-safe: the last per-second sample (empty unless options.backend_samples).
  std::vector<BackendSample> backendSamples() const;

 private:
  void onAccept(const WorkerListener& listener);
  void sweepHandshakes();
  void pauseAccepting();
  void onConnectionClosed(ClientConnection* connection);
  void reap();
  void afterTurn();
  void cutOffHeaviest();
  void sweepPartialRequests();
  void maintain();
  void sampleBackends();

  int index_;
  std::vector<WorkerListener> listeners_;
  WorkerOptions options_;
  event::EventBase base_;
  FlushList flush_list_;
  ProxyStats stats_;
  backend::BackendStats backend_stats_;
  BufferBudget budget_;  // before everything that charges it
  ByteBuffer read_buffer_;
  RequestPool pool_;  // before registry_: retiring backends at exit recycles requests into it
  backend::BackendRegistry registry_;
  RequestDispatcher dispatcher_;
  protocol::RequestParser parser_;
  IntrusiveList<ClientConnection, PartialRequestTag> partial_;
  IntrusiveList<ClientConnection, HandshakeTag> handshaking_;
  ConnectionContext context_;
  std::vector<std::unique_ptr<event::IoEvent>> accept_events_;  // one per listener
  IntrusiveList<ClientConnection, WorkerListTag> connections_;
  IntrusiveList<ClientConnection, WorkerListTag> closed_;  // destroyed by the reaper
  event::Timer reaper_;
  event::Timer sampler_;
  event::Timer partial_sweeper_;
  event::Timer maintenance_;
  event::Timer accept_resume_;
  event::Timer handshake_sweeper_;
  uint64_t peak_since_trim_ = 0;   // buffered bytes: when they fall far, give memory back
  mutable std::mutex samples_mu_;  // the worker writes once a second, a scrape reads
  std::vector<BackendSample> samples_;
  bool draining_ = false;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace memzone::server
