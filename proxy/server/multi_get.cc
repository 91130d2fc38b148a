// ClientRequest, plan kMultiGet: a multi-key get/gets/gat/gats, grouped by server and
// reassembled in the client's key order.
//
// Each key follows the one-key read's zone order (failover_read.cc), in rounds: each round
// asks each server once for all the keys it still owes; a key whose server failed, or
// missed when readFailover includes miss, moves to its next zone in the next round. A failed
// server's keys read as misses unless no key got any answer at all.
//
// Churn windows (window_reads.h) as for one key: a key that misses on the local zone during
// a migration window is asked of its previous owner in the zone first (in the next round,
// grouped with that round's other keys for the same server); a hit there is moved into the
// new owner, a miss or failure goes on to the other zones.
#include <algorithm>

#include "proxy/protocol/request_encoder.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::ReplyCode;

namespace {

bool answered(const ClientRequest::Child& c) { return !c.failed && !protocol::isErrorCode(c.code); }

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
  // The command and its arguments before the keys ("get", "gat 60"): each server's request
  // is this prefix and the keys it owes.
  copy_.append(request.tokens[0]);
  if (request.first_key == 2) {
    copy_.append(' ');
    copy_.append(request.tokens[1]);
  }
  local_only_ = isLocalOnlyRead(request.command);
  sendMultiGetRound();
  sealed();
}

bool ClientRequest::multiGetReplyMatches(uint32_t child, std::string_view reply) const {
  // The VALUE blocks must be keys this child asked for, in the order it asked: memcached
  // answers in request order and skips misses.
  size_t next_key = children_[child].first_key;
  const size_t end = std::min<size_t>(children_[child].last_key + 1, key_refs_.size());
  protocol::ValueBlock block;
  while (protocol::parseValueBlock(reply, block)) {
    for (;; ++next_key) {
      if (next_key >= end) return false;
      const KeyRef& ref = key_refs_[next_key];
      if (!ref.resolved && ref.child == child && keyAt(next_key) == block.key) break;
    }
    ++next_key;
    reply.remove_prefix(block.size);
  }
  return true;
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
    uint32_t child = UINT32_MAX;
    for (uint32_t c = round_start_; c < child_count_; ++c) {
      if (children_[c].server == server) child = c;
    }
    // memcached hangs up on a line over 2048 bytes that straddles its reads (get/gets
    // excepted), and re-scans long get lines every 22 keys: each backend request stays short.
    if (child != UINT32_MAX && children_[child].line_bytes + 1 + key.size() > kMaxBackendLine) {
      child = UINT32_MAX;
    }
    if (child == UINT32_MAX) {
      child = addChild(server, a);
      children_[child].line_bytes = copy_.size() + 2;
    }
    children_[child].line_bytes += 1 + key.size();
    children_[child].first_key = std::min(children_[child].first_key, static_cast<uint32_t>(i));
    children_[child].last_key = static_cast<uint32_t>(i);
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
    for (size_t i = children_[c].first_key; i <= children_[c].last_key; ++i) {
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
    bool from_previous = ref.attempt == kPreviousOwnerAttempt;
    uint32_t next = from_previous ? 1 : ref.attempt + 1;  // the previous owner came after 0
    bool more = next < maxReadAttempts(pool);
    Child& c = children_[ref.child];
    if (!answered(c)) {
      if (more) {
        stats_->read_failovers[static_cast<int>(FailoverReason::kError)].add();
        ref.attempt = next;
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
      if (ref.window != WindowRead::kNone) countWindowAnswer(pool, ref.window, true);
      if (ref.attempt > 0) repair(pool, key, c.server, ref.window, from_previous);
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

}  // namespace memzone::server
