#include "controlplane/model/cluster_model.h"

#include <algorithm>
#include <set>

#include "memzone/v1/topology_yaml.h"

namespace memzone::controlplane::model {
namespace {

using nlohmann::json;

// Returns "" when `spec` is usable, else the message (the reason is InvalidSpec).
std::string validate(const json& spec) {
  if (!spec.is_object()) return "spec: must be an object";
  if (!spec.contains("service") || !spec["service"].is_string() ||
      spec["service"].get<std::string>().empty()) {
    return "spec.service: required, the name of a Service in this namespace";
  }
  if (spec.contains("port") && !spec["port"].is_string() && !spec["port"].is_number_integer()) {
    return "spec.port: must be a port name or number";
  }
  if (spec.contains("hash") && spec["hash"] != "ketama") return "spec.hash: must be ketama";
  if (spec.contains("zones")) {
    if (!spec["zones"].is_array()) return "spec.zones: must be a list of zone names";
    for (const auto& z : spec["zones"]) {
      if (!z.is_string()) return "spec.zones: must be a list of zone names";
    }
  }
  if (spec.contains("prefixes")) {
    if (!spec["prefixes"].is_array()) return "spec.prefixes: must be a list of strings";
    for (const auto& p : spec["prefixes"]) {
      if (!p.is_string()) return "spec.prefixes: must be a list of strings";
    }
  }
  if (spec.contains("replication")) {
    const json& r = spec["replication"];
    if (!r.is_object()) return "spec.replication: must be an object";
    if (r.contains("writes") && r["writes"] != "all-zones" && r["writes"] != "local-zone") {
      return "spec.replication.writes: must be all-zones or local-zone";
    }
    if (r.contains("wait") && r["wait"] != "local" && r["wait"] != "all" && r["wait"] != "quorum") {
      return "spec.replication.wait: must be local, all or quorum";
    }
    if (r.contains("readFailover")) {
      const json& f = r["readFailover"];
      bool has_error = false;
      if (!f.is_array()) return "spec.replication.readFailover: must be [error] or [error, miss]";
      for (const auto& v : f) {
        if (v == "error") {
          has_error = true;
        } else if (v != "miss") {
          return "spec.replication.readFailover: unknown reason (error, miss)";
        }
      }
      if (!has_error) return "spec.replication.readFailover: must include error";
    }
    if (r.contains("repair") && !r["repair"].is_boolean()) {
      return "spec.replication.repair: must be true or false";
    }
  }
  return "";
}

v1::Replication replicationOf(const json& spec) {
  v1::Replication out;
  out.set_repair(true);
  const json r = spec.value("replication", json::object());
  if (r.value("writes", "") == "local-zone") out.set_writes(v1::WRITES_LOCAL_ZONE);
  std::string wait = r.value("wait", "local");
  out.set_wait(wait == "all" ? v1::WAIT_ALL : wait == "quorum" ? v1::WAIT_QUORUM : v1::WAIT_LOCAL);
  for (const auto& v : r.value("readFailover", json::array())) {
    if (v == "miss") out.set_failover_on_miss(true);
  }
  out.set_repair(r.value("repair", true));
  return out;
}

struct Endpoint {
  std::string address;
  uint32_t port;
};

// The ready endpoints of `service` by zone, merged over its slices and de-duplicated.
std::map<std::string, std::vector<Endpoint>> endpointsOf(
    const std::string& ns, const std::string& service, const json& port_spec,
    const std::map<std::string, json>& slices) {
  std::map<std::string, std::set<std::pair<std::string, uint32_t>>> seen;
  for (const auto& [key, slice] : slices) {
    const json meta = slice.value("metadata", json::object());
    if (meta.value("namespace", "") != ns) continue;
    if (meta.value("labels", json::object()).value("kubernetes.io/service-name", "") != service)
      continue;
    std::string type = slice.value("addressType", "IPv4");
    if (type != "IPv4" && type != "IPv6") continue;  // FQDN slices: the proxy wants IPs
    // The port, by name or number, from this slice's ports.
    uint32_t port = 0;
    for (const auto& p : slice.value("ports", json::array())) {
      bool match = port_spec.is_string() ? p.value("name", "") == port_spec.get<std::string>()
                   : port_spec.is_number_integer() ? p.value("port", 0) == port_spec.get<int>()
                                                   : true;  // unset: the first port
      if (match && p.contains("port") && p["port"].is_number_integer()) {
        port = p["port"].get<uint32_t>();
        break;
      }
    }
    if (port == 0 && port_spec.is_number_integer()) port = port_spec.get<uint32_t>();
    if (port == 0 || port > 65535) continue;
    for (const auto& ep : slice.value("endpoints", json::array())) {
      const json cond = ep.value("conditions", json::object());
      // Ready when true or absent (unknown); terminating endpoints leave the ring.
      if (cond.contains("ready") && cond["ready"] == false) continue;
      if (cond.value("terminating", false)) continue;
      const json addresses = ep.value("addresses", json::array());
      if (addresses.empty() || !addresses[0].is_string()) continue;
      std::string zone = ep.value("zone", "");
      if (zone.empty()) zone = kUnknownZone;
      seen[zone].insert({addresses[0].get<std::string>(), port});
    }
  }
  std::map<std::string, std::vector<Endpoint>> out;
  for (auto& [zone, set] : seen) {
    for (const auto& [address, port] : set) out[zone].push_back({address, port});
  }
  return out;
}

}  // namespace

ClusterModel buildClusterModel(const std::map<std::string, json>& pools,
                               const std::map<std::string, json>& slices,
                               std::map<std::string, json>& last_good) {
  ClusterModel model;
  v1::fillDefaultSettings(model.snapshot);
  std::set<std::string> prefixes_taken;
  // Keys are "namespace/name": a stable order, so equal inputs give an equal snapshot.
  for (const auto& [key, cr] : pools) {
    PoolOutcome outcome;
    outcome.key = key;
    const json meta = cr.value("metadata", json::object());
    outcome.generation = meta.value("generation", int64_t{0});
    json spec = cr.value("spec", json::object());
    std::string error = validate(spec);
    outcome.valid = error.empty();
    if (outcome.valid) {
      last_good[key] = spec;
    } else {
      outcome.reason = "InvalidSpec";
      outcome.message = error;
      auto it = last_good.find(key);
      if (it == last_good.end()) {
        model.pools.push_back(std::move(outcome));
        continue;
      }
      spec = it->second;  // keep serving what was valid before
    }
    std::string ns = meta.value("namespace", "");
    auto zones =
        endpointsOf(ns, spec["service"].get<std::string>(), spec.value("port", json()), slices);
    v1::Pool pool;
    pool.set_name(meta.value("name", ""));
    pool.set_hash("ketama");
    *pool.mutable_replication() = replicationOf(spec);
    std::vector<std::string> order;
    if (spec.contains("zones") && !spec["zones"].empty()) {
      for (const auto& z : spec["zones"]) order.push_back(z.get<std::string>());
    } else {
      for (const auto& [zone, eps] : zones) order.push_back(zone);
    }
    for (const std::string& zone : order) {
      auto it = zones.find(zone);
      int count = it == zones.end() ? 0 : static_cast<int>(it->second.size());
      outcome.ready_backends.push_back({zone, count});
      if (count == 0) continue;
      v1::Zone* z = pool.add_zones();
      z->set_zone(zone);
      for (const Endpoint& ep : it->second) {
        v1::Backend* b = z->add_backends();
        b->set_address(ep.address);
        b->set_port(ep.port);
        b->set_weight(1);
      }
    }
    if (pool.zones_size() == 0) {
      if (outcome.valid) {
        outcome.reason = "NoReadyBackends";
        outcome.message = "no ready endpoints of Service " + spec["service"].get<std::string>();
      }
      model.pools.push_back(std::move(outcome));
      continue;
    }
    std::vector<std::string> prefixes;
    for (const auto& p : spec.value("prefixes", json::array()))
      prefixes.push_back(p.get<std::string>());
    if (prefixes.empty()) prefixes.push_back("");  // no prefixes: the default pool
    std::string conflict;
    for (const auto& p : prefixes) {
      if (prefixes_taken.count(p)) conflict = p;
    }
    if (!conflict.empty()) {
      if (outcome.valid) {
        outcome.valid = false;
        outcome.reason = "PrefixConflict";
        outcome.message = "prefix \"" + conflict + "\" is already routed to another ReplicatedPool";
      }
      model.pools.push_back(std::move(outcome));
      continue;
    }
    for (const auto& p : prefixes) {
      prefixes_taken.insert(p);
      v1::Route* route = model.snapshot.add_routes();
      route->set_prefix(p);
      route->set_pool(pool.name());
    }
    *model.snapshot.add_pools() = std::move(pool);
    outcome.in_snapshot = true;
    model.pools.push_back(std::move(outcome));
  }
  // Forget last-good specs of ReplicatedPools that no longer exist.
  for (auto it = last_good.begin(); it != last_good.end();) {
    it = pools.count(it->first) ? std::next(it) : last_good.erase(it);
  }
  model.snapshot.set_version(v1::snapshotVersion(model.snapshot));
  return model;
}

}  // namespace memzone::controlplane::model
