#include "proxy/backend/backend_server.h"

#include <arpa/inet.h>

#include <cstdio>
#include <cstring>
#include <random>

#include "memzone/ops/log.h"

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

constexpr size_t kMaxReplayInFlight = 64;
// How often a worker that marked a server down looks whether another worker saw it return.
constexpr auto kWatchInterval = std::chrono::milliseconds(50);

// Rare (failures, returns): sequentially consistent, so the report thread that sees a raised
// distrust also sees the debt epoch bumped before it (ServerBoard::owedServers).
void raiseTo(std::atomic<int64_t>& value, int64_t at_least) {
  int64_t current = value.load();
  while (current < at_least && !value.compare_exchange_weak(current, at_least)) {
  }
}

}  // namespace

BackendServer::BackendServer(event::EventBase& base, FlushList& flush_list,
                             const topology::Backend& backend, ServerOptions options,
                             BackendStats& stats, std::shared_ptr<ServerState> shared)
    : address_(backend.address),
      options_(options),
      stats_(stats),
      shared_(std::move(shared)),
      // Probes are queued like requests and flushed after the loop turn (Worker).
      retry_timer_(base, [this] { startProbe(); }),
      health_timer_(base, [this] { onHealthTimer(); }),
      watch_timer_(base, [this] { onWatchTimer(); }) {
  sockaddr_storage addr;
  socklen_t len;
  toSockaddr(backend, addr, len);
  connection_ =
      std::make_unique<BackendConnection>(base, flush_list, addr, len, *this, options.connection);
  if (options_.health.check_interval_ms > 0) {
    health_timer_.arm(std::chrono::milliseconds(options_.health.check_interval_ms));
  }
}

BackendServer::~BackendServer() {
  retry_timer_.cancel();
  health_timer_.cancel();
  watch_timer_.cancel();
  // What this worker owed dies with it (the server left the topology).
  if (owing_published_) shared_->owing.fetch_sub(1, std::memory_order_relaxed);
  connection_->abandon();
  if (state_ != State::kUp) stats_.servers_down.sub();
  setQueueDepth(0);
}

ReadTrust BackendServer::readTrust() const {
  if (state_ != State::kUp) return ReadTrust::kDown;
  switch (sharedTrust(*shared_, [] { return event::nowMicros(); })) {
    case SharedTrust::kUntrusted:
      return ReadTrust::kUntrusted;
    case SharedTrust::kHeld:
      return ReadTrust::kHeld;
    case SharedTrust::kReadable:
      break;
  }
  return ReadTrust::kReadable;
}

void BackendServer::restore(const OwedDeletes& owed) {
  for (const std::string& key : owed.keys) {
    if (log_ != nullptr) log_->queued(address_, key);
    invalidations_.push_back(key);
  }
  if (owed.overflowed) {
    if (log_ != nullptr) log_->overflowed(address_);
    overflowed_ = true;
    overflow_until_us_ = event::nowMicros() + int64_t{options_.consistency.overflow_hold_ms} * 1000;
    if (!options_.allow_flush) raiseTo(shared_->distrusted_until_us, overflow_until_us_);
  }
  setQueueDepth(pendingInvalidations());
  replay_wanted_ = overflowed_ || !invalidations_.empty();
  updateOwing();
  if (state_ == State::kUp) replayInvalidations();
}

OwedDeletes BackendServer::owed() const {
  OwedDeletes out;
  for (size_t i = 0; i < replaying_.size(); ++i) out.keys.push_back(replaying_.at(i));
  for (size_t i = 0; i < invalidations_.size(); ++i) out.keys.push_back(invalidations_.at(i));
  out.overflowed = overflowed_;
  return out;
}

void BackendServer::updateOwing() {
  bool owes =
      !invalidations_.empty() || !replaying_.empty() || (overflowed_ && options_.allow_flush);
  // The log learns when nothing is owed any more, overflow included.
  bool clean = invalidations_.empty() && replaying_.empty() && !overflowed_;
  if (clean != log_clean_) {
    log_clean_ = clean;
    if (clean && log_ != nullptr) log_->cleared(address_);
  }
  if (owes == owing_published_) return;
  owing_published_ = owes;
  if (owes) {
    // The epoch first: whoever sees this worker's debt in `owing` also sees its epoch
    // (ServerBoard::owedServers reads them the other way round).
    shared_->owe_epoch.fetch_add(1);
    shared_->owing.fetch_add(1);
  } else {
    shared_->owing.fetch_sub(1, std::memory_order_relaxed);
  }
  // Other proxies must stop reading it as soon as possible: report now.
  if (shared_->controller) shared_->controller->notify();
}

void BackendServer::noteReturn() {
  // The first worker to see the server answer after a failure starts the proxy's recovery
  // hold from now, and wakes the workers that marked it down.
  int64_t since = shared_->unreachable_since_us.exchange(0, std::memory_order_relaxed);
  if (since == 0) return;
  int64_t now = event::nowMicros();
  raiseTo(shared_->readable_at_us, now + int64_t{options_.consistency.read_hold_ms} * 1000);
  shared_->returns.fetch_add(1, std::memory_order_relaxed);
  ops::logEvent(ops::LogLevel::kInfo, "return:" + address_,
                "backend %s answers again after %.1f s; reads resume in %u ms", address_.c_str(),
                static_cast<double>(now - since) / 1e6, options_.consistency.read_hold_ms);
}

