#include "proxy/rebalance/key_mover.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "memzone/ops/log.h"
#include "proxy/backend/backend_registry.h"
#include "proxy/event/event_base.h"
#include "proxy/rebalance/route_changes.h"
#include "proxy/rebalance/zone_crawl.h"
#include "proxy/routing/md5.h"

namespace memzone::rebalance {
namespace {

// Proxies of the changed zone start at once; the others give them a head start for the
// lease. Purges start at once (a leftover is served until purged); moves wait a moment for
// every proxy to switch rings, so few writes still reach the old owner after a move.
constexpr int64_t kRemoteDelayUs = 5'000'000;
constexpr int64_t kRingSkewUs = 1'000'000;
// The longest moves wait for the controller's word that every proxy applied the change (a
// proxy stopped, or slow to apply): then they start anyway, logged and counted.
constexpr int64_t kAgreementWaitUs = 15'000'000;
constexpr int64_t kRetryUs = 3'000'000;
constexpr size_t kMaxRings = 8;  // rings kept per job ("before"); beyond, treated as unknown
// How long "done" stays: long enough for the other proxies, which ask every kRetryUs (or
// first after kRemoteDelayUs), to see it. A repeated change has a lease key of its own.
constexpr uint32_t kDoneTtlS = 10;
// Reading servers' CAS counters delays a topology's application by at most this much in all
// (each connect 200 ms at most); servers left unread fall back to their lease's cas.
constexpr int64_t kProbeBudgetUs = 1'000'000;

const topology::Zone* findZone(const topology::Topology* t, const std::string& pool,
                               const std::string& zone) {
  if (t == nullptr) return nullptr;
  for (const topology::Pool& p : t->pools) {
    if (p.name != pool) continue;
    for (const topology::Zone& z : p.zones) {
      if (z.name == zone) return &z;
    }
  }
  return nullptr;
}

// The lease key of a change: every proxy derives the same one from the same rings.
std::string leaseKey(const std::string& pool, const std::string& zone,
                     const std::vector<std::string>& placements) {
  std::string all = pool + "\n" + zone;
  for (const std::string& p : placements) all += "\n" + p;
  auto digest = routing::md5(all);
  char hex[33];
  for (int i = 0; i < 16; ++i) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  return "memzone:migration:" + std::string(hex, 32);
}

bool inZone(const topology::Zone& zone, const std::string& address) {
  return std::any_of(zone.backends.begin(), zone.backends.end(),
                     [&](const topology::Backend& b) { return b.address == address; });
}

// Whether `address` is a server of a zone of `pool` other than `zone`.
// Whether `address` serves, in `topology`, a zone other than `zone` of `pool`.
bool servedElsewhere(const topology::Topology* topology, const std::string& pool,
                     const std::string& zone, const std::string& address) {
  if (topology == nullptr) return false;
  for (const topology::Pool& p : topology->pools) {
    for (const topology::Zone& z : p.zones) {
      if ((p.name != pool || z.name != zone) && inZone(z, address)) return true;
    }
  }
  return false;
}

bool servesOtherZone(const topology::Pool& pool, const topology::Zone& zone,
                     const std::string& address) {
  for (const topology::Zone& z : pool.zones) {
    if (&z != &zone && inZone(z, address)) return true;
  }
  return false;
}

void addServers(std::vector<topology::Backend>& to, const topology::Zone& zone) {
  for (const topology::Backend& b : zone.backends) {
    bool known = std::any_of(to.begin(), to.end(),
                             [&](const topology::Backend& x) { return x.address == b.address; });
    if (!known) to.push_back(b);
  }
}

}  // namespace

KeyMover::KeyMover(std::shared_ptr<backend::ServerBoard> board,
                   std::shared_ptr<tls::TlsContexts> tls, std::string local_zone,
                   std::shared_ptr<const RingAgreement> agreement)
    : board_(std::move(board)),
      tls_(std::move(tls)),
      local_zone_(std::move(local_zone)),
      agreement_(std::move(agreement)) {
  thread_ = std::thread([this] { run(); });
}

KeyMover::~KeyMover() { stop(); }

void KeyMover::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void KeyMover::onTopology(std::shared_ptr<const topology::Topology> topology) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t now = event::nowMicros();
  const std::string& local = local_zone_.empty() ? topology->proxy_zone : local_zone_;
  std::map<std::string, Job> jobs;
  const int64_t probe_until = now + kProbeBudgetUs;
  for (const topology::Pool& pool : topology->pools) {
    if (pool.migration_ms == 0) continue;
    for (const topology::Zone& zone : pool.zones) {
      std::string name = pool.name + "/" + zone.name;
      auto running = jobs_.find(name);
      const topology::Zone* old = findZone(last_.get(), pool.name, zone.name);
      // A zone (or pool) back after an absence (the controller leaves out a zone with no
      // ready server): compared with its ring before it went, and nothing is known of the
      // time between.
      Ring seen = last_seen_.count(name) != 0 ? last_seen_[name] : Ring{};
      // A zone first seen after this proxy's first topology may be new, or back from an
      // absence that began before this proxy started (a restart while it was out): its
      // servers may hold copies from before, so it is treated as returning, compared with
      // its own ring (nothing is moved from a returning zone anyway).
      if (old == nullptr && seen.zone == nullptr && last_ != nullptr) seen = Ring{topology, &zone};
      bool returned = old == nullptr && seen.zone != nullptr;
      if (returned) old = seen.zone;
      last_seen_[name] = Ring{topology, &zone};
      std::string placement = topology::placementOf(zone);
      bool changed = old != nullptr && (returned || topology::placementOf(*old) != placement);
      std::vector<std::string>& log = ring_log_[name];
      if (log.empty() || changed) log.push_back(placement);
      if (log.size() > kMaxRings) log.erase(log.begin());
      if (!changed && running == jobs_.end()) continue;
      Job job = running != jobs_.end() ? std::move(running->second) : Job{};
      job.pool = pool.name;
      job.tls = pool.tls;
      if (changed) {
        job.cancelled->store(true);  // the crawl in progress is for a ring that is gone
        job.cancelled = std::make_shared<std::atomic<bool>>(false);
        if (auto given_up = unfinished_.find(name); given_up != unfinished_.end()) {
          job.before.insert(job.before.begin(), given_up->second.begin(), given_up->second.end());
          unfinished_.erase(given_up);
          job.inherited = true;
        }
        // This proxy knows nothing of the zone before its first topology (it just started,
        // maybe in the middle of someone's crawl): every server may hold leftovers.
        if (first_change_.insert(name).second || returned) job.inherited = true;
        if (returned) job.missed_writes = true;
        job.before.push_back(returned ? seen : Ring{last_, old});
        while (job.before.size() > kMaxRings) {
          job.before.erase(job.before.begin());
          job.inherited = true;  // history dropped: as little known as after a restart
        }
        job.pending.clear();  // every server of the rings kept: a new change starts over
        for (const Ring& r : job.before) addServers(job.pending, *r.zone);
        addServers(job.pending, zone);
        // A server that now serves another zone of the pool holds that zone's copies of the
        // same keys: not ours to move. (A server shared with another pool is crawled: only
        // keys routed to this pool are touched.)
        std::erase_if(job.pending, [&](const topology::Backend& b) {
          return !inZone(zone, b.address) && servesOtherZone(pool, zone, b.address);
        });
        // Servers continuously in the zone had their lost keys moved (or deleted by the
        // window's writes) when they lost them: no leftovers. Others may hold some. A mark
        // read for an earlier change of this job stays (writes through that ring are newer).
        std::erase_if(job.purge_marks, [&](const auto& m) { return !inZone(zone, m.first); });
        LinkTls tls = linkTls(pool.tls);
        for (const topology::Backend& b : zone.backends) {
          bool always = std::all_of(job.before.begin(), job.before.end(),
                                    [&](const Ring& r) { return inZone(*r.zone, b.address); });
          if ((always && !job.inherited) || job.purge_marks.count(b.address) != 0) continue;
          // Unread (unreachable now, or the change's probe budget spent): the crawl falls back
          // to the counter at its lease, later than the change: it may purge fresh values too
          // (misses), but leaves no leftover.
          uint64_t cas = kUnknownCas;
          if (event::nowMicros() < probe_until) casCounterOf(b.address, tls, probe_until, cas);
          job.purge_marks[b.address] = cas;
        }
        // The zone's recent rings as this proxy saw them, not only those of this job: a ring
        // change repeated (a flap A->B->A->B) gets a lease key of its own, never the
        // earlier one's "done". A proxy that missed a ring in between derives another key
        // and crawls again: duplicated work, never skipped work.
        job.lease_key = leaseKey(pool.name, zone.name, log);
        job.ready_us = now + (zone.name == local ? 0 : kRemoteDelayUs);
        job.moves_from_us = now + kRingSkewUs;
        job.version = topology->version;
        job.agreement_until_us =
            std::min(now + kAgreementWaitUs, now + int64_t{pool.migration_ms} * 1000);
        job.until_us = now + int64_t{pool.migration_ms} * 1000;
        // Nobody reads a zone back from an absence before its crawl: set before the workers
        // get this topology, cleared server by server as each crawl is done.
        if (job.missed_writes) holdUntilPurged(pool.name, name, zone, job.until_us);
      }
      job.now = Ring{topology, &zone};  // a new address under the same name: the newest
      jobs[name] = std::move(job);
    }
  }
  planRouteJobs(topology, jobs, probe_until);
  releaseHoldsOutside(jobs);
  for (auto& [name, job] : jobs_) {
    if (jobs.count(name) == 0) job.cancelled->store(true);  // its pool or zone went away
  }
  // ring_log_ keeps the log of a zone that is out of the topology (as last_seen_ keeps its
  // ring): were it dropped, each return would start it afresh and derive the same lease key,
  // and a return soon after the previous one's crawl would take its "done" for its own.
  jobs_ = std::move(jobs);
  last_ = std::move(topology);
  wake_.notify_all();
}

