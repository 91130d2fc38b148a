// The proxy's subscription to memzone-controller's topology stream (DESIGN.md §2).
//
// One thread owns one gRPC bidirectional stream at a time: it says who the proxy is and which
// version it serves, then answers every snapshot with an ACK (applied) or a NACK (refused,
// with the reason; the previous topology keeps serving). A second thread reports backend
// health: which servers no worker has up, so the controller never calls a pool Ready while its
// proxies cannot reach a zone, and which servers the proxy owes invalidations to, so no other
// proxy reads them (DESIGN.md, dirty servers). It sends whenever that changes: it looks every
// health interval, and at once when woken by healthChanged() (a server became owed). Every
// message carries both too. The controller answers with the dirty set, all proxies' debts
// united, passed to `on_dirty` on the client's thread; such messages are never answered. They
// also carry, when asked for, the version every proxy has applied (`on_everywhere`): the key
// mover waits for it after a ring change (rebalance/ring_agreement.h).
//
// Several controllers: `targets` lists HOST:PORT entries; each host may resolve to several
// addresses (a headless Service). Every address is tried in turn, from a random start so that
// proxies spread over the replicas. When an established stream is lost the next address is
// tried at once; the version the proxy serves goes with its first message, so a replica that
// serves the same content sends nothing and nothing is re-applied.
//
// One backoff, ours: each attempt uses a fresh channel (no gRPC reconnect backoff stacking on
// top), and a connect attempt is bounded (2 s, or twice the current backoff: a controller
// swamped by a reconnect storm is given time). After every address failed once the client waits,
// jittered +-20%, from 250 ms growing x1.6 to 10 s, re-resolving names before the next round. An
// established stream (the controller's initial metadata arrived) resets the backoff, however
// short it was (gRPC's convention: a connection that became ready starts the backoff over), so
// every outage starts from 250 ms again; a stream that ends within a second is followed by one
// initial backoff's pause, so a controller that accepts and drops cannot make the proxy spin.
// gRPC keepalive notices a dead controller within seconds.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "memzone/v1/topology.pb.h"

namespace grpc {
class ChannelCredentials;
class ClientContext;
template <class W, class R>
class ClientReaderWriter;
}  // namespace grpc

namespace memzone::topology {

struct ControllerClientOptions {
  std::vector<std::string> targets;  // HOST:PORT each (see parseControllerTargets)
  std::string node_id;
  std::string node_name;        // NODE_NAME (Kubernetes), may be empty
  std::string zone;             // --zone, may be empty
  std::string initial_version;  // what the proxy serves already (state file), or ""
  uint32_t initial_backoff_ms = 250;
  uint32_t max_backoff_ms = 10000;
  uint32_t connect_timeout_ms = 2000;  // one address's connect attempt (or 2 x the backoff)
  uint32_t health_interval_ms = 1000;  // how often backend health is looked at
  // TLS (controller_credentials.h), shared by every channel; null: plaintext.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  std::string server_name;  // what the controller's certificate must say (TLS only)
  // Told of a connection attempt that failed before the channel was ready (address shown,
  // when the attempt started), so TLS can say why where it can. The client's thread.
  std::function<void(const std::string&, std::chrono::steady_clock::time_point)> on_connect_failed;
};

// "a:1,b:2" -> {"a:1", "b:2"}; "" when every entry is HOST:PORT (IPv6 as [addr]:port), else
// why not.
std::string parseControllerTargets(const std::string& list, std::vector<std::string>& out);

enum class ControllerState { kConnecting, kConnected, kDisconnected };

class ControllerClient {
 public:
  // Applies a snapshot; returns "" when applied, else the reason it was refused (NACK).
  // Called on the client's thread.
  using ApplyFn = std::function<std::string(const v1::TopologySnapshot&)>;
  using StateFn = std::function<void(ControllerState)>;
  struct OwedServer {
    std::string address;  // "address:port"
    uint64_t epoch;       // the server's debt epoch when looked at (server_board.h)
    bool operator==(const OwedServer&) const = default;
  };
  struct HealthReport {
    std::vector<std::string> down;  // "address:port" of the backends the proxy has down, sorted
    std::vector<OwedServer> owed;   // the servers it owes invalidations
    bool operator==(const HealthReport&) const = default;
  };
  // Called on the health thread (and before each hello).
  using HealthFn = std::function<HealthReport()>;
  // The controller's dirty set, and what this proxy reported owed in a report the controller
  // had seen and in every report since (what that set may confirm). The client's thread.
  using DirtyFn =
      std::function<void(const v1::DirtyServers&, const std::vector<OwedServer>& reported)>;

  // The topology version every proxy applied, as the controller says ("" = they differ);
  // "" too when a stream that said so ends (the client's thread). Set: the proxy asks for it.
  using EverywhereFn = std::function<void(const std::string& version)>;

  ControllerClient(ControllerClientOptions options, ApplyFn apply, StateFn on_state = {},
                   HealthFn health = {}, DirtyFn on_dirty = {}, EverywhereFn on_everywhere = {});
  ~ControllerClient();  // stops and joins

  void start();
  void stop();
  // Something the health report carries changed: report now, not at the next interval.
  // Any thread; cheap (a flag and a notify).
  void healthChanged();

 private:
  using Stream = grpc::ClientReaderWriter<v1::TopologyRequest, v1::TopologySnapshot>;
  enum class Outcome { kFailed, kEstablished, kStopped };

  void run();
  void runHealth();
  // One stream to one resolved address ("ipv4:..."/"ipv6:..."), until it ends.
  Outcome runStream(const std::string& address, const std::string& shown,
                    uint32_t connect_timeout_ms);
  std::vector<std::pair<std::string, std::string>> resolveAll();  // (grpc target, shown)
  bool waitFor(uint32_t ms);                                      // false when stopping
  bool waitForHealth(uint32_t ms);  // until the interval or healthChanged(); false when stopping
  bool stopping();
  v1::TopologyRequest message(const std::string& nonce);  // hello/answer/report, with health
  bool send(const v1::TopologyRequest& request);          // any thread; under write_mu_

  ControllerClientOptions options_;
  ApplyFn apply_;
  StateFn on_state_;
  HealthFn health_;
  DirtyFn on_dirty_;
  EverywhereFn on_everywhere_;
  std::string applied_version_;  // the client thread's
  std::thread thread_;
  std::thread health_thread_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  grpc::ClientContext* context_ = nullptr;  // the live stream's, under mu_, for cancel
  Stream* stream_ = nullptr;                // the live, established stream, under mu_
  HealthReport health_report_;              // the latest, under mu_
  HealthReport health_sent_;                // what the live stream was last told, under mu_
  bool health_changed_ = false;             // healthChanged() since the last look, under mu_
  std::vector<std::string> dirty_seen_;     // the last dirty set applied (any stream), mu_
  uint64_t dirty_applied_ = 0;              // the live stream's dirty generation applied, mu_
  // The live stream's reports (report_seq) not yet known seen by the controller, and the
  // latest it has seen, with what each said owed; under mu_.
  struct SentReport {
    uint64_t seq;
    std::vector<OwedServer> owed;
  };
  std::vector<SentReport> sent_reports_;
  uint64_t report_seq_ = 0;
  // What `reported` for a set that reflects report `seen` (under mu_).
  std::vector<OwedServer> reportedThrough(uint64_t seen);
  std::mutex write_mu_;  // one Write at a time on the stream
};

}  // namespace memzone::topology
