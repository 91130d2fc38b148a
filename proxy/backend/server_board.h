// The proxy's one view of each memcached server, shared by every worker (issue 17). Workers
// keep their own connections, queues and health timers; what decides whether a server may
// serve reads lives here, so no worker reads a server another worker of the same proxy still
// owes deletes to, and the recovery hold is counted from the moment the proxy saw the server
// answer again, not from some worker's last failure.
//
// Thread model: the board (address -> state) is touched on the control path only (topology
// swaps) under a mutex. A ServerState is read on the request path with relaxed atomic loads of
// one read-mostly cache line, and written only when a server fails, returns, or a worker's
// invalidation queue empties or fills: no lock, no read-modify-write per request.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/backend/invalidation_log.h"

namespace memzone::backend {

// What every server's state shares with the controller client: a way to report at once that
// what the proxy owes changed (rather than at the next health interval: the window in which
// other proxies may still read the server; called on transitions only, never per request),
// and whether the controller's dirty set is live (a stream is up and sends it).
class ControllerLink {
 public:
  void setListener(std::function<void()> listener);
  void notify();
  std::atomic<bool> coordinated{false};

 private:
  std::mutex mu_;
  std::function<void()> listener_;
};

struct alignas(64) ServerState {
  // Workers that have deletes queued for this server (failed copies).
  std::atomic<uint32_t> owing{0};
  // Non-zero from a worker's connection failure until some worker sees the server answer:
  // until then it may be missing writes other proxies sent it, so nobody reads it.
  std::atomic<int64_t> unreachable_since_us{0};
  // After the return, reads wait until this time: the grace other proxies get to notice the
  // return and replay what they owe it (readHoldMs; 0 with the controller's dirty-server list).
  std::atomic<int64_t> readable_at_us{0};
  // Bumped at each return, so workers that marked it down probe at once instead of waiting
  // for their backoff (and replay their queues).
  std::atomic<uint32_t> returns{0};
  // A worker's invalidation queue overflowed and flushing is not allowed: nobody reads it
  // before this time (the latest such deadline of any worker).
  std::atomic<int64_t> distrusted_until_us{0};
  // Its zone came back into the topology after an absence (key_mover.h): it missed writes
  // meanwhile, so nobody reads it until the key mover's purge of it is done (this proxy's or
  // another's), or until this time (the migration window's end: then it serves, and the
  // mover logs and counts the crawl given up). 0: not waiting for a purge.
  // (Next to the other fields sharedTrust() reads: one cache line per read.)
  std::atomic<int64_t> unpurged_until_us{0};
  // Some proxy (this one or another) owes this server deletes, says the controller: nobody
  // reads it until every proxy has reported it clean.
  std::atomic<bool> dirty{false};
  // Debts and their confirmation (dirty_confirmation.h). A worker that starts owing this
  // server bumps `owe_epoch` (before `owing`); `confirmed_epoch` is the highest epoch the
  // controller has confirmed every proxy knows the server dirty for, 0 when none (the report
  // thread zeroes it while it builds a report, and it stays 0 after a report saying clean). A
  // write whose copy failed is acknowledged once confirmed_epoch >= owe_epoch.
  std::atomic<uint64_t> owe_epoch{0};
  std::atomic<uint64_t> confirmed_epoch{0};
  // The board's; workers notify it when `owing` or `distrusted_until_us` changes.
  std::shared_ptr<ControllerLink> controller;
};

// Whether a server may be read, from what the proxy shares about it (a worker adds whether
// its own connection is up). `now` (a clock) is called only when a deadline must be compared.
enum class SharedTrust : uint8_t { kReadable, kHeld, kUntrusted };
template <typename Now>
SharedTrust sharedTrust(const ServerState& state, Now now) {
  // Relaxed loads of one read-mostly line: a worker that just queued or replayed is seen by
  // the others within the memory system's propagation time, long before any reply.
  if (state.owing.load(std::memory_order_relaxed) != 0 ||
      state.dirty.load(std::memory_order_relaxed)) {
    return SharedTrust::kUntrusted;
  }
  if (state.unreachable_since_us.load(std::memory_order_relaxed) != 0) return SharedTrust::kHeld;
  int64_t readable_at = state.readable_at_us.load(std::memory_order_relaxed);
  int64_t distrusted_until = state.distrusted_until_us.load(std::memory_order_relaxed);
  int64_t unpurged_until = state.unpurged_until_us.load(std::memory_order_relaxed);
  if (readable_at != 0 || distrusted_until != 0 || unpurged_until != 0) {
    int64_t now_us = now();
    if (now_us < distrusted_until) return SharedTrust::kUntrusted;
    if (now_us < readable_at || now_us < unpurged_until) return SharedTrust::kHeld;
  }
  return SharedTrust::kReadable;
}

class ServerBoard {
 public:
  // The state for `address`, created on first use; any thread (control path).
  std::shared_ptr<ServerState> stateFor(const std::string& address);
  // Servers some worker owes deletes to, or holds distrusted after an overflow, with their
  // owe_epoch: what this proxy reports to the controller as owed (no proxy may read them until
  // every proxy has reported them clean), sorted. Withdraws the confirmation of every server
  // it does not list (a report saying clean may reach the controller any moment). The report
  // thread only.
  struct Owed {
    std::string address;
    uint64_t epoch;
    bool operator==(const Owed&) const = default;
  };
  std::vector<Owed> owedServers(int64_t now_us);
  // Called (on a worker thread) whenever what owedServers() returns may have changed.
  void setOwedListener(std::function<void()> listener) { link_->setListener(std::move(listener)); }

  // Durable invalidations (invalidation_log.h): what the files said each server is owed,
  // handed once to the first worker that creates the server; and how many workers have yet
  // to write their first log, after which the old files go.
  void restore(std::map<std::string, OwedDeletes> owed, std::string dir, int workers);
  OwedDeletes takeRestored(const std::string& address);
  void workerLogWritten();

  // The controller's dirty set (every proxy's owed servers, united): each address with the
  // generation since which it is dirty, and the generation every proxy on the controller has
  // applied. Servers not in it are clean; one that stops being dirty still waits for its read
  // hold, if any. A server the board learns of later starts dirty if it is in the latest set.
  void setDirty(const std::vector<std::pair<std::string, uint64_t>>& since, uint64_t confirmed);
  // Servers this proxy reported owed (at those epochs) in a report the controller had seen
  // when it built the latest set, and in every report since: confirmed where that set has
  // them dirty since a generation every proxy applied.
  void confirm(const std::vector<Owed>& reported);
  // A proxy on the controller starts with every server dirty until the first set arrives
  // (other proxies may owe servers this one knows nothing of), for at most `until_us`: then
  // expireAwaiting() falls back to the time hold alone.
  void awaitDirtySet(int64_t until_us);
  void expireAwaiting(int64_t now_us);
  // The controller is gone: nobody tells us when other proxies are done, so every server
  // that was dirty is held for `hold_ms` (the time bound every proxy falls back to).
  void controllerLost(uint32_t hold_ms, int64_t now_us);

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::weak_ptr<ServerState>> states_;
  // The controller's latest set: address -> the generation since which it is dirty.
  std::map<std::string, uint64_t> dirty_since_;
  uint64_t confirmed_ = 0;
  int64_t awaiting_until_us_ = 0;  // non-zero until the first dirty set (awaitDirtySet)
  std::shared_ptr<ControllerLink> link_ = std::make_shared<ControllerLink>();
  std::map<std::string, OwedDeletes> restored_;
  std::string restored_dir_;
  int logs_pending_ = 0;
};

}  // namespace memzone::backend
