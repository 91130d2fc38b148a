// The proxy's answer to the memcached `stats` command: counters summed over all workers,
// in memcached's "STAT name value" form, memcached's names where one exists.
#pragma once

#include <atomic>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

#include "proxy/common/byte_buffer.h"
#include "proxy/rebalance/move_counters.h"
#include "proxy/tls/tls_contexts.h"

namespace memzone::server {

class Worker;

struct StatsContext {
  std::time_t started = 0;
  unsigned threads = 0;
  std::vector<const Worker*> workers;  // fixed before the workers start

  // Topology and controller state (rare writes, read at scrape).
  std::atomic<int64_t> last_applied_unix{0};
  std::atomic<uint64_t> nacks{0};
  std::atomic<int> controller_connected{-1};  // -1: no controller (static --config)
  // Consistency (server_board.h): servers the controller's dirty set holds, servers this
  // proxy owes invalidations to (as last reported).
  std::atomic<uint32_t> dirty_servers{0};
  std::atomic<uint32_t> owed_servers{0};
  std::atomic<bool> draining{false};
  bool per_backend_metrics = false;       // fixed at start-up
  uint64_t max_connections = 0;           // fixed at start-up
  uint64_t max_buffer_memory = 0;         // fixed at start-up (the workers' shares, summed)
  std::shared_ptr<tls::TlsContexts> tls;  // fixed at start-up; certificate expiry, reloads
  std::shared_ptr<const rebalance::MoveCounters> moves;  // fixed at start-up; null: --move-keys off

  void setTopologyVersion(const std::string& v) {
    std::lock_guard<std::mutex> lock(mu);
    topology_version = v;
    last_applied_unix = std::time(nullptr);
  }
  std::string topologyVersion() {
    std::lock_guard<std::mutex> lock(mu);
    return topology_version;
  }

 private:
  std::mutex mu;  // `stats` and topology changes only, never the request path
  std::string topology_version;
};

void renderStats(StatsContext& context, ByteBuffer& out);

}  // namespace memzone::server
