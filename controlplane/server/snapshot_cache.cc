#include "controlplane/server/snapshot_cache.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace memzone::controlplane {
namespace {

constexpr size_t kParallelAbove = 256;  // listeners; below, one thread is quicker

}  // namespace

bool SnapshotCache::publish(v1::TopologySnapshot snapshot) {
  {
    std::lock_guard lock(mu_);
    if (current_ && current_->version() == snapshot.version()) return false;
    current_ = std::make_shared<const v1::TopologySnapshot>(std::move(snapshot));
    ++publication_;
    by_zone_.clear();
  }
  std::lock_guard lock(listeners_mu_);
  // Each listener starts a write to its proxy, and gRPC may do that write on the calling
  // thread: with thousands of proxies, one thread would send them one after the other.
  // Spread them over the cores.
  size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 4);
  if (listeners_.size() < kParallelAbove || threads < 2) {
    for (auto& [id, listener] : listeners_) listener();
    return true;
  }
  std::vector<Listener*> all;
  all.reserve(listeners_.size());
  for (auto& [id, listener] : listeners_) all.push_back(&listener);
  auto run = [&all, threads](size_t part) {
    for (size_t i = part; i < all.size(); i += threads) (*all[i])();
  };
  std::vector<std::thread> helpers;
  for (size_t part = 1; part < threads; ++part) helpers.emplace_back(run, part);
  run(0);
  for (auto& t : helpers) t.join();
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
