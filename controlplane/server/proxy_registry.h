// Every proxy connected to this controller and where it stands: which version it applied,
// its last NACK and why, since when it is connected. Written by the stream reactors, read for
// logs, metrics and ReplicatedPool status. Any thread.
#pragma once

#include <cstdint>
#include <ctime>
#include <map>
#include <mutex>
#include <string>
#include <vector>

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
};

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

  std::vector<ProxyStatus> proxies() const;
  ProxyCounters counters() const;

 private:
  mutable std::mutex mu_;
  std::map<uint64_t, ProxyStatus> proxies_;
  ProxyCounters counters_;
  uint64_t next_id_ = 1;
};

}  // namespace memzone::controlplane
