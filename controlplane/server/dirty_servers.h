// The dirty-server set (DESIGN.md, consistency): which memcached servers some proxy owes
// invalidations to, united over every proxy connected here and the other controller replicas.
//
// A proxy whose copy of a write to server S failed queues a delete for S and reports S as
// owed; until it has replayed the queue, S may hold a value that was overwritten or deleted
// (and acknowledged through another zone). Time alone cannot bound that when the proxy is cut
// off from S while every other proxy still reaches it (a partial partition): they never see S
// fail. So every proxy reports what it owes, this set unites the reports, and every proxy
// stops reading what is in it until every reporter says clean.
//
// A proxy that disconnects while it owes something keeps its servers dirty for `retain`: its
// stream may only have broken (it reconnects and reports again), or it restarts and replays
// from --state-dir. A proxy that never comes back takes its debts with it; past `retain` the
// servers are read again (the window DESIGN.md documents).
//
// Confirmation: every stream that takes the set is attached, and says which generation its
// proxy has applied; the lowest of those is published as `confirmed_generation`, so a proxy
// that just failed a copy knows when every other proxy has stopped reading that server.
//
// Other controller replicas: each streams its local() set here (ReplicaService) with its
// generation, and is answered the latest of its generations that every proxy connected here
// has applied (appliedFor); a replica no stream brings counts through its Lease (slower). The
// replicas this one streams to hold its confirmation back until they answered, so a write
// waiting for confirmation waits for every replica's proxies.
//
// Listeners (the streams) are called on this object's own thread, never on a reporter's: a
// stream reports under its own lock, and its listener takes that lock. They are also called
// when only what appliedFor() says may have changed. Any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "controlplane/server/listener_set.h"
#include "memzone/v1/topology.pb.h"

namespace memzone::controlplane {

class DirtyServers {
 public:
  using Clock = std::chrono::steady_clock;
  using Listener = std::function<void()>;

  explicit DirtyServers(std::chrono::milliseconds retain);
  ~DirtyServers();  // stops the notifier thread

  // A proxy's report, state of the world: what `node_id` (on stream `stream`) owes now. At
  // most kMaxReported addresses are kept per report (a bigger one is cut, and logged), so a
  // buggy or hostile proxy cannot grow the set, the messages or the replica Leases unbounded.
  static constexpr size_t kMaxReported = 1024;
  void report(const std::string& node_id, uint64_t stream, std::set<std::string> owed);
  // What a reconnecting proxy says the controller before this one held dirty (its hello's
  // dirty_seen): kept dirty until `until`, the start-up grace's end (this controller knows
  // nothing of what proxies not back yet owe). At most kMaxReported are kept.
  void inherit(const std::string& node_id, std::set<std::string> dirty, Clock::time_point until);
  // The stream ended. What the proxy still owed stays dirty for `retain`, unless the same
  // proxy reports again meanwhile (on another stream or another replica: then through it).
  void disconnected(const std::string& node_id, uint64_t stream);
  // A stream that takes the set (attach at its start, detach at its end) and the generation
  // its proxy applied.
  void attach(uint64_t stream);
  void detach(uint64_t stream);
  void applied(uint64_t stream, uint64_t generation);
  // What the other controller replicas' proxies owe, by replica identity, as their Leases
  // last said: counted for a replica no stream brings (below).
  void setLeasePeers(std::map<std::string, std::set<std::string>> by_replica);
  void setPeers(std::set<std::string> dirty) { setLeasePeers({{"", std::move(dirty)}}); }

  // Replica `replica` streamed its local() set as of its `generation` (ReplicaService); it
  // replaces that replica's Lease set until dropStreamPeer().
  void streamPeer(const std::string& replica, uint64_t generation, std::set<std::string> dirty);
  void dropStreamPeer(const std::string& replica);
  // The latest generation `replica` streamed that every proxy connected here has applied.
  uint64_t appliedFor(const std::string& replica) const;

  // This replica streams to `replica`: until it answers the current generation, what is
  // confirmed stays below it. unlinkPeer() when the stream ends (then it holds nothing back).
  void linkPeer(const std::string& replica);
  void peerApplied(const std::string& replica, uint64_t generation);
  void unlinkPeer(const std::string& replica);
  uint64_t generation() const;

  // The current set as a message for the streams (version "", only `dirty` set); shared.
  std::shared_ptr<const v1::TopologySnapshot> message() const;
  // What the proxies connected here owe (and the retained), for the other replicas; with the
  // generation it is part of (read together: the set is never older than the generation).
  std::set<std::string> local() const;
  std::set<std::string> local(uint64_t& generation) const;
  size_t size() const;

  uint64_t subscribe(Listener listener);
  void unsubscribe(uint64_t id);

  // Drops retained reports older than `retain` as of `now`; the notifier calls it, and tests.
  void expire(Clock::time_point now);

 private:
  struct Report {
    std::set<std::string> owed;
    uint64_t stream = 0;
    bool connected = true;
    bool inherited = false;  // from a reconnecting proxy's dirty_seen (inherit())
    Clock::time_point retained_until;
  };
  void recomputeLocked();  // message_ from reports_ and the peers, notifies when it changed
  // local_confirmed_ from applied_, confirmed_ from it and linked_; notifies on a change.
  void confirmLocked();
  void publishLocked(std::set<std::string> const* addresses);
  void run();

  const std::chrono::milliseconds retain_;
  mutable std::mutex mu_;
  std::map<std::string, Report> reports_;                     // by node_id
  std::map<std::string, std::set<std::string>> lease_peers_;  // by replica identity
  struct StreamPeer {
    std::set<std::string> dirty;
    uint64_t generation = 0;     // its latest
    uint64_t content_since = 0;  // our generation when its set last changed (0: empty, always)
  };
  std::map<std::string, StreamPeer> stream_peers_;
  std::map<std::string, uint64_t> linked_;  // replica we stream to -> our generation it applied
  uint64_t local_confirmed_ = 0;            // what every proxy connected here applied
  std::map<std::string, uint64_t> since_;   // address in the set -> generation it entered
  std::map<uint64_t, uint64_t> applied_;    // attached stream -> generation its proxy applied
  uint64_t confirmed_ = 0;
  std::shared_ptr<const v1::TopologySnapshot> message_;
  uint64_t generation_ = 0;
  bool changed_ = false;  // listeners have not heard of the latest message_
  bool stopping_ = false;
  std::condition_variable wake_;

  ListenerSet listeners_;
  std::thread thread_;
};

}  // namespace memzone::controlplane
