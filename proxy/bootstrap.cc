#include "proxy/bootstrap.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "memzone/ops/http_endpoint.h"
#include "memzone/ops/log.h"
#include "proxy/config/topology_file.h"
#include "proxy/event/event_base.h"
#include "proxy/metrics/proxy_collector.h"
#include "proxy/server/listen_socket.h"
#include "proxy/server/stats_text.h"
#include "proxy/server/worker.h"
#include "proxy/topology/controller_client.h"
#include "proxy/topology/snapshot_codec.h"
#include "proxy/topology/state_file.h"
#include "proxy/topology/topology.h"

namespace memzone {
namespace {

std::shared_ptr<const topology::Topology> loadTopology(const std::string& path) {
  config::TopologyFileResult file = config::loadTopologyFile(path);
  for (const auto& e : file.errors) fprintf(stderr, "memzone-proxy: %s\n", e.c_str());
  if (!file.errors.empty()) return nullptr;
  topology::BuildResult built = topology::buildTopology(file.spec);
  if (!built.topology)
    fprintf(stderr, "memzone-proxy: %s: %s\n", path.c_str(), built.error.c_str());
  return built.topology;
}

std::string nodeId() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return std::string(host) + "-" + std::to_string(getpid()) + "-" +
         std::to_string(std::time(nullptr));
}

// Hands each new topology to every worker (each switches at a request boundary) and keeps
// the version `stats` reports. Any thread.
class TopologyApplier {
 public:
  TopologyApplier(std::vector<std::unique_ptr<server::Worker>>& workers,
                  server::StatsContext& stats)
      : workers_(workers), stats_(stats) {}

  void apply(std::shared_ptr<const topology::Topology> topology) {
    for (auto& w : workers_) w->setTopology(topology);
    stats_.setTopologyVersion(topology->version);
    read_hold_ms_.store(topology->consistency.read_hold_ms, std::memory_order_relaxed);
  }

  // The time hold a proxy falls back to when it loses the controller's dirty set.
  uint32_t readHoldMs() const { return read_hold_ms_.load(std::memory_order_relaxed); }

  // Validates a streamed snapshot in full; "" when applied, else the reason (NACK).
  std::string applySnapshot(const v1::TopologySnapshot& snapshot, const std::string& state_dir) {
    topology::BuildResult built = topology::buildTopology(topology::specFromSnapshot(snapshot));
    if (!built.topology) {
      stats_.nacks.fetch_add(1);
      return built.error;
    }
    apply(built.topology);
    ops::logEvent(ops::LogLevel::kInfo, "applied:" + snapshot.version(),
                  "applied topology %s from the controller", snapshot.version().c_str());
    if (!state_dir.empty()) {
      std::string error = topology::saveSnapshot(state_dir, snapshot);
      if (!error.empty())
        ops::logEvent(ops::LogLevel::kError, std::string("state-dir"), "state dir: %s",
                      error.c_str());
    }
    return "";
  }

 private:
  std::vector<std::unique_ptr<server::Worker>>& workers_;
  server::StatsContext& stats_;
  std::atomic<uint32_t> read_hold_ms_{topology::ConsistencySpec{}.read_hold_ms};
};

// Backends no worker has up ("address:port", sorted), from the workers' per-second samples.
std::vector<std::string> backendsDown(const std::vector<std::unique_ptr<server::Worker>>& workers) {
  std::map<std::string, bool> up;  // address -> some worker has it up
  for (const auto& w : workers) {
    for (const auto& s : w->backendSamples()) up[s.address] |= s.up;
  }
  std::vector<std::string> down;
  for (const auto& [address, is_up] : up) {
    if (!is_up) down.push_back(address);
  }
  return down;
}

// The snapshot a restarted proxy serves until the controller answers, if any.
std::shared_ptr<const topology::Topology> loadState(const std::string& dir,
                                                    v1::TopologySnapshot& snapshot) {
  if (dir.empty()) return nullptr;
  std::string error;
  auto saved = topology::loadSnapshot(dir, error);
  if (!saved) {
    if (!error.empty())
      ops::logEvent(ops::LogLevel::kWarn, std::string("state"), "ignoring state: %s",
                    error.c_str());
    return nullptr;
  }
  topology::BuildResult built = topology::buildTopology(topology::specFromSnapshot(*saved));
  if (!built.topology) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("state"), "ignoring state: %s",
                  built.error.c_str());
    return nullptr;
  }
  snapshot = *saved;
  ops::logEvent(ops::LogLevel::kInfo, std::string("serving-state"),
                "serving topology %s from %s until the controller answers",
                saved->version().c_str(), dir.c_str());
  return built.topology;
}

