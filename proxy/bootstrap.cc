#include "proxy/bootstrap.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <thread>
#include <vector>

#include "proxy/config/topology_file.h"
#include "proxy/server/listen_socket.h"
#include "proxy/server/stats_text.h"
#include "proxy/server/worker.h"
#include "proxy/topology/topology.h"

namespace memzone {
namespace {

std::shared_ptr<const topology::Topology> loadTopology(const std::string& path) {
  config::TopologyFileResult file = config::loadTopologyFile(path);
  for (const auto& e : file.errors) fprintf(stderr, "memzone-proxy: %s\n", e.c_str());
  if (!file.errors.empty()) return nullptr;
  topology::BuildResult built = topology::buildTopology(file.spec);
  if (!built.topology) fprintf(stderr, "memzone-proxy: %s: %s\n", path.c_str(), built.error.c_str());
  return built.topology;
}

}  // namespace

int runProxy(const config::ProxyOptions& options) {
  auto topology = loadTopology(options.config_path);
  if (!topology) return 1;

  // Signals are handled by this thread alone (sigwait below); workers never see them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  server::ListenResult listen = server::listenReusePort(options.listen, threads);
  if (!listen.error.empty()) {
    fprintf(stderr, "memzone-proxy: %s\n", listen.error.c_str());
    return 1;
  }

  server::WorkerOptions worker_options;
  worker_options.zone = options.zone;
  worker_options.parser_limits.max_item_size = options.max_item_size;
  worker_options.max_connections = options.max_connections;

  std::vector<std::unique_ptr<server::Worker>> workers;
  auto stats_context = std::make_shared<server::StatsContext>();
  stats_context->started = std::time(nullptr);
  stats_context->threads = threads;
  for (unsigned i = 0; i < threads; ++i) {
    workers.push_back(std::make_unique<server::Worker>(
        static_cast<int>(i), listen.fds[i], worker_options,
        [stats_context](ByteBuffer& out) { server::renderStats(*stats_context, out); }));
    stats_context->workers.push_back(workers.back().get());
  }
  stats_context->setTopologyVersion(topology->version);
  for (auto& w : workers) {
    w->setTopology(topology);
    w->start();
  }
  fprintf(stderr, "memzone-proxy %s listening on %s (zone %s, %u threads, topology %s)\n",
          MEMZONE_VERSION, listen.bound.c_str(), options.zone.empty() ? "-" : options.zone.c_str(),
          threads, topology->version.c_str());

  while (true) {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGHUP) {
      auto next = loadTopology(options.config_path);
      if (!next) {
        fprintf(stderr, "memzone-proxy: reload of %s rejected; keeping topology %s\n",
                options.config_path.c_str(), topology->version.c_str());
        continue;
      }
      topology = next;
      for (auto& w : workers) w->setTopology(topology);
      stats_context->setTopologyVersion(topology->version);
      fprintf(stderr, "memzone-proxy: applied topology %s from %s\n", topology->version.c_str(),
              options.config_path.c_str());
      continue;
    }
    break;
  }

  fprintf(stderr, "memzone-proxy: draining (up to %us)\n", options.drain_timeout_s);
  for (auto& w : workers) w->drain();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.drain_timeout_s);
  for (auto& w : workers) {
    while (!w->finished() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    w->stop();
  }
  for (auto& w : workers) w->join();
  fprintf(stderr, "memzone-proxy: stopped\n");
  return 0;
}

}  // namespace memzone
