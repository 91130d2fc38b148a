// One memcached server as seen by one worker: its pipelined connection, its health, and
// whether it may serve reads.
//
// Health: after `failure_limit` consecutive connection failures the server is marked down and
// every request fails fast; after a jittered, doubling delay a probe sends `version`, and only
// a good answer brings it back. An idle server gets a `version` every check interval, so a
// hung server is noticed even without traffic.
//
// Read trust is the proxy's, not the worker's (server_board.h): a write copy that failed
// leaves a key in this worker's invalidation queue for the server, replayed as deletes as
// soon as the server answers; while any worker of the proxy has such a queue, no worker reads
// the server (other zones serve). Past the queue limit the keys are dropped and the server is
// distrusted until flushed (when flush_all is allowed) or for a hold time. A failure makes it
// unreachable for every worker until one of them sees it answer; from that return reads wait
// `read_hold_ms` more, the grace other proxies get to notice the return and replay their own
// queues, and workers that had marked it down probe at once. (A pool with a single zone has
// no copies to owe and reads its servers regardless.) Worker thread only, except the shared
// state's atomics.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "proxy/backend/backend_connection.h"
#include "proxy/backend/backend_stats.h"
#include "proxy/backend/server_board.h"
#include "proxy/common/ring_queue.h"
#include "proxy/topology/topology.h"

namespace memzone::backend {

struct ServerOptions {
  ConnectionOptions connection;
  topology::HealthSpec health;
  topology::ConsistencySpec consistency;
  bool allow_flush = false;  // an overflowed server may be flushed instead of held
};

// In order of trust (referenceZone() in replicated_write.cc picks the most trusted).
enum class ReadTrust : uint8_t {
  kReadable,
  kHeld,       // failed recently: other proxies may still owe it invalidations
  kUntrusted,  // invalidations pending or overflowed: do not read
  kDown,       // marked down: fails fast
};

class BackendServer : public ConnectionObserver, private ReplySink {
 public:
  // `shared` is the proxy's state for this address.
  BackendServer(event::EventBase& base, FlushList& flush_list, const topology::Backend& backend,
                ServerOptions options, BackendStats& stats, std::shared_ptr<ServerState> shared);
  ~BackendServer() override;

  const std::string& address() const { return address_; }
  bool up() const { return state_ == State::kUp; }
  ReadTrust readTrust() const;
  // Whether a write that left an invalidation for this server may be acknowledged
  // (dirty_confirmation.h): this worker owes it nothing any more (the delete was replayed:
  // the old value is gone), or no controller coordinates (nothing to wait for), or every
  // proxy on it has applied a dirty set holding this server.
  bool knownDirtyToAll() const {
    if (invalidations_.empty() && replaying_.empty() && !overflowed_) return true;
    const ControllerLink* link = shared_->controller.get();
    if (link == nullptr || !link->coordinated.load(std::memory_order_relaxed)) return true;
    uint64_t epoch = shared_->owe_epoch.load();  // at least this worker's own bump
    uint64_t confirmed = shared_->confirmed_epoch.load();
    return confirmed != 0 && confirmed >= epoch;
  }

  // Returns the reason a request cannot be sent now, or nullopt. After nullopt, encode the
  // request into output() and call commit(); the sink then hears back exactly once.
  std::optional<BackendFailure> admit() const;
  // The request carries opaque() as its last flag (backend_connection.h).
  ByteBuffer& output() { return connection_->output(); }
  protocol::OpaqueToken opaque(uint32_t ahead = 0) const { return connection_->opaque(ahead); }
  void commitBatch(ReplySink* sink, uint32_t tag, uint32_t count) {
    stats_.requests.add(count);
    active_since_check_ = true;
    connection_->commitBatch(sink, tag, count);
  }
  void commit(ReplySink* sink, uint32_t tag, protocol::ReplyKind kind = protocol::ReplyKind::kMeta,
              std::string_view debug_key = {}, bool quiet = false,
              protocol::ReplyCode silent_code = protocol::ReplyCode::kOk);