void KeyMover::planRouteJobs(const std::shared_ptr<const topology::Topology>& topology,
                             std::map<std::string, Job>& jobs, int64_t probe_until) {
  const int64_t now = event::nowMicros();
  const std::string& local = local_zone_.empty() ? topology->proxy_zone : local_zone_;
  std::string routes;
  for (const topology::RouteSpec& r : topology->spec.routes)
    routes += r.prefix + "\t" + r.pool + "\n";
  if (route_log_.empty() || route_log_.back() != routes) route_log_.push_back(routes);
  if (route_log_.size() > kMaxRings) route_log_.erase(route_log_.begin());
  for (const topology::Pool& pool : topology->pools) {
    if (pool.migration_ms == 0) continue;
    bool changed = last_ && routingOfPoolChanged(last_->spec, topology->spec, pool.name);
    for (const topology::Zone& zone : pool.zones) {
      std::string name = pool.name + "/" + zone.name + " routes";
      auto running = jobs_.find(name);
      if (!changed && running == jobs_.end()) continue;
      Job job = running != jobs_.end() ? std::move(running->second) : Job{};
      job.routes = true;
      job.pool = pool.name;
      job.tls = pool.tls;
      if (changed) {
        job.cancelled->store(true);  // its crawl judged keys by routes that are gone
        job.cancelled = std::make_shared<std::atomic<bool>>(false);
        if (auto given_up = unfinished_routes_.find(name); given_up != unfinished_routes_.end()) {
          job.route_history.insert(job.route_history.begin(), given_up->second.begin(),
                                   given_up->second.end());
          unfinished_routes_.erase(given_up);
        }
        job.route_history.push_back(last_);
        if (job.route_history.size() > kMaxRings)
          job.route_history.erase(job.route_history.begin());
        job.pending = zone.backends;
        // Items written before the change are judged, not those written through the new
        // routes: each server's CAS counter now (else its lease's: later, so a fresh value
        // may go too, a miss, never a leftover).
        job.purge_marks.clear();
        LinkTls tls = linkTls(pool.tls);
        for (const topology::Backend& b : zone.backends) {
          uint64_t cas = kUnknownCas;
          if (event::nowMicros() < probe_until) casCounterOf(b.address, tls, probe_until, cas);
          job.purge_marks[b.address] = cas;
        }
        // Every change of routes its own lease key, also one that repeats an earlier one.
        job.lease_key = leaseKey(pool.name, zone.name + " routes", route_log_);
        job.ready_us = now + (zone.name == local ? 0 : kRemoteDelayUs);
        job.moves_from_us = now;
        job.until_us = now + int64_t{pool.migration_ms} * 1000;
      }
      job.now = Ring{topology, &zone};
      jobs[name] = std::move(job);
    }
  }
}

