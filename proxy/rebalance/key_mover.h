// Moves keys when a zone's ring changes (issue 14), instead of waiting for reads to find
// them: mcrouter's MigrateRoute only reads the old owner while a window is open, so every key
// not read in time is a miss, and the old owner keeps a copy that a later ring change (a
// scale-in after a scale-out) brings back into use: a stale read.
//
// After a change, for every server of the zone before or after it (the proxy's background
// thread, one per proxy, over its own connections; workers are not involved):
//  1. Purge: a copy the server holds of a key it owns now but did not own under an earlier
//     ring of the change was written before it owned the key: a leftover of an older era,
//     possibly older than the last write. It is deleted (`md <key> C<cas>`: only if nobody
//     wrote it since). "Before" is the server's CAS counter when the change started (the
//     lease below), read from the item's cas in the dump.
//  2. Move: a key the server no longer owns is copied to its owner with add semantics
//     (`ms ... ME`: never over a value written since) and deleted at the server with its cas
//     (`md C<cas>`). If the item changed or vanished meanwhile (a client wrote or deleted it
//     through a proxy still on the old ring), both copies are deleted: a miss, never a stale
//     value. A server some proxy owes deletes to (dirty, held) is not read from: its values
//     may be the old ones.
// Keys come from `lru_crawler metadump all` (metadump.h). Purges run on every server before
// any move, so a move never meets a leftover at its target.
//
// Many proxies see the same change: the first to store the server's lease key
// ("memzone:migration:<change>", on that server, with add semantics) crawls it, refreshes the
// lease while it works and marks it done; the others check again every few seconds until it
// is done or the migration window ends (a proxy that died mid-crawl lets its lease expire).
// Proxies of the changed zone try first; the others wait a few seconds. Purges start at once
// (until then a leftover may be served: milliseconds); moves wait until every proxy is on the
// new ring: a late proxy would write moved keys to their old owners behind the move, and the
// new owner would serve the older copy. With a controller that says so (ring_agreement.h),
// until it says every proxy applied the change (at least a second after it, for writes in
// flight while proxies switch), at most kAgreementWaitUs (logged, counted); without one (a
// topology file, an older controller), a second.
//
// The migration window still runs alongside (window_reads.h): reads of keys not moved yet
// find them at their previous owner, and writes delete them there.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "proxy/backend/server_board.h"
#include "proxy/rebalance/memcached_link.h"
#include "proxy/rebalance/move_counters.h"
#include "proxy/rebalance/ring_agreement.h"
#include "proxy/tls/tls_contexts.h"
#include "proxy/topology/topology.h"

namespace memzone::rebalance {

class KeyMover {
 public:
  // `local_zone`: --zone, or "" (then the topology's answer for this proxy). `agreement`:
  // what the controller says every proxy applied; null without a controller.
  KeyMover(std::shared_ptr<backend::ServerBoard> board, std::shared_ptr<tls::TlsContexts> tls,
           std::string local_zone, std::shared_ptr<const RingAgreement> agreement = nullptr);
  ~KeyMover();
  KeyMover(const KeyMover&) = delete;
  KeyMover& operator=(const KeyMover&) = delete;

  // Every topology the proxy applies, in order, before the workers get it (it reads the CAS
  // counter of servers new to a zone: up to one round trip each, bounded); any thread. The
  // first one only sets "before".
  void onTopology(std::shared_ptr<const topology::Topology> topology);
  std::shared_ptr<const MoveCounters> counters() const { return counters_; }
  // Stops the thread (the crawl in progress ends at its next batch).
  void stop();