  // A write to `key` may not have reached this server (or left it diverged): delete it here
  // before this server serves reads again. `key` as sent on a meta line: text, or base64
  // followed by " b" (a text key never holds a space, so the two cannot be confused).
  void invalidate(std::string_view key);
  size_t pendingInvalidations() const { return invalidations_.size() + replaying_.size(); }

  void setOptions(ServerOptions options);
  // Durable invalidations: `log` (may be null) records what this server is owed.
  void setLog(InvalidationLog* log) { log_ = log; }
  // Deletes a previous run of the proxy still owed this server.
  void restore(const OwedDeletes& owed);
  // What this worker owes the server now (for a log rewrite).
  OwedDeletes owed() const;
  void connectAhead() { connection_->connectAhead(); }
  // Scratch for one multi-get round on this worker (multi_get.cc): which of its children asks
  // this server, valid while `stamp` is the round's. Rounds never interleave on a worker.
  uint32_t roundChild(uint64_t stamp) const {
    return round_stamp_ == stamp ? round_child_ : UINT32_MAX;
  }
  void setRoundChild(uint64_t stamp, uint32_t child) {
    round_stamp_ = stamp;
    round_child_ = child;
  }
  void setZoneSlot(uint32_t slot) { zone_slot_ = slot; }
  // The server left the topology: fail what is pending with kRemoved.
  void retire();
  // Warm-up (backend_registry.cc): until this time (event::nowMicros()) the server is taken
  // to be filling up, and a miss on it is read from the other zones. 0 = not warming.
  int64_t warmUntilUs() const { return warm_until_us_; }
  void setWarmUntilUs(int64_t us) { warm_until_us_ = us; }

  // ConnectionObserver
  void onConnectionFailed(BackendConnection& connection, BackendFailure failure) override;
  void onReplyReceived() override {
    consecutive_failures_ = 0;
    if (shared_->unreachable_since_us.load(std::memory_order_relaxed) != 0) noteReturn();
    if (replay_wanted_) replayInvalidations();
  }

 private:
  enum class State : uint8_t { kUp, kDown, kProbing };
  enum Tag : uint32_t { kProbeTag, kHealthTag, kReplayTag, kFlushTag };

  void markDown(BackendFailure failure);
  void startProbe();
  void onHealthTimer();
  uint32_t nextRetryDelayMs();
  void replayInvalidations();
  void overflow();
  void setQueueDepth(size_t depth);
  // Publishes whether this worker owes the server deletes (or distrusts it after an overflow).
  void updateOwing();
  // This worker saw the server answer while the proxy considered it unreachable.
  void noteReturn();
  // While marked down: probe at once when another worker has seen the server return.
  void onWatchTimer();
  ZoneCounters& zone() { return stats_.zones[zone_slot_]; }
  void onBackendReply(uint32_t tag, const protocol::BackendReply& reply) override;
  void onBackendFailure(uint32_t tag, BackendFailure failure) override;

  std::string address_;
  ServerOptions options_;
  BackendStats& stats_;
  std::unique_ptr<BackendConnection> connection_;
  std::shared_ptr<ServerState> shared_;
  InvalidationLog* log_ = nullptr;
  bool log_clean_ = true;  // the log's last word for this server: nothing owed
  bool owing_published_ = false;
  uint32_t returns_seen_ = 0;  // shared_->returns when this worker marked the server down
  event::Timer retry_timer_;
  event::Timer health_timer_;
  event::Timer watch_timer_;
  State state_ = State::kUp;
  uint32_t consecutive_failures_ = 0;
  uint32_t retry_delay_ms_ = 0;
  uint32_t zone_slot_ = 0;
  bool active_since_check_ = false;
  bool health_check_inflight_ = false;

  RingQueue<std::string> invalidations_;
  RingQueue<std::string> replaying_;  // deletes sent, in send order (replies come in order)
  size_t reported_depth_ = 0;
  bool replay_wanted_ = false;  // something to replay or flush once the server answers
  bool overflowed_ = false;
  bool flush_inflight_ = false;
  int64_t overflow_until_us_ = 0;  // hold instead of flush
  int64_t warm_until_us_ = 0;
  uint64_t round_stamp_ = 0;
  uint32_t round_child_ = 0;
};

}  // namespace memzone::backend
