// ClientRequest, plans kRead and kMultiGet: reads served by the local zone first, then by the
// pool's other zones in the order the topology lists them.
//
// A zone is skipped without asking when its server for the key is down, has invalidations
// pending, or failed moments ago (the read hold). A zone that fails or times
// out, or misses when readFailover includes miss, passes the key to the next zone. A
// multi-key get does this per key, in rounds: each round asks each server once for all the
// keys it still owes. gets/gats stay in the local zone: their cas values mean nothing to
// another zone's server. A hit served by another zone may be repaired into the local zone.
#include "proxy/protocol/request_encoder.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"
#include "proxy/server/read_repair.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;

namespace {

bool answered(const ClientRequest::Child& c) { return !c.failed && !protocol::isErrorCode(c.code); }

}  // namespace

void ClientRequest::startRead(std::string_view key, bool local_only) {
  addKey(key, 0);
  local_only_ = local_only;
  sendReadAttempt(0);
}

void ClientRequest::sendReadAttempt(uint32_t from) {
  std::string_view key = keyAt(0);
  uint32_t max_attempts = maxReadAttempts(*pool_view_);
  sending_ = true;
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
    if (send(child, server, copy_.view(), protocol::replyShapeFor(command_))) break;
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
    if (miss && more && pool_view_->pool->replication.failover_on_miss) {
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
    if (hit && c.attempt > 0) repair(*pool_view_, keyAt(0), c.server);
    reply_child_ = answer;  // empty when a quiet request was answered with silence
  }
  if (noreply_) {
    reply_.clear();
    reply_child_ = kNoChild;
  }
  markReady();
}

void ClientRequest::startMultiGet(bool local_only) {
  local_only_ = local_only;
  sendMultiGetRound();
}

void ClientRequest::sendMultiGetRound() {
  const std::vector<backend::PoolView>& pools = view_->pools;
  round_start_ = static_cast<uint32_t>(child_count_);
  for (size_t i = 0; i < key_refs_.size(); ++i) {
    KeyRef& ref = key_refs_[i];
    if (ref.resolved) continue;
    if (ref.pool >= pools.size()) {  // no route: never asked, reads as a miss
      ref.resolved = true;
      ref.failed = false;
      continue;
    }
    const backend::PoolView& pool = pools[ref.pool];
    std::string_view key = keyAt(i);
    uint32_t a = pickReadAttempt(pool, key, ref.attempt, maxReadAttempts(pool));
    if (a == UINT32_MAX) {
      ref.resolved = true;  // no zone left to ask: a miss seen earlier stands, else failed
      continue;
    }
    if (a > ref.attempt)
      stats_->read_failovers[static_cast<int>(FailoverReason::kUnavailable)].add();
    ref.attempt = a;
    backend::BackendServer* server = serverFor(pool, key, a);
    uint32_t child = UINT32_MAX;
    for (uint32_t c = round_start_; c < child_count_; ++c) {
      if (children_[c].server == server) child = c;
    }
    if (child == UINT32_MAX) child = addChild(server, a);
    ref.child = child;
  }
  // One backend request per server, its keys in the client's order.
  sending_ = true;
  for (uint32_t c = round_start_; c < child_count_; ++c) {
    backend::BackendServer* server = children_[c].server;
    if (auto refused = server->admit()) {
      failChild(c, *refused);
      continue;
    }
    ByteBuffer& out = server->output();
    out.append(copy_.view());
    for (size_t i = 0; i < key_refs_.size(); ++i) {
      if (key_refs_[i].resolved || key_refs_[i].child != c) continue;
      out.append(' ');
      out.append(keyAt(i));
    }
    out.append("\r\n");
    ++outstanding_;
    server->commit(this, c, protocol::ReplyShape::kRetrieval);
  }
  sending_ = false;
  if (outstanding_ == 0 && sealed_) multiGetRoundDone();
}

void ClientRequest::multiGetRoundDone() {
  if (answered_) return;
  bool another_round = false;
  for (size_t i = 0; i < key_refs_.size(); ++i) {
    KeyRef& ref = key_refs_[i];
    if (ref.resolved || ref.child == UINT32_MAX || ref.child < round_start_) continue;
    const backend::PoolView& pool = view_->pools[ref.pool];
    bool more = ref.attempt + 1 < maxReadAttempts(pool);
    Child& c = children_[ref.child];
    if (!answered(c)) {
      if (more) {
        stats_->read_failovers[static_cast<int>(FailoverReason::kError)].add();
        ++ref.attempt;
        another_round = true;
      } else {
        ref.resolved = true;
      }
      continue;
    }
    protocol::ValueBlock block;
    std::string_view key = keyAt(i);
    if (protocol::parseValueBlock(c.reply.view().substr(c.cursor), block) && block.key == key) {
      ref.value_child = ref.child;
      ref.value_offset = static_cast<uint32_t>(c.cursor);
      ref.value_size = static_cast<uint32_t>(block.size);
      c.cursor += block.size;
      ref.resolved = true;
      ref.failed = false;
      if (ref.attempt > 0) repair(pool, key, c.server);
    } else {
      ref.failed = false;  // a miss is an answer
      if (more && pool.pool->replication.failover_on_miss) {
        stats_->read_failovers[static_cast<int>(FailoverReason::kMiss)].add();
        ++ref.attempt;
        another_round = true;
      } else {
        ref.resolved = true;
      }
    }
  }
  if (another_round) {
    sendMultiGetRound();
    return;
  }
  finishMultiGet();
}

void ClientRequest::finishMultiGet() {
  answered_ = true;
  bool any_answer = false;
  const KeyRef* failed = nullptr;
  for (const KeyRef& ref : key_refs_) {
    if (!ref.failed) any_answer = true;
    if (ref.failed && failed == nullptr) failed = &ref;
  }
  if (!any_answer && failed != nullptr) {
    stats_->server_errors.add();
    backend::BackendFailure f = failed->child != UINT32_MAX && children_[failed->child].failed
                                    ? children_[failed->child].failure
                                    : backend::BackendFailure::kMarkedDown;
    reply_.append(backend::failureReply(f));
  } else {
    // A failed server's keys read as misses: a cache may always miss, and one dead server
    // should not fail a whole multi-get.
    for (const KeyRef& ref : key_refs_) {
      if (ref.value_child == UINT32_MAX) {
        stats_->get_misses.add();
        continue;
      }
      stats_->get_hits.add();
      reply_.append(
          children_[ref.value_child].reply.view().substr(ref.value_offset, ref.value_size));
    }
    reply_.append("END\r\n");
  }
  markReady();
}

void ClientRequest::repair(const backend::PoolView& pool, std::string_view key,
                           backend::BackendServer* source) {
  if (!pool.pool->replication.repair) return;
  startReadRepair(*registry_, view_, key, source, serverFor(pool, key, 0), *stats_);
}

}  // namespace memzone::server
