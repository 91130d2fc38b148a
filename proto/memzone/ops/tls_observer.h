// What both binaries report about the TLS handshakes of the topology stream, by result
// (README "Metrics"; certificate expiry is certificate_expiry.h's).
//
// gRPC says why a handshake failed (no certificate, unknown CA) only in its own log, so the
// observer takes over gRPC's log function: gRPC's lines are still written to stderr, except the
// "Handshake failed" ones, which are counted by reason and logged as our own rate-limited line
// (a refused proxy retries forever). Verifier refusals (identity, server name) are counted where
// they are decided. Any thread; counters are atomics (handshakes are rare).
#pragma once

#include <prometheus/collectable.h>

#include <array>
#include <atomic>
#include <chrono>
#include <string>

namespace memzone::ops {

enum class TlsHandshakeResult {
  kOk,
  kNoPeerCertificate,     // the peer sent none (and one is required)
  kUntrustedCertificate,  // the peer's certificate does not chain to our CA
  kRefusedByPeer,         // the peer refused ours (an alert from its side)
  kIdentityNotAllowed,    // controller: a valid proxy certificate not in --tls-allowed-identities
  kNameMismatch,          // proxy: the controller's certificate is not for the server name
  kOther,
  kCount
};
const char* tlsHandshakeResultName(TlsHandshakeResult result);
// The reason a gRPC "Handshake failed" log message stands for.
TlsHandshakeResult classifyHandshakeFailure(const std::string& message);

class TlsObserver : public prometheus::Collectable {
 public:
  // `prefix`: "memzone_controller" or "memzone_proxy_controller".
  explicit TlsObserver(std::string prefix);
  ~TlsObserver() override;
  void count(TlsHandshakeResult result);
  // When this side last accepted a peer (kOk), on the steady clock.
  std::chrono::steady_clock::time_point lastAccepted() const;
  // A handshake this side accepted was then refused by the peer (TLS 1.3: the server checks
  // the client's certificate after the client finished): moves one kOk to kRefusedByPeer.
  void acceptedThenRefused();
  uint64_t countOf(TlsHandshakeResult result) const {
    return counts_[static_cast<size_t>(result)].load();
  }
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Routes gRPC's log through `observer`. Once, before gRPC starts; the destructor unhooks it.
  static void installGrpcLogHook(TlsObserver* observer);

 private:
  std::string prefix_;
  std::atomic<int64_t> last_accepted_ns_{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(TlsHandshakeResult::kCount)> counts_{};
};

}  // namespace memzone::ops
