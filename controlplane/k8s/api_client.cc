#include "controlplane/k8s/api_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace memzone::controlplane::k8s {
namespace {

constexpr const char* kServiceAccount = "/var/run/secrets/kubernetes.io/serviceaccount/";
constexpr auto kTokenMaxAge = std::chrono::seconds(60);
// Idle handles (and so kept-alive connections) beyond the watches' own: lists, status writes
// and Lease renewals rarely overlap more than this.
constexpr size_t kMaxIdleHandles = 4;
constexpr const char* kUserAgent = "memzone-controller/" MEMZONE_VERSION;

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

struct Transfer {
  CURL* curl;
  std::string* body;
  const std::function<bool(std::string_view)>* on_data;
  const std::atomic<bool>* stop;
  bool aborted = false;
};

size_t onWrite(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  // Only a 200 is a stream of events; an error status carries one Status object.
  if (t->on_data != nullptr && status == 200) {
    if (!(*t->on_data)(std::string_view(data, n))) {
      t->aborted = true;
      return 0;  // abort the transfer
    }
  } else {
    if (t->body->size() + n > (64u << 20)) return 0;  // a list this big is not ours to hold
    t->body->append(data, n);
  }
  return n;
}

int onProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return t->stop != nullptr && t->stop->load() ? 1 : 0;
}

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_DEFAULT); }
};

}  // namespace

std::string resolveConfig(const std::string& api, const std::string& token_file,
                          const std::string& ca_file, const std::string& ns, ApiConfig& out) {
  if (!api.empty()) {
    out.server = api;
    out.token_file = token_file;
    out.ca_file = ca_file;
  } else {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (host == nullptr || port == nullptr) {
      return "not in a cluster (KUBERNETES_SERVICE_HOST/PORT unset) and no --kube-api";
    }
    std::string h = host;
    if (h.find(':') != std::string::npos) h = "[" + h + "]";  // IPv6 service address
    out.server = "https://" + h + ":" + port;
    out.token_file = token_file.empty() ? std::string(kServiceAccount) + "token" : token_file;
    out.ca_file = ca_file.empty() ? std::string(kServiceAccount) + "ca.crt" : ca_file;
  }
  out.namespace_ = ns;
  if (out.namespace_.empty()) out.namespace_ = readFile(std::string(kServiceAccount) + "namespace");
  if (out.namespace_.empty()) out.namespace_ = "default";
  while (!out.server.empty() && out.server.back() == '/') out.server.pop_back();
  return "";
}

std::string describeFailure(const ApiResponse& response) {
  if (response.status == 0) return response.error.empty() ? "no response" : response.error;
  std::string out = "HTTP " + std::to_string(response.status);
  nlohmann::json status = nlohmann::json::parse(response.body, nullptr, false);
  if (status.is_object() && status.contains("message") && status["message"].is_string()) {
    std::string message = status["message"].get<std::string>();
    constexpr size_t kMaxMessage = 300;  // a log line, not a dump
    if (message.size() > kMaxMessage) message = message.substr(0, kMaxMessage) + "...";
    out += ": " + message;
  }
  return out;
}

ApiClient::ApiClient(ApiConfig config) : config_(std::move(config)) { static CurlGlobal global; }

ApiClient::~ApiClient() {
  for (void* h : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* ApiClient::acquireHandle() {
  {
    std::lock_guard lock(handles_mu_);
    if (!idle_handles_.empty()) {
      void* h = idle_handles_.back();
      idle_handles_.pop_back();
      return h;
    }
  }
  return curl_easy_init();
}

void ApiClient::releaseHandle(void* handle, bool reusable) {
  CURL* curl = static_cast<CURL*>(handle);
  if (reusable) {
    // Options go back to their defaults; the live connection (and TLS session) stays.
    curl_easy_reset(curl);
    std::lock_guard lock(handles_mu_);
    if (idle_handles_.size() < kMaxIdleHandles) {
      idle_handles_.push_back(curl);
      return;
    }
  }
  curl_easy_cleanup(curl);
}

std::string ApiClient::token(bool force_reload) {
  if (config_.token_file.empty()) return "";
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  if (force_reload || token_.empty() || now - token_read_ > kTokenMaxAge) {
    token_ = readFile(config_.token_file);
    token_read_ = now;
  }
  return token_;
}

ApiResponse ApiClient::get(const std::string& path, long timeout_ms) {
  return perform("GET", path, nullptr, nullptr, nullptr, timeout_ms ? timeout_ms : 60000);
}

ApiResponse ApiClient::mergePatch(const std::string& path, const std::string& json) {
  return perform("PATCH", path, &json, nullptr, nullptr, 30000);
}

ApiResponse ApiClient::post(const std::string& path, const std::string& json, long timeout_ms) {
  return perform("POST", path, &json, nullptr, nullptr, timeout_ms ? timeout_ms : 30000);
}

ApiResponse ApiClient::put(const std::string& path, const std::string& json, long timeout_ms) {
  return perform("PUT", path, &json, nullptr, nullptr, timeout_ms ? timeout_ms : 30000);
}

ApiResponse ApiClient::remove(const std::string& path, long timeout_ms) {
  return perform("DELETE", path, nullptr, nullptr, nullptr, timeout_ms ? timeout_ms : 30000);
}

ApiResponse ApiClient::stream(const std::string& path,
                              const std::function<bool(std::string_view)>& on_data,
                              const std::atomic<bool>& stop) {
  return perform("GET", path, nullptr, &on_data, &stop, 0);
}

ApiResponse ApiClient::perform(const std::string& method, const std::string& path,
                               const std::string* body,
                               const std::function<bool(std::string_view)>* on_data,
                               const std::atomic<bool>* stop, long timeout_ms) {
  ApiResponse response;
  for (int attempt = 0; attempt < 2; ++attempt) {
    CURL* curl = static_cast<CURL*>(acquireHandle());
    std::string url = config_.server + path;
    std::string auth = token(attempt > 0);
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Accept: application/json");
    if (!auth.empty())
      headers = curl_slist_append(headers, ("Authorization: Bearer " + auth).c_str());
    if (method == "PATCH")
      headers = curl_slist_append(headers, "Content-Type: application/merge-patch+json");
    else if (body != nullptr)
      headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
    response = ApiResponse{};
    Transfer transfer{curl, &response.body, on_data, stop};
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(curl, CURLOPT_USERAGENT, kUserAgent);
    if (body != nullptr) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, onWrite);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     std::min(10000L, timeout_ms ? timeout_ms : 10000L));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (timeout_ms > 0) curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    // A watch that goes silent (no bytes, not even bookmarks) for 2 minutes is dead.
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 120L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!config_.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, config_.ca_file.c_str());
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    if (rc != CURLE_OK && !transfer.aborted) response.error = curl_easy_strerror(rc);
    curl_slist_free_all(headers);
    // An aborted transfer (a watch we ended) leaves its connection unusable: curl closes it.
    releaseHandle(curl, rc == CURLE_OK);
    if (response.status != 401) break;  // 401: the token rotated; read it again and retry once
  }
  return response;
}

}  // namespace memzone::controlplane::k8s
