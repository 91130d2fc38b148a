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
  if (spec.contains("hashBy") && spec["hashBy"] != "name" && spec["hashBy"] != "address") {
    return "spec.hashBy: must be name or address";
  }
  for (const char* window : {"warmup", "migration"}) {
    if (!spec.contains(window)) continue;
    const json& w = spec[window];
    if (!w.is_object() || !w.contains("durationMs") || !w["durationMs"].is_number_unsigned() ||
        w["durationMs"].get<uint64_t>() > 86400000) {
      return std::string("spec.") + window +
             ".durationMs: required, milliseconds from 0 (off) to 86400000";
    }
  }
  if (spec.contains("addressType") && spec["addressType"] != "IPv4" &&
      spec["addressType"] != "IPv6") {
    return "spec.addressType: must be IPv4 or IPv6";
  }
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
  if (spec.contains("tls")) {
    const json& t = spec["tls"];
    if (!t.is_object()) return "spec.tls: must be an object";
    for (const char* key : {"enabled", "verify"}) {
      if (t.contains(key) && !t[key].is_boolean()) {
        return std::string("spec.tls.") + key + ": must be true or false";
      }
    }
    for (const char* key : {"caFile", "certFile", "keyFile", "serverName"}) {
      if (t.contains(key) && !t[key].is_string()) {
        return std::string("spec.tls.") + key + ": must be a string";
      }
    }
    if (t.contains("certFile") != t.contains("keyFile")) {
      return "spec.tls: certFile and keyFile go together";
    }
  }
  return "";
}

// Backend TLS (memcached -Z): paths are files on the proxies' hosts (mounted Secrets).
void tlsOf(const json& spec, v1::Pool& pool) {
  const json t = spec.value("tls", json::object());
  if (t.empty() || !t.value("enabled", true)) return;
  v1::BackendTls* out = pool.mutable_tls();
  out->set_enabled(true);
  out->set_ca_file(t.value("caFile", ""));
  out->set_cert_file(t.value("certFile", ""));
  out->set_key_file(t.value("keyFile", ""));
  out->set_server_name(t.value("serverName", ""));
  out->set_skip_verify(!t.value("verify", true));
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
  std::string name;  // placement identity: "" = none known (the proxy places it by address)
};

// The stable name of an endpoint's pod: `hostname` (set for StatefulSet pods behind a
// headless Service: memcached-0, memcached-1, ...), else the pod's name (targetRef). A
// StatefulSet pod keeps both across restarts and rescheduling; a Deployment pod's name is new
// each time, which is no worse than its address.
std::string endpointName(const json& ep) {
  if (ep.contains("hostname") && ep["hostname"].is_string() &&
      !ep["hostname"].get<std::string>().empty()) {
    return ep["hostname"].get<std::string>();
  }
  const json ref = ep.value("targetRef", json::object());
  if (ref.is_object() && ref.value("kind", "Pod") == "Pod" && ref.contains("name") &&
      ref["name"].is_string()) {
    return ref["name"].get<std::string>();
  }
  return "";
}

// The Service port `port_spec` names (by name, by number, or the first when unset), resolved
// to the name its EndpointSlice ports carry. Returns "" when it resolves, else the reason's
// message; `reason` is set alongside.
struct PortChoice {
  std::string slice_port_name;  // the Service port's name ("" for a single unnamed port)
  uint32_t fixed_port = 0;      // a Service without ports: spec.port is the pods' port
};

std::string resolvePort(const json& service, const json& port_spec, const std::string& name,
                        PortChoice& out, std::string& reason) {
  const json spec = service.value("spec", json::object());
  const json ports = spec.value("ports", json::array());
  if (!ports.is_array() || ports.empty()) {
    // A headless Service without ports: its slices list none either; only a number can say.
    if (port_spec.is_number_integer()) {
      out.fixed_port = port_spec.get<uint32_t>();
      return "";
    }
    reason = "PortNotFound";
    return "Service " + name + " has no ports; set spec.port to the pods' port number";
  }
  for (const auto& p : ports) {
    if (!p.is_object()) continue;
    bool match = port_spec.is_string() ? p.value("name", "") == port_spec.get<std::string>()
                 : port_spec.is_number_integer() ? p.value("port", 0) == port_spec.get<int>()
                                                 : true;  // unset: the first port
    if (match) {
      out.slice_port_name = p.value("name", "");
      return "";
    }
  }
  reason = "PortNotFound";
  return "Service " + name + " has no port " +
         (port_spec.is_string() ? "named " + port_spec.get<std::string>()
                                : std::to_string(port_spec.get<int>()));
}

// Who an endpoint is: its pod (targetRef), else its first address.
std::string endpointIdentity(const json& ep, const std::string& address) {
  const json ref = ep.value("targetRef", json::object());
  if (ref.is_object() && ref.contains("name") && ref["name"].is_string()) {
    return ref.value("kind", "") + "/" + ref.value("namespace", "") + "/" +
           ref["name"].get<std::string>();
  }
  return "address/" + address;
}

