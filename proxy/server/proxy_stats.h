// Client-side counters of one worker; summed over workers for `stats` and /metrics.
#pragma once

#include <array>
#include <string_view>

#include "proxy/metrics/counter.h"
#include "proxy/protocol/command.h"
#include "proxy/protocol/reply_result.h"

namespace memzone::server {

enum class FailoverReason : uint8_t {
  kError,        // the zone's server failed or timed out
  kMiss,         // the zone missed and readFailover includes miss
  kUnavailable,  // the zone's server was down, held or had invalidations pending: not asked
};
inline constexpr int kFailoverReasonCount = 3;

// Why the proxy closed a client connection (memzone_proxy_client_connections_closed_total).
enum class CloseReason : uint8_t {
  kClient,          // the client closed (FIN) or sent quit
  kError,           // the socket failed (reset, write error)
  kProtocol,        // a request memcached would close the connection for
  kPartialTimeout,  // an incomplete request outlived --partial-request-timeout-ms
  kMemory,          // cut off: it held the most buffer memory with the budget overrun
  kDrain,           // SIGTERM drain, at a request boundary
};
inline constexpr int kCloseReasonCount = 6;
inline std::string_view closeReasonName(CloseReason reason) {
  constexpr std::string_view kNames[kCloseReasonCount] = {
      "client", "error", "protocol", "partial_request_timeout", "memory", "drain"};
  return kNames[static_cast<int>(reason)];
}

// Request latency buckets, in microseconds: 25 µs doubling to 409.6 ms, then +Inf.
// memcached requests take tens of µs; the usual 5 ms-and-up defaults would see one bucket.
inline constexpr int kLatencyBuckets = 15;
inline constexpr uint64_t kLatencyFirstBucketUs = 25;
inline int latencyBucket(uint64_t us) {
  if (us <= kLatencyFirstBucketUs) return 0;
  uint64_t q = (us - 1) / kLatencyFirstBucketUs;
  int index = 64 - __builtin_clzll(q);
  return index < kLatencyBuckets ? index : kLatencyBuckets;  // kLatencyBuckets = +Inf
}

struct ProxyStats {
  std::array<metrics::Counter, protocol::kCommandCount> commands;
  metrics::Counter get_hits;
  metrics::Counter get_misses;
  metrics::Counter client_errors;  // requests answered with ERROR/CLIENT_ERROR by the parser
  metrics::Counter server_errors;  // requests answered with SERVER_ERROR (backend failures)
  metrics::Counter curr_connections;
  metrics::Counter total_connections;
  metrics::Counter rejected_connections;  // over --max-connections: told so and closed
  std::array<metrics::Counter, kCloseReasonCount> closed_connections;
  metrics::Counter accept_pauses;  // out of file descriptors: accepting paused briefly
  metrics::Counter bytes_read;
  metrics::Counter bytes_written;
  std::array<metrics::Counter, kFailoverReasonCount> read_failovers;
  metrics::Counter repairs_started;  // failover hits copied back to the local zone
  metrics::Counter repairs_stored;
  metrics::Counter repairs_skipped;  // the local zone had a value by then (never overwritten)
  metrics::Counter repairs_failed;
  // Writes whose reply waited for the controller's confirmation that every proxy knows the
  // failed copy's server is dirty (dirty_confirmation.h); and those the bound released.
  metrics::Counter writes_confirmation_waits;
  metrics::Counter writes_confirmation_timeouts;
  // requests by command and result, and their latency (from parse to reply ready)
  std::array<std::array<metrics::Counter, protocol::kRequestResultCount>, protocol::kCommandCount>
      results;
  std::array<metrics::Counter, kLatencyBuckets + 1> latency;
  metrics::Counter latency_sum_us;
};

}  // namespace memzone::server
