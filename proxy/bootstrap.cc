#include "proxy/bootstrap.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

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
#include "proxy/backend/backend_registry.h"
#include "proxy/config/topology_file.h"
#include "proxy/metrics/proxy_collector.h"
#include "proxy/server/listen_socket.h"
#include "proxy/server/stats_text.h"
#include "proxy/server/worker.h"
#include "proxy/tls/tls_contexts.h"
#include "proxy/topology/controller_client.h"
#include "proxy/topology/snapshot_codec.h"
#include "proxy/topology/state_file.h"
#include "proxy/topology/topology.h"

namespace memzone {
namespace {

// Builds the TLS context of every pool with backend TLS (their files are read now): "" when
// all are usable, else "pools[N].tls: reason" and the topology is refused (start-up fails,
// a reload is rejected, a streamed snapshot is NACKed).
std::string prepareBackendTls(const topology::Topology& topology, tls::TlsContexts& contexts) {
  for (size_t p = 0; p < topology.pools.size(); ++p) {
    const topology::Pool& pool = topology.pools[p];
    if (!pool.tls.enabled) continue;
    std::string error;
    if (!contexts.backend(backend::backendTlsFiles(pool.tls), error)) {
      return "pool " + pool.name + ": tls: " + error;
    }
    if (!pool.tls.verify) {
      ops::logEvent(ops::LogLevel::kWarn, "tls-noverify:" + pool.name,
                    "pool %s: backend TLS with verify: false: servers are not authenticated",
                    pool.name.c_str());
    }
  }
  return "";
}

std::shared_ptr<const topology::Topology> loadTopology(const std::string& path,
                                                       tls::TlsContexts& tls) {
  config::TopologyFileResult file = config::loadTopologyFile(path);
  for (const auto& e : file.errors) fprintf(stderr, "memzone-proxy: %s\n", e.c_str());
  if (!file.errors.empty()) return nullptr;
  topology::BuildResult built = topology::buildTopology(file.spec);
  if (!built.topology) {
    fprintf(stderr, "memzone-proxy: %s: %s\n", path.c_str(), built.error.c_str());
    return nullptr;
  }
  if (std::string error = prepareBackendTls(*built.topology, tls); !error.empty()) {
    fprintf(stderr, "memzone-proxy: %s: %s\n", path.c_str(), error.c_str());
    return nullptr;
  }
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
                  server::StatsContext& stats, tls::TlsContexts& tls)
      : workers_(workers), stats_(stats), tls_(tls) {}

  void apply(std::shared_ptr<const topology::Topology> topology) {
    for (auto& w : workers_) w->setTopology(topology);
    stats_.setTopologyVersion(topology->version);
  }

  // Validates a streamed snapshot in full; "" when applied, else the reason (NACK).
  std::string applySnapshot(const v1::TopologySnapshot& snapshot, const std::string& state_dir) {
    topology::BuildResult built = topology::buildTopology(topology::specFromSnapshot(snapshot));
    if (!built.topology) {
      stats_.nacks.fetch_add(1);
      return built.error;
    }
    if (std::string error = prepareBackendTls(*built.topology, tls_); !error.empty()) {
      stats_.nacks.fetch_add(1);
      return error;
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
  tls::TlsContexts& tls_;
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
                                                    v1::TopologySnapshot& snapshot,
                                                    tls::TlsContexts& tls) {
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
  if (built.topology) built.error = prepareBackendTls(*built.topology, tls);
  if (!built.topology || !built.error.empty()) {
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

// The client-facing TLS context when some listener is tls:, else null ("" error).
std::shared_ptr<tls::TlsContext> clientFacingTls(const config::ProxyOptions& options,
                                                 std::string& error) {
  bool any = false;
  for (const config::ListenerSpec& l : options.listeners) any |= l.tls;
  if (!any) return nullptr;
  tls::TlsFiles files;
  files.cert = options.tls.cert_file;
  files.key = options.tls.key_file;
  files.ca = options.tls.client_ca_file;
  files.verify = options.tls.verify == config::TlsVerify::kRequire    ? tls::Verify::kRequire
                 : options.tls.verify == config::TlsVerify::kOptional ? tls::Verify::kOptional
                                                                      : tls::Verify::kNone;
  return tls::TlsContext::create(tls::Role::kServer, files, error);
}

}  // namespace

int runProxy(const config::ProxyOptions& options) {
  auto tls_contexts = std::make_shared<tls::TlsContexts>();
  {
    std::string error;
    std::shared_ptr<tls::TlsContext> client_tls = clientFacingTls(options, error);
    if (!error.empty()) {
      fprintf(stderr, "memzone-proxy: client TLS: %s\n", error.c_str());
      return 1;
    }
    tls_contexts->setClientFacing(client_tls);
  }
  std::shared_ptr<const topology::Topology> topology;
  v1::TopologySnapshot state;
  if (options.controller.empty()) {
    topology = loadTopology(options.config_path, *tls_contexts);
    if (!topology) return 1;
  } else {
    topology = loadState(options.state_dir, state, *tls_contexts);
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
  // Every listener has one socket per worker (SO_REUSEPORT); worker i takes the i-th of each.
  std::vector<std::vector<server::WorkerListener>> listeners(threads);
  std::string bound;
  for (const config::ListenerSpec& spec : options.listeners) {
    server::ListenResult listen = server::listenReusePort(spec.address, threads);
    if (!listen.error.empty()) {
      fprintf(stderr, "memzone-proxy: %s\n", listen.error.c_str());
      return 1;
    }
    for (unsigned i = 0; i < threads; ++i) listeners[i].push_back({listen.fds[i], spec.tls});
    if (!bound.empty()) bound += ",";
    bound += (spec.tls ? "tls:" : "") + listen.bound;
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
  worker_options.tls = tls_contexts;
  worker_options.tls_handshake_timeout_ms = options.tls.handshake_timeout_ms;
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
  stats_context->tls = tls_contexts;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<server::Worker>(
        static_cast<int>(i), std::move(listeners[i]), worker_options,
        [stats_context](ByteBuffer& out) { server::renderStats(*stats_context, out); }));
    stats_context->workers.push_back(workers.back().get());
  }
  TopologyApplier applier(workers, *stats_context, *tls_contexts);
  if (topology) applier.apply(topology);
  for (auto& w : workers) w->start();
  fprintf(stderr, "memzone-proxy %s listening on %s (zone %s, %u threads, topology %s)\n",
          MEMZONE_VERSION, bound.c_str(), options.zone.empty() ? "-" : options.zone.c_str(),
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
    stats_context->controller_connected = 0;
    controller = std::make_unique<topology::ControllerClient>(
        client_options,
        [&applier, state_dir](const v1::TopologySnapshot& snapshot) {
          return applier.applySnapshot(snapshot, state_dir);
        },
        [stats_context](topology::ControllerState state) {
          stats_context->controller_connected = state == topology::ControllerState::kConnected;
        },
        [&workers] { return backendsDown(workers); });
    controller->start();
  }

  while (true) {
    // Once a second without a signal: certificate and key files that changed are re-read
    // (a stat() each; rotation by cert-manager needs no restart and drops no connection).
    timespec tick{1, 0};
    int sig = sigtimedwait(&signals, nullptr, &tick);
    if (sig < 0) {
      tls_contexts->reloadAll();
      continue;
    }
    if (sig == SIGHUP) {
      if (options.config_path.empty()) continue;  // the controller owns the topology
      auto next = loadTopology(options.config_path, *tls_contexts);
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
  if (controller) controller->stop();
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
