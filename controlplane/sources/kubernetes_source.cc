#include "controlplane/sources/kubernetes_source.h"

#include <cstdio>
#include <thread>
#include <vector>

#include "controlplane/model/cluster_model.h"
#include "memzone/ops/log.h"

namespace memzone::controlplane {
namespace {

constexpr auto kDebounce = std::chrono::milliseconds(100);
constexpr auto kStatusRefresh = std::chrono::seconds(1);
// How long a proxy another replica listed counts after that replica's Lease went (it ended
// its streams and released the Lease): the proxies' reconnect bound, 1.5 s, and a margin.
constexpr auto kInTransit = std::chrono::seconds(2);
// On a graceful stop, between the end of the proxy streams and the deletion of this replica's
// Lease: the proxies reconnect to another replica meanwhile (milliseconds), so no status
// written elsewhere misses them.
constexpr auto kProxyHandover = std::chrono::milliseconds(200);

}  // namespace

KubernetesSource::KubernetesSource(k8s::ApiConfig config, KubernetesSourceOptions options,
                                   SnapshotCache& cache, const ProxyRegistry& proxies,
                                   DirtyServers& dirty_servers, SourceCounters& counters)
    : client_(std::move(config)),
      options_(std::move(options)),
      cache_(cache),
      proxies_(proxies),
      dirty_servers_(dirty_servers),
      counters_(counters),
      status_(client_) {
  const std::string& ns = client_.config().namespace_;
  auto on_change = [this] { markDirty(); };
  pools_ = std::make_unique<k8s::ResourceWatcher>(
      client_,
      k8s::ResourceWatcher::Options{
          "ReplicatedPool", "/apis/memzone.io/v1alpha1/namespaces/" + ns + "/replicatedpools"},
      on_change);
  services_ = std::make_unique<k8s::ResourceWatcher>(
      client_, k8s::ResourceWatcher::Options{"Service", "/api/v1/namespaces/" + ns + "/services"},
      on_change);
  slices_ = std::make_unique<k8s::ResourceWatcher>(
      client_,
      k8s::ResourceWatcher::Options{
          "EndpointSlice", "/apis/discovery.k8s.io/v1/namespaces/" + ns + "/endpointslices"},
      on_change);
  nodes_ = std::make_unique<k8s::ResourceWatcher>(
      client_, k8s::ResourceWatcher::Options{"Node", "/api/v1/nodes"}, [] {});
  if (options_.leader_elect) {
    ha::LeaderElectionConfig& e = options_.election;
    if (e.lease_namespace.empty()) e.lease_namespace = ns;
    if (e.identity.empty()) e.identity = ha::makeIdentity();
    elector_ = std::make_unique<ha::LeaderElector>(client_, e, [this](bool leading) {
      roster_->setCollectGarbage(leading);
      leadership_changed_ = true;
      markDirty();  // a new leader says what it sees at once
    });
    roster_ = std::make_unique<ha::ReplicaRoster>(
        client_,
        ha::RosterConfig{e.lease_namespace, e.lease_name, e.identity, e.lease_duration,
                         e.retry_period},
        [this] {
          auto served = cache_.current();
          std::set<std::string> dirty = dirty_servers_.local();
          ha::ReplicaView view;
          view.version = served ? served->version() : "";
          view.members = proxies_.members(served.get());
          view.has_members = true;
          view.proxies = countMembers(view.members);
          view.dirty = {dirty.begin(), dirty.end()};
          view.address = options_.advertise_address;
          return view;
        });
  }
}

KubernetesSource::~KubernetesSource() { stop(); }

void KubernetesSource::start() {
  pools_->start();
  services_->start();
  slices_->start();
  nodes_->start();
  thread_ = std::thread([this] { run(); });
  if (roster_) roster_->start();
  if (elector_) elector_->start();
}

void KubernetesSource::beginStop() {
  {
    std::lock_guard lock(status_mu_);
    status_stopped_ = true;
  }
  if (roster_) roster_->freeze();
}

void KubernetesSource::handOver() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  beginStop();
  // A watch notices it must stop within a second (curl's progress callback): the four at
  // once, while the Leases are handed over.
  for (auto* w : {pools_.get(), services_.get(), slices_.get(), nodes_.get()}) {
    watcher_stops_.emplace_back([this, w] {
      w->stop();
      std::lock_guard lock(mu_);
      ++watchers_stopped_;
      wake_.notify_all();
    });
  }
  // The leader Lease first: a standby takes over while we finish the rest, counting our
  // proxies through our frozen Lease until they reach it (or another replica).
  if (elector_) elector_->stop();
  if (roster_) {
    std::this_thread::sleep_for(kProxyHandover);
    roster_->stop();
  }
  if (thread_.joinable()) thread_.join();
}

