#include "controlplane/server/snapshot_cache.h"

namespace memzone::controlplane {
namespace {

// As many switches as a proxy's key mover and state dir remember (rebalance/key_mover.h).
constexpr size_t kRecent = 8;
// Longer than any migration or warm-up window worth replaying.
constexpr auto kRecentFor = std::chrono::hours(1);

}  // namespace

bool SnapshotCache::publish(v1::TopologySnapshot snapshot) {
  {
    std::lock_guard lock(mu_);
    if (current_ && current_->version() == snapshot.version()) return false;
    if (current_) {
      replaced_.push_back({current_, std::chrono::steady_clock::now()});
      if (replaced_.size() > kRecent) replaced_.pop_front();
    }
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

bool SnapshotCache::published(const std::string& version) const {
  std::lock_guard lock(mu_);
  if (current_ && current_->version() == version) return true;
  for (const Replaced& r : replaced_) {
    if (r.snapshot->version() == version) return true;
  }
  return false;
}

bool SnapshotCache::missedSwitches(const std::string& version) const {
  std::lock_guard lock(mu_);
  if (!current_ || version == current_->version()) return false;
  return version.empty() || replaced_.empty() || replaced_.back().snapshot->version() != version;
}

std::shared_ptr<const v1::TopologySnapshot> SnapshotCache::withRecent(
    std::shared_ptr<const v1::TopologySnapshot> shared) const {
  std::lock_guard lock(mu_);
  if (!current_ || current_->version() != shared->version() || replaced_.empty()) return shared;
  auto own = std::make_shared<v1::TopologySnapshot>(*shared);
  const auto now = std::chrono::steady_clock::now();
  for (const Replaced& r : replaced_) {
    if (now - r.at > kRecentFor) continue;
    v1::PastTopology* past = own->add_recent();
    *past->mutable_snapshot() = *r.snapshot;
    past->set_replaced_ms_ago(
        std::chrono::duration_cast<std::chrono::milliseconds>(now - r.at).count());
  }
  return own;
}

uint64_t SnapshotCache::subscribe(Listener listener) {
  return listeners_.subscribe(std::move(listener));
}

void SnapshotCache::unsubscribe(uint64_t id) { listeners_.unsubscribe(id); }

}  // namespace memzone::controlplane