void KeyMover::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    const int64_t now = event::nowMicros();
    std::string next;
    int64_t wake_at = now + 60'000'000;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      Job& job = it->second;
      if (job.pending.empty() || now >= job.until_us) {
        if (!job.pending.empty()) {
          ops::logEvent(ops::LogLevel::kWarn, "move-gave-up:" + it->first,
                        "key mover: %s: %zu servers not crawled before the migration window "
                        "ended; their leftover copies stay until overwritten or evicted",
                        it->first.c_str(), job.pending.size());
          counters_->zones[job.now.zone->stats_slot].add(
              counters_->zones[job.now.zone->stats_slot].crawls_failed, job.pending.size());
          if (job.missed_writes) {
            ops::logEvent(ops::LogLevel::kWarn, "move-unpurged:" + it->first,
                          "key mover: %s: back after an absence, its servers not crawled now "
                          "serve reads unpurged: values they hold from before can be stale",
                          it->first.c_str());
          }
          if (job.routes) {
            auto routes = job.route_history;
            routes.push_back(job.now.topology);
            unfinished_routes_[it->first] = std::move(routes);
          } else {
            std::vector<Ring> rings = job.before;
            rings.push_back(job.now);
            unfinished_[it->first] = std::move(rings);
          }
        }
        it = jobs_.erase(it);
        continue;
      }
      if (job.ready_us <= now && next.empty()) next = it->first;
      wake_at = std::min(wake_at, job.ready_us);
      ++it;
    }
    if (next.empty()) {
      wake_.wait_for(lock, std::chrono::microseconds(std::max<int64_t>(wake_at - now, 1000)));
      continue;
    }
    Job job = jobs_[next];  // a copy: the thread works without the lock
    lock.unlock();
    Outcome outcome = runJob(job);
    lock.lock();
    auto it = jobs_.find(next);
    if (it == jobs_.end() || it->second.cancelled != job.cancelled) continue;  // replaced
    auto& pending = it->second.pending;
    for (const std::string& address : outcome.done) {
      pending.erase(
          std::remove_if(pending.begin(), pending.end(),
                         [&](const topology::Backend& b) { return b.address == address; }),
          pending.end());
    }
    if (pending.empty()) {
      jobs_.erase(it);
    } else {
      it->second.ready_us = event::nowMicros() + kRetryUs;
    }
  }
}

