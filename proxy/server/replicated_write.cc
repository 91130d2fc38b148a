// ClientRequest, plan kWrite: a write copied to the key's server in every zone of its pool.
//
// The client's reply follows the pool's wait policy (local: the reference zone's answer;
// all: once every zone answered; quorum: once a majority succeeded), and the request lives on
// until every copy has answered. The reference zone is the local one unless this proxy may
// not read its server (referenceZone). Then each copy is reconciled by its effect: a copy that
// failed, or whose effect differs from the reference zone's (an `add` stored here but not there,
// an `incr` that came out different, a request one zone rejected and another applied),
// leaves an invalidation for that server, so the zone cannot serve a value older than what
// the client was told. A request every zone rejected (CLIENT_ERROR: memcached changed
// nothing) leaves nothing anywhere (issue 22). When the controller coordinates, a successful
// reply waits until every proxy knows those servers are dirty (dirty_confirmation.h).
#include <climits>
#include <cstdio>

#include "proxy/event/event_base.h"
#include "proxy/protocol/backend_request.h"
#include "proxy/server/client_request.h"
#include "proxy/server/proxy_stats.h"

namespace memzone::server {

using protocol::Command;
using protocol::ReplyCode;
using topology::WaitPolicy;

namespace {

// The copy may or may not have been applied: it failed on the way, or the server failed.
bool outcomeUnknown(const ClientRequest::Child& c) {
  return !c.done || c.failed || c.code == ReplyCode::kServerError;
}

// memcached refused the request as invalid: nothing changed there.
bool rejected(const ClientRequest::Child& c) {
  return c.done && !c.failed && (c.code == ReplyCode::kClientError || c.code == ReplyCode::kError);
}

// An answer the client may be given: the server did its job, or refused an invalid request.
bool answerable(const ClientRequest::Child& c) { return !outcomeUnknown(c); }

bool succeeded(const ClientRequest::Child& c) { return answerable(c) && !rejected(c); }

// Whether `copy` ended in a different state than `local` (both answered). Compared by effect,
// never by reply bytes, which differ per server (cas values, TTLs, sizes).
bool diverged(Command command, const ClientRequest::Child& local,
              const ClientRequest::Child& copy) {
  if (rejected(local) || rejected(copy)) return rejected(local) != rejected(copy);
  switch (command) {
    case Command::kDelete:
    case Command::kMetaDelete:
    case Command::kTouch:
      return false;  // gone either way; a TTL difference is not a stale value
    case Command::kIncr:
    case Command::kDecr:
    case Command::kMetaArithmetic:
      return local.code != copy.code || local.value_hash != copy.value_hash;
    default:
      return local.code != copy.code;
  }
}

}  // namespace

void ClientRequest::startWrite(const protocol::Request& request, const backend::PoolView& pool) {
  pool_view_ = &pool;
  keepForm(request);
  std::string_view key = keyAt(0);
  // A cas goes to the local zone only; once it succeeded the others get the value as a
  // plain set (meta: the same command without its C token), kept in copy_ until then.
  if (request.command == Command::kCas ||
      (protocol::isMeta(request.command) && protocol::hasMetaFlag(request, 'C'))) {
    defer_copies_ = true;
    encodeKept(request, /*without_cas=*/true);
  }
  backend::BackendStats& backend_stats = registry_->stats();
  uint32_t zones = defer_copies_ ? 1 : zoneCount(pool);
  reference_ = referenceZone(pool, key, zones);
  sending_ = true;
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
    if (succeeded(local) && (local.code == ReplyCode::kOk || local.code == ReplyCode::kHit)) {
      sendDeferredCopies();
    } else if (outcomeUnknown(local)) {
      // The cas may or may not have landed locally: the other zones cannot be trusted to
      // hold the value the local zone has.
      std::string_view key = keyAt(0);
      for (uint32_t a = 1; a < zoneCount(*pool_view_); ++a) {
        serverFor(*pool_view_, key, a)->invalidate(wireKey());
      }
    }
  }
  answerWriteIfDecided();
  if (outstanding_ == 0 && !defer_copies_) {
    reconcileWrite();  // queues the invalidations: the proxy reports them at once
    if (confirming_) {
      // Checked only now that this request's invalidations are queued: a confirmation seen
      // before could belong to a debt that was being paid off meanwhile.
      if (invalidatedServersKnownDirty()) {
        confirming_ = false;
        markReady();
      } else {
        // The reply is decided but held: outstanding_ keeps the request alive meanwhile.
        confirm_until_us_ = event::nowMicros() + backend::kDirtyConfirmationWaitUs;
        stats_->writes_confirmation_waits.add();
        ++outstanding_;
        registry_->confirmations().wait(this);
      }
    }
  }
}

