// ClientRequest, plan kWrite: a write copied to the key's server in every zone of its pool.
//
// The client's reply follows the pool's wait policy (local: the local zone's answer; all:
// once every zone answered; quorum: once a majority succeeded), and the request lives on
// until every copy has answered. Then each copy is reconciled: a copy that failed, or whose
// answer differs from the local zone's (an `add` stored here but not there, an `incr` that
// came out different), leaves an invalidation for that server, so the zone cannot serve a
// value older than what the client was told. When the controller coordinates, a successful
// reply waits until every proxy knows those servers are dirty (dirty_confirmation.h).
#include <cstdio>

#include "proxy/event/event_base.h"
#include "proxy/protocol/request_encoder.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;
using topology::WaitPolicy;

namespace {

bool succeeded(const ClientRequest::Child& c) {
  return c.done && !c.failed && !protocol::isErrorCode(c.code);
}

// Whether `copy` ended in a different state than `local` (both succeeded).
bool diverged(Command command, const ClientRequest::Child& local,
              const ClientRequest::Child& copy) {
  switch (command) {
    case Command::kDelete:
    case Command::kMetaDelete:
    case Command::kTouch:
      return false;  // gone either way; a TTL difference is not a stale value
    case Command::kIncr:
    case Command::kDecr:
    case Command::kMetaArithmetic:
      return local.code != copy.code || local.reply.view() != copy.reply.view();
    default:
      return local.code != copy.code;
  }
}

}  // namespace

void ClientRequest::startWrite(const protocol::Request& request, const backend::PoolView& pool) {
  pool_view_ = &pool;
  setFlags(request.noreply, request.quiet);
  std::string_view key = request.key();
  addKey(key, 0);
  // A cas goes to the local zone only; once it succeeded the others get the value as a
  // plain set (meta: the same command without its C token), kept in copy_ until then.
  if (request.command == Command::kCas) {
    defer_copies_ = true;
    protocol::encodeSet(key, request.tokens[2], request.tokens[3], request.data, copy_);
  } else if (size_t cas_token = protocol::metaCasToken(request); cas_token != 0) {
    defer_copies_ = true;
    protocol::encodeForwardWithout(request, cas_token, copy_);
  }
  backend::BackendStats& backend_stats = registry_->stats();
  sending_ = true;
  uint32_t zones = defer_copies_ ? 1 : zoneCount(pool);
  for (uint32_t a = 0; a < zones; ++a) {
    backend::BackendServer* server = serverFor(pool, key, a);
    uint32_t child = addChild(server, a);
    if (a > 0) {
      uint32_t slot = pool.zones[zoneForAttempt(pool, a)].zone->stats_slot;
      backend_stats.zones[slot].copies_sent.add();
    }
    send(child, server, request);
  }
  sending_ = false;
  sealed();
}

void ClientRequest::writeChildDone(uint32_t) {
  if (defer_copies_ && children_[0].done) {
    defer_copies_ = false;
    const Child& local = children_[0];
    if (succeeded(local) && (local.code == ReplyCode::kStored || local.code == ReplyCode::kOk)) {
      sendDeferredCopies();
    } else if (local.failed) {
      // The cas may or may not have landed locally: the other zones cannot be trusted to
      // hold the value the local zone has.
      std::string_view key = keyAt(0);
      for (uint32_t a = 1; a < zoneCount(*pool_view_); ++a) {
        serverFor(*pool_view_, key, a)->invalidate(key);
      }
    }
  }
  answerWriteIfDecided();
  if (outstanding_ == 0 && !defer_copies_) {
    reconcileWrite();  // queues the invalidations: the proxy reports them at once
    if (confirming_) {
      // The reply is decided but held: outstanding_ keeps the request alive meanwhile.
      confirm_until_us_ = event::nowMicros() + backend::kDirtyConfirmationWaitUs;
      stats_->writes_confirmation_waits.add();
      ++outstanding_;
      registry_->confirmations().wait(this);
    }
  }
}

bool ClientRequest::invalidatedServersKnownDirty() const {
  const Child& local = children_[0];
  bool local_ok = succeeded(local);
  for (size_t i = 0; i < child_count_; ++i) {
    const Child& c = children_[i];
    bool invalidated =
        i == 0 ? !local_ok : !succeeded(c) || (local_ok && diverged(command_, local, c));
    if (invalidated && c.server != nullptr && !c.server->knownDirtyToAll()) return false;
  }
  return true;
}

