#include "controlplane/server/applied_everywhere.h"

namespace memzone::controlplane {

AppliedEverywhere::AppliedEverywhere() {
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

void AppliedEverywhere::setOtherReplicas(bool known) {
  std::lock_guard lock(mu_);
  other_replicas_ = known;
  recomputeLocked();
}

std::string AppliedEverywhere::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

uint64_t AppliedEverywhere::subscribe(ListenerSet::Listener listener) {
  return listeners_.subscribe(std::move(listener));
}

void AppliedEverywhere::unsubscribe(uint64_t id) { listeners_.unsubscribe(id); }

void AppliedEverywhere::recomputeLocked() {
  std::string common;
  bool split = other_replicas_;
  for (const auto& [stream, version] : applied_) {
    if (version.empty() || split) continue;  // serves nothing: writes through no ring
    if (common.empty()) {
      common = version;
    } else if (version != common) {
      split = true;
    }
  }
  if (split) common.clear();
  if (common == version_) return;
  version_ = std::move(common);
  changed_ = true;
  wake_.notify_all();
}

void AppliedEverywhere::run() {
  std::unique_lock lock(mu_);
  while (true) {
    wake_.wait(lock, [this] { return changed_ || stopping_; });
    if (stopping_) return;
    changed_ = false;
    lock.unlock();
    listeners_.callAll();  // each starts (or schedules) a write on its stream
    lock.lock();
  }
}

}  // namespace memzone::controlplane