// The name jobs_ files a (ring) job under: "pool/zone".
std::string KeyMover::jobName(const Job& job) { return job.pool + "/" + job.now.zone->name; }

void KeyMover::holdUntilPurged(const std::string& pool, const std::string& job,
                               const topology::Zone& zone, int64_t until_us) {
  // Past holds are over by their own clock: forget them.
  const int64_t now = event::nowMicros();
  for (auto it = unpurged_.begin(); it != unpurged_.end();) {
    std::erase_if(it->second.until_by_job, [now](const auto& j) { return j.second <= now; });
    it = it->second.until_by_job.empty() ? unpurged_.erase(it) : std::next(it);
  }
  for (const topology::Backend& b : zone.backends) {
    // A server that serves another zone in the workers' topology until they switch is read
    // there meanwhile (a hold is the server's, not the zone's), and what it holds is that
    // zone's current copies: it is purged like any server new to a ring, not held.
    if (unpurged_.count(b.address) == 0 && servedElsewhere(last_.get(), pool, zone.name, b.address))
      continue;
    // Kept here too: the workers dropped the state of a server that left with its zone, and
    // the board keeps only what someone holds.
    Hold& hold = unpurged_[b.address];
    if (!hold.state) hold.state = board_->stateFor(b.address);
    hold.until_by_job[job] = until_us;
    publishHold(hold);
  }
}

