#include "memzone/ops/tls_observer.h"

#include <grpc/support/log.h>
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>

#include <atomic>
#include <cstdio>

#include "memzone/ops/log.h"

namespace memzone::ops {
namespace {

std::atomic<TlsObserver*> hooked{nullptr};

void grpcLog(gpr_log_func_args* args) {
  std::string message = args->message ? args->message : "";
  const char* level = args->severity == GPR_LOG_SEVERITY_ERROR  ? "error"
                      : args->severity == GPR_LOG_SEVERITY_INFO ? "info"
                                                                : "debug";
  TlsObserver* observer = hooked.load();
  if (observer == nullptr || message.find("Handshake failed") == std::string::npos) {
    // gRPC's own lines, one per event as before, marked as gRPC's.
    fprintf(stderr, "grpc %s %s:%d] %s\n", level, args->file ? args->file : "?", args->line,
            message.c_str());
    return;
  }
  // A failed handshake: counted, and logged once a second per reason at most (a proxy
  // without a certificate retries forever; thousands of them must not flood the log).
  TlsHandshakeResult reason = classifyHandshakeFailure(message);
  observer->count(reason);
  logEvent(LogLevel::kWarn, std::string("tls-handshake:") + tlsHandshakeResultName(reason),
           "TLS handshake on the topology stream failed (%s): %s", tlsHandshakeResultName(reason),
           message.c_str());
}

}  // namespace

const char* tlsHandshakeResultName(TlsHandshakeResult result) {
  switch (result) {
    case TlsHandshakeResult::kOk:
      return "ok";
    case TlsHandshakeResult::kNoPeerCertificate:
      return "no_peer_certificate";
    case TlsHandshakeResult::kUntrustedCertificate:
      return "untrusted_certificate";
    case TlsHandshakeResult::kRefusedByPeer:
      return "refused_by_peer";
    case TlsHandshakeResult::kIdentityNotAllowed:
      return "identity_not_allowed";
    case TlsHandshakeResult::kNameMismatch:
      return "name_mismatch";
    case TlsHandshakeResult::kOther:
    case TlsHandshakeResult::kCount:
      break;
  }
  return "other";
}

TlsHandshakeResult classifyHandshakeFailure(const std::string& message) {
  // OpenSSL 3's reason strings, as gRPC quotes them.
  if (message.find("peer did not return a certificate") != std::string::npos)
    return TlsHandshakeResult::kNoPeerCertificate;
  if (message.find("alert") != std::string::npos) return TlsHandshakeResult::kRefusedByPeer;
  if (message.find("certificate verify failed") != std::string::npos)
    return TlsHandshakeResult::kUntrustedCertificate;
  return TlsHandshakeResult::kOther;
}

TlsObserver::TlsObserver(std::string prefix) : prefix_(std::move(prefix)) {}

void TlsObserver::count(TlsHandshakeResult result) {
  if (result == TlsHandshakeResult::kOk) {
    last_accepted_ns_ = std::chrono::steady_clock::now().time_since_epoch().count();
  }
  counts_[static_cast<size_t>(result)]++;
}

std::chrono::steady_clock::time_point TlsObserver::lastAccepted() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(last_accepted_ns_.load()));
}

void TlsObserver::acceptedThenRefused() {
  counts_[static_cast<size_t>(TlsHandshakeResult::kOk)]--;
  counts_[static_cast<size_t>(TlsHandshakeResult::kRefusedByPeer)]++;
}

TlsObserver::~TlsObserver() {
  TlsObserver* self = this;
  hooked.compare_exchange_strong(self, nullptr);  // gRPC lines are still written
}

void TlsObserver::installGrpcLogHook(TlsObserver* observer) {
  hooked.store(observer);
  gpr_set_log_function(grpcLog);
}

std::vector<prometheus::MetricFamily> TlsObserver::Collect() const {
  std::vector<prometheus::MetricFamily> out(1);
  prometheus::MetricFamily& handshakes = out[0];
  handshakes.name = prefix_ + "_tls_handshakes_total";
  handshakes.help = "TLS handshakes on the topology stream, by result.";
  handshakes.type = prometheus::MetricType::Counter;
  for (size_t i = 0; i < counts_.size(); ++i) {
    prometheus::ClientMetric m;
    m.label = {{"result", tlsHandshakeResultName(static_cast<TlsHandshakeResult>(i))}};
    m.counter.value = static_cast<double>(counts_[i].load());
    handshakes.metric.push_back(std::move(m));
  }
  return out;
}

}  // namespace memzone::ops
