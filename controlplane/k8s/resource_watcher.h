// List-then-watch for one kind of Kubernetes object, keeping a local cache of them.
//
// A paginated list (limit + continue) gives the objects and a resourceVersion; a watch from
// there (allowWatchBookmarks, timeoutSeconds) streams ADDED/MODIFIED/DELETED/BOOKMARK events,
// one JSON object per line, with lines split across chunks at any byte (a carry-over buffer
// joins them). resourceVersion is opaque: only ever echoed back. 410 Gone, as an HTTP status
// or as an ERROR event inside a 200 stream, means our version was compacted away: relist and
// diff against the cache, synthesising deletes for what vanished in the gap. Any other
// failure backs off (capped, jittered) before trying again; never a hot loop.
// One thread per watcher; objects() may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "controlplane/k8s/api_client.h"

namespace memzone::controlplane::k8s {

struct WatcherCounters {
  std::atomic<uint64_t> watch_restarts{0};  // watches that ended and were reopened
  std::atomic<uint64_t> relists_gone{0};    // relists forced by 410 Gone
  std::atomic<uint64_t> api_errors{0};      // failed list/watch requests
};

class ResourceWatcher {
 public:
  struct Options {
    std::string kind;  // for logs and metrics: "ReplicatedPool", "EndpointSlice", "Node"
    std::string path;  // collection path, e.g. /api/v1/nodes
    std::string label_selector = {};  // e.g. "memzone.io/controller-replica", or "" for all
    unsigned page_limit = 500;
    unsigned watch_timeout_s = 300;
    unsigned max_backoff_ms = 30000;
  };
  using OnChange = std::function<void()>;

  ResourceWatcher(ApiClient& client, Options options, OnChange on_change);
  ~ResourceWatcher();

  void start();
  void stop();
  bool synced() const { return synced_; }
  std::map<std::string, nlohmann::json> objects() const;  // key: namespace/name
  const WatcherCounters& counters() const { return counters_; }
  const std::string& kind() const { return options_.kind; }

 private:
  enum class WatchEnd { kTimedOut, kGone, kFailed, kStopped };

  void run();
  bool list(std::string& resource_version);
  bool listPages(std::string& resource_version);
  WatchEnd watch(std::string& resource_version);
  // Applies one watch event line; returns false to end the watch with `end`.
  bool applyEvent(const std::string& line, std::string& resource_version, WatchEnd& end);
  bool applyEventUnchecked(const std::string& line, std::string& resource_version, WatchEnd& end);
  bool sleepBackoff(unsigned& backoff_ms);
  std::string withQuery(const std::string& query) const;
  void replaceAll(std::map<std::string, nlohmann::json> fresh);

  ApiClient& client_;
  Options options_;
  OnChange on_change_;
  mutable std::mutex mu_;
  std::map<std::string, nlohmann::json> cache_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> synced_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::thread thread_;
  WatcherCounters counters_;
};

// "namespace/name" (or "name" for cluster-scoped objects).
std::string objectKey(const nlohmann::json& object);

}  // namespace memzone::controlplane::k8s
