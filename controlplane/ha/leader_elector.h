// Leader election on a coordination.k8s.io/v1 Lease with client-go's semantics
// (k8s.io/client-go/tools/leaderelection):
//
// - A candidate reads the Lease every retry period (jittered, x1.2). It may take it when the
//   Lease has no holder, or when the holder's record has not changed for the record's
//   leaseDurationSeconds as measured on this replica's own clock (never comparing clocks with
//   another machine). Taking or renewing is an update conditional on the resourceVersion read,
//   so of two racing candidates exactly one wins (the other gets 409 Conflict).
// - The leader renews every retry period. When no renewal has succeeded for the renew
//   deadline (shorter than the lease duration), it stops leading at once, before anyone else
//   can take the Lease, and goes back to being a candidate.
// - On stop (SIGTERM) a leader releases the Lease (no holder, leaseDurationSeconds 1), so a
//   standby takes over within one retry period instead of one lease duration.
//
// isLeader() is safe to call from any thread; it is also false once the renew deadline has
// passed without a renewal, even if the electing thread is stuck in a request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "controlplane/ha/lease.h"

namespace memzone::controlplane::ha {

struct LeaderElectionConfig {
  std::string lease_namespace;
  std::string lease_name = "memzone-controller";
  std::string identity;  // unique per process: hostname_random
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
};

// "" when the three durations fit together (client-go's checks), else why not.
std::string validateElectionTimes(const LeaderElectionConfig& config);

// hostname (or POD_NAME) + "_" + 16 random hex digits.
std::string makeIdentity();

class LeaderElector {
 public:
  // `on_change(true|false)` runs on the electing thread when leadership starts or ends.
  LeaderElector(k8s::ApiClient& client, LeaderElectionConfig config,
                std::function<void(bool)> on_change);
  ~LeaderElector();

  void start();
  void stop();  // releases the Lease if leading
  bool isLeader() const;
  const std::string& identity() const { return config_.identity; }
  uint64_t transitions() const { return transitions_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  void run();
  bool tryAcquireOrRenew();
  void release();
  bool sleepFor(std::chrono::milliseconds d);  // false when stopping
  void setLeading(bool leading);

  LeaderElectionConfig config_;
  LeaseClient lease_;
  std::function<void(bool)> on_change_;
  LeaseRecord observed_;  // the last record read or written
  Clock::time_point observed_time_{};
  std::atomic<bool> leading_{false};
  std::atomic<int64_t> renewed_at_ns_{0};  // steady clock of the last successful renewal
  std::atomic<uint64_t> transitions_{0};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace memzone::controlplane::ha
