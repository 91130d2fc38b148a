#include "controlplane/server/dirty_servers.h"

#include <algorithm>
#include <iterator>

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
  if (owed.size() > kMaxReported) {
    ops::logEvent(ops::LogLevel::kWarn, "dirty-too-many:" + node_id,
                  "proxy %s reports %zu owed servers; keeping the first %zu", node_id.c_str(),
                  owed.size(), kMaxReported);
    owed.erase(std::next(owed.begin(), kMaxReported), owed.end());
  }
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

void DirtyServers::inherit(const std::string& node_id, std::set<std::string> dirty,
                           Clock::time_point until) {
  if (dirty.empty() || until <= Clock::now()) return;
  if (dirty.size() > kMaxReported) dirty.erase(std::next(dirty.begin(), kMaxReported), dirty.end());
  std::lock_guard lock(mu_);
  // Under a name no proxy has (node ids carry no '/'), so its own reports never replace it;
  // a retained report, gone at `until` like a disconnected proxy's.
  Report& r = reports_["inherited/" + node_id];
  r.connected = false;
  r.inherited = true;
  r.retained_until = until;
  r.stream = 0;
  if (r.owed == dirty) {
    wake_.notify_all();
    return;
  }
  r.owed = std::move(dirty);
  recomputeLocked();
  wake_.notify_all();  // the notifier's next expiry may be sooner now
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

void DirtyServers::setLeasePeers(std::map<std::string, std::set<std::string>> by_replica) {
  std::lock_guard lock(mu_);
  if (lease_peers_ == by_replica) return;
  lease_peers_ = std::move(by_replica);
  recomputeLocked();
}

void DirtyServers::streamPeer(const std::string& replica, uint64_t generation,
                              std::set<std::string> dirty) {
  std::lock_guard lock(mu_);
  StreamPeer& peer = stream_peers_[replica];
  peer.generation = std::max(peer.generation, generation);
  if (peer.dirty != dirty || peer.content_since == 0) {
    peer.dirty = std::move(dirty);
    recomputeLocked();
    // Our proxies have its set once they applied this generation (or a later one).
    peer.content_since = peer.dirty.empty() ? 0 : generation_;
  }
  changed_ = true;  // the streams from that replica may answer now
  wake_.notify_all();
}

void DirtyServers::dropStreamPeer(const std::string& replica) {
  std::lock_guard lock(mu_);
  if (stream_peers_.erase(replica) > 0) recomputeLocked();  // its Lease set counts again
}

uint64_t DirtyServers::appliedFor(const std::string& replica) const {
  std::lock_guard lock(mu_);
  auto it = stream_peers_.find(replica);
  if (it == stream_peers_.end()) return 0;
  uint64_t local = generation_;  // no proxy here: nobody to wait for
  for (const auto& [stream, generation] : applied_) local = std::min(local, generation);
  return local >= it->second.content_since ? it->second.generation : 0;
}

void DirtyServers::linkPeer(const std::string& replica) {
  std::lock_guard lock(mu_);
  linked_.emplace(replica, 0);
  if (message_->dirty().addresses_size() > 0 && confirmed_ != 0) {
    confirmed_ = 0;  // it has not said what it applied yet
    publishLocked(nullptr);
  }
}

void DirtyServers::peerApplied(const std::string& replica, uint64_t generation) {
  std::lock_guard lock(mu_);
  auto it = linked_.find(replica);
  if (it == linked_.end() || generation <= it->second) return;
  it->second = std::min(generation, generation_);
  confirmLocked();
}

void DirtyServers::unlinkPeer(const std::string& replica) {
  std::lock_guard lock(mu_);
  if (linked_.erase(replica) > 0) confirmLocked();
}

uint64_t DirtyServers::generation() const {
  std::lock_guard lock(mu_);
  return generation_;
}

std::shared_ptr<const v1::TopologySnapshot> DirtyServers::message() const {
  std::lock_guard lock(mu_);
  return message_;
}

std::set<std::string> DirtyServers::local() const {
  uint64_t generation = 0;
  return local(generation);
}

std::set<std::string> DirtyServers::local(uint64_t& generation) const {
  std::lock_guard lock(mu_);
  generation = generation_;
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
      if (it->second.inherited) {
        ops::logEvent(ops::LogLevel::kInfo, "dirty-inherited-expired:" + it->first,
                      "the start-up grace is over: the %zu servers %s said were dirty are held "
                      "only for the proxies that report them",
                      it->second.owed.size(), it->first.c_str());
      } else {
        ops::logEvent(ops::LogLevel::kWarn, "dirty-expired:" + it->first,
                      "proxy %s did not come back within %lld ms; the %zu servers it owed "
                      "invalidations are no longer held dirty for it",
                      it->first.c_str(), static_cast<long long>(retain_.count()),
                      it->second.owed.size());
      }
      it = reports_.erase(it);
      dropped = true;
    } else {
      ++it;
    }
  }
  if (dropped) recomputeLocked();
}

void DirtyServers::recomputeLocked() {
  std::set<std::string> all;
  for (const auto& [replica, dirty] : lease_peers_) {
    if (stream_peers_.count(replica) == 0) all.insert(dirty.begin(), dirty.end());
  }
  for (const auto& [replica, peer] : stream_peers_)
    all.insert(peer.dirty.begin(), peer.dirty.end());
  for (const auto& [node, r] : reports_) all.insert(r.owed.begin(), r.owed.end());
  const auto& current = message_->dirty().addresses();
  if (static_cast<size_t>(current.size()) == all.size() &&
      std::equal(all.begin(), all.end(), current.begin())) {
    return;
  }
  ++generation_;
  std::map<std::string, uint64_t> since;
  for (const std::string& a : all) {
    auto it = since_.find(a);
    since.emplace(a, it != since_.end() ? it->second : generation_);
  }
  since_ = std::move(since);
  // Nobody has applied the new generation yet, unless nobody takes the set at all.
  if (applied_.empty()) local_confirmed_ = generation_;
  if (applied_.empty() && linked_.empty()) confirmed_ = generation_;
  publishLocked(&all);
}

void DirtyServers::confirmLocked() {
  uint64_t local = generation_;
  for (const auto& [stream, generation] : applied_) local = std::min(local, generation);
  if (local != local_confirmed_) {
    local_confirmed_ = local;
    changed_ = true;  // the streams from other replicas may answer now
    wake_.notify_all();
  }
  uint64_t lowest = local;
  for (const auto& [replica, generation] : linked_) lowest = std::min(lowest, generation);
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
    for (const std::string& a : *addresses) {
      dirty->add_addresses(a);
      dirty->add_since(since_[a]);
    }
  } else {
    *dirty->mutable_addresses() = message_->dirty().addresses();
    *dirty->mutable_since() = message_->dirty().since();
  }
  message_ = std::move(next);
  changed_ = true;
  wake_.notify_all();
}

void DirtyServers::attach(uint64_t stream) {
  std::lock_guard lock(mu_);
  applied_.emplace(stream, 0);
  local_confirmed_ = 0;
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