void BackendServer::onWatchTimer() {
  if (state_ != State::kDown) return;
  if (shared_->returns.load(std::memory_order_relaxed) != returns_seen_) {
    retry_timer_.cancel();
    startProbe();
    return;
  }
  watch_timer_.arm(kWatchInterval);
}

std::optional<BackendFailure> BackendServer::admit() const {
  if (state_ != State::kUp) return BackendFailure::kMarkedDown;
  if (connection_->full()) return BackendFailure::kQueueFull;
  return std::nullopt;
}

void BackendServer::commit(ReplySink* sink, uint32_t tag, protocol::ReplyKind kind,
                           std::string_view debug_key, bool quiet,
                           protocol::ReplyCode silent_code) {
  stats_.requests.add();
  active_since_check_ = true;
  connection_->commit(sink, tag, kind, debug_key, quiet, silent_code);
}

void BackendServer::setOptions(ServerOptions options) {
  bool had_checks = options_.health.check_interval_ms > 0;
  options_ = options;
  connection_->setOptions(options.connection);
  if (!had_checks && options_.health.check_interval_ms > 0) {
    health_timer_.arm(std::chrono::milliseconds(options_.health.check_interval_ms));
  }
}

void BackendServer::retire() {
  retry_timer_.cancel();
  health_timer_.cancel();
  connection_->abandon();
}

void BackendServer::onConnectionFailed(BackendConnection& connection, BackendFailure failure) {
  stats_.connection_failures[static_cast<int>(failure)].add();
  if (failure == BackendFailure::kDesync) {
    // The replies on this connection could not be matched to their requests: none of them
    // went out, the connection is closed. Worth a line of its own (rate-limited).
    ops::logEvent(ops::LogLevel::kWarn, "desync:" + address_,
                  "backend %s desync: replies out of step with requests; connection closed, "
                  "%zu requests in flight failed",
                  address_.c_str(), connection.pending());
  }
  // A desync or an oversized reply says the stream broke, not that the server is unwell, and
  // a client may provoke one (issue 22): the connection is closed and reopened, but only what
  // a health probe confirms marks a server down.
  bool stream_fault = failure == BackendFailure::kDesync || failure == BackendFailure::kOversized;
  if (stream_fault && state_ != State::kProbing) return;
  // Unreachable for the whole proxy until some worker sees it answer again.
  int64_t expected = 0;
  shared_->unreachable_since_us.compare_exchange_strong(expected, event::nowMicros(),
                                                        std::memory_order_relaxed);
  if (state_ == State::kProbing) {
    state_ = State::kDown;
    returns_seen_ = shared_->returns.load(std::memory_order_relaxed);
    retry_timer_.arm(std::chrono::milliseconds(nextRetryDelayMs()));
    watch_timer_.arm(kWatchInterval);
    return;
  }
  if (state_ == State::kUp && ++consecutive_failures_ >= options_.health.failure_limit) {
    markDown(failure);
  }
}

void BackendServer::markDown(BackendFailure failure) {
  state_ = State::kDown;
  returns_seen_ = shared_->returns.load(std::memory_order_relaxed);
  watch_timer_.arm(kWatchInterval);
  stats_.mark_down_events.add();
  stats_.servers_down.add();
  retry_delay_ms_ = 0;
  ops::logEvent(ops::LogLevel::kWarn, "down:" + address_,
                "backend %s marked down after %u consecutive failures (last: %s)", address_.c_str(),
                consecutive_failures_, std::string(failureName(failure)).c_str());
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
  connection_->commit(this, kProbeTag, protocol::ReplyKind::kVersion);
}

void BackendServer::onHealthTimer() {
  // Only an idle, up server needs a check: traffic already tells us about the others.
  if (state_ == State::kUp && !active_since_check_ && !health_check_inflight_ &&
      connection_->pending() == 0) {
    health_check_inflight_ = true;
    stats_.probes.add();
    connection_->output().append("version\r\n");
    connection_->commit(this, kHealthTag, protocol::ReplyKind::kVersion);
  }
  active_since_check_ = false;
  health_timer_.arm(std::chrono::milliseconds(options_.health.check_interval_ms));
}

void BackendServer::invalidate(std::string_view key) {
  zone().copies_failed.add();
  if (overflowed_) {
    // Already distrusted as a whole: keep holding (or wait for the flush).
    zone().invalidations_dropped.add();
    overflow_until_us_ = event::nowMicros() + int64_t{options_.consistency.overflow_hold_ms} * 1000;
    if (!options_.allow_flush) raiseTo(shared_->distrusted_until_us, overflow_until_us_);
    return;
  }
  if (pendingInvalidations() >= options_.consistency.invalidation_queue_limit) {
    overflow();
    return;
  }
  invalidations_.push_back(std::string(key));
  if (log_ != nullptr) log_->queued(address_, key);
  zone().invalidations_queued.add();
  setQueueDepth(pendingInvalidations());
  updateOwing();
  replay_wanted_ = true;
  if (state_ == State::kUp) replayInvalidations();
}

