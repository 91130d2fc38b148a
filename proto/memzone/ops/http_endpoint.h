// The operational HTTP endpoint both binaries serve on --metrics-listen: /metrics
// (Prometheus text format), /healthz (alive) and /readyz (ready for traffic).
//
// prometheus-cpp's Exposer serves /metrics only and cannot answer a probe with 503, so this
// is a deliberately small HTTP/1.0 server: one thread, one short request at a time (scrapes
// and probes), bounded request size and read timeout. It is the operational contract of
// DESIGN.md §4, which is why it sits beside the topology contract in proto/.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/collectable.h>

namespace memzone::ops {

class HttpEndpoint {
 public:
  using ReadyFn = std::function<bool()>;

  // `collectables` are serialized for /metrics at each scrape; `ready` answers /readyz.
  HttpEndpoint(std::vector<std::shared_ptr<prometheus::Collectable>> collectables, ReadyFn ready);
  ~HttpEndpoint();

  // Binds HOST:PORT and starts serving; "" on success, else why not.
  std::string start(const std::string& listen);
  void stop();

 private:
  void run();
  void serve(int fd);

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  ReadyFn ready_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace memzone::ops
