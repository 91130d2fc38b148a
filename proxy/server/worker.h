// A worker thread: its own event base, listening socket (SO_REUSEPORT: the kernel spreads
// connections, no hand-off between threads), client connections, backend connections and
// request pool. Nothing on the request path is shared with other workers.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "proxy/backend/backend_registry.h"
#include "proxy/backend/backend_stats.h"
#include "proxy/event/event_base.h"
#include "proxy/protocol/request_parser.h"
#include "proxy/server/client_connection.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/request_dispatcher.h"

namespace memzone::server {

struct WorkerOptions {
  std::string zone;
  protocol::ParserLimits parser_limits;
  ConnectionLimits connection_limits;
  size_t max_connections = 65536;  // per worker
  bool backend_samples = false;    // refresh backendSamples() every second
  // The proxy's shared view of each server (read trust); one per proxy, shared by workers.
  std::shared_ptr<backend::ServerBoard> server_board;
  std::string state_dir;  // with it, deletes owed to servers are logged there (durable)
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
  // Takes ownership of `listen_fd` (already bound and listening, non-blocking).
  Worker(int index, int listen_fd, WorkerOptions options, StatsRenderer render_stats);
  ~Worker();

  void start();
  // Thread-safe: the worker switches to `topology` between two events.
  void setTopology(std::shared_ptr<const topology::Topology> topology);
  // Thread-safe: stop accepting, answer what was read, close connections; the thread exits
  // when every connection is closed.
  void drain();
  // Thread-safe: stop now.
  void stop();
  void join();
  bool finished() const { return finished_.load(); }

  const ProxyStats& stats() const { return stats_; }
  const backend::BackendStats& backendStats() const { return backend_stats_; }
  // Thread-safe: the last per-second sample (empty unless options.backend_samples).
  std::vector<BackendSample> backendSamples() const;

 private:
  void onAccept();
  void onConnectionClosed(ClientConnection* connection);
  void reap();
  void sampleBackends();

  int index_;
  int listen_fd_;
  WorkerOptions options_;
  event::EventBase base_;
  FlushList flush_list_;
  ProxyStats stats_;
  backend::BackendStats backend_stats_;
  RequestPool pool_;  // before registry_: retiring backends at exit recycles requests into it
  backend::BackendRegistry registry_;
  RequestDispatcher dispatcher_;
  protocol::RequestParser parser_;
  std::unique_ptr<event::IoEvent> accept_event_;
  std::map<ClientConnection*, std::unique_ptr<ClientConnection>> connections_;
  std::vector<std::unique_ptr<ClientConnection>> closed_;
  event::Timer reaper_;
  event::Timer sampler_;
  mutable std::mutex samples_mu_;  // the worker writes once a second, a scrape reads
  std::vector<BackendSample> samples_;
  bool draining_ = false;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace memzone::server
