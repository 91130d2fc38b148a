#include "controlplane/server/controller_collector.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

namespace memzone::controlplane {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily& family(std::vector<MetricFamily>& out, const char* name, const char* help,
                     MetricType type) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  out.push_back(std::move(f));
  return out.back();
}

void add(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  (f.type == MetricType::Counter ? m.counter.value : m.gauge.value) = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<MetricFamily> ControllerCollector::Collect() const {
  std::vector<MetricFamily> out;
  out.reserve(32);  // family() hands out references into `out`: it must never reallocate
  ProxyCounters counters = registry_.counters();
  std::vector<ProxyStatus> proxies = registry_.proxies();
  auto snapshot = cache_.current();

  add(family(out, "memzone_controller_proxies_connected", "Proxies with an open topology stream.",
             MetricType::Gauge),
      static_cast<double>(proxies.size()));
  auto& acked = family(out, "memzone_controller_proxies_acked",
                       "Connected proxies that applied the current topology.", MetricType::Gauge);
  size_t n = 0;
  for (const auto& p : proxies) n += snapshot && p.applied_version == snapshot->version();
  add(acked, static_cast<double>(n));
  add(family(out, "memzone_controller_snapshots_sent_total", "Snapshots sent to proxies.",
             MetricType::Counter),
      static_cast<double>(counters.snapshots_sent));
  add(family(out, "memzone_controller_acks_total", "Snapshots proxies applied.",
             MetricType::Counter),
      static_cast<double>(counters.acks));
  add(family(out, "memzone_controller_nacks_total", "Snapshots proxies refused.",
             MetricType::Counter),
      static_cast<double>(counters.nacks));
  add(family(out, "memzone_controller_source_rejections_total",
             "Source states refused (the previous topology kept serving).", MetricType::Counter),
      static_cast<double>(source_.rejected.load()));
  auto& info = family(out, "memzone_controller_topology_info", "The topology version served (1).",
                      MetricType::Gauge);
  auto& ready = family(out, "memzone_controller_pool_ready_backends",
                       "Ready backends by pool and zone (kubernetes source: every zone of the "
                       "ReplicatedPool's status, 0 included).",
                       MetricType::Gauge);
  auto& backends = family(out, "memzone_controller_backend_info",
                          "Backends of the served topology (1), to name the pool and zone of a "
                          "proxy's per-backend series (same address label).",
                          MetricType::Gauge);
  auto from_source = source_.readyBackends();
  if (from_source) {
    for (const auto& z : *from_source) add(ready, z.ready, {{"pool", z.pool}, {"zone", z.zone}});
  }
  if (snapshot) {
    add(info, 1, {{"version", snapshot->version()}});
    for (const auto& pool : snapshot->pools()) {
      for (const auto& zone : pool.zones()) {
        if (!from_source) {
          add(ready, zone.backends_size(), {{"pool", pool.name()}, {"zone", zone.zone()}});
        }
        for (const auto& b : zone.backends()) {
          // The proxy's form of a backend address (host:port, [v6]:port).
          bool v6 = b.address().find(':') != std::string::npos;
          std::string address =
              (v6 ? "[" + b.address() + "]" : b.address()) + ":" + std::to_string(b.port());
          add(backends, 1, {{"pool", pool.name()}, {"zone", zone.zone()}, {"address", address}});
        }
      }
    }
  }
  if (dirty_ != nullptr) {
    add(family(out, "memzone_controller_dirty_servers",
               "Servers some proxy owes invalidations to (the dirty set sent to proxies).",
               MetricType::Gauge),
        static_cast<double>(dirty_->size()));
  }
  if (extra_) extra_(out);
  return out;
}

}  // namespace memzone::controlplane
