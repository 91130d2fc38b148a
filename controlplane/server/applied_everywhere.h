// Which topology version every proxy connected here has applied (README, churn: proxies on
// different rings). The key mover of a proxy moves a key off its old owner only once no proxy
// can still write it there through the old ring; this is what tells it so.
//
// Every topology stream attaches with the version its proxy said it serves (its hello, e.g.
// from its state file) and reports each ACK. A NACK changes nothing: that proxy keeps its old
// version, so the proxies differ and no version is applied everywhere. A proxy serving
// nothing yet (hello with no version) routes no write and is not counted until it ACKs.
//
// Other controller replicas serve proxies this one does not see. Each tells the others what
// its own proxies applied (local(), on the replicas' ShareDirty streams); a version is applied
// everywhere only when every live replica the Leases list has said its proxies applied it (or
// that it has none). A listed replica that has not said (no stream from it, an older one), or
// the time before the Leases were first listed: nothing is said (""), and proxies wait their
// bound.
//
// A controller that just started has not heard from every proxy yet: those of the one it
// replaced (a restart, an upgrade) reconnect over their backoff (up to 10 s, +20%), and
// meanwhile the ones back would make a version look applied everywhere while a late proxy
// still writes through the old ring. So for `grace` after start, and after the first stream
// attaches (a controller may be reachable only a while after it started: readiness, DNS),
// nothing is said (found by review, test_ring_skew), and the topology streams hold new
// versions back from proxies that serve one (graceUntil); listeners are called when it ends.
//
// Listeners (the proxies' streams, the links to other replicas) are called on this object's own
// thread whenever version() or local() changed, never on a reporter's: a stream reports under its
// own lock, and its listener takes that lock. Any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "controlplane/server/listener_set.h"

namespace memzone::controlplane {

class AppliedEverywhere {
 public:
  explicit AppliedEverywhere(std::chrono::milliseconds grace = std::chrono::milliseconds(0));
  ~AppliedEverywhere();  // stops the notifier thread
  AppliedEverywhere(const AppliedEverywhere&) = delete;
  AppliedEverywhere& operator=(const AppliedEverywhere&) = delete;

  // A stream started; `version` is what its proxy serves ("" = nothing yet).
  void attach(uint64_t stream, const std::string& version);
  // Its proxy ACKed `version`.
  void applied(uint64_t stream, const std::string& version);
  void detach(uint64_t stream);
  // The other live replicas, by identity (from their Leases); until first called with
  // peersUnknown() pending, nothing is said.
  void setPeers(std::set<std::string> peers);
  void peersUnknown();
  // What replica `replica` said its own proxies applied: `counted` false when it has none.
  // dropPeer() when its stream ends.
  void peerSaid(const std::string& replica, bool counted, const std::string& version);
  void dropPeer(const std::string& replica);

  // What this replica's own proxies applied: counted false when none is counted; else the
  // version, "" while they differ.
  struct Local {
    bool counted = false;
    std::string version;
    bool operator==(const Local&) const = default;
  };
  Local local() const;
  // The version every counted proxy of every replica applied; "" while they differ, none is
  // counted, or a live replica has not said.
  std::string version() const;

  // While in its start-up grace (see above), when it ends (as of now; it can still grow with
  // the first stream's attach); nullopt once over.
  std::optional<std::chrono::steady_clock::time_point> graceUntil() const;

  uint64_t subscribe(ListenerSet::Listener listener);
  void unsubscribe(uint64_t id);

 private:
  void recomputeLocked();
  void run();

  mutable std::mutex mu_;
  std::map<uint64_t, std::string> applied_;  // stream -> version its proxy serves
  bool peers_unknown_ = false;
  std::set<std::string> peers_;        // live replicas the Leases list
  std::map<std::string, Local> said_;  // what replicas streaming to us said
  Local local_;
  std::string version_;
  std::chrono::milliseconds grace_;
  bool attached_once_ = false;
  std::chrono::steady_clock::time_point quiet_until_;  // start-up or first stream, + grace
  bool quiet_ = true;     // before quiet_until_ (the notifier thread clears it)
  bool changed_ = false;  // listeners have not heard of the latest version_
  bool stopping_ = false;
  std::condition_variable wake_;
  ListenerSet listeners_;
  std::thread thread_;
};

}  // namespace memzone::controlplane
