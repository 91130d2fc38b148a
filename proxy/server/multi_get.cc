// ClientRequest, plan kMultiGet: a multi-key get/gets/gat/gats, grouped by server and
// reassembled in the client's key order.
//
// Each key follows the one-key read's zone order (failover_read.cc), in rounds: each round
// asks each server for the keys it still owes, one `mg` per key, pipelined (each reply
// carries its own opaque, so no reply names a key: backend_reply.h); a key whose server failed, or
// missed when readFailover includes miss, moves to its next zone in the next round. A failed
// server's keys read as misses unless no key got any answer at all.
//
// Churn windows (window_reads.h) as for one key: a key that misses on the local zone during
// a migration window is asked of its previous owner in the zone first (in the next round,
// grouped with that round's other keys for the same server); a hit there is moved into the
// new owner, a miss or failure goes on to the other zones.
#include <algorithm>

#include "proxy/protocol/backend_request.h"
#include "proxy/protocol/memcached_syntax.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::ReplyCode;

namespace {

// The previous owner of `key` in the local zone when a migration window sends a miss on
// `owner` there and it may be read now; else null.
backend::BackendServer* readablePreviousOwner(const backend::PoolView& pool,
                                              backend::BackendServer* owner, std::string_view key,
                                              int64_t now_us) {
  backend::BackendServer* previous = nullptr;
  windowFor(pool.zones[pool.local_zone], owner, key, now_us, &previous);
  return previous != nullptr && previous->readTrust() == backend::ReadTrust::kReadable ? previous
                                                                                       : nullptr;
}

}  // namespace

void ClientRequest::startMultiGet(const protocol::Request& request,
                                  const routing::PrefixRouter& router) {
  for (size_t i = 0; i < request.key_count; ++i) {
    std::string_view key = request.key(i);
    addKey(key, UINT32_MAX, router.poolFor(key));
  }
  if (request.first_key == 2) {  // gat/gats: the exptime, for each key's mg and the copies
    copy_.append(request.tokens[1]);
    changes_ttl_ = protocol::mc::strtol32(request.tokens[1], ttl_);
  }
  local_only_ = isLocalOnlyRead(request.command);
  sendMultiGetRound();
  sealed();
}

void ClientRequest::onMultiGetReply(uint32_t child, const protocol::BackendReply& reply) {
  Child& c = children_[child];
  // The child's next key: replies come in the order its keys were sent.
  size_t key = c.cursor;
  while (key_refs_[key].resolved || key_refs_[key].child != child) ++key;
  c.cursor = key + 1;
  KeyRef& ref = key_refs_[key];
  ref.code = reply.code;
  ref.answered = reply.code != ReplyCode::kServerError;
  size_t limit = registry_->maxReplyBytes();
  if (reply.code == ReplyCode::kHit && limit != 0 && value_bytes_ + reply.value.size() > limit) {
    oversized_ = true;  // a reply no client could be sent within the budget: refused whole
  }
  if (reply.code == ReplyCode::kHit && !released_by_owner_ && !oversized_) {
    value_bytes_ += reply.value.size();
    ref.value_child = child;
    ref.value_offset = static_cast<uint32_t>(c.reply.size());
    bool with_cas = command_ == protocol::Command::kGets || command_ == protocol::Command::kGats;
    protocol::appendValueBlock(keyAt(key), reply, with_cas, c.reply);
    ref.value_size = static_cast<uint32_t>(c.reply.size() - ref.value_offset);
  }
  if (--c.sent > 0) return;
  c.done = true;
  --outstanding_;
  childDone(child);
}

void ClientRequest::onMultiGetFailure(uint32_t child, backend::BackendFailure failure) {
  // The keys it had not answered stay unanswered (KeyRef::answered false).
  failChild(child, failure);
  children_[child].sent = 0;
  --outstanding_;
  childDone(child);
}

