#include "proxy/metrics/proxy_collector.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

#include <limits>
#include <map>
#include <string>

#include "proxy/server/worker.h"
#include "proxy/topology/zone_slots.h"

namespace memzone::metrics {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily& family(std::vector<MetricFamily>& out, std::string name, std::string help,
                     MetricType type) {
  out.push_back(MetricFamily{std::move(name), std::move(help), type, {}});
  return out.back();
}

void add(MetricFamily& f, double value, Labels labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<MetricFamily> ProxyCollector::Collect() const {
  using protocol::Command;
  namespace server = memzone::server;
  const auto& workers = context_->workers;
  std::vector<MetricFamily> out;
  out.reserve(128);  // family() hands out references into `out`: it must never reallocate
  auto sum = [&](auto get) {
    uint64_t total = 0;
    for (const server::Worker* w : workers) total += get(*w);
    return static_cast<double>(total);
  };

  // Requests by command and result; series appear once they happened.
  auto& requests = family(out, "memzone_proxy_requests_total",
                          "Client requests answered, by command and result.", MetricType::Counter);
  for (int c = 0; c < protocol::kCommandCount; ++c) {
    for (int r = 0; r < protocol::kRequestResultCount; ++r) {
      double v = sum([&](const server::Worker& w) { return w.stats().results[c][r].get(); });
      if (v == 0) continue;
      add(requests, v,
          {{"command", std::string(protocol::commandName(static_cast<Command>(c)))},
           {"result", std::string(protocol::resultName(static_cast<protocol::RequestResult>(r)))}});
    }
  }

  auto& latency = family(out, "memzone_proxy_request_duration_seconds",
                         "Time from a request's parse to its reply being ready, in order.",
                         MetricType::Histogram);
  ClientMetric h;
  uint64_t cumulative = 0;
  for (int b = 0; b <= server::kLatencyBuckets; ++b) {
    cumulative += static_cast<uint64_t>(
        sum([&](const server::Worker& w) { return w.stats().latency[b].get(); }));
    double bound = b == server::kLatencyBuckets
                       ? std::numeric_limits<double>::infinity()
                       : static_cast<double>(server::kLatencyFirstBucketUs << b) / 1e6;
    h.histogram.bucket.push_back({cumulative, bound});
  }
  h.histogram.sample_count = cumulative;
  h.histogram.sample_sum =
      sum([](const server::Worker& w) { return w.stats().latency_sum_us.get(); }) / 1e6;
  latency.metric.push_back(std::move(h));

  add(family(out, "memzone_proxy_client_connections", "Open client connections.",
             MetricType::Gauge),
      sum([](const server::Worker& w) { return w.stats().curr_connections.get(); }));
  add(family(out, "memzone_proxy_client_connections_total", "Client connections accepted.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().total_connections.get(); }));
  add(family(out, "memzone_proxy_client_connections_rejected_total",
             "Client connections closed at accept (over --max-connections).", MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().rejected_connections.get(); }));
  auto& closed =
      family(out, "memzone_proxy_client_connections_closed_total",
             "Client connections the proxy closed or saw closed, by reason.", MetricType::Counter);
  for (int r = 0; r < server::kCloseReasonCount; ++r) {
    add(closed, sum([&](const server::Worker& w) { return w.stats().closed_connections[r].get(); }),
        {{"reason", std::string(server::closeReasonName(static_cast<server::CloseReason>(r)))}});
  }
  add(family(out, "memzone_proxy_client_connections_limit",
             "--max-connections: client connections the proxy accepts at once.", MetricType::Gauge),
      static_cast<double>(context_->max_connections));
  add(family(out, "memzone_proxy_write_confirmation_waits_total",
             "Writes whose reply waited until every proxy knew a failed copy's server dirty.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().writes_confirmation_waits.get(); }));
  add(family(out, "memzone_proxy_write_confirmation_timeouts_total",
             "Of those, writes answered after the 500 ms bound without the confirmation.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().writes_confirmation_timeouts.get(); }));
  add(family(out, "memzone_proxy_accept_pauses_total",
             "Times accepting paused for lack of file descriptors.", MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().accept_pauses.get(); }));

  // TLS (issue 15): client-facing and backend.
  auto& handshakes = family(out, "memzone_proxy_tls_handshakes_total",
                            "TLS handshakes by side (client, backend) and result (ok, resumed, "
                            "failed, timeout).",
                            MetricType::Counter);
  auto& tls_connections = family(out, "memzone_proxy_tls_connections",
                                 "Established TLS connections by side.", MetricType::Gauge);
  for (int k = 0; k < 2; ++k) {
    auto counters = [k](const server::Worker& w) -> const tls::TlsCounters& {
      return k == 0 ? w.stats().tls : w.backendStats().tls;
    };
    std::string side = k == 0 ? "client" : "backend";
    for (int r = 0; r < tls::kHandshakeResultCount; ++r) {
      add(handshakes, sum([&](const server::Worker& w) { return counters(w).handshakes[r].get(); }),
          {{"side", side},
           {"result",
            std::string(tls::handshakeResultName(static_cast<tls::HandshakeResult>(r)))}});
    }
    add(tls_connections,
        sum([&](const server::Worker& w) { return counters(w).connections.get(); }),
        {{"side", side}});
  }
  // Certificate expiry is exported by ops::certificateExpiryCollector(), one family for every
  // TLS use of the process (bootstrap.cc watches the data plane's files).
  add(family(out, "memzone_proxy_tls_reload_failures_total",
             "Checks that found changed TLS files unusable (the previous material stays).",
             MetricType::Counter),
      static_cast<double>(context_->tls ? context_->tls->reloadFailures() : 0));

  // Buffer memory against --max-buffer-memory.
  auto& buffered =
      family(out, "memzone_proxy_buffer_bytes",
             "Buffer memory held now (allocated capacity), by kind.", MetricType::Gauge);
  auto memory = [&](auto get) {
    int64_t total = 0;
    for (const server::Worker* w : workers) total += get(w->budget().memory()).bytes();
    return static_cast<double>(total < 0 ? 0 : total);
  };
  add(buffered,
      memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.client_input; }),
      {{"kind", "client_input"}});
  add(buffered,
      memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.client_output; }),
      {{"kind", "client_output"}});
  add(buffered,
      memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.requests; }),
      {{"kind", "requests"}});
  add(buffered,
      memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.backend; }),
      {{"kind", "backend"}});
  add(buffered,
      memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.pooled; }),
      {{"kind", "pooled"}});
  add(buffered, memory([](const server::BufferMemory& m) -> const MemoryAccount& { return m.tls; }),
      {{"kind", "tls"}});
  add(family(out, "memzone_proxy_buffer_limit_bytes", "--max-buffer-memory.", MetricType::Gauge),
      static_cast<double>(context_->max_buffer_memory));
  add(family(out, "memzone_proxy_buffer_reserved_bytes",
             "Reply bytes expected for requests in flight (admission counts them as used).",
             MetricType::Gauge),
      sum([](const server::Worker& w) { return w.budget().counters().reserved.get(); }));
  auto& budget_events = family(out, "memzone_proxy_buffer_budget_events_total",
                               "What the buffer budget did, by action.", MetricType::Counter);
  add(budget_events,
      sum([](const server::Worker& w) { return w.budget().counters().throttled.get(); }),
      {{"action", "throttle"}});
  add(budget_events,
      sum([](const server::Worker& w) { return w.budget().counters().rejected.get(); }),
      {{"action", "out_of_memory_reply"}});
  add(budget_events,
      sum([](const server::Worker& w) { return w.budget().counters().large_waits.get(); }),
      {{"action", "large_reply_wait"}});
  add(budget_events,
      sum([](const server::Worker& w) { return w.budget().counters().cut_off.get(); }),
      {{"action", "cut_off"}});
  add(family(out, "memzone_proxy_buffer_throttled_connections",
             "Client connections not read right now because of the buffer budget.",
             MetricType::Gauge),
      sum([](const server::Worker& w) { return w.budget().counters().throttled_now.get(); }));
  add(family(out, "memzone_proxy_request_pool_trimmed_total",
             "Pooled requests freed after going unused (memory returned after a burst).",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.budget().counters().pool_trimmed.get(); }));

  add(family(out, "memzone_proxy_received_bytes_total", "Bytes read from clients.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().bytes_read.get(); }));
  add(family(out, "memzone_proxy_sent_bytes_total", "Bytes written to clients.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.stats().bytes_written.get(); }));

  add(family(out, "memzone_proxy_backend_requests_total", "Requests sent to memcached servers.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.backendStats().requests.get(); }));
  auto& failures = family(out, "memzone_proxy_backend_failures_total",
                          "Backend connection failures, by kind (each fails its pending requests).",
                          MetricType::Counter);
  for (int f = 0; f < backend::kBackendFailureCount; ++f) {
    add(failures,
        sum([&](const server::Worker& w) { return w.backendStats().connection_failures[f].get(); }),
        {{"kind", std::string(backend::failureName(static_cast<backend::BackendFailure>(f)))}});
  }
  add(family(out, "memzone_proxy_backend_servers_down",
             "Servers currently marked down (per worker view, summed).", MetricType::Gauge),
      sum([](const server::Worker& w) { return w.backendStats().servers_down.get(); }));
  add(family(out, "memzone_proxy_backend_mark_down_events_total", "Times a server was marked down.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.backendStats().mark_down_events.get(); }));
  add(family(out, "memzone_proxy_backend_probes_total", "Health probes and idle checks sent.",
             MetricType::Counter),
      sum([](const server::Worker& w) { return w.backendStats().probes.get(); }));

  // Replication, per zone.
  std::vector<std::string> zones = topology::zoneSlotNames();
  auto& copies = family(out, "memzone_proxy_replication_copies_total",
                        "Writes copied to another zone.", MetricType::Counter);
  auto& copies_failed =
      family(out, "memzone_proxy_replication_copies_failed_total",
             "Writes that failed or diverged in a zone (then invalidated).", MetricType::Counter);
  auto& queued =
      family(out, "memzone_proxy_invalidations_queued_total",
             "Keys queued for deletion on a server that missed a write.", MetricType::Counter);
  auto& replayed = family(out, "memzone_proxy_invalidations_replayed_total",
                          "Queued invalidations the server confirmed.", MetricType::Counter);
  auto& dropped =
      family(out, "memzone_proxy_invalidations_dropped_total",
             "Invalidations lost to a queue overflow (the server is then held or flushed).",
             MetricType::Counter);
  auto& depth = family(out, "memzone_proxy_invalidation_queue_depth",
                       "Invalidations waiting for their server.", MetricType::Gauge);
  for (size_t z = 0; z < zones.size(); ++z) {
    Labels labels{{"zone", zones[z]}};
    auto zsum = [&](auto get) {
      return sum([&](const server::Worker& w) { return get(w.backendStats().zones[z]); });
    };
    add(copies, zsum([](const backend::ZoneCounters& c) { return c.copies_sent.get(); }), labels);
    add(copies_failed, zsum([](const backend::ZoneCounters& c) { return c.copies_failed.get(); }),
        labels);
    add(queued, zsum([](const backend::ZoneCounters& c) { return c.invalidations_queued.get(); }),
        labels);
    add(replayed,
        zsum([](const backend::ZoneCounters& c) { return c.invalidations_replayed.get(); }),
        labels);
    add(dropped, zsum([](const backend::ZoneCounters& c) { return c.invalidations_dropped.get(); }),
        labels);
    add(depth,
        zsum([](const backend::ZoneCounters& c) { return c.invalidation_queue_depth.get(); }),
        labels);
  }
  // Churn windows (warm-up, migration), per zone of the server being filled.
  auto& warm_reads =
      family(out, "memzone_proxy_warmup_reads_total",
             "Misses on a server in warm-up read from the other zones.", MetricType::Counter);
  auto& warmed = family(out, "memzone_proxy_warmup_keys_warmed_total",
                        "Keys repaired into a server in warm-up.", MetricType::Counter);
  auto& warming = family(out, "memzone_proxy_warmup_servers", "Servers in their warm-up window.",
                         MetricType::Gauge);
  auto& migration = family(out, "memzone_proxy_migration_events_total",
                           "Migration-window work after a ring change, by kind: read (a miss on "
                           "a key's new owner read elsewhere), hit, repair (stored into the new "
                           "owner), invalidation (a write deleted at the previous owner).",
                           MetricType::Counter);
  auto& moved_keys = family(out, "memzone_proxy_migration_keys_total",
                            "Keys the key mover handled after ring changes, by action: moved "
                            "(copied to the new owner, deleted at the old), dropped (deleted "
                            "without a copy), purged (a copy from before its server owned it).",
                            MetricType::Counter);
  auto& crawls = family(out, "memzone_proxy_migration_crawls_total",
                        "Servers the key mover crawled after ring changes, by result: done, "
                        "failed (not crawled before the window ended), elsewhere (another "
                        "proxy did it).",
                        MetricType::Counter);
  auto& unconfirmed = family(
      out, "memzone_proxy_migration_moves_unconfirmed_total",
      "Times the key mover started a ring change's moves at its bound (10 s) without the "
      "controller's word that every proxy applied the change: a late proxy may write behind them.",
      MetricType::Counter);
  for (size_t z = 0; z < zones.size(); ++z) {
    Labels labels{{"zone", zones[z]}};
    auto zsum = [&](auto get) {
      return sum([&](const server::Worker& w) { return get(w.backendStats().zones[z]); });
    };
    add(warm_reads, zsum([](const backend::ZoneCounters& c) { return c.warmup_reads.get(); }),
        labels);
    add(warmed, zsum([](const backend::ZoneCounters& c) { return c.keys_warmed.get(); }), labels);
    // Every worker sees the same servers warming: the gauge is one worker's count, not a sum.
    uint64_t servers_warming = 0;
    for (const server::Worker* w : workers) {
      servers_warming =
          std::max<uint64_t>(servers_warming, w->backendStats().zones[z].servers_warming.get());
    }
    add(warming, servers_warming, labels);
    const std::pair<const char*, metrics::Counter backend::ZoneCounters::*> kinds[] = {
        {"read", &backend::ZoneCounters::migration_reads},
        {"hit", &backend::ZoneCounters::migration_hits},
        {"repair", &backend::ZoneCounters::migration_repairs},
        {"invalidation", &backend::ZoneCounters::migration_invalidations}};
    for (const auto& [kind, member] : kinds) {
      add(migration,
          zsum([member = member](const backend::ZoneCounters& c) { return (c.*member).get(); }),
          {{"zone", zones[z]}, {"kind", kind}});
    }
    if (context_->moves) {
      const rebalance::ZoneMoveCounters& m = context_->moves->zones[z];
      const std::pair<const char*, const std::atomic<uint64_t>*> actions[] = {
          {"moved", &m.moved}, {"dropped", &m.dropped}, {"purged", &m.purged}};
      for (const auto& [action, counter] : actions) {
        add(moved_keys, static_cast<double>(counter->load(std::memory_order_relaxed)),
            {{"zone", zones[z]}, {"action", action}});
      }
      const std::pair<const char*, const std::atomic<uint64_t>*> results[] = {
          {"done", &m.crawls_done},
          {"failed", &m.crawls_failed},
          {"elsewhere", &m.crawls_elsewhere}};
      for (const auto& [result, counter] : results) {
        add(crawls, static_cast<double>(counter->load(std::memory_order_relaxed)),
            {{"zone", zones[z]}, {"result", result}});
      }
      add(unconfirmed, static_cast<double>(m.moves_unconfirmed.load(std::memory_order_relaxed)),
          labels);
    }
  }
  auto& failovers = family(out, "memzone_proxy_read_failovers_total",
                           "Reads passed to another zone, by reason.", MetricType::Counter);
  const char* reasons[] = {"error", "miss", "unavailable"};
  for (int r = 0; r < server::kFailoverReasonCount; ++r) {
    add(failovers, sum([&](const server::Worker& w) { return w.stats().read_failovers[r].get(); }),
        {{"reason", reasons[r]}});
  }
  auto& repairs =
      family(out, "memzone_proxy_read_repairs_total",
             "Failover hits copied back to the local zone, by outcome.", MetricType::Counter);
  add(repairs, sum([](const server::Worker& w) { return w.stats().repairs_stored.get(); }),
      {{"result", "stored"}});
  add(repairs, sum([](const server::Worker& w) { return w.stats().repairs_skipped.get(); }),
      {{"result", "skipped"}});
  add(repairs, sum([](const server::Worker& w) { return w.stats().repairs_failed.get(); }),
      {{"result", "failed"}});

  if (context_->per_backend_metrics) {
    struct Sum {
      int workers = 0, up = 0, readable = 0;
      size_t pending = 0;
    };
    std::map<std::string, Sum> by_address;
    for (const server::Worker* w : workers) {
      for (const auto& s : w->backendSamples()) {
        Sum& sum_for = by_address[s.address];
        ++sum_for.workers;
        sum_for.up += s.up;
        sum_for.readable += s.readable;
        sum_for.pending += s.pending_invalidations;
      }
    }
    auto& up =
        family(out, "memzone_proxy_backend_up",
               "1 when every worker has the server up (sampled each second).", MetricType::Gauge);
    auto& readable = family(out, "memzone_proxy_backend_readable",
                            "1 when every worker may read from the server (not held or untrusted).",
                            MetricType::Gauge);
    auto& pending =
        family(out, "memzone_proxy_backend_pending_invalidations",
               "Invalidations queued for the server, over all workers.", MetricType::Gauge);
    for (const auto& [address, s] : by_address) {
      Labels labels{{"address", address}};
      add(up, s.up == s.workers ? 1 : 0, labels);
      add(readable, s.readable == s.workers ? 1 : 0, labels);
      add(pending, static_cast<double>(s.pending), labels);
    }
  }

  // Topology and controller.
  std::string version = context_->topologyVersion();
  auto& info = family(out, "memzone_proxy_topology_info", "The topology version applied (1).",
                      MetricType::Gauge);
  if (!version.empty()) add(info, 1, {{"version", version}});
  add(family(out, "memzone_proxy_topology_last_applied_timestamp_seconds",
             "Unix time the current topology was applied (0: none yet).", MetricType::Gauge),
      static_cast<double>(context_->last_applied_unix.load()));
  add(family(out, "memzone_proxy_topology_nacks_total", "Snapshots refused (NACKed).",
             MetricType::Counter),
      static_cast<double>(context_->nacks.load()));
  add(family(out, "memzone_proxy_owed_servers",
             "Servers this proxy owes invalidations to (failed copies not yet replayed, or an "
             "overflow hold): no proxy reads them.",
             MetricType::Gauge),
      context_->owed_servers.load());
  int connected = context_->controller_connected.load();
  if (connected >= 0) {
    add(family(out, "memzone_proxy_dirty_servers",
               "Servers the controller says some proxy owes invalidations to: not read.",
               MetricType::Gauge),
        context_->dirty_servers.load());
    add(family(out, "memzone_proxy_controller_connected",
               "1 while the topology stream to the controller is up.", MetricType::Gauge),
        connected);
  }
  return out;
}

}  // namespace memzone::metrics
