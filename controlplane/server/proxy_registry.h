// Every proxy connected to this controller and where it stands: which version it applied,
// its last NACK and why, since when it is connected. Written by the stream reactors, read for
// logs, metrics and ReplicatedPool status. Any thread.
#pragma once

#include <cstdint>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "memzone/v1/topology.pb.h"

namespace memzone::controlplane {

struct ProxyStatus {
  std::string node_id;
  std::string node_name;
  std::string zone;
  std::string peer;
  std::time_t connected_since = 0;
  std::string applied_version;
  std::string last_nack_version;
  std::string last_nack_reason;
  uint64_t snapshots_sent = 0;
  bool reports_health = false;          // the proxy sends backend health
  std::set<std::string> backends_down;  // "address:port" it has down
  std::set<std::string> backends_owed;  // "address:port" it owes invalidations to
};

// Where the proxies stand against one served topology: what ReplicatedPool status reports.
// Summed over controller replicas (each knows only the proxies connected to it).
struct ProxyView {
  int total = 0;
  int acked = 0;   // applied the served version
  int nacked = 0;  // refused the served version (and serve an older one)
  // "pool/zone" -> proxies that applied the served version and report every backend of that
  // zone down.
  std::map<std::string, int> zones_down;

  void add(const ProxyView& other);
  bool operator==(const ProxyView&) const = default;
};

// One proxy as the replicas count it, keyed by memberKey(node id): a proxy that moved between
// replicas (or reconnected before its old stream was noticed gone) is counted once however
// many replicas still list it.
struct ProxyMember {
  enum class State : char { kPending = 'p', kAcked = 'a', kNacked = 'n' };
  State state = State::kPending;
  std::vector<std::string> zones_down;  // "pool/zone" it has wholly down (acked proxies only)
  bool operator==(const ProxyMember&) const = default;
};
using ProxyMembers = std::map<std::string, ProxyMember>;

// 16 hex digits (FNV-1a 64 of the node id): short enough for thousands in a Lease annotation.
std::string memberKey(const std::string& node_id);
ProxyView countMembers(const ProxyMembers& members);

struct ProxyCounters {
  uint64_t snapshots_sent = 0;
  uint64_t acks = 0;
  uint64_t nacks = 0;
};

class ProxyRegistry {
 public:
  uint64_t connected(ProxyStatus status);
  void disconnected(uint64_t id);
  void sent(uint64_t id, const std::string& version, const std::string& nonce);
  void acked(uint64_t id, const std::string& version);
  void nacked(uint64_t id, const std::string& version, const std::string& reason);
  // Backend health the proxy reported (every message of a proxy that reports carries it).
  void health(uint64_t id, const v1::TopologyRequest& request);

  // The proxies connected here, against `served` (null: nothing served yet), each counted
  // once (two streams of one node id: the newest).
  ProxyView view(const v1::TopologySnapshot* served) const;
  ProxyMembers members(const v1::TopologySnapshot* served) const;

  std::vector<ProxyStatus> proxies() const;
  ProxyCounters counters() const;

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, ProxyStatus> proxies_;
  ProxyCounters counters_;
  uint64_t next_id_ = 1;
};

}  // namespace memzone::controlplane