void KeyMover::releaseHoldsOutside(const std::map<std::string, Job>& jobs) {
  // A held server that is no longer in its returning zone (the zone left again, or the server
  // moved to another zone, where it is purged like any server new to a ring) is not that
  // job's to hold any more: held on, it would fail reads in its new zone until the window ends.
  for (auto held = unpurged_.begin(); held != unpurged_.end();) {
    std::erase_if(held->second.until_by_job, [&](const auto& j) {
      auto job = jobs.find(j.first);
      return job == jobs.end() || !job->second.missed_writes ||
             !inZone(*job->second.now.zone, held->first);
    });
    publishHold(held->second);
    held = held->second.until_by_job.empty() ? unpurged_.erase(held) : std::next(held);
  }
}

void KeyMover::purgeDone(const std::string& job, const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  auto held = unpurged_.find(address);
  if (held == unpurged_.end()) return;
  held->second.until_by_job.erase(job);
  publishHold(held->second);
  if (held->second.until_by_job.empty()) unpurged_.erase(held);
}

void KeyMover::publishHold(Hold& hold) {
  int64_t until = 0;
  for (const auto& [job, until_us] : hold.until_by_job) until = std::max(until, until_us);
  hold.state->unpurged_until_us.store(until, std::memory_order_relaxed);
}

bool KeyMover::movesMayStart(const Job& job, bool& bounded) const {
  const int64_t now = event::nowMicros();
  if (now < job.moves_from_us) return false;
  if (!agreement_ || !agreement_->heard() || agreement_->covers(job.version)) return true;
  bounded = now >= job.agreement_until_us;
  return bounded;
}

LinkTls KeyMover::linkTls(const topology::BackendTlsSpec& spec) const {
  LinkTls tls;
  if (spec.enabled) {
    std::string error;
    tls.context = tls_ ? tls_->backend(backend::backendTlsFiles(spec), error) : nullptr;
    tls.server_name = spec.server_name;
  }
  return tls;
}