// Each client connection is a file descriptor: the soft limit (often 1024) is raised to the
// hard one, and a limit below --max-connections is worth a warning at start-up, not a
// surprise under load (accept then fails with EMFILE and pauses).
void raiseFileLimit(size_t max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  // Backend connections, listeners, the metrics endpoint and the controller need some too.
  constexpr rlim_t kReserve = 256;
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_connections + kReserve) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("nofile"),
                  "open file limit %llu is below --max-connections %zu + %llu: connections "
                  "beyond the limit wait in the listen backlog",
                  static_cast<unsigned long long>(limit.rlim_cur), max_connections,
                  static_cast<unsigned long long>(kReserve));
  }
}

}  // namespace

int runProxy(const config::ProxyOptions& options) {
  std::shared_ptr<const topology::Topology> topology;
  v1::TopologySnapshot state;
  if (options.controller.empty()) {
    topology = loadTopology(options.config_path);
    if (!topology) return 1;
  } else {
    topology = loadState(options.state_dir, state);
  }

  // Signals are handled by this thread alone (sigwait below); workers never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  unsigned threads =
      options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  server::ListenResult listen = server::listenReusePort(options.listen, threads);
  if (!listen.error.empty()) {
    fprintf(stderr, "memzone-proxy: %s\n", listen.error.c_str());
    return 1;
  }

  raiseFileLimit(options.max_connections);
  server::WorkerOptions worker_options;
  worker_options.zone = options.zone;
  worker_options.parser_limits.max_item_size = options.max_item_size;
  worker_options.connection_limits.partial_request_timeout_ms = options.partial_request_timeout_ms;
  worker_options.slots = std::make_shared<server::ConnectionSlots>(options.max_connections);
  // Each worker gets an equal share of the budget (buffer_budget.h says why).
  constexpr uint64_t kMinShare = 1 << 20;
  worker_options.buffer_share = options.max_buffer_memory / threads;
  if (worker_options.buffer_share < kMinShare) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("budget"),
                  "--max-buffer-memory %llu over %u workers is below 1M each; using 1M each",
                  static_cast<unsigned long long>(options.max_buffer_memory), threads);
    worker_options.buffer_share = kMinShare;
  }
  worker_options.client_send_buffer = static_cast<int>(options.client_send_buffer);
  // Sampled backend health also feeds the controller (which backends this proxy has down).
  worker_options.backend_samples = options.metrics_per_backend || !options.controller.empty();
  worker_options.server_board = std::make_shared<backend::ServerBoard>();
  if (!options.state_dir.empty()) {
    // Deletes a previous run still owed servers: each goes to the first worker that creates
    // the server, and is replayed before that server serves reads.
    worker_options.state_dir = options.state_dir;
    worker_options.server_board->restore(backend::InvalidationLog::load(options.state_dir),
                                         options.state_dir, static_cast<int>(threads));
  }

  std::vector<std::unique_ptr<server::Worker>> workers;
  auto stats_context = std::make_shared<server::StatsContext>();
  stats_context->started = std::time(nullptr);
  stats_context->threads = threads;
  stats_context->per_backend_metrics = options.metrics_per_backend;
  stats_context->max_connections = options.max_connections;
  stats_context->max_buffer_memory = worker_options.buffer_share * threads;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<server::Worker>(
        static_cast<int>(i), listen.fds[i], worker_options,
        [stats_context](ByteBuffer& out) { server::renderStats(*stats_context, out); }));
    stats_context->workers.push_back(workers.back().get());
  }
  TopologyApplier applier(workers, *stats_context);
  if (topology) applier.apply(topology);
  for (auto& w : workers) w->start();
  fprintf(stderr, "memzone-proxy %s listening on %s (zone %s, %u threads, topology %s)\n",
          MEMZONE_VERSION, listen.bound.c_str(), options.zone.empty() ? "-" : options.zone.c_str(),
          threads, topology ? topology->version.c_str() : "none yet");

  std::unique_ptr<ops::HttpEndpoint> metrics;
  if (!options.metrics_listen.empty()) {
    metrics = std::make_unique<ops::HttpEndpoint>(
        std::vector<std::shared_ptr<prometheus::Collectable>>{
            std::make_shared<metrics::ProxyCollector>(stats_context)},
        // Ready: listening (already), a topology to route with, and not draining.
        [stats_context] {
          return !stats_context->topologyVersion().empty() && !stats_context->draining;
        });
    std::string error = metrics->start(options.metrics_listen);
    if (!error.empty()) {
      fprintf(stderr, "memzone-proxy: %s\n", error.c_str());
      for (auto& w : workers) w->stop();
      for (auto& w : workers) w->join();
      return 1;
    }
  }

  std::unique_ptr<topology::ControllerClient> controller;
  if (!options.controller.empty()) {
    topology::ControllerClientOptions client_options;
    topology::parseControllerTargets(options.controller, client_options.targets);  // checked
    client_options.node_id = nodeId();
    if (const char* node = getenv("NODE_NAME")) client_options.node_name = node;
    client_options.zone = options.zone;
    client_options.initial_version = topology ? state.version() : "";
    std::string state_dir = options.state_dir;
    std::shared_ptr<backend::ServerBoard> board = worker_options.server_board;
    stats_context->controller_connected = 0;
    controller = std::make_unique<topology::ControllerClient>(
        client_options,
        [&applier, state_dir](const v1::TopologySnapshot& snapshot) {
          return applier.applySnapshot(snapshot, state_dir);
        },
        [stats_context, board, &applier](topology::ControllerState state) {
          stats_context->controller_connected = state == topology::ControllerState::kConnected;
          // Nobody tells us any more when other proxies have replayed what they owe.
          if (state == topology::ControllerState::kDisconnected) {
            board->controllerLost(applier.readHoldMs(), event::nowMicros());
            stats_context->dirty_servers = 0;
          }
        },
        [&workers, board, stats_context] {
          topology::ControllerClient::HealthReport report{backendsDown(workers),
                                                          board->owedAddresses(event::nowMicros())};
          stats_context->owed_servers = static_cast<uint32_t>(report.owed.size());
          return report;
        },
        [board, stats_context](const v1::DirtyServers& dirty) {
          board->setDirty({dirty.addresses().begin(), dirty.addresses().end()}, dirty.generation(),
                          dirty.confirmed_generation());
          stats_context->dirty_servers = static_cast<uint32_t>(dirty.addresses_size());
        });
    board->setOwedListener([client = controller.get()] { client->healthChanged(); });
    controller->start();
  }

  while (true) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGHUP) {
      if (options.config_path.empty()) continue;  // the controller owns the topology
      auto next = loadTopology(options.config_path);
      if (!next) {
        ops::logEvent(ops::LogLevel::kError, "reload-rejected:" + options.config_path,
                      "reload of %s rejected; keeping topology %s", options.config_path.c_str(),
                      topology->version.c_str());
        continue;
      }
      topology = next;
      applier.apply(topology);
      ops::logEvent(ops::LogLevel::kInfo, "applied:" + topology->version,
                    "applied topology %s from %s", topology->version.c_str(),
                    options.config_path.c_str());
      continue;
    }
    break;
  }

  stats_context->draining = true;  // /readyz fails first, so load balancers move on
  if (controller) {
    controller->stop();
    worker_options.server_board->setOwedListener({});  // workers outlive the client
  }
  ops::logEvent(ops::LogLevel::kInfo, std::string("draining"), "draining (up to %us)",
                options.drain_timeout_s);
  for (auto& w : workers) w->drain();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.drain_timeout_s);
  for (auto& w : workers) {
    while (!w->finished() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    w->stop();
  }
  for (auto& w : workers) w->join();
  if (metrics) metrics->stop();
  ops::logEvent(ops::LogLevel::kInfo, std::string("stopped"), "stopped");
  return 0;
}

}  // namespace memzone
