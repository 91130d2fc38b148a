// TLS counters of one worker, one set for client connections and one for backend
// connections; summed over workers at scrape time.
#pragma once

#include <array>
#include <string_view>

#include "proxy/metrics/counter.h"

namespace memzone::tls {

enum class HandshakeResult : uint8_t {
  kOk,       // full handshake
  kResumed,  // session resumption (ticket or cache)
  kFailed,   // the peer's certificate, protocol or cipher was refused, or the peer left
  kTimeout,  // not finished in time (client: --tls-handshake-timeout-ms; backend: connectMs)
};
inline constexpr int kHandshakeResultCount = 4;
inline std::string_view handshakeResultName(HandshakeResult r) {
  constexpr std::string_view kNames[kHandshakeResultCount] = {"ok", "resumed", "failed", "timeout"};
  return kNames[static_cast<int>(r)];
}

struct TlsCounters {
  std::array<metrics::Counter, kHandshakeResultCount> handshakes;
  metrics::Counter connections;  // gauge: established TLS connections
  metrics::Counter handshaking;  // gauge: handshakes in progress
  void count(HandshakeResult r) { handshakes[static_cast<int>(r)].add(); }
};

}  // namespace memzone::tls
