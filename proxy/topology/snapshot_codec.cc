#include "proxy/topology/snapshot_codec.h"

#include "memzone/v1/topology_yaml.h"

namespace memzone::topology {

TopologySpec specFromSnapshot(const v1::TopologySnapshot& snapshot) {
  TopologySpec spec;
  for (const v1::Pool& p : snapshot.pools()) {
    PoolSpec pool;
    pool.name = p.name();
    pool.hash = p.hash().empty() ? "ketama" : p.hash();
    const v1::Replication& r = p.replication();
    pool.replication.writes =
        r.writes() == v1::WRITES_LOCAL_ZONE ? WritePolicy::kLocalZone : WritePolicy::kAllZones;
    pool.replication.wait = r.wait() == v1::WAIT_ALL      ? WaitPolicy::kAll
                            : r.wait() == v1::WAIT_QUORUM ? WaitPolicy::kQuorum
                                                          : WaitPolicy::kLocal;
    pool.replication.failover_on_miss = r.failover_on_miss();
    pool.hash_by = p.hash_by() == "address" ? HashBy::kAddress : HashBy::kName;
    if (p.has_warmup()) pool.warmup_ms = p.warmup().duration_ms();
    if (p.has_migration()) pool.migration_ms = p.migration().duration_ms();
    pool.replication.repair = r.repair();
    for (const v1::Zone& z : p.zones()) {
      ZoneSpec zone;
      zone.zone = z.zone();
      for (const v1::Backend& b : z.backends()) {
        zone.backends.push_back(
            {v1::backendAddress(b), b.weight() == 0 ? 1 : b.weight(), b.name()});
      }
      pool.zones.push_back(std::move(zone));
    }
    if (p.has_tls() && p.tls().enabled()) {
      const v1::BackendTls& t = p.tls();
      pool.tls = {true,         t.ca_file(),     t.cert_file(),
                  t.key_file(), t.server_name(), !t.skip_verify()};
    }
    spec.pools.push_back(std::move(pool));
  }
  for (const v1::Route& r : snapshot.routes()) spec.routes.push_back({r.prefix(), r.pool()});
  spec.connect_timeout_ms = snapshot.timeouts().connect_ms();
  spec.request_timeout_ms = snapshot.timeouts().request_ms();
  spec.health.failure_limit = snapshot.health().failure_limit();
  spec.health.down_retry_ms = snapshot.health().down_retry_ms();
  spec.health.max_down_retry_ms = snapshot.health().max_down_retry_ms();
  spec.health.check_interval_ms = snapshot.health().check_interval_ms();
  spec.consistency.invalidation_queue_limit = snapshot.consistency().invalidation_queue_limit();
  spec.consistency.overflow_hold_ms = snapshot.consistency().overflow_hold_ms();
  spec.consistency.read_hold_ms = snapshot.consistency().read_hold_ms();
  spec.allow_flush_all = snapshot.allow_flush_all();
  spec.version = snapshot.version();
  spec.proxy_zone = snapshot.proxy_zone();
  return spec;
}

}  // namespace memzone::topology