bool ClientRequest::confirmationCheck(int64_t now_us) {
  bool confirmed = invalidatedServersKnownDirty();
  if (!confirmed && now_us < confirm_until_us_) return false;
  if (!confirmed) stats_->writes_confirmation_timeouts.add();
  confirming_ = false;
  --outstanding_;
  markReady();
  maybeRecycle();
  return true;
}

void ClientRequest::sendDeferredCopies() {
  std::string_view key = keyAt(0);
  protocol::ReplyShape shape = protocol::replyShapeFor(command_);
  backend::BackendStats& backend_stats = registry_->stats();
  sending_ = true;
  for (uint32_t a = 1; a < zoneCount(*pool_view_); ++a) {
    backend::BackendServer* server = serverFor(*pool_view_, key, a);
    uint32_t child = addChild(server, a);
    uint32_t slot = pool_view_->zones[zoneForAttempt(*pool_view_, a)].zone->stats_slot;
    backend_stats.zones[slot].copies_sent.add();
    send(child, server, copy_.view(), shape);
  }
  sending_ = false;
}

void ClientRequest::answerWriteIfDecided() {
  if (answered_) return;
  uint32_t zones = zoneCount(*pool_view_);
  uint32_t majority = zones / 2 + 1;
  uint32_t done = 0, ok = 0;
  for (size_t i = 0; i < child_count_; ++i) {
    done += children_[i].done;
    ok += succeeded(children_[i]);
  }
  bool all_done = outstanding_ == 0 && !defer_copies_;
  bool decided = all_done;
  switch (pool_view_->pool->replication.wait) {
    case WaitPolicy::kLocal:
      decided |= children_[0].done;
      break;
    case WaitPolicy::kAll:
      break;
    case WaitPolicy::kQuorum:
      decided |= ok >= majority || (done - ok) > zones - majority;
      break;
  }
  if (!decided) return;
  answered_ = true;
  if (override_) {
    markReady();
    return;
  }

  if (pool_view_->pool->replication.wait == WaitPolicy::kQuorum && ok < majority) {
    stats_->server_errors.add();
    if (!noreply_) {
      char line[96];
      int n = snprintf(line, sizeof(line), "SERVER_ERROR quorum not reached (%u of %u zones)\r\n",
                       ok, zones);
      reply_.append(std::string_view(line, static_cast<size_t>(n)));
    }
    markReady();
    return;
  }

  // The local zone's answer unless it failed; then any zone's success; then the failure.
  const Child* answer = &children_[0];
  if (!succeeded(*answer)) {
    for (size_t i = 1; i < child_count_; ++i) {
      if (succeeded(children_[i])) {
        answer = &children_[i];
        break;
      }
    }
  }
  if (!answer->done) {
    // Quorum out of reach before the local zone answered: report a failure that happened.
    for (size_t i = 1; i < child_count_; ++i) {
      if (children_[i].done && !succeeded(children_[i])) answer = &children_[i];
    }
  }
  if (answer->failed) {
    stats_->server_errors.add();
    reply_.append(backend::failureReply(answer->failure));
  } else {
    // Empty when a quiet request was answered with silence.
    reply_child_ = static_cast<uint32_t>(answer - children_.data());
  }
  if (noreply_) {
    reply_.clear();
    reply_child_ = kNoChild;
  } else if (!answer->failed && outstanding_ == 0 && !defer_copies_ &&
             !invalidatedServersKnownDirty()) {
    confirming_ = true;  // writeChildDone() starts the wait once the invalidations are queued
    return;
  }
  markReady();
}

void ClientRequest::reconcileWrite() {
  std::string_view key = keyAt(0);
  const Child& local = children_[0];
  bool local_ok = succeeded(local);
  if (!local_ok) local.server->invalidate(key);
  for (size_t i = 1; i < child_count_; ++i) {
    const Child& copy = children_[i];
    if (!succeeded(copy) || (local_ok && diverged(command_, local, copy))) {
      copy.server->invalidate(key);
    }
  }
}

}  // namespace memzone::server
