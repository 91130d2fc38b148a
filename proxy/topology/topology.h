// The proxy's view of the world: pools, their per-zone servers and rings, routes and timeouts.
// A Topology is built once from a TopologySpec, validated in full, and never changes; workers
// share it as std::shared_ptr<const Topology>.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/routing/ketama_ring.h"
#include "proxy/routing/prefix_router.h"

namespace memzone::topology {

enum class WritePolicy : uint8_t { kAllZones, kLocalZone };
enum class WaitPolicy : uint8_t { kLocal, kAll, kQuorum };

struct BackendSpec {
  std::string address;  // "host:port"
  uint32_t weight = 1;
  std::string name;  // placement identity ("" = the address)
};

struct ZoneSpec {
  std::string zone;
  std::vector<BackendSpec> backends;
};

struct ReplicationSpec {
  WritePolicy writes = WritePolicy::kAllZones;
  WaitPolicy wait = WaitPolicy::kLocal;
  bool failover_on_miss = false;  // readFailover includes "miss"
  bool repair = true;
};

// TLS to a pool's servers (memcached -Z).
struct BackendTlsSpec {
  bool enabled = false;
  std::string ca_file;  // "" = the system's CAs
  std::string cert_file;
  std::string key_file;
  std::string server_name;  // SNI and the certificate's name; "" = verify the server's IP
  bool verify = true;
  bool operator==(const BackendTlsSpec&) const = default;
};
// What places a server on its zone's ring. kName: its name when it has one, else its address
// (so a pool without names is placed exactly as libmemcached would); kAddress: always the
// address, even when names are known (pools shared with libmemcached clients).
enum class HashBy : uint8_t { kName, kAddress };

// Windows a pool opens when a server changes. Unset (nullopt) means the default: on for pools
// with more than one zone (the other zones hold the copies a warm-up reads), off for one zone.
inline constexpr uint32_t kDefaultWarmupMs = 60000;
inline constexpr uint32_t kDefaultMigrationMs = 60000;

struct PoolSpec {
  std::string name;
  std::string hash = "ketama";
  HashBy hash_by = HashBy::kName;
  std::optional<uint32_t> warmup_ms;     // 0 = off
  std::optional<uint32_t> migration_ms;  // 0 = off
  ReplicationSpec replication;
  std::vector<ZoneSpec> zones;  // in the order given; failover follows it
  BackendTlsSpec tls;
};

struct RouteSpec {
  std::string prefix;
  std::string pool;
};

struct HealthSpec {
  uint32_t failure_limit = 3;     // consecutive failures before a server is marked down
  uint32_t down_retry_ms = 1000;  // first probe delay; doubles up to max_down_retry_ms
  uint32_t max_down_retry_ms = 4000;
  uint32_t check_interval_ms = 1000;  // an idle server is sent `version` this often (0 = off)
};

// How the proxy keeps zones from serving values older than the last acknowledged write.
struct ConsistencySpec {
  // Failed copies remembered per server (and worker) as keys to delete when it answers again.
  uint32_t invalidation_queue_limit = 10000;
  // Beyond the limit the server serves no reads until flushed (allowFlushAll) or, if flushing
  // is not allowed, until this long after it answers again.
  uint32_t overflow_hold_ms = 60000;
  // A server that failed a request or was marked down serves no reads until this long after
  // its last failure, when another zone can serve them: the grace other proxies get to
  // replay their invalidations for it.
  // Keep it above health.maxDownRetryMs: that bounds when another proxy notices the server
  // is back and replays.
  uint32_t read_hold_ms = 6000;
};

struct TopologySpec {
  std::vector<PoolSpec> pools;
  std::vector<RouteSpec> routes;
  uint32_t connect_timeout_ms = 200;
  uint32_t request_timeout_ms = 250;
  HealthSpec health;
  ConsistencySpec consistency;
  bool allow_flush_all = false;
  std::string version;     // opaque; set by the source (content hash, file mtime, ...)
  std::string proxy_zone;  // the controller's answer for this proxy's zone, if any
};

struct Backend {
  std::string address;  // "host:port", the key of backend connections across swaps
  std::string host;
  uint16_t port;
  uint32_t weight;
  std::string identity;  // what the ring hashes: the name (hashBy name) or the address
};

struct Zone {
  std::string name;
  std::vector<Backend> backends;
  routing::KetamaRing ring;
  uint32_t stats_slot = 0;  // index of this zone's per-zone counters (see zone_slots.h)
};

struct Pool {
  std::string name;
  ReplicationSpec replication;
  std::vector<Zone> zones;
  BackendTlsSpec tls;
  uint32_t warmup_ms = 0;     // resolved: 0 = off
  uint32_t migration_ms = 0;  // resolved: 0 = off
};

class Topology {
 public:
  std::string version;
  std::vector<Pool> pools;
  routing::PrefixRouter router{{}};
  uint32_t connect_timeout_ms;
  uint32_t request_timeout_ms;
  HealthSpec health;
  ConsistencySpec consistency;
  bool allow_flush_all;
  std::string proxy_zone;
  TopologySpec spec;  // what it was built from (state files, diffs, stats)
  // When the proxy first switched to this topology (event::nowMicros), if before this process
  // applied it: a proxy restarted from --state-dir inside a change's windows (warm-up,
  // migration) keeps them until they would have ended. 0: now.
  int64_t changed_at_us = 0;
};

struct BuildResult {
  std::shared_ptr<const Topology> topology;  // null when invalid
  std::string error;                         // "field: reason" when invalid
};

// Validates everything a worker relies on (addresses parse, routes name pools, zones are
// non-empty, names unique) and builds the rings.
BuildResult buildTopology(const TopologySpec& spec, int64_t changed_at_us = 0);

// What places keys on a zone's ring: its identities and weights, sorted ("id*weight,...").
// Two zones place every key alike exactly when their placements are equal.
std::string placementOf(const Zone& zone);

// "host:port" -> host, port; false when it does not parse.
bool splitAddress(const std::string& address, std::string& host, uint16_t& port);

std::string_view toString(WritePolicy p);
std::string_view toString(WaitPolicy p);

}  // namespace memzone::topology