uint32_t ClientRequest::referenceZone(const backend::PoolView& pool, std::string_view key,
                                      uint32_t zones) {
  // A server this proxy may not read may have missed writes (some proxy owes it deletes, or
  // it is held after a return): an incr there would answer from a value older than one
  // already acknowledged (found by the chaos test, issue 23), and comparing the copies with it
  // would invalidate the zones that are right. Such a server still gets the write. When no
  // zone is readable (right after faults every zone may be held), the least doubtful one
  // answers: held (it may have missed writes) before untrusted (it did miss writes: some
  // proxy owes it deletes) before down.
  uint32_t best = 0;
  backend::ReadTrust best_trust = backend::ReadTrust::kDown;
  for (uint32_t a = 0; a < zones; ++a) {
    backend::ReadTrust trust = serverFor(pool, key, a)->readTrust();
    if (a == 0 || static_cast<int>(trust) < static_cast<int>(best_trust)) {
      best = a;
      best_trust = trust;
    }
    if (trust == backend::ReadTrust::kReadable) break;
  }
  return best;
}

bool ClientRequest::invalidates(size_t child) const {
  const Child& reference = children_[reference_];
  if (child == reference_) return outcomeUnknown(reference);
  const Child& c = children_[child];
  return outcomeUnknown(c) || (answerable(reference) && diverged(command_, reference, c));
}

bool ClientRequest::invalidatedServersKnownDirty() const {
  for (size_t i = 0; i < child_count_; ++i) {
    const Child& c = children_[i];
    if (invalidates(i) && c.server != nullptr && !c.server->knownDirtyToAll()) return false;
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
  backend::BackendStats& backend_stats = registry_->stats();
  sending_ = true;
  for (uint32_t a = 1; a < zoneCount(*pool_view_); ++a) {
    backend::BackendServer* server = serverFor(*pool_view_, key, a);
    uint32_t child = addChild(server, a);
    uint32_t slot = pool_view_->zones[zoneForAttempt(*pool_view_, a)].zone->stats_slot;
    backend_stats.zones[slot].copies_sent.add();
    sendKept(child, server);
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
    ok += answerable(children_[i]);
  }
  bool all_done = outstanding_ == 0 && !defer_copies_;
  bool decided = all_done;
  switch (pool_view_->pool->replication.wait) {
    case WaitPolicy::kLocal:
      decided |= children_[reference_].done;
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

  // The reference zone's answer unless it failed; then the answer of the zone this proxy
  // trusts most (not the next in pool order: it may have missed writes), which becomes the
  // reference the copies are compared with; then the failure.
  const Child* answer = &children_[reference_];
  if (!answerable(*answer)) {
    int best_trust = INT_MAX;
    for (size_t i = 0; i < child_count_; ++i) {
      if (!answerable(children_[i]) || children_[i].server == nullptr) continue;
      int trust = static_cast<int>(children_[i].server->readTrust());
      if (trust < best_trust) {
        best_trust = trust;
        answer = &children_[i];
        reference_ = static_cast<uint32_t>(i);
      }
    }
  }
  if (!answer->done) {
    // Quorum out of reach before the reference zone answered: report a failure that happened.
    for (size_t i = 0; i < child_count_; ++i) {
      if (children_[i].done && !answerable(children_[i])) answer = &children_[i];
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
  } else if (!answer->failed && outstanding_ == 0 && !defer_copies_) {
    for (size_t c = 0; c < child_count_; ++c) {
      if (invalidates(c)) {
        confirming_ = true;  // writeChildDone() decides once the invalidations are queued
        return;
      }
    }
  }
  markReady();
}

void ClientRequest::reconcileWrite() {
  for (size_t i = 0; i < child_count_; ++i) {
    if (invalidates(i)) children_[i].server->invalidate(wireKey());
  }
}

}  // namespace memzone::server
