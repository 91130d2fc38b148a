#include "controlplane/server/proxy_registry.h"

#include <cstdio>

#include "memzone/ops/log.h"
#include "memzone/v1/topology_yaml.h"

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
  // One key per version: with thousands of proxies, one line a second says how many more.
  ops::logEvent(ops::LogLevel::kInfo, "sent:" + version, "sent topology %s (nonce %s) to proxy %s",
                version.c_str(), nonce.c_str(), it->second.node_id.c_str());
}

void ProxyRegistry::acked(uint64_t id, const std::string& version) {
  std::lock_guard lock(mu_);
  ++counters_.acks;
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  it->second.applied_version = version;
  ops::logEvent(ops::LogLevel::kInfo, "ack:" + version, "proxy %s ACKed topology %s",
                it->second.node_id.c_str(), version.c_str());
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

void ProxyRegistry::health(uint64_t id, const v1::TopologyRequest& request) {
  if (!request.reports_health()) return;
  std::set<std::string> down(request.backends_down().begin(), request.backends_down().end());
  std::lock_guard lock(mu_);
  auto it = proxies_.find(id);
  if (it == proxies_.end()) return;
  it->second.reports_health = true;
  it->second.backends_owed = {request.backends_owed().begin(), request.backends_owed().end()};
  if (it->second.backends_down == down) return;
  std::string list;
  for (const auto& a : down) list += (list.empty() ? "" : " ") + a;
  ops::logEvent(ops::LogLevel::kInfo, "health:" + it->second.node_id,
                "proxy %s reports %zu backends down%s%s", it->second.node_id.c_str(), down.size(),
                down.empty() ? "" : ": ", list.c_str());
  it->second.backends_down = std::move(down);
}

void ProxyView::add(const ProxyView& other) {
  total += other.total;
  acked += other.acked;
  nacked += other.nacked;
  for (const auto& [zone, n] : other.zones_down) zones_down[zone] += n;
}

std::string memberKey(const std::string& node_id) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : node_id) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(hash));
  return buf;
}

ProxyView countMembers(const ProxyMembers& members) {
  ProxyView out;
  for (const auto& [key, m] : members) {
    ++out.total;
    out.acked += m.state == ProxyMember::State::kAcked;
    out.nacked += m.state == ProxyMember::State::kNacked;
    for (const auto& zone : m.zones_down) ++out.zones_down[zone];
  }
  return out;
}

ProxyMembers ProxyRegistry::members(const v1::TopologySnapshot* served) const {
  ProxyMembers out;
  std::string version = served ? served->version() : "";
  std::lock_guard lock(mu_);
  // Ids grow: a later stream of the same node id replaces the earlier one.
  for (const auto& [id, p] : proxies_) {
    // A proxy without a node id (an old one) is its own member.
    std::string key = p.node_id.empty() ? "stream-" + std::to_string(id) : memberKey(p.node_id);
    ProxyMember m;
    if (served != nullptr) {
      bool applied = p.applied_version == version;
      if (applied) {
        m.state = ProxyMember::State::kAcked;
      } else if (p.last_nack_version == version) {
        m.state = ProxyMember::State::kNacked;
      }
      if (applied && !p.backends_down.empty()) {
        for (const v1::Pool& pool : served->pools()) {
          for (const v1::Zone& zone : pool.zones()) {
            bool all_down = zone.backends_size() > 0;
            for (const v1::Backend& b : zone.backends()) {
              all_down = all_down && p.backends_down.count(v1::backendAddress(b)) > 0;
            }
            if (all_down) m.zones_down.push_back(pool.name() + "/" + zone.zone());
          }
        }
      }
    }
    out[key] = std::move(m);
  }
  return out;
}

ProxyView ProxyRegistry::view(const v1::TopologySnapshot* served) const {
  return countMembers(members(served));
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
