#include "proxy/server/worker.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace memzone::server {

Worker::Worker(int index, int listen_fd, WorkerOptions options, StatsRenderer render_stats)
    : index_(index),
      listen_fd_(listen_fd),
      options_(options),
      registry_(base_, flush_list_, options.zone, backend_stats_, options.server_board,
                options.state_dir, index),
      dispatcher_(registry_, pool_, stats_, std::move(render_stats)),
      parser_(options.parser_limits),
      reaper_(base_, [this] { reap(); }),
      sampler_(base_, [this] { sampleBackends(); }) {
  if (options_.backend_samples) sampler_.arm(std::chrono::seconds(1));
  accept_event_ =
      std::make_unique<event::IoEvent>(base_, listen_fd_, [this](bool, bool) { onAccept(); });
  accept_event_->want(true, false);
}

Worker::~Worker() {
  join();
  connections_.clear();
  closed_.clear();
  accept_event_.reset();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void Worker::start() {
  thread_ = std::thread([this] {
    // Output queued by every callback of a loop turn is written once, after the turn: a
    // backend gets one send for the requests of all the clients that were readable.
    base_.run([this] { flush_list_.run(); });
    finished_ = true;
  });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::setTopology(std::shared_ptr<const topology::Topology> topology) {
  base_.runInLoop(
      [this, topology = std::move(topology)]() mutable { registry_.apply(std::move(topology)); });
}

void Worker::stop() { base_.exit(); }

void Worker::sampleBackends() {
  std::vector<BackendSample> samples;
  for (backend::BackendServer* server : registry_.allServers()) {
    samples.push_back({server->address(), server->up(),
                       server->readTrust() == backend::ReadTrust::kReadable,
                       server->pendingInvalidations()});
  }
  {
    std::lock_guard lock(samples_mu_);
    samples_.swap(samples);
  }
  sampler_.arm(std::chrono::seconds(1));
}

std::vector<BackendSample> Worker::backendSamples() const {
  std::lock_guard lock(samples_mu_);
  return samples_;
}

void Worker::drain() {
  base_.runInLoop([this] {
    draining_ = true;
    accept_event_.reset();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    for (auto& [ptr, connection] : connections_) connection->drain();
    flush_list_.run();
    reap();
  });
}

void Worker::onAccept() {
  for (int i = 0; i < 64; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        fprintf(stderr, "worker %d: accept failed: %s\n", index_, strerror(errno));
      }
      return;
    }
    if (connections_.size() >= options_.max_connections) {
      stats_.rejected_connections.add();
      ::close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_unique<ClientConnection>(
        fd, base_, flush_list_, parser_, dispatcher_, pool_, stats_, options_.connection_limits,
        [this](ClientConnection* c) { onConnectionClosed(c); });
    ClientConnection* raw = connection.get();
    connections_.emplace(raw, std::move(connection));
  }
}

void Worker::onConnectionClosed(ClientConnection* connection) {
  auto it = connections_.find(connection);
  if (it == connections_.end()) return;
  // Destroyed outside the callback that closed it.
  closed_.push_back(std::move(it->second));
  connections_.erase(it);
  reaper_.arm(std::chrono::microseconds(0));
}

void Worker::reap() {
  closed_.clear();
  if (draining_ && connections_.empty()) base_.exit();
}

}  // namespace memzone::server