bool KubernetesSource::watchesStopped(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mu_);
  return wake_.wait_until(lock, deadline,
                          [this] { return watchers_stopped_ == watcher_stops_.size(); });
}

void KubernetesSource::stop() {
  handOver();
  for (auto& t : watcher_stops_) {
    if (t.joinable()) t.join();
  }
}

bool KubernetesSource::synced() const {
  return pools_->synced() && services_->synced() && slices_->synced() && nodes_->synced() &&
         cache_.current() != nullptr;
}

std::string KubernetesSource::zoneOfNode(const std::string& node) const {
  if (node.empty()) return "";
  auto nodes = nodes_->objects();
  auto it = nodes.find(node);
  if (it == nodes.end()) return "";
  return it->second.value("metadata", nlohmann::json::object())
      .value("labels", nlohmann::json::object())
      .value("topology.kubernetes.io/zone", "");
}

std::vector<const k8s::ResourceWatcher*> KubernetesSource::watchers() const {
  return {pools_.get(), services_.get(), slices_.get(), nodes_.get()};
}

bool KubernetesSource::writesStatus() const { return !elector_ || elector_->isLeader(); }

void KubernetesSource::unitePeersDirtyServers() {
  if (!roster_) return;
  std::map<std::string, std::set<std::string>> dirty;
  std::map<std::string, std::string> addresses;
  for (const ha::ReplicaView& peer : roster_->peers()) {
    dirty[peer.identity].insert(peer.dirty.begin(), peer.dirty.end());
    if (!peer.address.empty()) addresses[peer.identity] = peer.address;
  }
  std::set<std::string> identities;
  for (const auto& [identity, servers] : dirty) identities.insert(identity);
  // By replica: a replica that streams its set directly replaces what its Lease says.
  dirty_servers_.setLeasePeers(std::move(dirty));
  if (options_.on_peer_addresses) options_.on_peer_addresses(addresses);
  if (options_.on_peer_identities) options_.on_peer_identities(std::move(identities));
}

ProxyView KubernetesSource::proxyView(const v1::TopologySnapshot* served) {
  // Each proxy once: ours first (what we see now), then the live replicas', most recently
  // renewed first (a proxy two replicas list moved to the one that renewed last).
  ProxyMembers members = proxies_.members(served);
  if (!roster_) return countMembers(members);
  std::string version = served ? served->version() : "";
  const auto now = std::chrono::steady_clock::now();
  ProxyView older;  // replicas of an older release: only their sums
  for (const ha::ReplicaView& peer : roster_->peers()) {
    if (!peer.has_members) {
      if (peer.version == version) {
        older.add(peer.proxies);
      } else {
        older.total += peer.proxies.total;
      }
      continue;
    }
    for (const auto& [key, member] : peer.members) {
      last_listed_[key] = now;
      if (peer.version == version) {
        members.emplace(key, member);
      } else {
        members.emplace(key, ProxyMember{});  // serving another version yet: pending here
      }
    }
  }
  // A replica that stops gracefully ends its streams, then releases its Lease: its proxies
  // are on their way to another replica (back within a second and a half) and serve
  // meanwhile. Each still counts, as pending, until kInTransit after a Lease last listed it,
  // unless a replica (this one first) lists it again; a proxy that died with its replica
  // drops out then.
  std::erase_if(last_listed_,
                [now](const auto& listed) { return now - listed.second > kInTransit; });
  for (const auto& [key, listed_at] : last_listed_) members.emplace(key, ProxyMember{});
  ProxyView view = countMembers(members);
  view.add(older);
  return view;
}

