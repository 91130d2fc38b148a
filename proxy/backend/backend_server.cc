#include "proxy/backend/backend_server.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <random>

namespace memzone::backend {
namespace {

void toSockaddr(const topology::Backend& b, sockaddr_storage& out, socklen_t& len) {
  std::memset(&out, 0, sizeof(out));
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  if (inet_pton(AF_INET, b.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(b.port);
    len = sizeof(sockaddr_in);
    return;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  inet_pton(AF_INET6, b.host.c_str(), &v6->sin6_addr);  // validated by buildTopology
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(b.port);
  len = sizeof(sockaddr_in6);
}

constexpr uint32_t kProbeTag = 0;

}  // namespace

BackendServer::BackendServer(event::EventBase& base, FlushList& flush_list,
                             const topology::Backend& backend, ServerOptions options,
                             BackendStats& stats)
    : address_(backend.address),
      options_(options),
      stats_(stats),
      retry_timer_(base, [this] { startProbe(); }) {
  sockaddr_storage addr;
  socklen_t len;
  toSockaddr(backend, addr, len);
  connection_ = std::make_unique<BackendConnection>(base, flush_list, addr, len, *this,
                                                    options.connection);
}

BackendServer::~BackendServer() {
  retry_timer_.cancel();
  connection_->abandon();
  if (state_ != State::kUp) stats_.servers_down.sub();
}

std::optional<BackendFailure> BackendServer::admit() const {
  if (state_ != State::kUp) return BackendFailure::kMarkedDown;
  if (connection_->full()) return BackendFailure::kQueueFull;
  return std::nullopt;
}

void BackendServer::commit(ReplySink* sink, uint32_t tag, protocol::ReplyShape shape) {
  stats_.requests.add();
  connection_->commit(sink, tag, shape);
}

void BackendServer::setOptions(ServerOptions options) {
  options_ = options;
  connection_->setOptions(options.connection);
}

void BackendServer::retire() {
  retry_timer_.cancel();
  connection_->abandon();
}

void BackendServer::onConnectionFailed(BackendConnection&, BackendFailure failure) {
  stats_.connection_failures[static_cast<int>(failure)].add();
  if (state_ == State::kProbing) {
    state_ = State::kDown;
    retry_timer_.arm(std::chrono::milliseconds(nextRetryDelayMs()));
    return;
  }
  if (state_ == State::kUp && ++consecutive_failures_ >= options_.health.failure_limit) {
    markDown(failure);
  }
}

void BackendServer::markDown(BackendFailure failure) {
  state_ = State::kDown;
  stats_.mark_down_events.add();
  stats_.servers_down.add();
  retry_delay_ms_ = 0;
  fprintf(stderr, "backend %s marked down after %u consecutive failures (last: %s)\n",
          address_.c_str(), consecutive_failures_, std::string(failureName(failure)).c_str());
  retry_timer_.arm(std::chrono::milliseconds(nextRetryDelayMs()));
}

uint32_t BackendServer::nextRetryDelayMs() {
  retry_delay_ms_ = retry_delay_ms_ == 0
                        ? options_.health.down_retry_ms
                        : std::min(retry_delay_ms_ * 2, options_.health.max_down_retry_ms);
  // +-20% jitter so the workers (and proxies) do not probe a recovering server in lockstep.
  thread_local std::minstd_rand rng(std::random_device{}());
  uint32_t spread = retry_delay_ms_ / 5;
  return retry_delay_ms_ - spread + (spread ? rng() % (2 * spread + 1) : 0);
}

void BackendServer::startProbe() {
  state_ = State::kProbing;
  stats_.probes.add();
  connection_->output().append("version\r\n");
  connection_->commit(this, kProbeTag, protocol::ReplyShape::kLine);
}

void BackendServer::onBackendReply(uint32_t, std::string_view, protocol::ReplyCode code) {
  if (state_ != State::kProbing) return;
  if (code != protocol::ReplyCode::kVersion) {
    connection_->fail(BackendFailure::kParseError);
    return;
  }
  state_ = State::kUp;
  consecutive_failures_ = 0;
  retry_delay_ms_ = 0;
  stats_.servers_down.sub();
  fprintf(stderr, "backend %s is back up\n", address_.c_str());
}

void BackendServer::onBackendFailure(uint32_t, BackendFailure) {
  // The probe's connection failed; onConnectionFailed already scheduled the next probe.
}

}  // namespace memzone::backend
