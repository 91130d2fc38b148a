#include "controlplane/bootstrap.h"

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdio>
#include <memory>

#include "controlplane/server/controller_collector.h"
#include "controlplane/server/proxy_registry.h"
#include "memzone/ops/http_endpoint.h"
#include "controlplane/server/snapshot_cache.h"
#include "controlplane/server/topology_service.h"
#include "controlplane/sources/file_source.h"

namespace memzone::controlplane {

int runController(const ControllerOptions& options) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  SnapshotCache cache;
  ProxyRegistry registry;
  SourceCounters source_counters;
  auto source = std::make_unique<FileSource>(options.config_path, options.poll_interval_ms, cache,
                                             source_counters);
  // A bad file at start-up is fatal: there is no last good topology to keep serving.
  if (!source->loadNow()) return 1;

  // File source: a proxy's zone is the one it was started with.
  TopologyService service(cache, registry,
                          [](const v1::TopologyRequest& hello) { return hello.zone(); });
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(options.grpc_listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.RegisterService(&service);
  // Keepalive: a proxy that vanished is noticed within seconds; proxies may ping as often as
  // every 4 s without being told to go away.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 3000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 4000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    fprintf(stderr, "memzone-controller: cannot listen on %s\n", options.grpc_listen.c_str());
    return 1;
  }
  source->start();

  std::unique_ptr<ops::HttpEndpoint> metrics;
  if (!options.metrics_listen.empty()) {
    metrics = std::make_unique<ops::HttpEndpoint>(
        std::vector<std::shared_ptr<prometheus::Collectable>>{
            std::make_shared<ControllerCollector>(registry, cache, source_counters)},
        [&source] { return source->synced(); });
    std::string error = metrics->start(options.metrics_listen);
    if (!error.empty()) {
      fprintf(stderr, "memzone-controller: %s\n", error.c_str());
      source->stop();
      server->Shutdown();
      return 1;
    }
  }
  fprintf(stderr, "memzone-controller %s: serving topology on %s (source file %s)\n",
          MEMZONE_VERSION, options.grpc_listen.c_str(), options.config_path.c_str());

  int sig = 0;
  sigwait(&signals, &sig);
  fprintf(stderr, "memzone-controller: stopping\n");
  source->stop();
  // Streams are cancelled; proxies keep serving and reconnect to the next controller.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (metrics) metrics->stop();
  return 0;
}

}  // namespace memzone::controlplane