KeyMover::Outcome KeyMover::runJob(const Job& job) {
  Outcome outcome;
  LinkTls tls = linkTls(job.tls);
  if (job.tls.enabled && !tls.context) return outcome;  // files gone since: retry
  ZoneMoveCounters& counters = counters_->zones[job.now.zone->stats_slot];
  std::vector<const topology::Zone*> before;
  for (const Ring& r : job.before) before.push_back(r.zone);
  ZoneCrawl::Hooks hooks;
  hooks.superseded = [this, &job] { return superseded(job) || event::nowMicros() >= job.until_us; };
  hooks.readable = [this](const std::string& address) {
    return backend::sharedTrust(*board_->stateFor(address), [] { return event::nowMicros(); }) ==
           backend::SharedTrust::kReadable;
  };
  // Keys a server holds for other pools (a server may serve several) are not this job's.
  const topology::Topology& now = *job.now.topology;
  uint32_t pool_index = 0;
  while (pool_index < now.pools.size() && now.pools[pool_index].name != job.pool) ++pool_index;
  hooks.ours = [&now, pool_index](std::string_view key) {
    return now.router.poolFor(key) == pool_index;
  };
  std::vector<const topology::TopologySpec*> routes;
  if (job.routes) {
    // Keys routed to the pool under some routes since the last route crawl and not all.
    for (const auto& t : job.route_history) routes.push_back(&t->spec);
    routes.push_back(&now.spec);
    hooks.ours = [&routes, &job](std::string_view key) {
      return reroutedFor(routes, job.pool, key);
    };
    before.clear();
  }
  ZoneCrawl crawl(*job.now.zone, std::move(before), job.purge_marks, job.missed_writes, tls,
                  counters, hooks);

  // Leases first; then every purge before any move (a move must not meet a leftover).
  std::vector<const topology::Backend*> mine;
  // Leases this run holds and did not finish are given back however it ends (a newer change,
  // a failure), so the next run (this proxy's or another's) can take them at once.
  struct Release {
    ZoneCrawl& crawl;
    const Job& job;
    std::vector<const topology::Backend*>& held;
    ~Release() {
      for (const topology::Backend* server : held) crawl.releaseLease(*server, job.lease_key);
    }
  } release{crawl, job, mine};
  for (const topology::Backend& server : job.pending) {
    if (superseded(job)) return outcome;
    switch (crawl.takeLease(server, job.lease_key)) {
      case Lease::kWon:
        mine.push_back(&server);
        break;
      case Lease::kDone:
        counters.add(counters.crawls_elsewhere);
        outcome.done.push_back(server.address);
        if (job.missed_writes) purgeDone(jobName(job), server.address);
        break;
      case Lease::kUnreachable:
        // A server that left the zone and does not answer has nothing left to move (if it
        // comes back, its contents are leftovers: purged then).
        if (!inZone(*job.now.zone, server.address)) outcome.done.push_back(server.address);
        break;
      case Lease::kElsewhere:
        break;
    }
  }
  if (job.routes) {
    for (const topology::Backend* server : std::vector(mine)) {
      if (!crawl.purgeRerouted(*server)) continue;
      crawl.finishLease(*server, job.lease_key, kDoneTtlS);
      mine.erase(std::find(mine.begin(), mine.end(), server));
      counters.add(counters.crawls_done);
      outcome.done.push_back(server->address);
    }
    return outcome;
  }
  std::vector<const topology::Backend*> purged;
  for (const topology::Backend* server : std::vector(mine)) {
    if (!crawl.purge(*server)) continue;
    if (!job.missed_writes) {
      purged.push_back(server);
      continue;
    }
    // A zone back from an absence moves nothing (its copies missed writes): done once purged,
    // so neither its reads nor the other proxies wait for the word on moves.
    crawl.finishLease(*server, job.lease_key, kDoneTtlS);
    purgeDone(jobName(job), server->address);
    mine.erase(std::find(mine.begin(), mine.end(), server));
    counters.add(counters.crawls_done);
    outcome.done.push_back(server->address);
  }
  bool bounded = false;
  while (!purged.empty() && !movesMayStart(job, bounded)) {
    if (superseded(job)) return outcome;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (bounded) {
    ops::logEvent(ops::LogLevel::kWarn, "move-unconfirmed:" + job.lease_key,
                  "key mover: %s/%s: no word from the controller that every proxy applied "
                  "topology %s within %lld ms; moving anyway (a proxy still on the old ring may "
                  "write behind the moves)",
                  job.pool.c_str(), job.now.zone->name.c_str(), job.version.c_str(),
                  static_cast<long long>(kAgreementWaitUs / 1000));
    counters.add(counters.moves_unconfirmed);
  }
  for (const topology::Backend* server : purged) {
    if (!crawl.move(*server)) continue;
    crawl.finishLease(*server, job.lease_key, kDoneTtlS);
    if (job.missed_writes) purgeDone(jobName(job), server->address);
    mine.erase(std::find(mine.begin(), mine.end(), server));
    counters.add(counters.crawls_done);
    outcome.done.push_back(server->address);
  }
  return outcome;
}

}  // namespace memzone::rebalance
