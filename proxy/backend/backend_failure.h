// Every way a backend request can fail, with its name (logs, counters) and the reply the
// client sees. A failure of the connection fails every request queued on it.
#pragma once

#include <cstdint>
#include <string_view>

namespace memzone::backend {

enum class BackendFailure : uint8_t {
  kTimeout,         // no reply within the request timeout
  kConnectFailed,   // connect() refused or unreachable
  kConnectTimeout,  // connect() did not complete within the connect timeout
  kDisconnected,    // the server closed the connection or a read/write failed
  kDesync,  // replies out of step with requests (extra, missing, wrong shape or opaque, garbage)
  kMarkedDown,    // failed fast: the server is marked down after repeated failures
  kQueueFull,     // failed fast: too many requests already queued on the connection
  kRemoved,       // the server left the topology before answering
  kUntrusted,     // not read: it may hold values older than acknowledged writes
  kOversized,     // replies held for delivery outgrew the connection's buffer limit
  kTlsHandshake,  // the TLS handshake failed or timed out (certificate, CA, name, protocol)
};
inline constexpr int kBackendFailureCount = static_cast<int>(BackendFailure::kTlsHandshake) + 1;

std::string_view failureName(BackendFailure failure);
// "SERVER_ERROR backend <name>\r\n"
std::string_view failureReply(BackendFailure failure);

}  // namespace memzone::backend
