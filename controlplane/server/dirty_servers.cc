#include "controlplane/server/dirty_servers.h"

#include <algorithm>

#include "memzone/ops/log.h"

namespace memzone::controlplane {

DirtyServers::DirtyServers(std::chrono::milliseconds retain) : retain_(retain) {
  auto empty = std::make_shared<v1::TopologySnapshot>();
  empty->mutable_dirty()->set_generation(0);
  message_ = std::move(empty);
  thread_ = std::thread([this] { run(); });
}

DirtyServers::~DirtyServers() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void DirtyServers::report(const std::string& node_id, uint64_t stream, std::set<std::string> owed) {
  std::lock_guard lock(mu_);
  auto it = reports_.find(node_id);
  if (it == reports_.end()) {
    if (owed.empty()) return;  // nothing owed, nothing to remember
    it = reports_.emplace(node_id, Report{}).first;
  }
  Report& r = it->second;
  r.stream = stream;
  r.connected = true;
  if (r.owed == owed) return;
  r.owed = std::move(owed);
  if (r.owed.empty()) reports_.erase(it);
  recomputeLocked();
}

void DirtyServers::disconnected(const std::string& node_id, uint64_t stream) {
  std::lock_guard lock(mu_);
  auto it = reports_.find(node_id);
  // A newer stream of the same proxy has taken over: its reports count, not this one's end.
  if (it == reports_.end() || it->second.stream != stream) return;
  it->second.connected = false;
  it->second.retained_until = Clock::now() + retain_;
  ops::logEvent(ops::LogLevel::kInfo, "dirty-retained:" + node_id,
                "proxy %s disconnected owing invalidations to %zu servers; they stay dirty for "
                "%lld ms unless it reports again",
                node_id.c_str(), it->second.owed.size(), static_cast<long long>(retain_.count()));
  wake_.notify_all();  // the notifier's next expiry may be sooner now
}

void DirtyServers::setPeers(std::set<std::string> dirty) {
  std::lock_guard lock(mu_);
  if (peers_ == dirty) return;
  peers_ = std::move(dirty);
  recomputeLocked();
}

std::shared_ptr<const v1::TopologySnapshot> DirtyServers::message() const {
  std::lock_guard lock(mu_);
  return message_;
}

std::set<std::string> DirtyServers::local() const {
  std::lock_guard lock(mu_);
  std::set<std::string> out;
  for (const auto& [node, r] : reports_) out.insert(r.owed.begin(), r.owed.end());
  return out;
}

size_t DirtyServers::size() const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(message_->dirty().addresses_size());
}

uint64_t DirtyServers::subscribe(Listener listener) {
  return listeners_.subscribe(std::move(listener));
}

void DirtyServers::unsubscribe(uint64_t id) { listeners_.unsubscribe(id); }

void DirtyServers::expire(Clock::time_point now) {
  std::lock_guard lock(mu_);
  bool dropped = false;
  for (auto it = reports_.begin(); it != reports_.end();) {
    if (!it->second.connected && it->second.retained_until <= now) {
      ops::logEvent(ops::LogLevel::kWarn, "dirty-expired:" + it->first,
                    "proxy %s did not come back within %lld ms; the %zu servers it owed "
                    "invalidations are no longer held dirty for it",
                    it->first.c_str(), static_cast<long long>(retain_.count()),
                    it->second.owed.size());
      it = reports_.erase(it);
      dropped = true;
    } else {
      ++it;
    }
  }
  if (dropped) recomputeLocked();
}

void DirtyServers::recomputeLocked() {
  std::set<std::string> all = peers_;
  for (const auto& [node, r] : reports_) all.insert(r.owed.begin(), r.owed.end());
  const auto& current = message_->dirty().addresses();
  if (static_cast<size_t>(current.size()) == all.size() &&
      std::equal(all.begin(), all.end(), current.begin())) {
    return;
  }
  ++generation_;
  // Nobody has applied the new generation yet, unless nobody takes the set at all.
  confirmed_ = applied_.empty() ? generation_ : confirmed_;
  publishLocked(&all);
}

void DirtyServers::confirmLocked() {
  uint64_t lowest = generation_;
  for (const auto& [stream, generation] : applied_) lowest = std::min(lowest, generation);
  if (lowest <= confirmed_) return;
  confirmed_ = lowest;
  publishLocked(nullptr);
}

void DirtyServers::publishLocked(const std::set<std::string>* addresses) {
  auto next = std::make_shared<v1::TopologySnapshot>();
  v1::DirtyServers* dirty = next->mutable_dirty();
  dirty->set_generation(generation_);
  dirty->set_confirmed_generation(confirmed_);
  if (addresses != nullptr) {
    for (const std::string& a : *addresses) dirty->add_addresses(a);
  } else {
    *dirty->mutable_addresses() = message_->dirty().addresses();
  }
  message_ = std::move(next);
  changed_ = true;
  wake_.notify_all();
}

void DirtyServers::attach(uint64_t stream) {
  std::lock_guard lock(mu_);
  applied_.emplace(stream, 0);
  // A proxy that has not applied the set yet may read its servers: what was confirmed is
  // not any more (only matters while something is dirty).
  if (message_->dirty().addresses_size() > 0 && confirmed_ != 0) {
    confirmed_ = 0;
    publishLocked(nullptr);
  }
}

void DirtyServers::detach(uint64_t stream) {
  std::lock_guard lock(mu_);
  // A proxy that went away no longer reads anything: it cannot hold confirmation back.
  if (applied_.erase(stream) > 0) confirmLocked();
}

void DirtyServers::applied(uint64_t stream, uint64_t generation) {
  std::lock_guard lock(mu_);
  auto it = applied_.find(stream);
  if (it == applied_.end() || generation <= it->second) return;
  it->second = std::min(generation, generation_);
  confirmLocked();
}

void DirtyServers::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    Clock::time_point next_expiry = Clock::time_point::max();
    for (const auto& [node, r] : reports_) {
      if (!r.connected && r.retained_until < next_expiry) next_expiry = r.retained_until;
    }
    if (!changed_) {
      if (next_expiry == Clock::time_point::max()) {
        wake_.wait(lock);
      } else {
        wake_.wait_until(lock, next_expiry);
      }
    }
    if (stopping_) break;
    if (Clock::now() >= next_expiry) {
      lock.unlock();
      expire(Clock::now());
      lock.lock();
    }
    if (!changed_) continue;
    changed_ = false;
    lock.unlock();
    listeners_.callAll();  // each starts (or schedules) a write on its stream
    lock.lock();
  }
}

}  // namespace memzone::controlplane
