// What the other controller replicas know about their proxies.
//
// Each replica serves the proxies connected to it, but only the leader writes ReplicatedPool
// status, which counts every proxy. So each replica keeps a Lease of its own (named after its
// identity, labelled `memzone.io/replica-of=<election Lease name>`), renewed every retry
// period, whose annotation `memzone.io/proxies` carries its ProxyView as JSON: the topology
// version it serves, proxies connected, ACKed and NACKed, zones its proxies report down, and
// the servers its proxies owe invalidations to (every replica unites them into its dirty set).
// The view also lists its proxies by memberKey(node id), so that the leader counts each proxy
// once: a proxy that moved to another replica is still listed by the Lease of the one it left
// (killed, or resumed after a pause with streams it has not yet noticed gone).
// The leader lists these Leases and counts only those alive: a Lease is alive while its record
// moved within its own leaseDurationSeconds, measured on the reader's clock from when it saw the
// move (as in leader election); a Lease seen for the first time counts only if its renewTime
// is that recent (an hour-old Lease is dead from the start). A replica that stops freezes its
// Lease while its proxies move, then deletes it; the leader deletes Leases that have been dead
// for three lease durations (a replica that was killed). One thread per roster; peers() may be
// called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/ha/lease.h"
#include "controlplane/server/proxy_registry.h"

namespace memzone::controlplane::ha {

inline constexpr const char* kReplicaOfLabel = "memzone.io/replica-of";
inline constexpr const char* kProxiesAnnotation = "memzone.io/proxies";

struct RosterConfig {
  std::string lease_namespace;
  std::string group;  // the election Lease's name
  std::string identity;
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds retry_period{2000};
};

// A replica's view, keyed by the version it was computed against.
struct ReplicaView {
  std::string version;
  ProxyView proxies;
  // Servers its proxies owe invalidations to (dirty_servers.h), so every replica's proxies
  // stop reading them.
  std::vector<std::string> dirty;
  // Where it serves the topology port, for the other replicas' dirty-set streams
  // (replica_links.h); "" when it does not say. Its identity comes from its Lease's holder.
  std::string address;
  std::string identity;
  // Its proxies one by one (absent from a replica of an older release: then only the sums).
  ProxyMembers members;
  bool has_members = false;
};

nlohmann::json viewToJson(const ReplicaView& view);
ReplicaView viewFromJson(const nlohmann::json& j);

// The name of a replica's own Lease: group + "-" + a hash of the identity (a DNS label).
std::string replicaLeaseName(const std::string& group, const std::string& identity);

class ReplicaRoster {
 public:
  // `local` is asked for this replica's view every retry period (on the roster's thread).
  ReplicaRoster(k8s::ApiClient& client, RosterConfig config, std::function<ReplicaView()> local);
  ~ReplicaRoster();

  void start();
  // Stops renewing (a renewal in flight finishes first): the Lease keeps saying which proxies
  // were here while they move to another replica.
  void freeze();
  void stop();  // deletes this replica's Lease
  // The views of the other live replicas, as last listed, the most recently renewed first.
  std::vector<ReplicaView> peers() const;
  // Also delete the Leases of replicas long dead (the leader does).
  void setCollectGarbage(bool on) { collect_garbage_ = on; }
  size_t livePeers() const;

 private:
  using Clock = std::chrono::steady_clock;
  void run();
  void renewOwn();
  void listPeers();
  bool sleepFor(std::chrono::milliseconds d);

  k8s::ApiClient& client_;
  RosterConfig config_;
  std::function<ReplicaView()> local_;
  LeaseClient own_;
  bool own_exists_ = false;
  std::mutex renew_mu_;  // held through a renewal; freeze() waits for it
  bool frozen_ = false;  // under renew_mu_
  std::atomic<bool> collect_garbage_{false};
  struct Peer {
    LeaseRecord record;
    Clock::time_point changed;  // when we last saw the record change
    ReplicaView view;
  };
  mutable std::mutex peers_mu_;
  std::map<std::string, Peer> peers_;  // by Lease name, other replicas only
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace memzone::controlplane::ha
