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
                       "Backends in the served topology, by pool and zone.", MetricType::Gauge);
  if (snapshot) {
    add(info, 1, {{"version", snapshot->version()}});
    for (const auto& pool : snapshot->pools()) {
      for (const auto& zone : pool.zones()) {
        add(ready, zone.backends_size(), {{"pool", pool.name()}, {"zone", zone.zone()}});
      }
    }
  }
  if (extra_) extra_(out);
  return out;
}

}  // namespace memzone::controlplane
