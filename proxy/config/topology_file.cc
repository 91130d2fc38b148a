#include "proxy/config/topology_file.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

namespace memzone::config {
namespace {

class Reader {
 public:
  explicit Reader(const std::string& file) : file_(file) {}

  void error(const YAML::Node& node, const std::string& field, const std::string& reason) {
    int line = node.Mark().line >= 0 ? node.Mark().line + 1 : 0;
    errors_.push_back(file_ + ":" + std::to_string(line) + ": " + field + ": " + reason);
  }
  void error(int line, const std::string& field, const std::string& reason) {
    errors_.push_back(file_ + ":" + std::to_string(line) + ": " + field + ": " + reason);
  }

  bool expectMap(const YAML::Node& node, const std::string& field,
                 std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      error(node, field, "must be a mapping");
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

  bool readUint(const YAML::Node& node, const std::string& field, uint32_t& out, uint32_t min,
                uint32_t max) {
    uint64_t value = 0;
    const std::string& s = node.IsScalar() ? node.Scalar() : std::string();
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (!node.IsScalar() || s.empty() || ec != std::errc() || ptr != s.data() + s.size() ||
        value < min || value > max) {
      error(node, field,
            "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return false;
    }
    out = static_cast<uint32_t>(value);
    return true;
  }

  void readReplication(const YAML::Node& node, const std::string& field,
                       topology::ReplicationSpec& out) {
    if (!expectMap(node, field, {"writes", "wait", "readFailover", "repair"})) return;
    std::string s;
    if (node["writes"] && readString(node["writes"], field + ".writes", s)) {
      if (s == "all-zones") {
        out.writes = topology::WritePolicy::kAllZones;
      } else if (s == "local-zone") {
        out.writes = topology::WritePolicy::kLocalZone;
      } else {
        error(node["writes"], field + ".writes", "must be all-zones or local-zone, not " + s);
      }
    }
    if (node["wait"] && readString(node["wait"], field + ".wait", s)) {
      if (s == "local") {
        out.wait = topology::WaitPolicy::kLocal;
      } else if (s == "all") {
        out.wait = topology::WaitPolicy::kAll;
      } else if (s == "quorum") {
        out.wait = topology::WaitPolicy::kQuorum;
      } else {
        error(node["wait"], field + ".wait", "must be local, all or quorum, not " + s);
      }
    }
    if (const YAML::Node f = node["readFailover"]) {
      if (!f.IsSequence()) {
        error(f, field + ".readFailover", "must be a list: [error] or [error, miss]");
      } else {
        bool has_error = false;
        out.failover_on_miss = false;
        for (const auto& item : f) {
          std::string v = item.IsScalar() ? item.Scalar() : "";
          if (v == "error") {
            has_error = true;
          } else if (v == "miss") {
            out.failover_on_miss = true;
          } else {
            error(item, field + ".readFailover", "unknown reason \"" + v + "\" (error, miss)");
          }
        }
        if (!has_error) error(f, field + ".readFailover", "must include error");
      }
    }
    if (node["repair"]) readBool(node["repair"], field + ".repair", out.repair);
  }

  void readServer(const YAML::Node& node, const std::string& field, topology::ZoneSpec& zone) {
    topology::BackendSpec backend;
    if (node.IsScalar()) {
      backend.address = node.Scalar();
    } else if (expectMap(node, field, {"address", "weight"})) {
      if (!node["address"]) {
        error(node, field + ".address", "is required");
        return;
      }
      readString(node["address"], field + ".address", backend.address);
      if (node["weight"]) readUint(node["weight"], field + ".weight", backend.weight, 1, 1000);
    } else {
      return;
    }
    std::string host;
    uint16_t port;
    if (!topology::splitAddress(backend.address, host, port)) {
      error(node, field, "bad server address \"" + backend.address + "\" (want numeric IP:port)");
      return;
    }
    zone.backends.push_back(std::move(backend));
  }

  void readPool(const YAML::Node& node, const std::string& field, topology::TopologySpec& spec) {
    if (!expectMap(node, field, {"name", "zones", "hash", "replication"})) return;
    topology::PoolSpec pool;
    if (!node["name"]) {
      error(node, field + ".name", "is required");
    } else {
      readString(node["name"], field + ".name", pool.name);
    }
    if (node["hash"] && readString(node["hash"], field + ".hash", pool.hash) &&
        pool.hash != "ketama") {
      error(node["hash"], field + ".hash", "must be ketama");
    }
    if (node["replication"]) readReplication(node["replication"], field + ".replication", pool.replication);
    const YAML::Node zones = node["zones"];
    if (!zones) {
      error(node, field + ".zones", "is required");
    } else if (!zones.IsMap() || zones.size() == 0) {
      error(zones, field + ".zones", "must map zone names to lists of servers");
    } else {
      for (const auto& kv : zones) {
        topology::ZoneSpec zone;
        zone.zone = kv.first.as<std::string>("");
        std::string zfield = field + ".zones." + zone.zone;
        if (!kv.second.IsSequence() || kv.second.size() == 0) {
          error(kv.second, zfield, "must be a non-empty list of servers");
          continue;
        }
        size_t i = 0;
        for (const auto& server : kv.second) {
          readServer(server, zfield + "[" + std::to_string(i++) + "]", zone);
        }
        pool.zones.push_back(std::move(zone));
      }
    }
    spec.pools.push_back(std::move(pool));
  }

  void readRoot(const YAML::Node& root, topology::TopologySpec& spec) {
    if (!expectMap(root, "", {"pools", "routes", "timeouts", "health", "consistency", "allowFlushAll"})) return;
    const YAML::Node pools = root["pools"];
    if (!pools) {
      error(root, "pools", "is required");
    } else if (!pools.IsSequence() || pools.size() == 0) {
      error(pools, "pools", "must be a non-empty list");
    } else {
      for (size_t i = 0; i < pools.size(); ++i) readPool(pools[i], "pools[" + std::to_string(i) + "]", spec);
    }
    if (const YAML::Node routes = root["routes"]) {
      if (!routes.IsSequence()) {
        error(routes, "routes", "must be a list");
      } else {
        for (size_t i = 0; i < routes.size(); ++i) {
          std::string field = "routes[" + std::to_string(i) + "]";
          const YAML::Node r = routes[i];
          if (!expectMap(r, field, {"prefix", "pool"})) continue;
          topology::RouteSpec route;
          if (r["prefix"]) readString(r["prefix"], field + ".prefix", route.prefix);
          if (!r["pool"]) {
            error(r, field + ".pool", "is required");
            continue;
          }
          readString(r["pool"], field + ".pool", route.pool);
          route_lines_.push_back(r["pool"].Mark().line + 1);
          spec.routes.push_back(std::move(route));
        }
      }
    }
    if (const YAML::Node t = root["timeouts"]; t && expectMap(t, "timeouts", {"connectMs", "requestMs"})) {
      if (t["connectMs"]) readUint(t["connectMs"], "timeouts.connectMs", spec.connect_timeout_ms, 1, 60000);
      if (t["requestMs"]) readUint(t["requestMs"], "timeouts.requestMs", spec.request_timeout_ms, 1, 60000);
    }
    if (const YAML::Node h = root["health"];
        h && expectMap(h, "health", {"failureLimit", "downRetryMs", "maxDownRetryMs", "checkIntervalMs"})) {
      if (h["failureLimit"]) readUint(h["failureLimit"], "health.failureLimit", spec.health.failure_limit, 1, 1000);
      if (h["downRetryMs"]) readUint(h["downRetryMs"], "health.downRetryMs", spec.health.down_retry_ms, 10, 600000);
      if (h["maxDownRetryMs"]) readUint(h["maxDownRetryMs"], "health.maxDownRetryMs", spec.health.max_down_retry_ms, 10, 600000);
      if (h["checkIntervalMs"]) readUint(h["checkIntervalMs"], "health.checkIntervalMs", spec.health.check_interval_ms, 0, 600000);
    }
    if (const YAML::Node c = root["consistency"];
        c && expectMap(c, "consistency", {"invalidationQueueLimit", "overflowHoldMs", "readHoldMs"})) {
      auto& cs = spec.consistency;
      if (c["invalidationQueueLimit"]) readUint(c["invalidationQueueLimit"], "consistency.invalidationQueueLimit", cs.invalidation_queue_limit, 1, 10000000);
      if (c["overflowHoldMs"]) readUint(c["overflowHoldMs"], "consistency.overflowHoldMs", cs.overflow_hold_ms, 0, 86400000);
      if (c["readHoldMs"]) readUint(c["readHoldMs"], "consistency.readHoldMs", cs.read_hold_ms, 0, 3600000);
    }
    if (root["allowFlushAll"]) readBool(root["allowFlushAll"], "allowFlushAll", spec.allow_flush_all);
  }

  // Cross-field checks that need the whole file, reported at the line that is wrong.
  void crossCheck(const topology::TopologySpec& spec) {
    std::set<std::string> names;
    for (const auto& p : spec.pools) names.insert(p.name);
    for (size_t i = 0; i < spec.routes.size(); ++i) {
      if (!names.count(spec.routes[i].pool)) {
        error(route_lines_[i], "routes[" + std::to_string(i) + "].pool",
              "no pool named \"" + spec.routes[i].pool + "\"");
      }
    }
  }

  std::vector<std::string> errors_;

 private:
  std::string file_;
  std::vector<int> route_lines_;
};

}  // namespace

TopologyFileResult parseTopologyYaml(const std::string& text, const std::string& file_name) {
  TopologyFileResult result;
  Reader reader(file_name);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    result.errors.push_back(file_name + ":" + std::to_string(e.mark.line + 1) +
                            ": yaml: " + e.msg);
    return result;
  }
  try {
    reader.readRoot(root, result.spec);
    if (reader.errors_.empty()) reader.crossCheck(result.spec);
  } catch (const YAML::Exception& e) {
    reader.errors_.push_back(file_name + ":" + std::to_string(e.mark.line + 1) + ": yaml: " + e.msg);
  }
  result.errors = std::move(reader.errors_);
  // The version is the content's hash: it changes exactly when the file's content does.
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ull;
  char version[17];
  snprintf(version, sizeof(version), "%016llx", static_cast<unsigned long long>(hash));
  result.spec.version = version;
  if (result.errors.empty()) {
    topology::BuildResult built = topology::buildTopology(result.spec);
    if (!built.topology) result.errors.push_back(file_name + ":1: " + built.error);
  }
  return result;
}

TopologyFileResult loadTopologyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    TopologyFileResult result;
    result.errors.push_back(path + ":0: file: cannot be read");
    return result;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return parseTopologyYaml(buffer.str(), path);
}

}  // namespace memzone::config
