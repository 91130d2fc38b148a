#include "controlplane/server/applied_everywhere.h"

#include <algorithm>

namespace memzone::controlplane {

AppliedEverywhere::AppliedEverywhere(std::chrono::milliseconds grace)
    : grace_(grace),
      quiet_until_(std::chrono::steady_clock::now() + grace),
      quiet_(grace.count() > 0) {
  if (quiet_) local_ = Local{true, ""};  // see recomputeLocked
  thread_ = std::thread([this] { run(); });
}

AppliedEverywhere::~AppliedEverywhere() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void AppliedEverywhere::attach(uint64_t stream, const std::string& version) {
  std::lock_guard lock(mu_);
  if (!attached_once_ && grace_.count() > 0) {
    // The first proxy back: the others follow within their reconnection backoff of it, which
    // may be long after start-up (a controller that took a while to become reachable).
    attached_once_ = true;
    quiet_until_ = std::max(quiet_until_, std::chrono::steady_clock::now() + grace_);
    quiet_ = true;
    wake_.notify_all();
  }
  applied_[stream] = version;
  recomputeLocked();
}

void AppliedEverywhere::applied(uint64_t stream, const std::string& version) {
  std::lock_guard lock(mu_);
  auto it = applied_.find(stream);
  if (it == applied_.end()) return;  // detached meanwhile
  it->second = version;
  recomputeLocked();
}

void AppliedEverywhere::detach(uint64_t stream) {
  std::lock_guard lock(mu_);
  applied_.erase(stream);
  recomputeLocked();
}

void AppliedEverywhere::setPeers(std::set<std::string> peers) {
  std::lock_guard lock(mu_);
  peers_unknown_ = false;
  peers_ = std::move(peers);
  recomputeLocked();
}

void AppliedEverywhere::peersUnknown() {
  std::lock_guard lock(mu_);
  peers_unknown_ = true;
  recomputeLocked();
}

void AppliedEverywhere::peerSaid(const std::string& replica, bool counted,
                                 const std::string& version) {
  std::lock_guard lock(mu_);
  said_[replica] = Local{counted, counted ? version : std::string()};
  recomputeLocked();
}

void AppliedEverywhere::dropPeer(const std::string& replica) {
  std::lock_guard lock(mu_);
  said_.erase(replica);
  recomputeLocked();
}

AppliedEverywhere::Local AppliedEverywhere::local() const {
  std::lock_guard lock(mu_);
  return local_;
}

std::string AppliedEverywhere::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

std::optional<std::chrono::steady_clock::time_point> AppliedEverywhere::graceUntil() const {
  std::lock_guard lock(mu_);
  if (!quiet_) return std::nullopt;
  return quiet_until_;
}

uint64_t AppliedEverywhere::subscribe(ListenerSet::Listener listener) {
  return listeners_.subscribe(std::move(listener));
}

void AppliedEverywhere::unsubscribe(uint64_t id) { listeners_.unsubscribe(id); }

void AppliedEverywhere::recomputeLocked() {
  Local local;
  bool split = false;
  for (const auto& [stream, version] : applied_) {
    if (version.empty()) continue;  // serves nothing: writes through no ring
    if (!local.counted) {
      local = Local{true, version};
    } else if (version != local.version) {
      split = true;
    }
  }
  if (split) local.version.clear();
  // While quiet, this replica's proxies differ as far as anyone knows, even with none back
  // yet: said to the other replicas too, or they would give the word without them.
  if (quiet_) local = Local{true, ""};
  // Every replica's word joins ours: a live replica that has not said blocks it, and so does
  // one that said something else (a stream from a replica the Leases do not list yet counts
  // too: it serves proxies).
  Local all = peers_unknown_ ? Local{true, ""} : local;
  std::set<std::string> unheard = peers_;
  for (const auto& [replica, said] : said_) {
    unheard.erase(replica);
    if (!said.counted) continue;
    if (!all.counted) {
      all = said;
    } else if (said.version != all.version) {
      all.version.clear();
    }
  }
  std::string version = !quiet_ && unheard.empty() && all.counted ? all.version : std::string();
  if (local == local_ && version == version_) return;
  local_ = std::move(local);
  version_ = std::move(version);
  changed_ = true;
  wake_.notify_all();
}

void AppliedEverywhere::run() {
  std::unique_lock lock(mu_);
  while (true) {
    if (quiet_) {
      if (!wake_.wait_until(lock, quiet_until_, [this] { return changed_ || stopping_; }) &&
          std::chrono::steady_clock::now() >= quiet_until_) {
        quiet_ = false;
        recomputeLocked();  // what the proxies back by now applied, said at last
        changed_ = true;    // and streams holding a snapshot for the grace send it
      }
    } else {
      wake_.wait(lock, [this] { return changed_ || stopping_; });
    }
    if (stopping_) return;
    if (!changed_) continue;
    changed_ = false;
    lock.unlock();
    listeners_.callAll();  // each starts (or schedules) a write on its stream
    lock.lock();
  }
}

}  // namespace memzone::controlplane
