#include "memzone/v1/topology_yaml.h"

#include <arpa/inet.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace memzone::v1 {
namespace {

// Defaults live here, beside the schema (the proto's zero values mean "unset").
constexpr uint32_t kConnectMs = 200, kRequestMs = 250;
constexpr uint32_t kFailureLimit = 3, kDownRetryMs = 1000, kMaxDownRetryMs = 4000,
                   kCheckIntervalMs = 1000;
constexpr uint32_t kQueueLimit = 10000, kOverflowHoldMs = 60000, kReadHoldMs = 6000;

// Placement names: what Kubernetes allows in a pod or host name, and '_'.
bool validServerName(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return false;
    }
  }
  return true;
}

bool validHostName(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.')) return false;
  }
  return true;
}

class Reader {
 public:
  Reader(const std::string& file, const YamlOptions& options) : file_(file), options_(options) {}

  void error(const YAML::Node& node, const std::string& field, const std::string& reason) {
    error(node.Mark().line >= 0 ? node.Mark().line + 1 : 0, field, reason);
  }
  void error(int line, const std::string& field, const std::string& reason) {
    errors_.push_back(file_ + ":" + std::to_string(line) + ": " + field + ": " + reason);
  }

  bool expectMap(const YAML::Node& node, const std::string& field,
                 std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      error(node, field.empty() ? "topology" : field, "must be a mapping");
      return false;
    }
    for (const auto& kv : node) {
      std::string key = kv.first.as<std::string>("");
      bool known = false;
      for (auto a : allowed) known |= (a == key);
      if (!known) error(kv.first, field.empty() ? key : field + "." + key, "unknown field");
    }
    return true;
  }

  bool readString(const YAML::Node& node, const std::string& field, std::string& out) {
    if (!node.IsScalar()) {
      error(node, field, "must be a string");
      return false;
    }
    out = node.Scalar();
    return true;
  }

  bool readBool(const YAML::Node& node, const std::string& field, bool& out) {
    if (!node.IsScalar() || (node.Scalar() != "true" && node.Scalar() != "false")) {
      error(node, field, "must be true or false");
      return false;
    }
    out = node.Scalar() == "true";
    return true;
  }

  // Reads `node[key]` into `out` if present, else leaves `fallback` there.
  void readUint(const YAML::Node& parent, const char* key, const std::string& field,
                uint32_t fallback, uint32_t min, uint32_t max, uint32_t& out) {
    out = fallback;
    if (!parent || !parent.IsMap()) return;
    const YAML::Node node = parent[key];
    if (!node) return;
    uint64_t value = 0;
    const std::string& s = node.IsScalar() ? node.Scalar() : std::string();
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (!node.IsScalar() || s.empty() || ec != std::errc() || ptr != s.data() + s.size() ||
        value < min || value > max) {
      error(node, field,
            "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return;
    }
    out = static_cast<uint32_t>(value);
  }

  void readReplication(const YAML::Node& node, const std::string& field, Replication& out) {
    out.set_repair(true);
    if (!node) return;
    if (!expectMap(node, field, {"writes", "wait", "readFailover", "repair"})) return;
    std::string s;
    if (node["writes"] && readString(node["writes"], field + ".writes", s)) {
      if (s == "all-zones") {
        out.set_writes(WRITES_ALL_ZONES);
      } else if (s == "local-zone") {
        out.set_writes(WRITES_LOCAL_ZONE);
      } else {
        error(node["writes"], field + ".writes", "must be all-zones or local-zone, not " + s);
      }
    }
    if (node["wait"] && readString(node["wait"], field + ".wait", s)) {
      if (s == "local") {
        out.set_wait(WAIT_LOCAL);
      } else if (s == "all") {
        out.set_wait(WAIT_ALL);
      } else if (s == "quorum") {
        out.set_wait(WAIT_QUORUM);
      } else {
        error(node["wait"], field + ".wait", "must be local, all or quorum, not " + s);
      }
    }
    if (const YAML::Node f = node["readFailover"]) {
      if (!f.IsSequence()) {
        error(f, field + ".readFailover", "must be a list: [error] or [error, miss]");
      } else {
        bool has_error = false;
        for (const auto& item : f) {
          std::string v = item.IsScalar() ? item.Scalar() : "";
          if (v == "error") {
            has_error = true;
          } else if (v == "miss") {
            out.set_failover_on_miss(true);
          } else {
            error(item, field + ".readFailover", "unknown reason \"" + v + "\" (error, miss)");
          }
        }
        if (!has_error) error(f, field + ".readFailover", "must include error");
      }
    }
    bool repair = true;
    if (node["repair"] && readBool(node["repair"], field + ".repair", repair)) {
      out.set_repair(repair);
    }
  }

  void readServer(const YAML::Node& node, const std::string& field, Zone& zone,
                  std::set<std::string>& seen, std::set<std::string>& names) {
    std::string address, name;
    uint32_t weight = 1;
    if (node.IsScalar()) {
      address = node.Scalar();
    } else if (expectMap(node, field, {"address", "name", "weight"})) {
      if (!node["address"]) {
        error(node, field + ".address", "is required");
        return;
      }
      readString(node["address"], field + ".address", address);
      if (node["name"] && readString(node["name"], field + ".name", name)) {
        if (!validServerName(name)) {
          error(
              node["name"], field + ".name",
              "must be 1-253 characters of letters, digits, '-', '.' or '_', not \"" + name + "\"");
          return;
        }
        if (!names.insert(name).second) {
          error(node["name"], field + ".name", "duplicate server name " + name + " in the zone");
          return;
        }
      }
      readUint(node, "weight", field + ".weight", 1, 1, 1000, weight);
    } else {
      return;
    }
    Backend backend;
    if (!parseAddress(address, backend)) {
      error(node, field,
            "bad server address \"" + address + "\" (want " +
                (options_.numeric_addresses_only ? "numeric IP:port" : "host:port") + ")");
      return;
    }
    if (!seen.insert(backendAddress(backend)).second) {
      error(node, field, "duplicate server " + address);
      return;
    }
    backend.set_weight(weight);
    backend.set_name(name);
    *zone.add_backends() = std::move(backend);
  }

  // warmup / migration: {durationMs: N}; absent = the default (left unset in the snapshot).
  void readWindow(const YAML::Node& node, const std::string& field, Window* out) {
    if (!expectMap(node, field, {"durationMs"})) return;
    uint32_t v = 0;
    if (!node["durationMs"]) {
      error(node, field + ".durationMs", "is required (0 turns it off)");
      return;
    }
    readUint(node, "durationMs", field + ".durationMs", 0, 0, 86400000, v);
    out->set_duration_ms(v);
  }

  bool parseAddress(const std::string& address, Backend& out) {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) return false;
    std::string host = address.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    unsigned port = 0;
    auto [ptr, ec] =
        std::from_chars(address.data() + colon + 1, address.data() + address.size(), port);
    if (ec != std::errc() || ptr != address.data() + address.size() || port == 0 || port > 65535) {
      return false;
    }
    in_addr v4;
    in6_addr v6;
    bool numeric =
        inet_pton(AF_INET, host.c_str(), &v4) == 1 || inet_pton(AF_INET6, host.c_str(), &v6) == 1;
    if (!numeric && (options_.numeric_addresses_only || !validHostName(host))) return false;
    out.set_address(host);
    out.set_port(port);
    return true;
  }

  // tls: {enabled, caFile, certFile, keyFile, serverName, verify}. Only an enabled block is
  // carried (a disabled one is the same topology as none: same version).
  void readBackendTls(const YAML::Node& node, const std::string& field, Pool& pool) {
    if (!expectMap(node, field,
                   {"enabled", "caFile", "certFile", "keyFile", "serverName", "verify"})) {
      return;
    }
    bool enabled = true;
    if (node["enabled"]) readBool(node["enabled"], field + ".enabled", enabled);
    BackendTls tls;
    std::string s;
    if (node["caFile"] && readString(node["caFile"], field + ".caFile", s)) tls.set_ca_file(s);
    if (node["certFile"] && readString(node["certFile"], field + ".certFile", s)) {
      tls.set_cert_file(s);
    }
    if (node["keyFile"] && readString(node["keyFile"], field + ".keyFile", s)) tls.set_key_file(s);
    if (node["serverName"] && readString(node["serverName"], field + ".serverName", s)) {
      if (!s.empty() && !validHostName(s)) {
        error(node["serverName"], field + ".serverName", "must be a DNS name, not \"" + s + "\"");
      }
      tls.set_server_name(s);
    }
    bool verify = true;
    if (node["verify"] && readBool(node["verify"], field + ".verify", verify)) {
      tls.set_skip_verify(!verify);
    }
    if (tls.cert_file().empty() != tls.key_file().empty()) {
      error(node, field, "certFile and keyFile go together");
    }
    if (!enabled) return;
    tls.set_enabled(true);
    *pool.mutable_tls() = std::move(tls);
  }

  void readPool(const YAML::Node& node, const std::string& field, TopologySnapshot& out) {
    if (!expectMap(
            node, field,
            {"name", "zones", "hash", "hashBy", "replication", "warmup", "migration", "tls"})) {
      return;
    }
    Pool pool;
    std::string s;
    if (!node["name"]) {
      error(node, field + ".name", "is required");
    } else if (readString(node["name"], field + ".name", s)) {
      if (s.empty()) error(node["name"], field + ".name", "must not be empty");
      if (!pool_names_.insert(s).second)
        error(node["name"], field + ".name", "duplicate pool " + s);
      pool.set_name(s);
    }
    pool.set_hash("ketama");
    if (node["hash"] && readString(node["hash"], field + ".hash", s) && s != "ketama") {
      error(node["hash"], field + ".hash", "must be ketama");
    }
    if (node["hashBy"] && readString(node["hashBy"], field + ".hashBy", s)) {
      if (s != "name" && s != "address") {
        error(node["hashBy"], field + ".hashBy", "must be name or address, not " + s);
      }
      pool.set_hash_by(s);
    }
    if (node["warmup"]) readWindow(node["warmup"], field + ".warmup", pool.mutable_warmup());
    if (node["migration"]) {
      readWindow(node["migration"], field + ".migration", pool.mutable_migration());
    }
    readReplication(node["replication"], field + ".replication", *pool.mutable_replication());
    if (node["tls"]) readBackendTls(node["tls"], field + ".tls", pool);
    const YAML::Node zones = node["zones"];
    if (!zones) {
      error(node, field + ".zones", "is required");
    } else if (!zones.IsMap() || zones.size() == 0) {
      error(zones, field + ".zones", "must map zone names to lists of servers");
    } else {
      std::set<std::string> seen;  // a server serves one zone of a pool
      for (const auto& kv : zones) {
        Zone* zone = pool.add_zones();
        zone->set_zone(kv.first.as<std::string>(""));
        std::string zfield = field + ".zones." + zone->zone();
        if (!kv.second.IsSequence() || kv.second.size() == 0) {
          error(kv.second, zfield, "must be a non-empty list of servers");
          continue;
        }
        size_t i = 0;
        std::set<std::string> names;  // placement names are unique within a zone's ring
        for (const auto& server : kv.second) {
          readServer(server, zfield + "[" + std::to_string(i++) + "]", *zone, seen, names);
        }
      }
    }
    *out.add_pools() = std::move(pool);
  }

  void readRoutes(const YAML::Node& routes, TopologySnapshot& out) {
    if (!routes.IsSequence()) {
      error(routes, "routes", "must be a list");
      return;
    }
    std::set<std::string> prefixes;
    size_t i = 0;
    for (const auto& r : routes) {
      std::string field = "routes[" + std::to_string(i++) + "]";
      if (!expectMap(r, field, {"prefix", "pool"})) continue;
      Route route;
      std::string s;
      if (r["prefix"] && readString(r["prefix"], field + ".prefix", s)) route.set_prefix(s);
      if (!prefixes.insert(route.prefix()).second) {
        error(r, field + ".prefix", "duplicate prefix \"" + route.prefix() + "\"");
      }
      if (!r["pool"]) {
        error(r, field + ".pool", "is required");
        continue;
      }
      if (readString(r["pool"], field + ".pool", s)) {
        route.set_pool(s);
        if (!pool_names_.count(s)) error(r["pool"], field + ".pool", "no pool named \"" + s + "\"");
      }
      *out.add_routes() = std::move(route);
    }
  }

  void readRoot(const YAML::Node& root, TopologySnapshot& out) {
    if (!expectMap(root, "",
                   {"pools", "routes", "timeouts", "health", "consistency", "allowFlushAll"})) {
      return;
    }
    const YAML::Node pools = root["pools"];
    if (!pools) {
      error(root, "pools", "is required");
    } else if (!pools.IsSequence() || pools.size() == 0) {
      error(pools, "pools", "must be a non-empty list");
    } else {
      size_t i = 0;
      for (const auto& p : pools) readPool(p, "pools[" + std::to_string(i++) + "]", out);
    }
    if (const YAML::Node routes = root["routes"]) readRoutes(routes, out);

    YAML::Node t = root["timeouts"];
    if (t) expectMap(t, "timeouts", {"connectMs", "requestMs"});
    Timeouts* timeouts = out.mutable_timeouts();
    uint32_t v;
    readUint(t, "connectMs", "timeouts.connectMs", kConnectMs, 1, 60000, v);
    timeouts->set_connect_ms(v);
    readUint(t, "requestMs", "timeouts.requestMs", kRequestMs, 1, 60000, v);
    timeouts->set_request_ms(v);

    YAML::Node h = root["health"];
    if (h)
      expectMap(h, "health", {"failureLimit", "downRetryMs", "maxDownRetryMs", "checkIntervalMs"});
    Health* health = out.mutable_health();
    readUint(h, "failureLimit", "health.failureLimit", kFailureLimit, 1, 1000, v);
    health->set_failure_limit(v);
    readUint(h, "downRetryMs", "health.downRetryMs", kDownRetryMs, 10, 600000, v);
    health->set_down_retry_ms(v);
    readUint(h, "maxDownRetryMs", "health.maxDownRetryMs", kMaxDownRetryMs, 10, 600000, v);
    health->set_max_down_retry_ms(v);
    readUint(h, "checkIntervalMs", "health.checkIntervalMs", kCheckIntervalMs, 0, 600000, v);
    health->set_check_interval_ms(v);

    YAML::Node c = root["consistency"];
    if (c) expectMap(c, "consistency", {"invalidationQueueLimit", "overflowHoldMs", "readHoldMs"});
    Consistency* consistency = out.mutable_consistency();
    readUint(c, "invalidationQueueLimit", "consistency.invalidationQueueLimit", kQueueLimit, 1,
             10000000, v);
    consistency->set_invalidation_queue_limit(v);
    readUint(c, "overflowHoldMs", "consistency.overflowHoldMs", kOverflowHoldMs, 0, 86400000, v);
    consistency->set_overflow_hold_ms(v);
    readUint(c, "readHoldMs", "consistency.readHoldMs", kReadHoldMs, 0, 3600000, v);
    consistency->set_read_hold_ms(v);
    // The hold must outlast how late another proxy can notice the server is back (its next
    // probe: at most maxDownRetryMs plus 20% jitter) and replay what it owes (a connect and
    // a round trip).
    uint64_t needed = uint64_t{health->max_down_retry_ms()} * 6 / 5 + timeouts->connect_ms() +
                      timeouts->request_ms();
    if (!(c && c["readHoldMs"]) && v < needed) {
      v = static_cast<uint32_t>(needed);  // the default follows longer retries or timeouts
      consistency->set_read_hold_ms(v);
    } else if (v != 0 && v < needed) {
      YAML::Node at = c && c["readHoldMs"]       ? c["readHoldMs"]
                      : h && h["maxDownRetryMs"] ? h["maxDownRetryMs"]
                                                 : root;
      error(at, "consistency.readHoldMs",
            "must be 0 (off) or at least 1.2 x health.maxDownRetryMs + timeouts.connectMs + "
            "timeouts.requestMs = " +
                std::to_string(needed) +
                " ms: a shorter hold can end before another proxy has noticed the server is "
                "back and replayed the deletes it owes it");
    }

    bool allow = false;
    if (root["allowFlushAll"] && readBool(root["allowFlushAll"], "allowFlushAll", allow)) {
      out.set_allow_flush_all(allow);
    }
  }

  std::vector<std::string> errors_;

 private:
  std::string file_;
  YamlOptions options_;
  std::set<std::string> pool_names_;
};

}  // namespace

