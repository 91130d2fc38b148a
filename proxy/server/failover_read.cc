// ClientRequest, plan kRead: a one-key read served by the local zone first, then by the
// pool's other zones in the order the topology lists them (multi_get.cc does the same per
// key for multi-key gets).
//
// A zone is skipped without asking when its server for the key is down, has invalidations
// pending, or failed moments ago (the read hold). A zone that fails or times out, or misses
// when readFailover includes miss, passes the key to the next zone. gets/gats stay in the
// local zone: their cas values mean nothing to another zone's server. A hit served by
// another zone may be repaired into the local zone. During a churn window (window_reads.h) a
// miss on the local zone is read from the key's previous owner and the other zones too.
#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/client_errors.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/read_repair.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;

namespace {

// A request memcached rejected (CLIENT_ERROR, ERROR) is answered: another zone would only
// reject it too.
bool answered(const ClientRequest::Child& c) {
  return !c.failed && c.code != ReplyCode::kServerError;
}

}  // namespace

void ClientRequest::startRead(const protocol::Request& request, const backend::PoolView& pool) {
  pool_view_ = &pool;
  keepForm(request);
  encodeKept(request, false);  // sent to each zone asked, in turn
  // A cas means something only to the server that issued it: gets, gats and mg ... c never
  // leave the local zone (issue 23).
  local_only_ = isLocalOnlyRead(request.command) ||
                (request.command == Command::kMetaGet && protocol::hasMetaFlag(request, 'c'));
  sendReadAttempt(0);
  sealed();
}

void ClientRequest::sendReadAttempt(uint32_t from) {
  std::string_view key = keyAt(0);
  uint32_t max_attempts = maxReadAttempts(*pool_view_);
  sending_ = true;
  if (previous_owner_ != nullptr) {
    // Migration: the local zone's previous owner of the key first.
    backend::BackendServer* previous = previous_owner_;
    previous_owner_ = nullptr;
    uint32_t child = addChild(previous, kPreviousOwnerAttempt);
    if (sendKept(child, previous)) {
      sending_ = false;
      if (outstanding_ == 0 && sealed_ && !answered_) readChildDone(UINT32_MAX);
      return;
    }
  }
  for (;;) {
    uint32_t a = pickReadAttempt(*pool_view_, key, from, max_attempts);
    if (a == UINT32_MAX) {
      next_attempt_ = max_attempts;
      break;
    }
    if (a > from) stats_->read_failovers[static_cast<int>(FailoverReason::kUnavailable)].add();
    backend::BackendServer* server = serverFor(*pool_view_, key, a);
    uint32_t child = addChild(server, a);
    next_attempt_ = a + 1;
    if (sendKept(child, server)) break;
    if (next_attempt_ < max_attempts) {
      stats_->read_failovers[static_cast<int>(FailoverReason::kError)].add();
    }
    from = next_attempt_;
  }
  sending_ = false;
  if (outstanding_ == 0 && sealed_ && !answered_) readChildDone(UINT32_MAX);
}

void ClientRequest::readChildDone(uint32_t child) {
  if (answered_) return;
  uint32_t max_attempts = maxReadAttempts(*pool_view_);
  if (child == UINT32_MAX) {
    // Nothing in flight: every zone was refused or unavailable.
    finishRead(first_answer_ != UINT32_MAX ? first_answer_
               : child_count_ > 0          ? static_cast<uint32_t>(child_count_ - 1)
                                           : UINT32_MAX);
    return;
  }
  const Child& c = children_[child];
  bool more = next_attempt_ < max_attempts;
  if (answered(c)) {
    bool miss = c.code == ReplyCode::kMiss;
    if (miss && c.attempt == 0 && windowApplies(*pool_view_, c.server) &&
        readMissThroughWindow(child)) {
      return;
    }
    if (miss && more &&
        (pool_view_->pool->replication.failover_on_miss || window_read_ != WindowRead::kNone)) {
      if (first_answer_ == UINT32_MAX) first_answer_ = child;
      stats_->read_failovers[static_cast<int>(FailoverReason::kMiss)].add();
      sendReadAttempt(next_attempt_);
      return;
    }
    finishRead(child);
    return;
  }
  if (more) {
    stats_->read_failovers[static_cast<int>(FailoverReason::kError)].add();
    sendReadAttempt(next_attempt_);
    return;
  }
  // Every zone failed; a miss seen on the way is a truthful answer, a failure is not.
  finishRead(first_answer_ != UINT32_MAX ? first_answer_ : child);
}