// The ready endpoints of `service` by zone, merged over its slices of one address family and
// counted once per pod.
std::map<std::string, std::vector<Endpoint>> endpointsOf(
    const std::string& ns, const std::string& service, const std::string& address_type,
    const PortChoice& port_choice, const std::map<std::string, json>& slices) {
  // zone -> (address, port) -> name: ordered, so equal inputs give an equal snapshot.
  std::map<std::string, std::map<std::pair<std::string, uint32_t>, std::string>> seen;
  std::set<std::string> pods;
  for (const auto& [key, slice] : slices) {
    const json meta = slice.value("metadata", json::object());
    if (meta.value("namespace", "") != ns) continue;
    if (meta.value("labels", json::object()).value("kubernetes.io/service-name", "") != service)
      continue;
    if (slice.value("addressType", "IPv4") != address_type) continue;  // and never FQDN
    uint32_t port = port_choice.fixed_port;
    if (port == 0) {
      const json ports = slice.value("ports", json::array());
      for (const auto& p : ports.is_array() ? ports : json::array()) {
        if (!p.is_object() || p.value("name", "") != port_choice.slice_port_name) continue;
        if (p.contains("port") && p["port"].is_number_integer()) port = p["port"].get<uint32_t>();
        break;
      }
    }
    if (port == 0 || port > 65535) continue;
    for (const auto& ep : slice.value("endpoints", json::array())) {
      if (!ep.is_object()) continue;
      const json cond = ep.value("conditions", json::object());
      // Ready when true or absent (unknown); terminating endpoints leave the ring.
      if (cond.contains("ready") && cond["ready"] == false) continue;
      if (cond.value("terminating", false)) continue;
      const json addresses = ep.value("addresses", json::array());
      if (!addresses.is_array() || addresses.empty() || !addresses[0].is_string()) continue;
      std::string address = addresses[0].get<std::string>();
      // One pod, one ring entry: a pod can sit in two slices while they are rebalanced.
      if (!pods.insert(endpointIdentity(ep, address)).second) continue;
      std::string zone = ep.value("zone", "");
      if (zone.empty()) zone = kUnknownZone;
      seen[zone].emplace(std::make_pair(address, port), endpointName(ep));
    }
  }
  std::map<std::string, std::vector<Endpoint>> out;
  for (auto& [zone, set] : seen) {
    std::set<std::string> names;  // two endpoints of one name (cannot happen in one
                                  // namespace): the later ones fall back to their address
    for (const auto& [where, name] : set) {
      bool unique = !name.empty() && names.insert(name).second;
      out[zone].push_back({where.first, where.second, unique ? name : std::string()});
    }
  }
  return out;
}

}  // namespace

ClusterModel buildClusterModel(const ClusterObjects& objects,
                               std::map<std::string, json>& last_good) {
  ClusterModel model;
  v1::fillDefaultSettings(model.snapshot);
  std::set<std::string> prefixes_taken;
  // Keys are "namespace/name": a stable order, so equal inputs give an equal snapshot.
  for (const auto& [key, cr] : objects.pools) {
    PoolOutcome outcome;
    outcome.key = key;
    const json meta = cr.value("metadata", json::object());
    outcome.name = meta.value("name", "");
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
    std::string service = spec["service"].get<std::string>();
    std::string address_type = spec.value("addressType", "IPv4");

    // Routes first: a pool that cannot serve still owns its prefixes (its keys must not fall
    // through to another pool's servers).
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

    std::map<std::string, std::vector<Endpoint>> zones;
    std::string not_serving_reason, not_serving_message;
    auto svc = objects.services.find(ns + "/" + service);
    if (svc == objects.services.end()) {
      not_serving_reason = "ServiceNotFound";
      not_serving_message = "Service " + service + " not found in namespace " + ns;
    } else {
      PortChoice port;
      not_serving_message =
          resolvePort(svc->second, spec.value("port", json()), service, port, not_serving_reason);
      if (not_serving_message.empty()) {
        zones = endpointsOf(ns, service, address_type, port, objects.slices);
        not_serving_reason = "NoReadyBackends";
        not_serving_message = "no ready " + address_type + " endpoints of Service " + service;
      }
    }
    v1::Pool pool;
    pool.set_name(outcome.name);
    pool.set_hash("ketama");
    pool.set_hash_by(spec.value("hashBy", "name"));
    // Unset windows stay unset: the proxy applies the default (on for multi-zone pools).
    if (spec.contains("warmup")) {
      pool.mutable_warmup()->set_duration_ms(spec["warmup"]["durationMs"].get<uint32_t>());
    }
    if (spec.contains("migration")) {
      pool.mutable_migration()->set_duration_ms(spec["migration"]["durationMs"].get<uint32_t>());
    }
    *pool.mutable_replication() = replicationOf(spec);
    tlsOf(spec, pool);
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
        b->set_name(ep.name);
      }
    }
    outcome.serving = pool.zones_size() > 0;
    if (!outcome.serving && outcome.valid) {
      outcome.reason = not_serving_reason;
      outcome.message = not_serving_message;
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
    it = objects.pools.count(it->first) ? std::next(it) : last_good.erase(it);
  }
  model.snapshot.set_version(v1::snapshotVersion(model.snapshot));
  return model;
}

}  // namespace memzone::controlplane::model