YamlTopologyResult parseTopologyYaml(const std::string& text, const std::string& file_name,
                                     const YamlOptions& options) {
  YamlTopologyResult result;
  Reader reader(file_name, options);
  YAML::Node root;
  try {
    root = YAML::Load(text);
    reader.readRoot(root, result.snapshot);
  } catch (const YAML::Exception& e) {
    reader.errors_.push_back(file_name + ":" + std::to_string(e.mark.line + 1) +
                             ": yaml: " + e.msg);
  }
  result.errors = std::move(reader.errors_);
  if (result.errors.empty()) result.snapshot.set_version(snapshotVersion(result.snapshot));
  return result;
}

YamlTopologyResult loadTopologyYaml(const std::string& path, const YamlOptions& options) {
  std::ifstream in(path);
  if (!in) {
    YamlTopologyResult result;
    result.errors.push_back(path + ":0: file: cannot be read");
    return result;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parseTopologyYaml(buffer.str(), path, options);
}

void fillDefaultSettings(TopologySnapshot& snapshot) {
  snapshot.mutable_timeouts()->set_connect_ms(kConnectMs);
  snapshot.mutable_timeouts()->set_request_ms(kRequestMs);
  Health* h = snapshot.mutable_health();
  h->set_failure_limit(kFailureLimit);
  h->set_down_retry_ms(kDownRetryMs);
  h->set_max_down_retry_ms(kMaxDownRetryMs);
  h->set_check_interval_ms(kCheckIntervalMs);
  Consistency* c = snapshot.mutable_consistency();
  c->set_invalidation_queue_limit(kQueueLimit);
  c->set_overflow_hold_ms(kOverflowHoldMs);
  c->set_read_hold_ms(kReadHoldMs);
}

std::string snapshotVersion(const TopologySnapshot& snapshot) {
  TopologySnapshot content = snapshot;
  content.clear_version();
  content.clear_nonce();
  content.clear_proxy_zone();
  content.clear_recent();
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    content.SerializeToCodedStream(&coded);
  }
  uint64_t hash = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  char version[17];
  snprintf(version, sizeof(version), "%016llx", static_cast<unsigned long long>(hash));
  return version;
}

std::string backendAddress(const Backend& backend) {
  bool v6 = backend.address().find(':') != std::string::npos;
  return (v6 ? "[" + backend.address() + "]" : backend.address()) + ":" +
         std::to_string(backend.port());
}

}  // namespace memzone::v1
