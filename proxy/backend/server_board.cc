#include "proxy/backend/server_board.h"

#include <algorithm>

namespace memzone::backend {

void ControllerLink::setListener(std::function<void()> listener) {
  std::lock_guard<std::mutex> lock(mu_);
  listener_ = std::move(listener);
}

void ControllerLink::notify() {
  std::lock_guard<std::mutex> lock(mu_);
  if (listener_) listener_();
}

std::shared_ptr<ServerState> ServerBoard::stateFor(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  std::weak_ptr<ServerState>& slot = states_[address];
  std::shared_ptr<ServerState> state = slot.lock();
  if (!state) {
    state = std::make_shared<ServerState>();
    state->controller = link_;
    // A server added while some proxy owes it deletes (it was in an older topology of theirs).
    auto dirty = dirty_since_.find(address);
    state->dirty.store(awaiting_until_us_ != 0 || dirty != dirty_since_.end(),
                       std::memory_order_relaxed);
    slot = state;
  }
  return state;
}

void ServerBoard::restore(std::map<std::string, OwedDeletes> owed, std::string dir, int workers) {
  std::lock_guard<std::mutex> lock(mu_);
  restored_ = std::move(owed);
  restored_dir_ = std::move(dir);
  logs_pending_ = workers;
}

OwedDeletes ServerBoard::takeRestored(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  OwedDeletes out;
  auto it = restored_.find(address);
  if (it != restored_.end()) {
    out = std::move(it->second);
    restored_.erase(it);
  }
  return out;
}

void ServerBoard::workerLogWritten() {
  std::lock_guard<std::mutex> lock(mu_);
  if (logs_pending_ > 0 && --logs_pending_ == 0) {
    // Every worker's log now holds what it took; what nobody took belongs to servers no
    // longer in the topology.
    InvalidationLog::dropOld(restored_dir_);
    restored_.clear();
  }
}

void ServerBoard::setDirty(const std::vector<std::pair<std::string, uint64_t>>& since,
                           uint64_t confirmed) {
  std::lock_guard<std::mutex> lock(mu_);
  dirty_since_ = std::map<std::string, uint64_t>(since.begin(), since.end());
  awaiting_until_us_ = 0;
  confirmed_ = confirmed;
  for (auto& [address, weak] : states_) {
    std::shared_ptr<ServerState> s = weak.lock();
    if (!s) continue;
    auto it = dirty_since_.find(address);
    bool dirty = it != dirty_since_.end();
    s->dirty.store(dirty, std::memory_order_relaxed);
  }
  link_->coordinated.store(true, std::memory_order_relaxed);
}

void ServerBoard::awaitDirtySet(int64_t until_us) {
  std::lock_guard<std::mutex> lock(mu_);
  awaiting_until_us_ = until_us;
  for (auto& [address, weak] : states_) {
    if (std::shared_ptr<ServerState> s = weak.lock())
      s->dirty.store(true, std::memory_order_relaxed);
  }
}

void ServerBoard::expireAwaiting(int64_t now_us) {
  std::lock_guard<std::mutex> lock(mu_);
  if (awaiting_until_us_ == 0 || now_us < awaiting_until_us_) return;
  awaiting_until_us_ = 0;
  for (auto& [address, weak] : states_) {
    if (std::shared_ptr<ServerState> s = weak.lock()) {
      s->dirty.store(dirty_since_.count(address) > 0, std::memory_order_relaxed);
    }
  }
}

void ServerBoard::controllerLost(uint32_t hold_ms, int64_t now_us) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [address, weak] : states_) {
    std::shared_ptr<ServerState> s = weak.lock();
    if (!s || !s->dirty.load(std::memory_order_relaxed)) continue;
    int64_t until = now_us + int64_t{hold_ms} * 1000;
    int64_t current = s->readable_at_us.load(std::memory_order_relaxed);
    while (current < until &&
           !s->readable_at_us.compare_exchange_weak(current, until, std::memory_order_relaxed)) {
    }
    s->dirty.store(false, std::memory_order_relaxed);
  }
  for (auto& [address, weak] : states_) {
    if (std::shared_ptr<ServerState> s = weak.lock()) {
      s->confirmed_epoch.store(0);
    }
  }
  dirty_since_.clear();
  confirmed_ = 0;
  link_->coordinated.store(false, std::memory_order_relaxed);
}

std::vector<ServerBoard::Owed> ServerBoard::owedServers(int64_t now_us) {
  std::vector<Owed> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [address, weak] : states_) {  // a std::map: sorted
    std::shared_ptr<ServerState> s = weak.lock();
    if (!s) continue;
    // Withdraw first, then look: a worker that starts owing after the look finds no stale
    // confirmation. Sequentially consistent, paired with BackendServer's epoch-then-owing.
    uint64_t saved = s->confirmed_epoch.exchange(0);
    uint64_t epoch = s->owe_epoch.load();
    if (s->owing.load() != 0 || s->distrusted_until_us.load() > now_us) {
      out.push_back({address, epoch});
      uint64_t zero = 0;
      s->confirmed_epoch.compare_exchange_strong(zero, saved);  // still owed: still confirmed
    }
  }
  return out;
}

void ServerBoard::confirm(const std::vector<Owed>& reported) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const Owed& o : reported) {
    auto dirty = dirty_since_.find(o.address);
    if (dirty == dirty_since_.end() || dirty->second > confirmed_) continue;
    auto it = states_.find(o.address);
    std::shared_ptr<ServerState> s = it == states_.end() ? nullptr : it->second.lock();
    if (!s) continue;
    uint64_t current = s->confirmed_epoch.load();
    while (current < o.epoch && !s->confirmed_epoch.compare_exchange_weak(current, o.epoch)) {
    }
  }
}

}  // namespace memzone::backend