void BackendServer::overflow() {
  size_t dropped = pendingInvalidations() + 1;
  while (!invalidations_.empty()) {
    invalidations_.front().clear();
    invalidations_.pop_front();
  }
  zone().invalidations_dropped.add(dropped);
  overflowed_ = true;
  if (log_ != nullptr) log_->overflowed(address_);
  replay_wanted_ = true;
  overflow_until_us_ = event::nowMicros() + int64_t{options_.consistency.overflow_hold_ms} * 1000;
  shared_->owe_epoch.fetch_add(1);  // a new debt: the dropped keys (see updateOwing)
  if (!options_.allow_flush) raiseTo(shared_->distrusted_until_us, overflow_until_us_);
  setQueueDepth(replaying_.size());
  updateOwing();
  if (shared_->controller) shared_->controller->notify();  // distrusted: owed, for others too
  ops::logEvent(
      ops::LogLevel::kWarn, "overflow:" + address_,
      "backend %s: invalidation queue overflowed (%zu keys dropped); no reads from it until %s",
      address_.c_str(), dropped, options_.allow_flush ? "flushed" : "the hold time passes");
}

void BackendServer::replayInvalidations() {
  if (state_ != State::kUp) return;
  if (overflowed_) {
    if (options_.allow_flush && !flush_inflight_ && !connection_->full()) {
      flush_inflight_ = true;
      connection_->output().append("flush_all\r\n");
      commit(this, kFlushTag, protocol::ReplyKind::kOk);
    } else if (!options_.allow_flush && event::nowMicros() >= overflow_until_us_) {
      overflowed_ = false;
    }
  }
  while (!invalidations_.empty() && replaying_.size() < kMaxReplayInFlight &&
         !connection_->full()) {
    std::string key = std::move(invalidations_.front());
    invalidations_.pop_front();
    ByteBuffer& out = connection_->output();
    out.append("md ");
    out.append(key);  // text, or "<base64> b"
    out.append(' ');
    out.append(connection_->opaque().view());
    out.append("\r\n");
    commit(this, kReplayTag);
    replaying_.push_back(std::move(key));
  }
  replay_wanted_ = overflowed_ || !invalidations_.empty();
  updateOwing();
}

void BackendServer::setQueueDepth(size_t depth) {
  if (depth > reported_depth_) zone().invalidation_queue_depth.add(depth - reported_depth_);
  if (depth < reported_depth_) zone().invalidation_queue_depth.sub(reported_depth_ - depth);
  reported_depth_ = depth;
}

void BackendServer::onBackendReply(uint32_t tag, const protocol::BackendReply& reply) {
  const protocol::ReplyCode code = reply.code;
  switch (tag) {
    case kReplayTag: {
      std::string key = std::move(replaying_.front());
      replaying_.pop_front();
      if (code == protocol::ReplyCode::kOk || code == protocol::ReplyCode::kNotFound) {
        zone().invalidations_replayed.add();
      } else {
        invalidations_.push_back(std::move(key));  // try again after the next reply
        replay_wanted_ = true;
      }
      setQueueDepth(pendingInvalidations());
      if (replay_wanted_) replayInvalidations();
      updateOwing();
      return;
    }
    case kFlushTag:
      flush_inflight_ = false;
      if (code == protocol::ReplyCode::kOk) {
        overflowed_ = false;
        zone().overflow_flushes.add();
        ops::logEvent(ops::LogLevel::kInfo, "flushed:" + address_,
                      "backend %s flushed after an invalidation overflow", address_.c_str());
      }
      replay_wanted_ = overflowed_ || !invalidations_.empty();
      updateOwing();
      return;
    case kHealthTag:
      health_check_inflight_ = false;
      return;
    case kProbeTag:
      break;
  }
  if (state_ != State::kProbing) return;
  if (code != protocol::ReplyCode::kVersion) {
    connection_->fail(BackendFailure::kDesync);
    return;
  }
  state_ = State::kUp;
  watch_timer_.cancel();
  consecutive_failures_ = 0;
  retry_delay_ms_ = 0;
  stats_.servers_down.sub();
  ops::logEvent(ops::LogLevel::kInfo, "up:" + address_, "backend %s is back up", address_.c_str());
  if (replay_wanted_) replayInvalidations();
}

void BackendServer::onBackendFailure(uint32_t tag, BackendFailure) {
  switch (tag) {
    case kReplayTag:
      // Keep the key: it is replayed when the server answers again.
      invalidations_.push_back(std::move(replaying_.front()));
      replaying_.pop_front();
      replay_wanted_ = true;
      return;
    case kFlushTag:
      flush_inflight_ = false;
      return;
    case kHealthTag:
      health_check_inflight_ = false;
      return;
    default:
      // The probe's connection failed; onConnectionFailed already scheduled the next probe.
      return;
  }
}

}  // namespace memzone::backend
