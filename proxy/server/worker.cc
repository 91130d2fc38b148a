#include "proxy/server/worker.h"

#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "memzone/ops/log.h"
#include "proxy/protocol/client_errors.h"

namespace memzone::server {
namespace {

// memcached's words and behaviour beyond -c: accept, say so, close.
// Out of file descriptors: accept() would fail again at once (the listener stays readable),
// so the worker stops watching it this long.
constexpr auto kAcceptPause = std::chrono::milliseconds(100);
// Buffered bytes that must have been given back since the peak before the allocator is asked
// to return free pages to the OS (malloc_trim walks every arena: not for small changes).
constexpr uint64_t kTrimStep = 8 << 20;

}  // namespace

Worker::Worker(int index, std::vector<WorkerListener> listeners, WorkerOptions options,
               StatsRenderer render_stats)
    : index_(index),
      listeners_(std::move(listeners)),
      options_(options),
      budget_(options.buffer_share, options.parser_limits.max_item_size),
      read_buffer_(),
      // Free requests are kept up to 1/16 of the share (4 MiB at most): enough to serve a
      // steady load without allocating, little enough not to matter after a burst.
      pool_(&budget_.memory().pooled, &budget_.memory().requests,
            std::min<uint64_t>(4 << 20, options.buffer_share / 16)),
      registry_(base_, flush_list_, options.zone, backend_stats_, options.server_board,
                options.state_dir, index),
      dispatcher_(registry_, pool_, stats_, std::move(render_stats)),
      parser_(options.parser_limits),
      context_{base_,       flush_list_,  parser_,
               dispatcher_, pool_,        stats_,
               budget_,     read_buffer_, options.connection_limits,
               partial_,    handshaking_, [this](ClientConnection* c) { onConnectionClosed(c); }},
      reaper_(base_, [this] { reap(); }),
      sampler_(base_, [this] { sampleBackends(); }),
      partial_sweeper_(base_, [this] { sweepPartialRequests(); }),
      maintenance_(base_, [this] { maintain(); }),
      accept_resume_(base_,
                     [this] {
                       for (auto& e : accept_events_) e->want(true, false);
                     }),
      handshake_sweeper_(base_, [this] { sweepHandshakes(); }) {
  if (!options_.slots) options_.slots = std::make_shared<ConnectionSlots>(65536);
  // A backend connection may hold at most half the share in replies not yet delivered (a
  // flood, or a multi-get far larger than anything a client could be sent): beyond, it is
  // failed rather than allowed to grow.
  registry_.setBufferLimits(&budget_.memory().backend,
                            std::max<uint64_t>(options.buffer_share / 2,
                                               4 * uint64_t{options.parser_limits.max_item_size}));
  if (options_.backend_samples) sampler_.arm(std::chrono::seconds(1));
  if (options_.connection_limits.partial_request_timeout_ms > 0) {
    partial_sweeper_.arm(std::chrono::milliseconds(1));
  }
  maintenance_.arm(std::chrono::seconds(1));
  registry_.setTlsContexts(options_.tls);
  bool any_tls = false;
  for (const WorkerListener& l : listeners_) {
    any_tls |= l.tls;
    accept_events_.push_back(
        std::make_unique<event::IoEvent>(base_, l.fd, [this, l](bool, bool) { onAccept(l); }));
    accept_events_.back()->want(true, false);
  }
  if (any_tls) handshake_sweeper_.arm(std::chrono::milliseconds(10));
}

Worker::~Worker() {
  join();
  while (ClientConnection* c = connections_.front()) {
    c->ListLink<WorkerListTag>::unlink();
    options_.slots->give();
    delete c;
  }
  while (ClientConnection* c = closed_.front()) {
    c->ListLink<WorkerListTag>::unlink();
    delete c;
  }
  accept_events_.clear();
  for (const WorkerListener& l : listeners_) {
    if (l.fd >= 0) ::close(l.fd);
  }
}

void Worker::start() {
  thread_ = std::thread([this] {
    // Output queued by every callback of a loop turn is written once, after the turn: a
    // backend gets one send for the requests of all the clients that were readable.
    base_.run([this] { afterTurn(); });
    finished_ = true;
  });
}

void Worker::afterTurn() {
  flush_list_.run();
  // Memory freed this turn may let throttled or queued connections go on.
  if (budget_.wake()) flush_list_.run();
  if (budget_.overCutoff()) cutOffHeaviest();
  peak_since_trim_ = std::max(peak_since_trim_, budget_.buffered());
}

void Worker::cutOffHeaviest() {
  // One at a time: the memory of a closed connection comes back when the reaper destroys
  // it, and the next turn looks again. The one cut is the slowest reader: the most reply
  // bytes it has not taken. Memory held only on its way through (a large reply being
  // assembled, a request being received) is not a reason to close anyone.
  if (!closed_.empty()) return;
  ClientConnection* heaviest = nullptr;
  uint64_t most = budget_.lightLimit();
  connections_.forEach([&](ClientConnection* c) {
    if (c->unsent() > most) {
      most = c->unsent();
      heaviest = c;
    }
  });
  if (heaviest == nullptr) return;
  budget_.counters().cut_off.add();
  ops::logEvent(ops::LogLevel::kWarn, "memory-cutoff",
                "worker %d: buffer memory %llu bytes is past its share %llu; closing the "
                "connection holding the most (%llu bytes)",
                index_, static_cast<unsigned long long>(budget_.buffered()),
                static_cast<unsigned long long>(budget_.share()),
                static_cast<unsigned long long>(most));
  heaviest->close(CloseReason::kMemory);
}

void Worker::sweepPartialRequests() {
  uint32_t timeout_ms = options_.connection_limits.partial_request_timeout_ms;
  int64_t limit_us = int64_t{timeout_ms} * 1000;
  int64_t now = event::nowMicros();
  size_t closed = 0;
  // Oldest first: stop at the first one still in time.
  while (ClientConnection* c = partial_.front()) {
    if (now - c->partialSinceUs() < limit_us) break;
    c->close(CloseReason::kPartialTimeout);
    ++closed;
  }
  if (closed > 0) {
    ops::logEvent(ops::LogLevel::kInfo, "partial-timeout",
                  "worker %d: closed %zu connections holding an incomplete request for %u ms",
                  index_, closed, timeout_ms);
  }
  uint32_t interval_ms = std::clamp<uint32_t>(timeout_ms / 10, 10, 1000);
  partial_sweeper_.arm(std::chrono::milliseconds(interval_ms));
}

void Worker::maintain() {
  // Requests a burst left in the pool, unused for a second, are freed.
  size_t trimmed = pool_.trimIdle();
  connections_.forEach([](ClientConnection* c) { c->releaseIdleBuffers(); });
  budget_.counters().pool_trimmed.add(trimmed);
  uint64_t now = budget_.buffered();
  if (peak_since_trim_ >= now + kTrimStep) {
    // The buffers are freed; the allocator keeps the pages unless told (glibc keeps freed
    // memory in its arenas, and a burst's RSS would stay).
    malloc_trim(0);
    peak_since_trim_ = now;
  }
  maintenance_.arm(std::chrono::seconds(1));
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::setTopology(std::shared_ptr<const topology::Topology> topology, bool replay) {
  base_.runInLoop([this, topology = std::move(topology), replay]() mutable {
    registry_.apply(std::move(topology), replay);
  });
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
    accept_resume_.cancel();
    accept_events_.clear();
    for (WorkerListener& l : listeners_) {
      if (l.fd >= 0) ::close(l.fd);
      l.fd = -1;
    }
    connections_.forEach([](ClientConnection* c) { c->drain(); });
    flush_list_.run();
    reap();
  });
}

