// Client-side counters of one worker; summed over workers for `stats` and /metrics.
#pragma once

#include <array>

#include "proxy/metrics/counter.h"
#include "proxy/protocol/command.h"

namespace memzone::server {

struct ProxyStats {
  std::array<metrics::Counter, protocol::kCommandCount> commands;
  metrics::Counter get_hits;
  metrics::Counter get_misses;
  metrics::Counter client_errors;  // requests answered with ERROR/CLIENT_ERROR by the parser
  metrics::Counter server_errors;  // requests answered with SERVER_ERROR (backend failures)
  metrics::Counter curr_connections;
  metrics::Counter total_connections;
  metrics::Counter rejected_connections;
  metrics::Counter bytes_read;
  metrics::Counter bytes_written;
};

}  // namespace memzone::server
