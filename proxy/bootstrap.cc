#include "proxy/bootstrap.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "memzone/ops/certificate_expiry.h"
#include "memzone/ops/http_endpoint.h"
#include "memzone/ops/log.h"
#include "proxy/backend/backend_registry.h"
#include "proxy/config/topology_file.h"
#include "proxy/event/event_base.h"
#include "proxy/metrics/proxy_collector.h"
#include "proxy/rebalance/key_mover.h"
#include "proxy/server/listen_socket.h"
#include "proxy/server/stats_text.h"
#include "proxy/server/worker.h"
#include "proxy/tls/tls_contexts.h"
#include "proxy/topology/controller_client.h"
#include "proxy/topology/controller_credentials.h"
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
    // Their expiry joins the process's one metric family (certificate_expiry.h).
    ops::watchCertificateExpiry(pool.tls.ca_file);
    ops::watchCertificateExpiry(pool.tls.cert_file);
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

// Who this proxy is to the controller. With --state-dir the first run's identity is kept in
// DIR/node-id, so a restarted proxy takes over the debts the controller retained for it
// (dirty_servers.h) instead of leaving them to expire; without, a new one per process.
std::string nodeId(const std::string& state_dir) {
  std::string path = state_dir.empty() ? "" : state_dir + "/node-id";
  if (!path.empty()) {
    std::ifstream in(path);
    std::string saved;
    if (std::getline(in, saved) && !saved.empty() && saved.size() < 256) return saved;
  }
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  std::string id =
      std::string(host) + "-" + std::to_string(getpid()) + "-" + std::to_string(std::time(nullptr));
  if (!path.empty()) {
    std::ofstream out(path + ".tmp");
    out << id << "\n";
    out.close();
    if (out) std::rename((path + ".tmp").c_str(), path.c_str());
  }
  return id;
}

std::vector<std::shared_ptr<const topology::Topology>> recentSwitches(
    const std::vector<topology::PastSnapshot>& history, const topology::Topology& saved,
    tls::TlsContexts& tls, int64_t& saved_at_us, bool served_first = false);

// Hands each new topology to every worker (each switches at a request boundary) and keeps
// the version `stats` reports. Any thread.
class TopologyApplier {
 public:
  TopologyApplier(std::vector<std::unique_ptr<server::Worker>>& workers,
                  server::StatsContext& stats, tls::TlsContexts& tls, rebalance::KeyMover* mover,
                  rebalance::RingAgreement* agreement)
      : workers_(workers), stats_(stats), tls_(tls), mover_(mover), agreement_(agreement) {}

