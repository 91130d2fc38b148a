#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {

bool SnapshotCache::publish(v1::TopologySnapshot snapshot) {
  {
    std::lock_guard lock(mu_);
    if (current_ && current_->version() == snapshot.version()) return false;
    current_ = std::make_shared<const v1::TopologySnapshot>(std::move(snapshot));
  }
  std::lock_guard lock(listeners_mu_);
  for (auto& [id, listener] : listeners_) listener();
  return true;
}

std::shared_ptr<const v1::TopologySnapshot> SnapshotCache::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

uint64_t SnapshotCache::subscribe(Listener listener) {
  std::lock_guard lock(listeners_mu_);
  uint64_t id = next_id_++;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void SnapshotCache::unsubscribe(uint64_t id) {
  std::lock_guard lock(listeners_mu_);
  listeners_.erase(id);
}

}  // namespace memzone::controlplane
