#include "controlplane/server/listener_set.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace memzone::controlplane {
namespace {

constexpr size_t kParallelAbove = 256;  // listeners; below, one thread is quicker

}  // namespace

uint64_t ListenerSet::subscribe(Listener listener) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  listeners_.emplace(id, std::move(listener));
  return id;
}

void ListenerSet::unsubscribe(uint64_t id) {
  std::lock_guard lock(mu_);
  listeners_.erase(id);
}

void ListenerSet::callAll() {
  std::lock_guard lock(mu_);
  size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 4);
  if (listeners_.size() < kParallelAbove || threads < 2) {
    for (auto& [id, listener] : listeners_) listener();
    return;
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
}

}  // namespace memzone::controlplane