void Worker::pauseAccepting() {
  stats_.accept_pauses.add();
  ops::logEvent(ops::LogLevel::kWarn, "accept-emfile",
                "worker %d: accept failed: %s; not accepting for %lld ms", index_, strerror(errno),
                static_cast<long long>(kAcceptPause.count()));
  for (auto& e : accept_events_) e->want(false, false);
  accept_resume_.arm(kAcceptPause);
}

void Worker::sweepHandshakes() {
  // Oldest first: stop at the first one still in time. A flood of abandoned handshakes
  // thus holds at most (accept rate x timeout) connections, within --max-connections.
  int64_t limit_us = int64_t{options_.tls_handshake_timeout_ms} * 1000;
  int64_t now = event::nowMicros();
  size_t closed = 0;
  while (ClientConnection* c = handshaking_.front()) {
    if (now - c->handshakeSinceUs() < limit_us) break;
    stats_.tls.count(tls::HandshakeResult::kTimeout);
    c->close(CloseReason::kTlsHandshake);
    ++closed;
  }
  if (closed > 0) {
    ops::logEvent(ops::LogLevel::kInfo, "tls-handshake-timeout",
                  "worker %d: closed %zu TLS connections whose handshake took over %u ms", index_,
                  closed, options_.tls_handshake_timeout_ms);
  }
  uint32_t interval_ms = std::clamp<uint32_t>(options_.tls_handshake_timeout_ms / 10, 5, 500);
  handshake_sweeper_.arm(std::chrono::milliseconds(interval_ms));
}

void Worker::onAccept(const WorkerListener& listener) {
  // Material current at accept: a rotation applies to the next handshake.
  std::shared_ptr<SSL_CTX> tls_ctx;
  if (listener.tls) {
    tls_ctx = options_.tls && options_.tls->clientFacing() ? options_.tls->clientFacing()->current()
                                                           : nullptr;
    if (!tls_ctx) return;
  }
  for (int i = 0; i < 64; ++i) {
    int fd = accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        pauseAccepting();
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                 errno != ECONNABORTED) {
        ops::logEvent(ops::LogLevel::kWarn, "accept", "worker %d: accept failed: %s", index_,
                      strerror(errno));
      }
      return;
    }
    if (!options_.slots->tryTake()) {
      stats_.rejected_connections.add();
      if (listener.tls) {  // a line in plaintext would only be a TLS alert's worth of garbage
        ::close(fd);
        continue;
      }
      // A fresh socket has room for one line; what the client sent first is not read.
      ssize_t sent =
          ::send(fd, protocol::errors::kTooManyConnections.data(),
                 protocol::errors::kTooManyConnections.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      (void)sent;
      ::close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (options_.client_send_buffer > 0) {
      // Replies a slow reader has not taken stay in the proxy, where the budget sees them,
      // instead of in an autotuned kernel buffer of up to net.ipv4.tcp_wmem's maximum (charged
      // to the pod's memory all the same, and invisible to the budget).
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options_.client_send_buffer,
                 sizeof(options_.client_send_buffer));
    }
    connections_.push_back(new ClientConnection(fd, context_, tls_ctx.get()));
  }
}

void Worker::onConnectionClosed(ClientConnection* connection) {
  // Destroyed outside the callback that closed it.
  connection->ListLink<WorkerListTag>::unlink();
  closed_.push_back(connection);
  options_.slots->give();
  reaper_.arm(std::chrono::microseconds(0));
}

void Worker::reap() {
  while (ClientConnection* c = closed_.front()) {
    c->ListLink<WorkerListTag>::unlink();
    delete c;
  }
  if (draining_ && connections_.empty()) base_.exit();
}

}  // namespace memzone::server