 private:
  struct Ring {
    std::shared_ptr<const topology::Topology> topology;  // keeps `zone` alive
    const topology::Zone* zone = nullptr;
  };
  struct Job {
    std::string pool;
    Ring now;
    std::vector<Ring> before;  // the rings since the last completed crawl, oldest first
    std::vector<topology::Backend> pending;  // servers still to crawl
    // Servers of the zone that may hold leftovers (new to the zone's rings, or the zone has
    // a given-up crawl behind it), with their CAS counter when the change was applied: their
    // items below it are purged if they are not owned throughout. Taken before the workers
    // switch rings, so no write through the new ring is older than it.
    std::map<std::string, uint64_t> purge_marks;
    // A route job (route_changes.h): the routes since the pool's last completed route crawl
    // of the zone, oldest first; the job purges keys not routed to the pool throughout.
    bool routes = false;
    std::vector<std::shared_ptr<const topology::Topology>> route_history;
    bool inherited = false;      // history unknown: every server purged
    bool missed_writes = false;  // the zone was out of the topology: copies never reached it
    topology::BackendTlsSpec tls;
    std::string lease_key;
    int64_t ready_us = 0;       // not before
    int64_t moves_from_us = 0;  // moves not before (purges start at once)
    int64_t until_us = 0;       // the migration window's end: given up then
    // The change's topology version: moves wait until every proxy applied it (or a later
    // one), or until agreement_until_us.
    std::string version;
    int64_t agreement_until_us = 0;
    // Set when a newer change of the zone replaces the job (or its pool or zone goes): the
    // crawl in progress stops at its next line.
    std::shared_ptr<std::atomic<bool>> cancelled = std::make_shared<std::atomic<bool>>(false);
  };
  struct Outcome {
    std::vector<std::string> done;  // addresses
  };

  void run();
  Outcome runJob(const Job& job);
  // Starts or extends a route job for each zone of each pool whose keys a change of routes
  // moves in or out (into `jobs`, the next jobs_). With mu_ held.
  void planRouteJobs(const std::shared_ptr<const topology::Topology>& topology,
                     std::map<std::string, Job>& jobs, int64_t probe_until);
  LinkTls linkTls(const topology::BackendTlsSpec& spec) const;
  // A zone back after an absence: its servers are not read (ServerState::unpurged_until_us)
  // until purgeDone() says the crawl of each is done, or `until_us` passes. `job` ("pool/zone"):
  // a server shared by pools is purged by each pool's job of its own keys, and stays held
  // until every job holding it is done with it. With mu_ held.
  void holdUntilPurged(const std::string& pool, const std::string& job, const topology::Zone& zone,
                       int64_t until_us);
  // Ends the holds of servers no longer in their returning zone of `jobs`. With mu_ held.
  void releaseHoldsOutside(const std::map<std::string, Job>& jobs);
  // Takes mu_.
  void purgeDone(const std::string& job, const std::string& address);
  // Sets the server's hold to the latest of its jobs' (0: none left). With mu_ held.
  struct Hold;
  static void publishHold(Hold& hold);
  // Whether `job`'s moves may start now; `bounded` set when only the bound allows it.
  bool movesMayStart(const Job& job, bool& bounded) const;
  static std::string jobName(const Job& job);
  bool superseded(const Job& job) const { return stopping_.load() || job.cancelled->load(); }

  std::shared_ptr<backend::ServerBoard> board_;
  std::shared_ptr<tls::TlsContexts> tls_;
  std::string local_zone_;
  std::shared_ptr<const RingAgreement> agreement_;
  std::shared_ptr<MoveCounters> counters_ = std::make_shared<MoveCounters>();

  std::mutex mu_;
  std::condition_variable wake_;
  std::shared_ptr<const topology::Topology> last_;
  std::map<std::string, Job> jobs_;  // "pool/zone"
  // Rings of jobs given up at their window's end ("pool/zone"): servers of that zone may hold
  // leftovers nobody purged, so the zone's next job treats them as part of its change.
  std::map<std::string, std::vector<Ring>> unfinished_;
  // The placements of each zone's last rings as seen here ("pool/zone"), hashed into lease keys.
  std::map<std::string, std::vector<std::string>> ring_log_;
  std::set<std::string> first_change_;  // zones ("pool/zone") whose first change was seen
  // Route jobs given up at their window's end ("pool/zone routes"): their routes, so the
  // zone's next route job still purges what they left.
  std::map<std::string, std::vector<std::shared_ptr<const topology::Topology>>> unfinished_routes_;
  std::vector<std::string> route_log_;     // the last route sets seen, hashed into lease keys
  std::map<std::string, Ring> last_seen_;  // each zone's latest ring, kept while it is absent
  // Servers held from reads until purged (holdUntilPurged), by address: the jobs ("pool/zone")
  // whose purge of it is still to come, each with its hold's end.
  struct Hold {
    std::shared_ptr<backend::ServerState> state;
    std::map<std::string, int64_t> until_by_job;
  };
  std::map<std::string, Hold> unpurged_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace memzone::rebalance