void ClientRequest::finishRead(uint32_t answer) {
  answered_ = true;
  if (answer == UINT32_MAX) {
    // No zone could even be asked: say why the local one was not.
    backend::BackendServer* local = serverFor(*pool_view_, keyAt(0), 0);
    stats_->server_errors.add();
    backend::ReadTrust trust = local->readTrust();
    reply_.append(backend::failureReply(trust == backend::ReadTrust::kDown
                                            ? backend::BackendFailure::kMarkedDown
                                            : backend::BackendFailure::kUntrusted));
  } else if (children_[answer].failed) {
    stats_->server_errors.add();
    reply_.append(backend::failureReply(children_[answer].failure));
  } else {
    const Child& c = children_[answer];
    bool hit =
        c.code == ReplyCode::kHit || (command_ == Command::kMetaGet && c.code == ReplyCode::kOk);
    (hit ? stats_->get_hits : stats_->get_misses).add();
    if (window_read_ != WindowRead::kNone) countWindowAnswer(*pool_view_, window_read_, hit);
    if (hit && c.attempt > 0) {
      repair(*pool_view_, keyAt(0), wireKey(), c.server, window_read_,
             c.attempt == kPreviousOwnerAttempt);
    }
    // memcached applies an mg's T before it refuses a too-long opaque (such a request goes
    // as written): the TTL changed there, so it changes in the other zones too.
    if (!protocol::isErrorCode(c.code) ||
        (refusal_ && c.reply.view() == protocol::errors::kMetaOpaqueTooLong)) {
      uint32_t zone = c.attempt == kPreviousOwnerAttempt ? pool_view_->local_zone
                                                         : zoneForAttempt(*pool_view_, c.attempt);
      copyTtl(*pool_view_, keyAt(0), wireKey(), zone);
    }
    reply_child_ = answer;  // empty when a quiet request was answered with silence
  }
  if (noreply_) {
    reply_.clear();
    reply_child_ = kNoChild;
  }
  markReady();
}

bool ClientRequest::readMissThroughWindow(uint32_t child) {
  const backend::ZoneView& zv = pool_view_->zones[pool_view_->local_zone];
  backend::BackendServer* previous = nullptr;
  WindowRead window = windowFor(zv, children_[child].server, keyAt(0), started_us_, &previous);
  if (window == WindowRead::kNone) return false;
  window_read_ = window;
  backend::ZoneCounters& counters = registry_->stats().zones[zv.zone->stats_slot];
  (window == WindowRead::kMigration ? counters.migration_reads : counters.warmup_reads).add();
  if (previous != nullptr && previous->readTrust() != backend::ReadTrust::kReadable) {
    previous = nullptr;
  }
  if (previous == nullptr && next_attempt_ >= maxReadAttempts(*pool_view_)) return false;
  first_answer_ = child;
  previous_owner_ = previous;
  sendReadAttempt(next_attempt_);
  return true;
}

void ClientRequest::countWindowAnswer(const backend::PoolView& pool, WindowRead window, bool hit) {
  if (window != WindowRead::kMigration || !hit) return;
  uint32_t slot = pool.zones[pool.local_zone].zone->stats_slot;
  registry_->stats().zones[slot].migration_hits.add();
}

void ClientRequest::repair(const backend::PoolView& pool, std::string_view key,
                           std::string_view wire_key, backend::BackendServer* source,
                           WindowRead window, bool move) {
  if (!pool.pool->replication.repair) return;
  backend::ZoneCounters& counters =
      registry_->stats().zones[pool.zones[pool.local_zone].zone->stats_slot];
  metrics::Counter* on_store = window == WindowRead::kWarmup      ? &counters.keys_warmed
                               : window == WindowRead::kMigration ? &counters.migration_repairs
                                                                  : nullptr;
  startReadRepair(*registry_, view_, wire_key, source, serverFor(pool, key, 0), *stats_, on_store,
                  move);
}

}  // namespace memzone::server
