#include "controlplane/sources/kubernetes_source.h"

#include <cstdio>

#include "controlplane/model/cluster_model.h"
#include "memzone/ops/log.h"

namespace memzone::controlplane {
namespace {

constexpr auto kDebounce = std::chrono::milliseconds(100);
constexpr auto kStatusRefresh = std::chrono::seconds(1);

}  // namespace

KubernetesSource::KubernetesSource(k8s::ApiConfig config, SnapshotCache& cache,
                                   const ProxyRegistry& proxies, SourceCounters& counters)
    : client_(std::move(config)),
      cache_(cache),
      proxies_(proxies),
      counters_(counters),
      status_(client_) {
  const std::string& ns = client_.config().namespace_;
  auto on_change = [this] { markDirty(); };
  pools_ = std::make_unique<k8s::ResourceWatcher>(
      client_,
      k8s::ResourceWatcher::Options{
          "ReplicatedPool", "/apis/memzone.io/v1alpha1/namespaces/" + ns + "/replicatedpools"},
      on_change);
  slices_ = std::make_unique<k8s::ResourceWatcher>(
      client_,
      k8s::ResourceWatcher::Options{
          "EndpointSlice", "/apis/discovery.k8s.io/v1/namespaces/" + ns + "/endpointslices"},
      on_change);
  nodes_ = std::make_unique<k8s::ResourceWatcher>(
      client_, k8s::ResourceWatcher::Options{"Node", "/api/v1/nodes"}, [] {});
}

KubernetesSource::~KubernetesSource() { stop(); }

void KubernetesSource::start() {
  pools_->start();
  slices_->start();
  nodes_->start();
  thread_ = std::thread([this] { run(); });
}

void KubernetesSource::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  pools_->stop();
  slices_->stop();
  nodes_->stop();
}

bool KubernetesSource::synced() const {
  return pools_->synced() && slices_->synced() && nodes_->synced() && cache_.current() != nullptr;
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
  return {pools_.get(), slices_.get(), nodes_.get()};
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
    if (changed || !model_) {
      rebuild();
    } else {
      auto served = cache_.current();
      status_.write(*model_, served ? served->version() : "", pools_->objects(), proxies_);
    }
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
  if (!pools_->synced() || !slices_->synced()) return;  // never publish half a cluster
  auto pools = pools_->objects();
  model::ClusterModel model = model::buildClusterModel(pools, slices_->objects(), last_good_);
  for (const auto& p : model.pools) {
    // Each invalid generation of a ReplicatedPool counts once, however often we rebuild.
    if (!p.valid && rejected_.insert(p.key + "@" + std::to_string(p.generation)).second) {
      counters_.rejected.fetch_add(1);
      ops::logEvent(ops::LogLevel::kError, "rejected:" + p.key + std::to_string(p.generation),
                    "ReplicatedPool %s rejected: %s: %s", p.key.c_str(), p.reason.c_str(),
                    p.message.c_str());
    }
  }
  if (model.snapshot.pools_size() > 0) {
    std::string version = model.snapshot.version();
    size_t pool_count = static_cast<size_t>(model.snapshot.pools_size());
    if (cache_.publish(model.snapshot)) {
      ops::logEvent(ops::LogLevel::kInfo, "topology:" + version,
                    "topology %s from kubernetes (%zu pools)", version.c_str(), pool_count);
    }
  }
  std::vector<ZoneReadyBackends> ready;
  for (const auto& p : model.pools) {
    std::string name = p.key.substr(p.key.find('/') + 1);
    for (const auto& [zone, count] : p.ready_backends) ready.push_back({name, zone, count});
  }
  counters_.setReadyBackends(std::move(ready));
  auto served = cache_.current();
  status_.write(model, served ? served->version() : "", pools, proxies_);
  model_ = std::move(model);
}

}  // namespace memzone::controlplane
