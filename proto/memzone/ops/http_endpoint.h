// The operational HTTP endpoint both binaries serve on --metrics-listen: /metrics
// (Prometheus text format), /healthz (alive), /readyz (ready for traffic), and any JSON
// status pages a binary adds (the controller's /proxies).
//
// prometheus-cpp's Exposer serves /metrics only and cannot answer a probe with 503, so this
// is a deliberately small HTTP/1.0 server: one thread, one short request at a time (scrapes
// and probes), bounded request size and read timeout. It is the operational contract of
// DESIGN.md §4, which is why it sits beside the topology contract in proto/.
#pragma once

#include <prometheus/collectable.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace memzone::ops {

class HttpEndpoint {
 public:
  using ReadyFn = std::function<bool()>;

  // `collectables` are serialized for /metrics at each scrape; `ready` answers /readyz.
  HttpEndpoint(std::vector<std::shared_ptr<prometheus::Collectable>> collectables, ReadyFn ready);
  ~HttpEndpoint();

  // Serves GET `path` with the JSON `render` returns (before start()).
  void addJson(const std::string& path, std::function<std::string()> render) {
    json_[path] = std::move(render);
  }

  // Binds HOST:PORT and starts serving; "" on success, else why not.
  std::string start(const std::string& listen);
  void stop();

 private:
  void run();
  void serve(int fd);

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  ReadyFn ready_;
  std::map<std::string, std::function<std::string()>> json_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace memzone::ops