  // `before`: the topologies a restarted proxy served shortly before it stopped; the workers
  // replay them first, so those switches' windows carry on (Topology::changed_at_us). The
  // mover does not: a crawl those switches started is other proxies' or the next change's (a
  // new one would take CAS marks from now, and purge values written since).
  // (`replay` false: the proxy serves a topology already, and `before` are the ones the
  // controller published since, which it missed.)
  void apply(std::shared_ptr<const topology::Topology> topology,
             const std::vector<std::shared_ptr<const topology::Topology>>& before = {},
             bool replay = true) {
    // In the order applied: what the controller later says every proxy applied is compared
    // with it.
    if (agreement_ != nullptr) agreement_->applied(topology->version);
    // The mover first: it reads the CAS counters of servers new to a zone before any write
    // through the new ring can reach them.
    if (mover_ != nullptr) mover_->onTopology(topology);
    applied_any_.store(true);
    {
      std::lock_guard lock(served_mu_);
      served_version_ = topology->version;
    }
    for (auto& w : workers_) {
      for (const auto& t : before) w->setTopology(t, replay);
      w->setTopology(topology);
    }
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
    if (std::string error = prepareBackendTls(*built.topology, tls_); !error.empty()) {
      stats_.nacks.fetch_add(1);
      return error;
    }
    // The controller's recent switches: a proxy that served nothing before (a new pod) replays
    // those inside their windows; one that missed switches (its stream was down across them)
    // applies those after the version it serves. Either way their windows are opened as of
    // each switch.
    std::vector<std::shared_ptr<const topology::Topology>> before;
    std::vector<topology::PastSnapshot> switches;
    const bool fresh = !applied_any_.load();
    if (snapshot.recent_size() > 0) {
      std::string served = servedVersion();
      for (const v1::PastTopology& past : snapshot.recent()) {
        if (!fresh && switches.empty() && past.snapshot().version() != served) continue;
        // At most an hour old, as the controller sends (a bad age replays nothing wrong).
        int64_t ago_ms = std::min<uint64_t>(past.replaced_ms_ago(), 3'600'000);
        switches.push_back({past.snapshot(), ago_ms * 1000});
        switches.back().snapshot.clear_recent();
      }
      if (switches.size() > kMaxSwitches)
        switches.erase(switches.begin(), switches.end() - kMaxSwitches);
      int64_t switched_at_us = 0;
      if (!switches.empty())
        before = recentSwitches(switches, *built.topology, tls_, switched_at_us, !fresh);
      if (!before.empty()) {
        topology::BuildResult dated =
            topology::buildTopology(topology::specFromSnapshot(snapshot), switched_at_us);
        if (dated.topology && prepareBackendTls(*dated.topology, tls_).empty()) {
          built = std::move(dated);
        } else {
          before.clear();
        }
      }
      if (before.empty()) switches.clear();
    }
    apply(built.topology, before, fresh);
    ops::logEvent(ops::LogLevel::kInfo, "applied:" + snapshot.version(),
                  "applied topology %s from the controller", snapshot.version().c_str());
    if (!state_dir.empty()) {
      v1::TopologySnapshot saved = snapshot;
      saved.clear_recent();  // the state dir keeps its own history of switches
      std::string error =
          topology::saveSnapshot(state_dir, saved, switches.empty() ? nullptr : &switches);
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
  std::atomic<bool> applied_any_{false};  // a topology served (from the state dir, or streamed)
  // The controller sends at most 8 recent switches; more are not replayed.
  static constexpr size_t kMaxSwitches = 8;
  std::string servedVersion() const {
    std::lock_guard lock(served_mu_);
    return served_version_;
  }
  mutable std::mutex served_mu_;
  std::string served_version_;
  tls::TlsContexts& tls_;
  rebalance::KeyMover* mover_;
  rebalance::RingAgreement* agreement_;
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

// Of the switches that led to `saved` (`history`: the topology each replaced, oldest first),
// the topologies served before it whose switches' windows (warm-up, migration) may still be
// open, oldest first, each built with when the switch to it happened; and (`saved_at_us`) when
// the switch to `saved` happened. Empty when none is recent enough. From a restarted proxy's
// state dir, or from the controller for a proxy that starts with none.
std::vector<std::shared_ptr<const topology::Topology>> recentSwitches(
    const std::vector<topology::PastSnapshot>& history, const topology::Topology& saved,
    tls::TlsContexts& tls, int64_t& saved_at_us, bool served_first) {
  int64_t longest_window_us = 0;
  for (const topology::Pool& pool : saved.pools) {
    longest_window_us = std::max<int64_t>(
        longest_window_us, int64_t{std::max(pool.warmup_ms, pool.migration_ms)} * 1000);
  }
  // From the first switch still inside the longest window: the snapshot it replaced is where
  // the replay starts (no window of its own), each later one opens its switch's windows.
  // `served_first`: the first is what the proxy serves now, the start whatever its age (the
  // windows of the later ones that are over open nothing), and not replayed.
  size_t first = 0;
  while (!served_first && first < history.size() && history[first].age_us >= longest_window_us)
    ++first;
  std::vector<std::shared_ptr<const topology::Topology>> out;
  if (first == history.size()) return out;
  const int64_t now = event::nowMicros();
  for (size_t i = first; i < history.size(); ++i) {
    int64_t changed_at_us = i == first ? 0 : now - history[i - 1].age_us;
    topology::BuildResult built =
        topology::buildTopology(topology::specFromSnapshot(history[i].snapshot), changed_at_us);
    if (built.topology) built.error = prepareBackendTls(*built.topology, tls);
    if (!built.topology || !built.error.empty()) {
      ops::logEvent(ops::LogLevel::kWarn, std::string("history"), "topology history: %s",
                    built.error.c_str());
      out.clear();                   // the chain up to here is broken: start after it
      if (served_first) return out;  // ... which leaves nothing to go on from what it serves
      continue;
    }
    if (!(served_first && i == 0)) out.push_back(built.topology);
  }
  if (out.empty()) return out;
  saved_at_us = now - history.back().age_us;
  ops::logEvent(ops::LogLevel::kInfo, std::string("history"),
                "replaying %zu recent topology switches, the last %lld ms ago, for their windows",
                out.size(), static_cast<long long>(history.back().age_us / 1000));
  return out;
}

// The snapshot a restarted proxy serves until the controller answers, if any, and (into
// `before`) the topologies it served shortly before (loadRecentSwitches).
std::shared_ptr<const topology::Topology> loadState(
    const std::string& dir, v1::TopologySnapshot& snapshot, tls::TlsContexts& tls,
    std::vector<std::shared_ptr<const topology::Topology>>& before) {
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
  int64_t saved_at_us = 0;
  if (built.topology) {
    std::vector<topology::PastSnapshot> history = topology::loadHistory(dir, error);
    if (!error.empty())
      ops::logEvent(ops::LogLevel::kWarn, std::string("state"), "state history: %s", error.c_str());
    before = recentSwitches(history, *built.topology, tls, saved_at_us);
    if (!before.empty())
      built = topology::buildTopology(topology::specFromSnapshot(*saved), saved_at_us);
  }
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

// TLS to the controller from the flags' files, or plaintext with a warning; false after
// logging a bad file.
bool controllerCredentials(const config::ProxyOptions& options, ops::TlsObserver& observer,
                           topology::ControllerClientOptions& client) {
  if (options.controller_ca.empty()) {
    fprintf(stderr,
            "memzone-proxy: WARNING: the topology stream to %s is PLAINTEXT: this proxy cannot "
            "tell the controller from an impostor, and the controller cannot tell who it is. For "
            "the local demo only; set --controller-ca (and --controller-tls-cert/-key).\n",
            options.controller.c_str());
    return true;
  }
  topology::ControllerTlsOptions tls;
  tls.ca_file = options.controller_ca;
  tls.cert_file = options.controller_tls_cert;
  tls.key_file = options.controller_tls_key;
  tls.server_name = options.controller_server_name;
  if (tls.server_name.empty()) {  // the host of the first --controller entry
    std::string first = client.targets.front();
    tls.server_name = first.substr(0, first.rfind(':'));
    if (tls.server_name.size() > 2 && tls.server_name.front() == '[')
      tls.server_name = tls.server_name.substr(1, tls.server_name.size() - 2);
  }
  tls.reload_interval_s = options.controller_tls_reload_interval_s;
  std::string error;
  client.credentials = topology::makeControllerTlsCredentials(tls, observer, error);
  if (!client.credentials) {
    fprintf(stderr, "memzone-proxy: controller TLS: %s\n", error.c_str());
    return false;
  }
  client.server_name = tls.server_name;
  // With TLS 1.3 the controller checks this proxy's certificate after the proxy finished its
  // side of the handshake: a refusal shows only as a connection closed right after the
  // controller's certificate was accepted.
  client.on_connect_failed = [&observer](const std::string& shown,
                                         std::chrono::steady_clock::time_point started) {
    if (observer.lastAccepted() < started) return;
    observer.acceptedThenRefused();
    ops::logEvent(ops::LogLevel::kError, "controller-refused:" + shown,
                  "controller %s closed the connection after the TLS handshake: it refused this "
                  "proxy's certificate (none, another CA, or an identity it does not allow; the "
                  "controller's log says which)",
                  shown.c_str());
  };
  ops::TlsObserver::installGrpcLogHook(&observer);
  ops::watchCertificateExpiry(tls.cert_file);
  ops::watchCertificateExpiry(tls.ca_file);
  fprintf(stderr,
          "memzone-proxy: topology stream: TLS to a controller named %s (CA %s, %s, files "
          "re-read every %us)\n",
          tls.server_name.c_str(), tls.ca_file.c_str(),
          tls.cert_file.empty() ? "no client certificate" : tls.cert_file.c_str(),
          tls.reload_interval_s);
  return true;
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
  // Before anything else: a bad TLS file fails start-up at once.
  auto controller_tls = std::make_shared<ops::TlsObserver>("memzone_proxy_controller");
  topology::ControllerClientOptions client_options;
  if (!options.controller.empty()) {
    topology::parseControllerTargets(options.controller, client_options.targets);  // checked
    if (!controllerCredentials(options, *controller_tls, client_options)) return 1;
  }
  auto tls_contexts = std::make_shared<tls::TlsContexts>();
  {
    std::string error;
    std::shared_ptr<tls::TlsContext> client_tls = clientFacingTls(options, error);
    if (!error.empty()) {
      fprintf(stderr, "memzone-proxy: client TLS: %s\n", error.c_str());
      return 1;
    }
    tls_contexts->setClientFacing(client_tls);
    if (client_tls) {
      ops::watchCertificateExpiry(options.tls.cert_file);
      ops::watchCertificateExpiry(options.tls.client_ca_file);
    }
  }
  std::shared_ptr<const topology::Topology> topology;
  std::vector<std::shared_ptr<const topology::Topology>> served_before;  // see loadState
  v1::TopologySnapshot state;
  if (options.controller.empty()) {
    topology = loadTopology(options.config_path, *tls_contexts);
    if (!topology) return 1;
  } else {
    topology = loadState(options.state_dir, state, *tls_contexts, served_before);
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
  if (!options.controller.empty()) {
    // Other proxies may owe servers deletes this proxy has not heard of (it may have just
    // restarted, serving its state file's topology): no replicated server is read until the
    // controller's first dirty set, or for readHoldMs without one.
    uint32_t hold_ms =
        topology ? topology->consistency.read_hold_ms : topology::ConsistencySpec{}.read_hold_ms;
    worker_options.server_board->awaitDirtySet(event::nowMicros() + int64_t{hold_ms} * 1000);
  }
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
  std::unique_ptr<rebalance::KeyMover> mover;
  // With a controller, moves wait for its word that every proxy applied a ring change.
  std::shared_ptr<rebalance::RingAgreement> agreement;
  if (options.move_keys) {
    if (!options.controller.empty()) agreement = std::make_shared<rebalance::RingAgreement>();
    mover = std::make_unique<rebalance::KeyMover>(worker_options.server_board, tls_contexts,
                                                  options.zone, agreement);
    stats_context->moves = mover->counters();
  }
  TopologyApplier applier(workers, *stats_context, *tls_contexts, mover.get(), agreement.get());
  if (topology) applier.apply(topology, served_before);
  for (auto& w : workers) w->start();
  fprintf(stderr, "memzone-proxy %s listening on %s (zone %s, %u threads, topology %s)\n",
          MEMZONE_VERSION, bound.c_str(), options.zone.empty() ? "-" : options.zone.c_str(),
          threads, topology ? topology->version.c_str() : "none yet");

  std::unique_ptr<ops::HttpEndpoint> metrics;
  if (!options.metrics_listen.empty()) {
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables{
        std::make_shared<metrics::ProxyCollector>(stats_context),
        ops::certificateExpiryCollector()};
    if (client_options.credentials) collectables.push_back(controller_tls);
    metrics = std::make_unique<ops::HttpEndpoint>(
        std::move(collectables),
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
    client_options.node_id = nodeId(options.state_dir);
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
          board->expireAwaiting(event::nowMicros());
          topology::ControllerClient::HealthReport report{backendsDown(workers), {}};
          for (auto& o : board->owedServers(event::nowMicros())) {
            report.owed.push_back({std::move(o.address), o.epoch});
          }
          stats_context->owed_servers = static_cast<uint32_t>(report.owed.size());
          return report;
        },
        [board, stats_context](
            const v1::DirtyServers& dirty,
            const std::vector<topology::ControllerClient::OwedServer>& reported) {
          std::vector<std::pair<std::string, uint64_t>> since;
          for (int i = 0; i < dirty.addresses_size(); ++i) {
            // An older controller sends no `since`: then nothing counts as confirmed early.
            since.emplace_back(dirty.addresses(i),
                               i < dirty.since_size() ? dirty.since(i) : dirty.generation());
          }
          board->setDirty(since, dirty.confirmed_generation());
          std::vector<backend::ServerBoard::Owed> confirmable;
          for (const auto& o : reported) confirmable.push_back({o.address, o.epoch});
          board->confirm(confirmable);
          stats_context->dirty_servers = static_cast<uint32_t>(dirty.addresses_size());
        },
        agreement ? topology::ControllerClient::EverywhereFn(
                        [agreement](const std::string& version) { agreement->agreed(version); })
                  : topology::ControllerClient::EverywhereFn());
    board->setOwedListener([client = controller.get()] { client->healthChanged(); });
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
  ops::logEvent(ops::LogLevel::kInfo, std::string("draining"), "draining (up to %us)",
                options.drain_timeout_s);
  if (mover) mover->stop();
  for (auto& w : workers) w->drain();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.drain_timeout_s);
  for (auto& w : workers) {
    while (!w->finished() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    w->stop();
  }
  // The stream stays up while connections drain: they still need the dirty set.
  if (controller) {
    worker_options.server_board->setOwedListener({});
    controller->stop();
  }
  for (auto& w : workers) w->join();
  if (metrics) metrics->stop();
  ops::logEvent(ops::LogLevel::kInfo, std::string("stopped"), "stopped");
  return 0;
}

}  // namespace memzone
