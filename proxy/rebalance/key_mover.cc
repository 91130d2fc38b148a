#include "proxy/rebalance/key_mover.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "memzone/ops/log.h"
#include "proxy/backend/backend_registry.h"
#include "proxy/event/event_base.h"
#include "proxy/rebalance/zone_crawl.h"
#include "proxy/routing/md5.h"

namespace memzone::rebalance {
namespace {

// Proxies of the changed zone start at once; the others give them a head start for the
// lease. Purges start at once (a leftover is served until purged); moves wait a moment for
// every proxy to switch rings, so few writes still reach the old owner after a move.
constexpr int64_t kRemoteDelayUs = 5'000'000;
constexpr int64_t kRingSkewUs = 1'000'000;
constexpr int64_t kRetryUs = 3'000'000;
constexpr size_t kMaxRings = 8;  // rings kept per job ("before"); older ones are dropped

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

void addServers(std::vector<topology::Backend>& to, const topology::Zone& zone) {
  for (const topology::Backend& b : zone.backends) {
    bool known = std::any_of(to.begin(), to.end(),
                             [&](const topology::Backend& x) { return x.address == b.address; });
    if (!known) to.push_back(b);
  }
}

}  // namespace

KeyMover::KeyMover(std::shared_ptr<backend::ServerBoard> board,
                   std::shared_ptr<tls::TlsContexts> tls, std::string local_zone)
    : board_(std::move(board)), tls_(std::move(tls)), local_zone_(std::move(local_zone)) {
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
  bool changed_any = false;
  for (const topology::Pool& pool : topology->pools) {
    if (pool.migration_ms == 0) continue;
    for (const topology::Zone& zone : pool.zones) {
      std::string name = pool.name + "/" + zone.name;
      auto running = jobs_.find(name);
      const topology::Zone* old = findZone(last_.get(), pool.name, zone.name);
      bool changed = old != nullptr && topology::placementOf(*old) != topology::placementOf(zone);
      if (!changed && running == jobs_.end()) continue;
      Job job = running != jobs_.end() ? std::move(running->second) : Job{};
      job.pool = pool.name;
      job.tls = pool.tls;
      if (changed) {
        changed_any = true;
        job.before.push_back(Ring{last_, old});
        if (job.before.size() > kMaxRings) job.before.erase(job.before.begin());
        addServers(job.pending, *old);
        addServers(job.pending, zone);
        std::vector<std::string> placements;
        for (const Ring& r : job.before) placements.push_back(topology::placementOf(*r.zone));
        placements.push_back(topology::placementOf(zone));
        job.lease_key = leaseKey(pool.name, zone.name, placements);
        job.ready_us = now + (zone.name == local ? 0 : kRemoteDelayUs);
        job.moves_from_us = now + kRingSkewUs;
        job.until_us = now + int64_t{pool.migration_ms} * 1000;
      }
      job.now = Ring{topology, &zone};  // a new address under the same name: the newest
      jobs[name] = std::move(job);
    }
  }
  changed_any |= jobs.size() != jobs_.size();  // zones and pools that went away, and their jobs
  jobs_ = std::move(jobs);
  last_ = std::move(topology);
  if (!changed_any) return;  // a crawl in progress goes on
  ++generation_;
  wake_.notify_all();
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
    uint64_t generation = generation_;
    lock.unlock();
    Outcome outcome = runJob(job, generation);
    lock.lock();
    auto it = jobs_.find(next);
    if (it == jobs_.end() || generation_ != generation) continue;  // changed meanwhile: redo
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

KeyMover::Outcome KeyMover::runJob(const Job& job, uint64_t generation) {
  Outcome outcome;
  LinkTls tls;
  if (job.tls.enabled) {
    std::string error;
    tls.context = tls_ ? tls_->backend(backend::backendTlsFiles(job.tls), error) : nullptr;
    tls.server_name = job.tls.server_name;
    if (!tls.context) return outcome;  // the topology was checked; files gone since: retry
  }
  ZoneMoveCounters& counters = counters_->zones[job.now.zone->stats_slot];
  std::vector<const topology::Zone*> before;
  for (const Ring& r : job.before) before.push_back(r.zone);
  ZoneCrawl::Hooks hooks;
  hooks.superseded = [this, generation, until = job.until_us] {
    return superseded(generation) || event::nowMicros() >= until;
  };
  hooks.readable = [this](const std::string& address) {
    return backend::sharedTrust(*board_->stateFor(address), [] { return event::nowMicros(); }) ==
           backend::SharedTrust::kReadable;
  };
  ZoneCrawl crawl(*job.now.zone, std::move(before), tls, counters, hooks);

  // Leases first; then every purge before any move (a move must not meet a leftover).
  std::vector<const topology::Backend*> mine;
  for (const topology::Backend& server : job.pending) {
    if (superseded(generation)) return outcome;
    switch (crawl.takeLease(server, job.lease_key)) {
      case Lease::kWon:
        mine.push_back(&server);
        break;
      case Lease::kDone:
        counters.add(counters.crawls_elsewhere);
        outcome.done.push_back(server.address);
        break;
      case Lease::kUnreachable:
        // A server that left the zone and does not answer has nothing left to move.
        if (!inZone(*job.now.zone, server.address)) outcome.done.push_back(server.address);
        break;
      case Lease::kElsewhere:
        break;
    }
  }
  std::vector<const topology::Backend*> purged;
  for (const topology::Backend* server : mine) {
    if (crawl.purge(*server)) {
      purged.push_back(server);
    } else {
      crawl.releaseLease(*server, job.lease_key);  // the next attempt takes it again
    }
  }
  while (!purged.empty() && event::nowMicros() < job.moves_from_us) {
    if (superseded(generation)) return outcome;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (const topology::Backend* server : purged) {
    if (!crawl.move(*server)) {
      crawl.releaseLease(*server, job.lease_key);
      continue;
    }
    int64_t left_us = job.until_us - event::nowMicros();
    crawl.finishLease(*server, job.lease_key,
                      static_cast<uint32_t>(std::max<int64_t>(left_us, 0) / 1'000'000 + 1));
    counters.add(counters.crawls_done);
    outcome.done.push_back(server->address);
  }
  return outcome;
}

}  // namespace memzone::rebalance
