#include "proxy/topology/topology.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include "proxy/topology/zone_slots.h"

namespace memzone::topology {

std::string placementOf(const Zone& zone) {
  std::vector<std::string> parts;
  for (const Backend& b : zone.backends)
    parts.push_back(b.identity + "*" + std::to_string(b.weight));
  std::sort(parts.begin(), parts.end());
  std::string out;
  for (const std::string& part : parts) {
    if (!out.empty()) out += ',';
    out += part;
  }
  return out;
}

bool splitAddress(const std::string& address, std::string& host, uint16_t& port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
  host = address.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned value = 0;
  const char* begin = address.data() + colon + 1;
  const char* end = address.data() + address.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || value == 0 || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  // The proxy connects to numeric addresses only: resolving names on a worker would block it.
  in_addr v4;
  in6_addr v6;
  return inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
}

std::string_view toString(WritePolicy p) {
  return p == WritePolicy::kAllZones ? "all-zones" : "local-zone";
}

std::string_view toString(WaitPolicy p) {
  switch (p) {
    case WaitPolicy::kLocal:
      return "local";
    case WaitPolicy::kAll:
      return "all";
    case WaitPolicy::kQuorum:
      return "quorum";
  }
  return "local";
}

BuildResult buildTopology(const TopologySpec& spec, int64_t changed_at_us) {
  auto topology = std::make_shared<Topology>();
  topology->changed_at_us = changed_at_us;
  auto fail = [](std::string error) { return BuildResult{nullptr, std::move(error)}; };
  // No pools, or a pool without zones, is a real state the controller publishes (the last
  // ReplicatedPool deleted, the last backend unready): such keys get "no pool for this key".
  // Files never get here with either (their reader requires servers).
  if (spec.connect_timeout_ms == 0 || spec.request_timeout_ms == 0) {
    return fail("timeouts: must be greater than zero");
  }
  if (spec.health.failure_limit == 0) return fail("health.failureLimit: must be at least 1");
  std::set<std::string> pool_names;
  // A server's connection is shared by every pool it serves: one TLS setting per address.
  std::map<std::string, std::pair<const BackendTlsSpec*, std::string>> tls_of;
  for (size_t p = 0; p < spec.pools.size(); ++p) {
    const PoolSpec& ps = spec.pools[p];
    std::string where = "pools[" + std::to_string(p) + "]";
    if (ps.name.empty()) return fail(where + ".name: must not be empty");
    if (!pool_names.insert(ps.name).second) return fail(where + ".name: duplicate pool " + ps.name);
    if (ps.hash != "ketama") return fail(where + ".hash: unsupported hash " + ps.hash);
    if (ps.tls.enabled && ps.tls.cert_file.empty() != ps.tls.key_file.empty()) {
      return fail(where + ".tls: certFile and keyFile go together");
    }
    if (ps.zones.empty()) continue;  // not built: its routes lead nowhere
    Pool pool{ps.name, ps.replication, {}, ps.tls};
    bool multi_zone = ps.zones.size() > 1;
    pool.warmup_ms = ps.warmup_ms.value_or(multi_zone ? kDefaultWarmupMs : 0);
    pool.migration_ms = ps.migration_ms.value_or(multi_zone ? kDefaultMigrationMs : 0);
    std::set<std::string> zone_names;
    for (const ZoneSpec& zs : ps.zones) {
      std::string zwhere = where + ".zones." + zs.zone;
      if (zs.zone.empty()) return fail(where + ".zones: zone name must not be empty");
      if (!zone_names.insert(zs.zone).second) return fail(zwhere + ": duplicate zone");
      if (zs.backends.empty()) return fail(zwhere + ": at least one server is required");
      std::vector<Backend> backends;
      std::vector<routing::RingServer> ring_servers;
      std::set<std::string> addresses, identities;
      for (const BackendSpec& bs : zs.backends) {
        Backend b{bs.address, {}, 0, bs.weight, {}};
        if (!splitAddress(bs.address, b.host, b.port)) {
          return fail(zwhere + ": bad server address \"" + bs.address +
                      "\" (want numeric IP:port)");
        }
        if (bs.weight == 0) return fail(zwhere + ": weight of " + bs.address + " must be >= 1");
        if (!addresses.insert(bs.address).second) {
          return fail(zwhere + ": duplicate server " + bs.address);
        }
        auto [seen, first] = tls_of.try_emplace(bs.address, &ps.tls, ps.name);
        if (!first && !(*seen->second.first == ps.tls)) {
          return fail(where + ".tls: server " + bs.address + " is also in pool " +
                      seen->second.second + " with other TLS settings");
        }
        if (bs.name.size() > 253) return fail(zwhere + ": server name longer than 253 characters");
        bool by_name = ps.hash_by == HashBy::kName && !bs.name.empty();
        b.identity = by_name ? bs.name : bs.address;
        if (!identities.insert(b.identity).second) {
          return fail(zwhere + ": two servers are placed as " + b.identity);
        }
        ring_servers.push_back({b.host, b.port, b.weight, by_name ? bs.name : std::string()});
        backends.push_back(std::move(b));
      }
      pool.zones.push_back(
          Zone{zs.zone, std::move(backends), routing::KetamaRing(ring_servers), zoneSlot(zs.zone)});
    }
    topology->pools.push_back(std::move(pool));
  }
  std::vector<routing::PrefixRoute> routes;
  std::set<std::string> prefixes;
  for (size_t r = 0; r < spec.routes.size(); ++r) {
    const RouteSpec& rs = spec.routes[r];
    std::string where = "routes[" + std::to_string(r) + "]";
    if (!pool_names.count(rs.pool)) return fail(where + ".pool: no pool named " + rs.pool);
    uint32_t index = routing::PrefixRouter::kNoPool;  // a pool without zones
    for (uint32_t p = 0; p < topology->pools.size(); ++p) {
      if (topology->pools[p].name == rs.pool) index = p;
    }
    if (!prefixes.insert(rs.prefix).second) return fail(where + ".prefix: duplicate " + rs.prefix);
    routes.push_back({rs.prefix, index});
  }
  // Without routes every key goes to the first pool, unless it has no zones (or none exists).
  bool first_pool_built = !spec.pools.empty() && !spec.pools[0].zones.empty();
  topology->router = routing::PrefixRouter(std::move(routes), first_pool_built);
  topology->connect_timeout_ms = spec.connect_timeout_ms;
  topology->request_timeout_ms = spec.request_timeout_ms;
  topology->health = spec.health;
  topology->consistency = spec.consistency;
  topology->allow_flush_all = spec.allow_flush_all;
  topology->version = spec.version;
  topology->proxy_zone = spec.proxy_zone;
  topology->spec = spec;
  return BuildResult{std::move(topology), {}};
}

}  // namespace memzone::topology
