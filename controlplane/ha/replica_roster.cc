#include "controlplane/ha/replica_roster.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "memzone/ops/log.h"

namespace memzone::controlplane::ha {
namespace {

using nlohmann::json;

std::string urlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      snprintf(buf, sizeof(buf), "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// How long ago a record read for the first time was renewed, on the writer's clock (the only
// hint there is): 0 if in the future, a day if unparsable or older.
std::chrono::nanoseconds ageOf(const std::string& micro_time) {
  constexpr auto kLongAgo = std::chrono::hours(24);
  std::tm tm{};
  const char* rest = strptime(micro_time.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (rest == nullptr) return kLongAgo;
  int micros = 0;
  if (*rest == '.') {
    int digits = 0;
    for (++rest; *rest >= '0' && *rest <= '9'; ++rest) {
      if (digits++ < 6) micros = micros * 10 + (*rest - '0');
    }
    for (; digits < 6; ++digits) micros *= 10;
  }
  auto renewed =
      std::chrono::system_clock::from_time_t(timegm(&tm)) + std::chrono::microseconds(micros);
  auto age = std::chrono::system_clock::now() - renewed;
  return std::clamp<std::chrono::nanoseconds>(age, std::chrono::nanoseconds(0), kLongAgo);
}

}  // namespace

json viewToJson(const ReplicaView& v) {
  json zones = json::object();
  for (const auto& [zone, n] : v.proxies.zones_down) zones[zone] = n;
  json out = {{"version", v.version},       {"total", v.proxies.total}, {"acked", v.proxies.acked},
              {"nacked", v.proxies.nacked}, {"zonesDown", zones},       {"dirty", v.dirty},
              {"address", v.address}};
  // ~25 bytes a proxy: past this many, the list would crowd the 256 KiB every object's
  // annotations share (and a refused renewal would make the replica look dead), so the
  // others count this replica's sums, without telling which proxy is which.
  constexpr size_t kMaxMembersListed = 6000;
  if (v.members.size() > kMaxMembersListed) return out;
  json members = json::object();
  json members_down = json::object();
  for (const auto& [key, m] : v.members) {
    members[key] = std::string(1, static_cast<char>(m.state));
    if (!m.zones_down.empty()) members_down[key] = m.zones_down;
  }
  out["members"] = std::move(members);
  out["membersZonesDown"] = std::move(members_down);
  return out;
}

ReplicaView viewFromJson(const json& j) {
  ReplicaView v;
  if (!j.is_object()) return v;
  auto num = [&](const char* key) {
    return j.contains(key) && j[key].is_number_integer() ? std::max(0, j[key].get<int>()) : 0;
  };
  v.version =
      j.contains("version") && j["version"].is_string() ? j["version"].get<std::string>() : "";
  v.proxies.total = num("total");
  v.proxies.acked = num("acked");
  v.proxies.nacked = num("nacked");
  if (j.contains("zonesDown") && j["zonesDown"].is_object()) {
    for (const auto& [zone, n] : j["zonesDown"].items()) {
      if (n.is_number_integer() && n.get<int>() > 0) v.proxies.zones_down[zone] = n.get<int>();
    }
  }
  if (j.contains("dirty") && j["dirty"].is_array()) {
    for (const auto& a : j["dirty"]) {
      if (a.is_string()) v.dirty.push_back(a.get<std::string>());
    }
  }
  if (j.contains("address") && j["address"].is_string()) v.address = j["address"];
  if (j.contains("members") && j["members"].is_object()) {
    v.has_members = true;
    const json down = j.value("membersZonesDown", json::object());
    for (const auto& [key, state] : j["members"].items()) {
      ProxyMember m;
      std::string s = state.is_string() ? state.get<std::string>() : "";
      if (s == "a") m.state = ProxyMember::State::kAcked;
      if (s == "n") m.state = ProxyMember::State::kNacked;
      if (down.is_object() && down.contains(key) && down[key].is_array()) {
        for (const auto& zone : down[key]) {
          if (zone.is_string()) m.zones_down.push_back(zone.get<std::string>());
        }
      }
      v.members.emplace(key, std::move(m));
    }
  }
  return v;
}

std::string replicaLeaseName(const std::string& group, const std::string& identity) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char c : identity) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(hash));
  return group + "-" + buf;
}

ReplicaRoster::ReplicaRoster(k8s::ApiClient& client, RosterConfig config,
                             std::function<ReplicaView()> local)
    : client_(client),
      config_(std::move(config)),
      local_(std::move(local)),
      own_(client, config_.lease_namespace, replicaLeaseName(config_.group, config_.identity),
           static_cast<long>(config_.lease_duration.count()),
           json{{kReplicaOfLabel, config_.group}}) {}

ReplicaRoster::~ReplicaRoster() { stop(); }

void ReplicaRoster::start() {
  thread_ = std::thread([this] { run(); });
}

void ReplicaRoster::freeze() {
  std::lock_guard lock(renew_mu_);
  frozen_ = true;
}

void ReplicaRoster::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ReplicaRoster::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

