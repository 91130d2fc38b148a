// A minimal Kubernetes API client over libcurl: GET (lists, objects), streaming GET (watches),
// merge-PATCH (status), POST/PUT/DELETE (Leases). Authenticates with a service-account style bearer
// token that is re-read from its file at least every minute and right after a 401 (projected tokens
// rotate hourly). In-cluster config comes from KUBERNETES_SERVICE_HOST/PORT and
// /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}.
// Requests say `User-Agent: memzone-controller/<version>`. Connections are kept alive and
// reused (a small pool of idle curl handles keeps them), so a status write or a relist does
// not pay a new TCP and TLS handshake.
// Any thread; each call in flight uses its own curl handle.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace memzone::controlplane::k8s {

struct ApiConfig {
  std::string server;      // https://host:port (or http:// for tests)
  std::string token_file;  // may be empty: no auth
  std::string ca_file;     // may be empty: system CAs
  std::string namespace_;
};

// Explicit flags win; otherwise in-cluster. Returns "" or why the config is unusable.
std::string resolveConfig(const std::string& api, const std::string& token_file,
                          const std::string& ca_file, const std::string& ns, ApiConfig& out);

struct ApiResponse {
  long status = 0;  // HTTP status; 0 when the request never completed
  std::string body;
  std::string error;  // transport error, when status is 0
};

// What went wrong, for a log line: "HTTP 403: <the Status object's message>" (the API server
// says who was refused what, e.g. by RBAC), "HTTP 503" when the body says nothing, or the
// transport error.
std::string describeFailure(const ApiResponse& response);

class ApiClient {
 public:
  explicit ApiClient(ApiConfig config);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  const ApiConfig& config() const { return config_; }
  // `timeout_ms` bounds the whole request (0: 60 s for GET, 30 s otherwise).
  ApiResponse get(const std::string& path, long timeout_ms = 0);
  ApiResponse mergePatch(const std::string& path, const std::string& json);
  ApiResponse post(const std::string& path, const std::string& json, long timeout_ms = 0);
  ApiResponse put(const std::string& path, const std::string& json, long timeout_ms = 0);
  ApiResponse remove(const std::string& path, long timeout_ms = 0);
  // Streams the body to `on_data` as it arrives; returns when the server ends the stream,
  // the connection fails, `on_data` returns false, or `stop` becomes true.
  ApiResponse stream(const std::string& path, const std::function<bool(std::string_view)>& on_data,
                     const std::atomic<bool>& stop);

 private:
  ApiResponse perform(const std::string& method, const std::string& path, const std::string* body,
                      const std::function<bool(std::string_view)>* on_data,
                      const std::atomic<bool>* stop, long timeout_ms);
  std::string token(bool force_reload);
  void* acquireHandle();
  void releaseHandle(void* handle, bool reusable);

  ApiConfig config_;
  std::mutex mu_;
  std::string token_;
  std::chrono::steady_clock::time_point token_read_{};
  std::mutex handles_mu_;
  std::vector<void*> idle_handles_;  // CURL*, each keeping its connection alive
};

}  // namespace memzone::controlplane::k8s