void ClientRequest::sendMultiGetRound() {
  const std::vector<backend::PoolView>& pools = view_->pools;
  round_start_ = static_cast<uint32_t>(child_count_);
  // Each key finds its server's child of this round in O(1): the server remembers it.
  thread_local uint64_t rounds = 0;
  const uint64_t stamp = ++rounds;
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
    backend::BackendServer* server = nullptr;
    uint32_t a = ref.attempt;
    if (a == kPreviousOwnerAttempt) {
      // Found again rather than kept: KeyRef stays small, and this is paid only in a window.
      server = readablePreviousOwner(pool, serverFor(pool, key, 0), key, started_us_);
      if (server == nullptr) ref.attempt = 1;  // no longer readable: on to the other zones
    }
    if (server == nullptr) {
      a = pickReadAttempt(pool, key, ref.attempt, maxReadAttempts(pool));
      if (a == UINT32_MAX) {
        ref.resolved = true;  // no zone left to ask: a miss seen earlier stands, else failed
        continue;
      }
      if (a > ref.attempt)
        stats_->read_failovers[static_cast<int>(FailoverReason::kUnavailable)].add();
      ref.attempt = a;
      server = serverFor(pool, key, a);
    }
    uint32_t child = server->roundChild(stamp);
    if (child == UINT32_MAX) {
      child = addChild(server, a);
      server->setRoundChild(stamp, child);
    }
    Child& c = children_[child];
    c.first_key = std::min(c.first_key, static_cast<uint32_t>(i));
    c.last_key = static_cast<uint32_t>(i);
    ref.child = child;
    ref.answered = false;
  }
  // Per server, one `mg` per key in the client's order, committed as one batch.
  sending_ = true;
  std::string_view exptime = copy_.view();
  for (uint32_t child = round_start_; child < child_count_; ++child) {
    Child& c = children_[child];
    backend::BackendServer* server = c.server;
    if (auto refused = server->admit()) {
      failChild(child, *refused);
      continue;
    }
    ByteBuffer& out = server->output();
    uint32_t count = 0;
    for (uint32_t i = c.first_key; i <= c.last_key; ++i) {
      const KeyRef& ref = key_refs_[i];
      if (ref.resolved || ref.child != child) continue;
      protocol::encodeKeyRead(command_, exptime, keyAt(i), server->opaque(count).view(), out);
      ++count;
    }
    c.cursor = c.first_key;
    c.sent = count;
    ++outstanding_;
    server->commitBatch(this, child, count);
  }
  sending_ = false;
  if (sealed_) updateBookkeeping();  // later rounds may add children
  if (outstanding_ == 0 && sealed_) multiGetRoundDone();
}

void ClientRequest::multiGetRoundDone() {
  if (answered_) return;
  bool another_round = false;
  for (size_t i = 0; i < key_refs_.size(); ++i) {
    KeyRef& ref = key_refs_[i];
    if (ref.resolved || ref.child == UINT32_MAX || ref.child < round_start_) continue;
    const backend::PoolView& pool = view_->pools[ref.pool];
    bool from_previous = ref.attempt == kPreviousOwnerAttempt;
    uint32_t next = from_previous ? 1 : ref.attempt + 1;  // the previous owner came after 0
    bool more = next < maxReadAttempts(pool);
    Child& c = children_[ref.child];
    if (!ref.answered) {
      if (more) {
        stats_->read_failovers[static_cast<int>(FailoverReason::kError)].add();
        ref.attempt = next;
        another_round = true;
      } else {
        ref.resolved = true;
      }
      continue;
    }
    std::string_view key = keyAt(i);
    if (ref.code == ReplyCode::kHit) {
      ref.resolved = true;
      ref.failed = false;
      if (ref.window != WindowRead::kNone) countWindowAnswer(pool, ref.window, true);
      if (ref.attempt > 0) repair(pool, key, key, c.server, ref.window, from_previous);
    } else {
      ref.failed = false;  // a miss is an answer
      if (ref.attempt == 0 && windowApplies(pool, c.server)) {
        // A churn window: the key's previous owner in this zone, then its other zones, may
        // have it.
        const backend::ZoneView& zv = pool.zones[pool.local_zone];
        backend::BackendServer* previous = nullptr;
        ref.window = windowFor(zv, c.server, key, started_us_, &previous);
        if (ref.window != WindowRead::kNone) {
          backend::ZoneCounters& counters = registry_->stats().zones[zv.zone->stats_slot];
          (ref.window == WindowRead::kMigration ? counters.migration_reads : counters.warmup_reads)
              .add();
        }
        if (previous != nullptr && previous->readTrust() == backend::ReadTrust::kReadable) {
          ref.attempt = kPreviousOwnerAttempt;
          another_round = true;
          continue;
        }
      }
      if (more && (pool.pool->replication.failover_on_miss || ref.window != WindowRead::kNone)) {
        stats_->read_failovers[static_cast<int>(FailoverReason::kMiss)].add();
        ref.attempt = next;
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
  if (oversized_) {
    stats_->server_errors.add();
    registry_->stats()
        .connection_failures[static_cast<int>(backend::BackendFailure::kOversized)]
        .add();
    reply_.append(backend::failureReply(backend::BackendFailure::kOversized));
  } else if (!any_answer && failed != nullptr) {
    stats_->server_errors.add();
    backend::BackendFailure f = failed->child != UINT32_MAX && children_[failed->child].failed
                                    ? children_[failed->child].failure
                                    : backend::BackendFailure::kMarkedDown;
    reply_.append(backend::failureReply(f));
  } else {
    // A failed server's keys read as misses: a cache may always miss, and one dead server
    // should not fail a whole multi-get.
    for (size_t i = 0; changes_ttl_ && i < key_refs_.size(); ++i) {
      const KeyRef& ref = key_refs_[i];
      if (ref.failed || ref.pool >= view_->pools.size() || ref.child == UINT32_MAX) continue;
      const backend::PoolView& pool = view_->pools[ref.pool];
      uint32_t zone = ref.attempt == kPreviousOwnerAttempt ? pool.local_zone
                                                           : zoneForAttempt(pool, ref.attempt);
      copyTtl(pool, keyAt(i), keyAt(i), zone);
    }
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

}  // namespace memzone::server