void ReplicaRoster::run() {
  do {
    renewOwn();
    listPeers();
  } while (sleepFor(config_.retry_period));
  // Going away: the others stop counting our proxies now, not a lease duration later.
  if (own_exists_) own_.remove();
}

void ReplicaRoster::renewOwn() {
  std::lock_guard renew_lock(renew_mu_);
  if (frozen_) return;
  LeaseRecord record;
  record.holder_identity = config_.identity;
  record.lease_duration_seconds = static_cast<int>(
      std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count());
  record.renew_time = microTimeNow();
  json annotations = {{kProxiesAnnotation, viewToJson(local_()).dump()}};
  LeaseClient::Result r;
  if (own_exists_) {
    r = own_.update(record, annotations);
    if (r == LeaseClient::Result::kConflict) {  // someone touched it: read it, write next time
      LeaseRecord ignored;
      own_.get(ignored);
      return;
    }
    own_exists_ = r != LeaseClient::Result::kNotFound;  // deleted (taken for dead): recreate
  }
  if (!own_exists_) {
    record.acquire_time = record.renew_time;
    r = own_.create(record, annotations);
    if (r == LeaseClient::Result::kConflict) {  // it exists after all: read it, update next time
      LeaseRecord ignored;
      own_exists_ = own_.get(ignored) == LeaseClient::Result::kOk;
      return;
    }
    own_exists_ = r == LeaseClient::Result::kOk;
  }
  if (r != LeaseClient::Result::kOk) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("replica-lease"), "replica Lease %s: %s",
                  own_.name().c_str(), own_.lastError().c_str());
  }
}

void ReplicaRoster::listPeers() {
  std::string selector = std::string(kReplicaOfLabel) + "=" + config_.group;
  k8s::ApiResponse r =
      client_.get("/apis/coordination.k8s.io/v1/namespaces/" + config_.lease_namespace +
                      "/leases?labelSelector=" + urlEncode(selector),
                  static_cast<long>(config_.lease_duration.count()));
  if (r.status != 200) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("replica-list"), "listing replica Leases: %s",
                  r.status ? ("HTTP " + std::to_string(r.status)).c_str() : r.error.c_str());
    return;
  }
  json list = json::parse(r.body, nullptr, false);
  if (!list.is_object() || !list.contains("items") || !list["items"].is_array()) return;
  auto now = Clock::now();
  std::vector<std::string> dead;
  {
    std::lock_guard lock(peers_mu_);
    std::map<std::string, Peer> next;
    for (const auto& item : list["items"]) {
      if (!item.is_object()) continue;
      const json meta = item.value("metadata", json::object());
      std::string name = meta.value("name", "");
      if (name.empty() || name == own_.name()) continue;
      LeaseRecord record = recordOf(item);
      Peer peer;
      auto old = peers_.find(name);
      peer.record = record;
      auto duration = std::chrono::seconds(std::max(1, record.lease_duration_seconds));
      if (old != peers_.end()) {
        peer.changed = old->second.record == record ? old->second.changed : now;
      } else {
        // First seen: it moved when its renewTime says, on the writer's clock (nodes keep time
        // within a second or so), so an hour-old record is dead from the start.
        peer.changed = now - ageOf(record.renew_time);
      }
      const json annotations = meta.value("annotations", json::object());
      if (annotations.is_object() && annotations.contains(kProxiesAnnotation) &&
          annotations[kProxiesAnnotation].is_string()) {
        peer.view = viewFromJson(
            json::parse(annotations[kProxiesAnnotation].get<std::string>(), nullptr, false));
      }
      peer.view.identity = record.holder_identity;
      if (collect_garbage_ && now - peer.changed > 3 * duration) dead.push_back(name);
      next.emplace(name, std::move(peer));
    }
    peers_ = std::move(next);
  }
  for (const std::string& name : dead) {
    LeaseClient lease(client_, config_.lease_namespace, name,
                      static_cast<long>(config_.lease_duration.count()));
    if (lease.remove() == LeaseClient::Result::kOk) {
      ops::logEvent(ops::LogLevel::kInfo, "replica-gc:" + name,
                    "deleted the Lease of replica %s (not renewed for 3 lease durations)",
                    name.c_str());
    }
  }
}

std::vector<ReplicaView> ReplicaRoster::peers() const {
  auto now = Clock::now();
  std::vector<std::pair<Clock::time_point, ReplicaView>> alive;
  {
    std::lock_guard lock(peers_mu_);
    for (const auto& [name, peer] : peers_) {
      // Alive while its record moved within its own lease duration: a replica killed or paused
      // stops counting then, and its proxies, once reconnected elsewhere, count there (its
      // members meanwhile count once: the leader unites them by key).
      if (now - peer.changed <
          std::chrono::seconds(std::max(1, peer.record.lease_duration_seconds)))
        alive.emplace_back(peer.changed, peer.view);
    }
  }
  std::stable_sort(alive.begin(), alive.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<ReplicaView> out;
  out.reserve(alive.size());
  for (auto& [changed, view] : alive) out.push_back(std::move(view));
  return out;
}

size_t ReplicaRoster::livePeers() const { return peers().size(); }

}  // namespace memzone::controlplane::ha
