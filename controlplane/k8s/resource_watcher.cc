#include "controlplane/k8s/resource_watcher.h"

#include <cstdio>
#include <random>

#include "memzone/ops/log.h"

namespace memzone::controlplane::k8s {
namespace {

std::string urlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

std::string objectKey(const nlohmann::json& object) {
  if (!object.is_object()) return "";
  const auto& meta = object.value("metadata", nlohmann::json::object());
  if (!meta.is_object()) return "";
  std::string ns = meta.value("namespace", "");
  std::string name = meta.value("name", "");
  return ns.empty() ? name : ns + "/" + name;
}

std::string ResourceWatcher::withQuery(const std::string& query) const {
  std::string path = options_.path + "?" + query;
  if (!options_.label_selector.empty())
    path += "&labelSelector=" + urlEncode(options_.label_selector);
  return path;
}

ResourceWatcher::ResourceWatcher(ApiClient& client, Options options, OnChange on_change)
    : client_(client), options_(std::move(options)), on_change_(std::move(on_change)) {}

ResourceWatcher::~ResourceWatcher() { stop(); }

void ResourceWatcher::start() {
  thread_ = std::thread([this] { run(); });
}

void ResourceWatcher::stop() {
  stop_ = true;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::map<std::string, nlohmann::json> ResourceWatcher::objects() const {
  std::lock_guard lock(mu_);
  return cache_;
}

bool ResourceWatcher::sleepBackoff(unsigned& backoff_ms) {
  backoff_ms = backoff_ms == 0 ? 200 : std::min(backoff_ms * 2, options_.max_backoff_ms);
  thread_local std::minstd_rand rng(std::random_device{}());
  unsigned spread = backoff_ms / 5;
  unsigned delay = backoff_ms - spread + (spread ? rng() % (2 * spread + 1) : 0);
  std::unique_lock lock(wake_mu_);
  wake_.wait_for(lock, std::chrono::milliseconds(delay), [this] { return stop_.load(); });
  return !stop_;
}

void ResourceWatcher::run() {
  unsigned backoff_ms = 0;
  while (!stop_) {
    std::string rv;
    if (!list(rv)) {
      ++counters_.api_errors;
      if (!sleepBackoff(backoff_ms)) return;
      continue;
    }
    synced_ = true;
    backoff_ms = 0;
    while (!stop_) {
      auto started = std::chrono::steady_clock::now();
      WatchEnd end = watch(rv);
      if (end == WatchEnd::kStopped) return;
      ++counters_.watch_restarts;
      if (end == WatchEnd::kGone) {
        ++counters_.relists_gone;
        ops::logEvent(ops::LogLevel::kWarn, "gone:" + options_.kind,
                      "%s watch: 410 Gone; relisting", options_.kind.c_str());
        break;
      }
      if (end == WatchEnd::kFailed) {
        ++counters_.api_errors;
        if (!sleepBackoff(backoff_ms)) return;
        continue;
      }
      // Timed out as asked: reopen at once, unless it ended suspiciously fast.
      if (std::chrono::steady_clock::now() - started < std::chrono::seconds(1)) {
        if (!sleepBackoff(backoff_ms)) return;
      } else {
        backoff_ms = 0;
      }
    }
  }
}

bool ResourceWatcher::list(std::string& resource_version) {
  // Malformed objects from the server are an API error, never a crash.
  try {
    return listPages(resource_version);
  } catch (const nlohmann::json::exception& e) {
    ops::logEvent(ops::LogLevel::kError, "list:" + options_.kind, "list %s: %s",
                  options_.kind.c_str(), e.what());
    return false;
  }
}

bool ResourceWatcher::listPages(std::string& resource_version) {
  std::map<std::string, nlohmann::json> fresh;
  std::string continue_token;
  for (int page = 0; page < 100000; ++page) {
    std::string path = withQuery("limit=" + std::to_string(options_.page_limit));
    if (!continue_token.empty()) path += "&continue=" + urlEncode(continue_token);
    ApiResponse r = client_.get(path);
    if (r.status == 410 && !continue_token.empty()) {  // the continue token expired: start over
      fresh.clear();
      continue_token.clear();
      continue;
    }
    if (r.status != 200) {
      ops::logEvent(ops::LogLevel::kError, "list:" + options_.kind, "list %s: %s",
                    options_.kind.c_str(), describeFailure(r).c_str());
      return false;
    }
    nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
    if (body.is_discarded() || !body.contains("items")) {
      ops::logEvent(ops::LogLevel::kError, "list:" + options_.kind, "list %s: malformed response",
                    options_.kind.c_str());
      return false;
    }
    for (auto& item : body["items"]) {
      if (!item.is_object()) continue;
      std::string key = objectKey(item);  // before the move: `a[f(x)] = move(x)` moves first
      fresh[key] = std::move(item);
    }
    const auto& meta = body.value("metadata", nlohmann::json::object());
    resource_version = meta.value("resourceVersion", "");
    continue_token = meta.value("continue", "");
    if (continue_token.empty()) break;
  }
  replaceAll(std::move(fresh));
  return true;
}

void ResourceWatcher::replaceAll(std::map<std::string, nlohmann::json> fresh) {
  bool changed;
  {
    std::lock_guard lock(mu_);
    // Objects missing from the relist were deleted while we were not watching.
    changed = fresh != cache_;
    cache_ = std::move(fresh);
  }
  if (changed) on_change_();
}

ResourceWatcher::WatchEnd ResourceWatcher::watch(std::string& resource_version) {
  std::string path = withQuery("watch=1&allowWatchBookmarks=true&timeoutSeconds=" +
                               std::to_string(options_.watch_timeout_s));
  if (!resource_version.empty()) path += "&resourceVersion=" + urlEncode(resource_version);
  std::string carry;
  WatchEnd end = WatchEnd::kTimedOut;
  bool ended_by_event = false;
  ApiResponse r = client_.stream(
      path,
      [&](std::string_view chunk) {
        if (carry.size() + chunk.size() > (16u << 20)) {  // no event is this big: broken stream
          end = WatchEnd::kFailed;
          ended_by_event = true;
          return false;
        }
        carry.append(chunk);
        size_t start = 0;
        for (size_t nl; (nl = carry.find('\n', start)) != std::string::npos; start = nl + 1) {
          std::string line = carry.substr(start, nl - start);
          if (line.empty()) continue;
          if (!applyEvent(line, resource_version, end)) {
            ended_by_event = true;
            carry.clear();
            return false;
          }
        }
        carry.erase(0, start);
        return true;
      },
      stop_);
  if (stop_) return WatchEnd::kStopped;
  if (ended_by_event) return end;
  if (r.status == 410) return WatchEnd::kGone;
  if (r.status != 200) {
    ops::logEvent(ops::LogLevel::kWarn, "watch:" + options_.kind, "watch %s: %s",
                  options_.kind.c_str(), describeFailure(r).c_str());
    return WatchEnd::kFailed;
  }
  if (!r.error.empty()) return WatchEnd::kFailed;  // the connection dropped mid-stream
  return WatchEnd::kTimedOut;
}

bool ResourceWatcher::applyEvent(const std::string& line, std::string& resource_version,
                                 WatchEnd& end) {
  try {
    return applyEventUnchecked(line, resource_version, end);
  } catch (const nlohmann::json::exception& e) {
    ops::logEvent(ops::LogLevel::kError, "watch:" + options_.kind, "watch %s: %s",
                  options_.kind.c_str(), e.what());
    end = WatchEnd::kFailed;
    return false;
  }
}

bool ResourceWatcher::applyEventUnchecked(const std::string& line, std::string& resource_version,
                                          WatchEnd& end) {
  nlohmann::json event = nlohmann::json::parse(line, nullptr, false);
  if (event.is_discarded() || !event.is_object()) {
    end = WatchEnd::kFailed;
    return false;
  }
  std::string type = event.value("type", "");
  nlohmann::json& object = event["object"];
  if (type == "ERROR") {
    end = object.value("code", 0) == 410 ? WatchEnd::kGone : WatchEnd::kFailed;
    return false;
  }
  std::string rv =
      object.is_object()
          ? object.value("metadata", nlohmann::json::object()).value("resourceVersion", "")
          : "";
  if (type == "BOOKMARK") {
    if (!rv.empty()) resource_version = rv;
    return true;
  }
  if (type != "ADDED" && type != "MODIFIED" && type != "DELETED") {
    end = WatchEnd::kFailed;
    return false;
  }
  std::string key = objectKey(object);
  {
    std::lock_guard lock(mu_);
    if (type == "DELETED") {
      cache_.erase(key);
    } else {
      cache_[key] = std::move(object);
    }
  }
  if (!rv.empty()) resource_version = rv;
  on_change_();
  return true;
}

}  // namespace memzone::controlplane::k8s
