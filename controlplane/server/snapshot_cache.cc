#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {

bool SnapshotCache::publish(v1::TopologySnapshot snapshot) {
  {
    std::lock_guard lock(mu_);
    if (current_ && current_->version() == snapshot.version()) return false;
    current_ = std::make_shared<const v1::TopologySnapshot>(std::move(snapshot));
    ++publication_;
    by_zone_.clear();
  }
  listeners_.callAll();
  return true;
}

std::shared_ptr<const v1::TopologySnapshot> SnapshotCache::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

std::shared_ptr<const v1::TopologySnapshot> SnapshotCache::forZone(const std::string& zone) {
  std::lock_guard lock(mu_);
  if (!current_) return nullptr;
  auto it = by_zone_.find(zone);
  if (it != by_zone_.end()) return it->second;
  auto copy = std::make_shared<v1::TopologySnapshot>(*current_);
  copy->set_proxy_zone(zone);
  copy->set_nonce(std::to_string(publication_) + "." + std::to_string(by_zone_.size() + 1));
  return by_zone_.emplace(zone, std::move(copy)).first->second;
}

uint64_t SnapshotCache::subscribe(Listener listener) {
  return listeners_.subscribe(std::move(listener));
}

void SnapshotCache::unsubscribe(uint64_t id) { listeners_.unsubscribe(id); }

}  // namespace memzone::controlplane