void KubernetesSource::writeStatus() {
  std::lock_guard status_lock(status_mu_);
  if (status_stopped_) return;
  if (leadership_changed_.exchange(false)) status_.reset();
  if (!model_ || !writesStatus()) return;
  auto served = cache_.current();
  status_.write(*model_, served ? served->version() : "", pools_->objects(),
                proxyView(served.get()));
}

void KubernetesSource::markDirty() {
  {
    std::lock_guard lock(mu_);
    dirty_ = true;
  }
  wake_.notify_all();
}

void KubernetesSource::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, kStatusRefresh, [this] { return stopping_ || dirty_; });
    if (stopping_) return;
    bool changed = dirty_;
    if (changed) {
      // Let a burst finish: everything that changes in the next 100 ms joins this rebuild.
      wake_.wait_for(lock, kDebounce, [this] { return stopping_; });
      if (stopping_) return;
      dirty_ = false;
    }
    lock.unlock();
    // Objects changed (or no model yet): rebuild. Otherwise only the proxies' ACKs moved,
    // and the status is refreshed from the model we have.
    if (changed || !model_) rebuild();
    writeStatus();
    unitePeersDirtyServers();
    lock.lock();
  }
}

void KubernetesSource::rebuild() {
  try {
    rebuildUnchecked();
  } catch (const nlohmann::json::exception& e) {
    // An object shaped in a way we did not expect: keep the last topology, say why.
    counters_.rejected.fetch_add(1);
    ops::logEvent(ops::LogLevel::kError, std::string("objects-rejected"),
                  "kubernetes objects rejected: %s", e.what());
  }
}

void KubernetesSource::rebuildUnchecked() {
  // Never publish half a cluster.
  if (!pools_->synced() || !services_->synced() || !slices_->synced()) return;
  model::ClusterObjects objects{pools_->objects(), services_->objects(), slices_->objects()};
  model::ClusterModel model = model::buildClusterModel(objects, last_good_);
  for (const auto& p : model.pools) {
    // Each invalid generation of a ReplicatedPool counts once, however often we rebuild.
    if (!p.valid && rejected_.insert(p.key + "@" + std::to_string(p.generation)).second) {
      counters_.rejected.fetch_add(1);
      ops::logEvent(ops::LogLevel::kError, "rejected:" + p.key + std::to_string(p.generation),
                    "ReplicatedPool %s rejected: %s: %s", p.key.c_str(), p.reason.c_str(),
                    p.message.c_str());
    }
  }
  // The real state, even with no pools: proxies must stop replicating a deleted pool.
  std::string version = model.snapshot.version();
  size_t pool_count = static_cast<size_t>(model.snapshot.pools_size());
  if (cache_.publish(model.snapshot)) {
    ops::logEvent(ops::LogLevel::kInfo, "topology:" + version,
                  "topology %s from kubernetes (%zu pools)", version.c_str(), pool_count);
  }
  std::vector<ZoneReadyBackends> ready;
  for (const auto& p : model.pools) {
    std::string name = p.key.substr(p.key.find('/') + 1);
    for (const auto& [zone, count] : p.ready_backends) ready.push_back({name, zone, count});
  }
  counters_.setReadyBackends(std::move(ready));
  model_ = std::move(model);
}

}  // namespace memzone::controlplane
