#include "controlplane/server/proxy_registry.h"

#include <cstdio>

#include "memzone/ops/log.h"

namespace memzone::controlplane {

uint64_t ProxyRegistry::connected(ProxyStatus status) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  ops::logEvent(ops::LogLevel::kInfo, "connected:" + status.node_id,
                "proxy %s connected (zone %s, node %s, peer %s, has %s)", status.node_id.c_str(),
                status.zone.empty() ? "-" : status.zone.c_str(),
                status.node_name.empty() ? "-" : status.node_name.c_str(), status.peer.c_str(),
                status.applied_version.empty() ? "nothing" : status.applied_version.c_str());
  proxies_.emplace(id, std::move(status));
  return id;
}

void ProxyRegistry::disconnected(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  ops::logEvent(ops::LogLevel::kInfo, "disconnected:" + it->second.node_id, "proxy %s disconnected",
                it->second.node_id.c_str());
  proxies_.erase(it);
}

void ProxyRegistry::sent(uint64_t id, const std::string& version, const std::string& nonce) {
  std::lock_guard lock(mu_);
  ++counters_.snapshots_sent;
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  ++it->second.snapshots_sent;
  ops::logEvent(ops::LogLevel::kInfo, "sent:" + nonce, "sent topology %s (nonce %s) to proxy %s",
                version.c_str(), nonce.c_str(), it->second.node_id.c_str());
}

void ProxyRegistry::acked(uint64_t id, const std::string& version) {
  std::lock_guard lock(mu_);
  ++counters_.acks;
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  it->second.applied_version = version;
  ops::logEvent(ops::LogLevel::kInfo, "ack:" + it->second.node_id + version,
                "proxy %s ACKed topology %s", it->second.node_id.c_str(), version.c_str());
}

void ProxyRegistry::nacked(uint64_t id, const std::string& version, const std::string& reason) {
  std::lock_guard lock(mu_);
  ++counters_.nacks;
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  it->second.last_nack_version = version;
  it->second.last_nack_reason = reason;
  ops::logEvent(ops::LogLevel::kInfo, "ack:" + it->second.node_id + version,
                "proxy %s NACKed topology %s: %s", it->second.node_id.c_str(), version.c_str(),
                reason.c_str());
}

std::vector<ProxyStatus> ProxyRegistry::proxies() const {
  std::lock_guard lock(mu_);
  std::vector<ProxyStatus> out;
  for (const auto& [id, status] : proxies_) out.push_back(status);
  return out;
}

ProxyCounters ProxyRegistry::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

}  // namespace memzone::controlplane
