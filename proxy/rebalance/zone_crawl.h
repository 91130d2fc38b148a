// One job of the key mover (key_mover.h): the leases, purges and moves of one zone's servers
// after one ring change, over blocking connections of its own. One thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/rebalance/memcached_link.h"
#include "proxy/rebalance/metadump.h"
#include "proxy/rebalance/move_counters.h"
#include "proxy/topology/topology.h"

namespace memzone::rebalance {

enum class Lease : uint8_t {
  kWon,          // this proxy crawls the server
  kDone,         // another proxy crawled it
  kElsewhere,    // another proxy is crawling it
  kUnreachable,  // no answer: try again later
};

// A purge mark not read at the change: the crawl uses its lease's cas instead.
inline constexpr uint64_t kUnknownCas = UINT64_MAX;

// The CAS counter of a server now (the cas memcached gives a fresh item); false when it
// cannot be read by `until_us` (event::nowMicros()). Numeric addresses only (no resolver
// wait on the topology's path).
bool casCounterOf(const std::string& address, const LinkTls& tls, int64_t until_us, uint64_t& cas);

class ZoneCrawl {
 public:
  static constexpr int kIoTimeoutMs = 2000;
  static constexpr uint32_t kLeaseTtlS = 30;

  struct Hooks {
    std::function<bool()> superseded;                  // stop now: a newer change, or exit
    std::function<bool(const std::string&)> readable;  // may this address be read from?
    std::function<bool(std::string_view)> ours;        // is this key routed to the pool?
  };

  // `now`: the zone's ring; `before`: the rings before it since the last completed crawl;
  // `purge_marks`: the servers to purge, with their CAS counter at the change;
  // `missed_writes`: the zone was out of the topology (no copies reached it), so every item
  // older than the mark is purged, owned throughout or not.
  ZoneCrawl(const topology::Zone& now, std::vector<const topology::Zone*> before,
            std::map<std::string, uint64_t> purge_marks, bool missed_writes, LinkTls tls,
            ZoneMoveCounters& counters, Hooks hooks);

  Lease takeLease(const topology::Backend& server, const std::string& key);
  // Both false when the dump did not complete (the caller tries again later).
  bool purge(const topology::Backend& server);
  bool move(const topology::Backend& server);
  // After a change of routes: deletes every item older than the server's purge mark whose
  // key Hooks::ours accepts (the route job's keys: not routed to the pool throughout).
  bool purgeRerouted(const topology::Backend& server);
  // Gives the lease back after a failed purge or move (best effort; else it expires).
  void releaseLease(const topology::Backend& server, const std::string& key);
  // Marks the lease done for `ttl_s`, so other proxies stop asking.
  void finishLease(const topology::Backend& server, const std::string& key, uint32_t ttl_s);

 private:
  struct Item {
    DumpedItem dumped;
    uint32_t target = 0;  // index into now_.backends (moves)
  };
  // Streams the server's items to `on_item` (false: abandon); true when END was reached.
  bool dump(const topology::Backend& server, const std::function<bool(DumpedItem&)>& on_item);
  MemcachedLink* link(const std::string& address);
  // Touches every lease this run holds, every kLeaseRefreshUs; false never (a lease that
  // cannot be touched fails its own pass).
  bool refreshLeases();
  // Deletes (cas-guarded) the server's items older than the change that `leftover` picks;
  // true once the dump completed.
  bool purgeOlderItems(const topology::Backend& server,
                       const std::function<bool(const DumpedItem&)>& leftover);
  bool flushPurges(const topology::Backend& server);
  // Whether `address` owned `key` under every ring of before_ (by address: a server that
  // came back under a name at a new address is another memcached, with other contents).
  bool ownedThroughout(std::string_view key, const std::string& address) const;
  bool flushMoves(const topology::Backend& server);
  // Whether `key` is one of memzone's own (sentinels, leases): never moved or purged.
  static bool internalKey(const std::string& key);

  const topology::Zone& now_;
  std::vector<const topology::Zone*> before_;
  std::map<std::string, uint64_t> purge_marks_;  // address -> its CAS counter at the change
  bool missed_writes_;
  LinkTls tls_;
  ZoneMoveCounters& counters_;
  Hooks hooks_;
  std::map<std::string, std::unique_ptr<MemcachedLink>> links_;  // by address
  std::map<std::string, uint64_t> watermarks_;  // address -> its lease's cas (ours)
  std::vector<Item> batch_;                     // moves
  std::vector<DumpedItem> purges_;              // cas-guarded deletes
  uint64_t batch_bytes_ = 0;
  int64_t lease_refreshed_us_ = 0;
  std::string lease_key_;
  bool stale_done_retried_ = false;  // takeLease: an older change's "done" deleted once
};

}  // namespace memzone::rebalance
