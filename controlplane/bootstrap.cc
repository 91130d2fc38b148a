#include "controlplane/bootstrap.h"

#include <grpcpp/grpcpp.h>
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "controlplane/server/applied_everywhere.h"
#include "controlplane/server/controller_collector.h"
#include "controlplane/server/proxy_registry.h"
#include "controlplane/server/replica_links.h"
#include "controlplane/server/replica_service.h"
#include "controlplane/server/server_credentials.h"
#include "controlplane/server/snapshot_cache.h"
#include "controlplane/server/topology_service.h"
#include "controlplane/sources/file_source.h"
#include "controlplane/sources/kubernetes_source.h"
#include "memzone/ops/certificate_expiry.h"
#include "memzone/ops/http_endpoint.h"

namespace memzone::controlplane {
namespace {

void addWatcherMetrics(const KubernetesSource& source, std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  auto family = [&](const char* name, const char* help) -> prometheus::MetricFamily& {
    prometheus::MetricFamily f;
    f.name = name;
    f.help = help;
    f.type = MetricType::Counter;
    out.push_back(std::move(f));
    return out.back();
  };
  out.reserve(out.size() + 5);
  auto& restarts = family("memzone_controller_kubernetes_watch_restarts_total",
                          "Watches that ended and were reopened, by kind and reason.");
  auto& relists =
      family("memzone_controller_kubernetes_relists_total", "Relists forced by 410 Gone, by kind.");
  auto& errors = family("memzone_controller_kubernetes_api_errors_total",
                        "Failed list or watch requests, by kind.");
  for (const k8s::ResourceWatcher* w : source.watchers()) {
    const k8s::WatcherCounters& c = w->counters();
    auto add = [&](prometheus::MetricFamily& f, double v,
                   std::vector<prometheus::ClientMetric::Label> labels) {
      prometheus::ClientMetric m;
      m.label = std::move(labels);
      m.counter.value = v;
      f.metric.push_back(std::move(m));
    };
    double gone = static_cast<double>(c.relists_gone.load());
    double failed = static_cast<double>(c.api_errors.load());
    double all = static_cast<double>(c.watch_restarts.load());
    add(restarts, gone, {{"kind", w->kind()}, {"reason", "gone"}});
    add(restarts, std::max(0.0, all - gone), {{"kind", w->kind()}, {"reason", "ended_or_failed"}});
    add(relists, gone, {{"kind", w->kind()}});
    add(errors, failed, {{"kind", w->kind()}});
  }
  if (const ha::LeaderElector* elector = source.elector()) {
    prometheus::MetricFamily leader;
    leader.name = "memzone_controller_leader";
    leader.help = "1 while this replica holds the leader election Lease (writes status).";
    leader.type = MetricType::Gauge;
    prometheus::ClientMetric m;
    m.gauge.value = elector->isLeader() ? 1 : 0;
    leader.metric.push_back(m);
    out.push_back(std::move(leader));
    prometheus::MetricFamily transitions;
    transitions.name = "memzone_controller_leader_transitions_total";
    transitions.help = "Times this replica started or stopped leading.";
    transitions.type = MetricType::Counter;
    prometheus::ClientMetric t;
    t.counter.value = static_cast<double>(elector->transitions());
    transitions.metric.push_back(t);
    out.push_back(std::move(transitions));
  }
}

std::string proxiesJson(const ProxyRegistry& registry, const SnapshotCache& cache) {
  auto current = cache.current();
  nlohmann::json out = nlohmann::json::object();
  out["topologyVersion"] = current ? current->version() : "";
  nlohmann::json proxies = nlohmann::json::array();
  for (const ProxyStatus& p : registry.proxies()) {
    nlohmann::json j = nlohmann::json::object();
    j["nodeId"] = p.node_id;
    j["nodeName"] = p.node_name;
    j["zone"] = p.zone;
    j["peer"] = p.peer;
    j["connectedSince"] = static_cast<int64_t>(p.connected_since);
    j["appliedVersion"] = p.applied_version;
    j["lastNackVersion"] = p.last_nack_version;
    j["lastNackReason"] = p.last_nack_reason;
    j["snapshotsSent"] = p.snapshots_sent;
    j["reportsHealth"] = p.reports_health;
    j["backendsDown"] = p.backends_down;
    j["backendsOwed"] = p.backends_owed;
    proxies.push_back(std::move(j));
  }
  out["proxies"] = std::move(proxies);
  return out.dump(2) + "\n";
}

ServerTlsOptions serverTlsOptions(const ControllerOptions& options) {
  ServerTlsOptions tls;
  tls.cert_file = options.tls_cert;
  tls.key_file = options.tls_key;
  tls.client_ca_file = options.tls_client_ca;
  tls.allowed_identities = options.tls_allowed_identities;
  tls.reload_interval_s = options.tls_reload_interval_ms / 1000;
  return tls;
}

// mTLS from the flags' files, or plaintext with a warning; nullptr after logging a bad file.
std::shared_ptr<grpc::ServerCredentials> grpcCredentials(const ControllerOptions& options,
                                                         ops::TlsObserver& observer) {
  if (options.tls_cert.empty()) {
    fprintf(stderr,
            "memzone-controller: WARNING: the topology stream is PLAINTEXT: any host that reaches "
            "%s can subscribe and read the topology, and proxies cannot verify this controller. "
            "For the local demo only; set --tls-cert, --tls-key and --tls-client-ca.\n",
            options.grpc_listen.c_str());
    return grpc::InsecureServerCredentials();
  }
  ServerTlsOptions tls = serverTlsOptions(options);
  std::string error;
  auto credentials = makeServerTlsCredentials(tls, observer, error);
  if (!credentials) {
    fprintf(stderr, "memzone-controller: TLS: %s\n", error.c_str());
    return nullptr;
  }
  ops::TlsObserver::installGrpcLogHook(&observer);
  ops::watchCertificateExpiry(tls.cert_file);
  ops::watchCertificateExpiry(tls.client_ca_file);
  std::string allowed;
  for (const auto& a : tls.allowed_identities) allowed += (allowed.empty() ? "" : ",") + a;
  fprintf(stderr,
          "memzone-controller: topology stream: mutual TLS (certificate %s, client CA %s, "
          "identities %s, files re-read every %us)\n",
          tls.cert_file.c_str(), tls.client_ca_file.c_str(),
          allowed.empty() ? "any from the CA" : allowed.c_str(), tls.reload_interval_s);
  return credentials;
}

// Where the other replicas reach us: the flag, else POD_IP and our port, else --grpc-listen
// when it names one address.
std::string advertiseAddress(const ControllerOptions& options) {
  if (!options.advertise_address.empty()) return options.advertise_address;
  const std::string& listen = options.grpc_listen;
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos) return "";
  std::string host = listen.substr(0, colon);
  std::string port = listen.substr(colon + 1);
  if (const char* pod_ip = getenv("POD_IP"); pod_ip != nullptr && *pod_ip != '\0') {
    std::string ip = pod_ip;
    return (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" + port;
  }
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") return "";
  return listen;
}

}  // namespace

int runController(const ControllerOptions& options) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto tls_observer = std::make_shared<ops::TlsObserver>("memzone_controller");
  SnapshotCache cache;
  ProxyRegistry registry;
  DirtyServers dirty(std::chrono::milliseconds(options.dirty_retain_ms));
  AppliedEverywhere everywhere(std::chrono::milliseconds(options.applied_grace_ms));
  SourceCounters source_counters;
  std::unique_ptr<FileSource> file_source;
  // Before the source (destroyed after it): the source's thread calls into it.
  std::unique_ptr<ReplicaLinks> links;
  std::unique_ptr<KubernetesSource> kube_source;
  ZoneResolver zones;
  std::function<bool()> synced;
  if (options.source == "file") {
    file_source = std::make_unique<FileSource>(options.config_path, options.poll_interval_ms, cache,
                                               source_counters);
    // A bad file at start-up is fatal: there is no last good topology to keep serving.
    if (!file_source->loadNow()) return 1;
    // A proxy's zone is the one it was started with.
    zones = [](const v1::TopologyRequest& hello) { return hello.zone(); };
    synced = [&file_source] { return file_source->synced(); };
  } else {
    k8s::ApiConfig config;
    std::string error = k8s::resolveConfig(options.kube_api, options.kube_token_file,
                                           options.kube_ca_file, options.kube_namespace, config);
    if (!error.empty()) {
      fprintf(stderr, "memzone-controller: kubernetes: %s\n", error.c_str());
      return 1;
    }
    KubernetesSourceOptions source_options;
    source_options.leader_elect = options.leader_elect;
    ha::LeaderElectionConfig& e = source_options.election;
    e.lease_name = options.leader_elect_resource_name;
    e.lease_duration = std::chrono::milliseconds(options.leader_elect_lease_duration_ms);
    e.renew_deadline = std::chrono::milliseconds(options.leader_elect_renew_deadline_ms);
    e.retry_period = std::chrono::milliseconds(options.leader_elect_retry_period_ms);
    source_options.advertise_address = advertiseAddress(options);
    source_options.on_peer_addresses = [&links](const std::map<std::string, std::string>& peers) {
      if (links) links->setPeers(peers);
    };
    source_options.on_peer_identities = [&everywhere](std::set<std::string> peers) {
      everywhere.setPeers(std::move(peers));
    };
    // Until the replica Leases were first listed, other replicas may serve proxies.
    if (options.leader_elect) everywhere.peersUnknown();
    kube_source = std::make_unique<KubernetesSource>(config, source_options, cache, registry, dirty,
                                                     source_counters);
    if (options.leader_elect) {
      ReplicaLinkOptions link_options;
      link_options.identity = kube_source->identity();
      if (!options.tls_cert.empty()) {
        std::string error;
        link_options.credentials =
            makePeerTlsCredentials(serverTlsOptions(options), *tls_observer, error);
        if (!link_options.credentials) {
          fprintf(stderr, "memzone-controller: TLS: %s\n", error.c_str());
          return 1;
        }
      }
      links = std::make_unique<ReplicaLinks>(link_options, dirty, everywhere);
    }
    // --zone wins; else the zone label of the node the proxy runs on.
    zones = [&kube_source](const v1::TopologyRequest& hello) {
      return hello.zone().empty() ? kube_source->zoneOfNode(hello.node_name()) : hello.zone();
    };
    synced = [&kube_source] { return kube_source->synced(); };
  }
  TopologyService service(cache, registry, dirty, everywhere, zones);
  ReplicaService replica_service(dirty, everywhere);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpcCredentials(options, *tls_observer);
  if (!credentials) return 1;
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(options.grpc_listen, credentials, &bound_port);
  builder.RegisterService(&service);
  builder.RegisterService(&replica_service);
  // Keepalive: a proxy that vanished is noticed within seconds; proxies may ping as often as
  // every 4 s without being told to go away.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 4000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // Thousands of connections carrying a few KiB now and then: no bandwidth-delay probing
  // (a ping per message received), small read buffers. gRPC 1.51 (Debian bookworm's) reads
  // into 8 KiB slices whatever the chunk sizes say (measured, bench/RESULTS.md).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 4096);
  builder.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 65536);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    fprintf(stderr, "memzone-controller: cannot listen on %s\n", options.grpc_listen.c_str());
    return 1;
  }
  if (file_source) file_source->start();
  if (kube_source) kube_source->start();

  std::unique_ptr<ops::HttpEndpoint> metrics;
  if (!options.metrics_listen.empty()) {
    auto collector = std::make_shared<ControllerCollector>(registry, cache, source_counters);
    collector->setDirtyServers(&dirty);
    if (kube_source)
      collector->setExtra([&kube_source](auto& out) { addWatcherMetrics(*kube_source, out); });
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables{
        collector, ops::certificateExpiryCollector()};
    if (!options.tls_cert.empty()) collectables.push_back(tls_observer);
    metrics = std::make_unique<ops::HttpEndpoint>(std::move(collectables), synced);
    // Every connected proxy: what it applied, its last NACK and why, since when.
    metrics->addJson("/proxies", [&registry, &cache] { return proxiesJson(registry, cache); });
    std::string error = metrics->start(options.metrics_listen);
    if (!error.empty()) {
      fprintf(stderr, "memzone-controller: %s\n", error.c_str());
      if (file_source) file_source->stop();
      if (kube_source) kube_source->stop();
      server->Shutdown();
      return 1;
    }
  }
  fprintf(stderr, "memzone-controller %s: serving topology on %s (source %s)\n", MEMZONE_VERSION,
          options.grpc_listen.c_str(), file_source ? options.config_path.c_str() : "kubernetes");

  int sig = 0;
  sigwait(&signals, &sig);
  fprintf(stderr, "memzone-controller: stopping\n");
  // A graceful stop, in this order: (1) no status write any more and our replica Lease stops
  // changing, (2) every proxy stream ends now (a stream never ends by itself: waiting for it
  // only keeps proxies on a replica that is going), so the proxies move to another replica
  // at once, (3) the leader Lease is released and, once the proxies had time to arrive
  // elsewhere, our replica Lease deleted: no replica ever counts them as gone while they serve.
  if (kube_source) kube_source->beginStop();
  server->Shutdown(std::chrono::system_clock::now());
  fprintf(stderr, "memzone-controller: proxy streams ended\n");
  if (file_source) file_source->stop();
  if (links) links->stop();
  if (kube_source) {
    kube_source->handOver();
    // What is left is closing idle watch requests, which notice within a second: past 300 ms
    // more, exit without waiting for them (nothing is lost; the Leases are handed over), so
    // the process is gone within a second of SIGTERM.
    if (!kube_source->watchesStopped(std::chrono::steady_clock::now() +
                                     std::chrono::milliseconds(300))) {
      fprintf(stderr, "memzone-controller: stopped (not waiting for the Kubernetes watches)\n");
      fflush(stderr);
      _exit(0);
    }
    kube_source->stop();
  }
  if (metrics) metrics->stop();
  fprintf(stderr, "memzone-controller: stopped\n");
  return 0;
}

}  // namespace memzone::controlplane
