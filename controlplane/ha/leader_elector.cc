#include "controlplane/ha/leader_elector.h"

#include <unistd.h>

#include <cstdlib>
#include <random>

#include "memzone/ops/log.h"

namespace memzone::controlplane::ha {
namespace {

constexpr double kJitterFactor = 1.2;  // client-go's JitterFactor

int64_t steadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::string validateElectionTimes(const LeaderElectionConfig& c) {
  if (c.lease_duration < std::chrono::seconds(1))
    return "--leader-elect-lease-duration must be at least 1s";
  if (c.lease_duration <= c.renew_deadline)
    return "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline";
  if (c.retry_period.count() <= 0) return "--leader-elect-retry-period must be positive";
  if (c.renew_deadline.count() <= kJitterFactor * static_cast<double>(c.retry_period.count()))
    return "--leader-elect-renew-deadline must be greater than 1.2 x --leader-elect-retry-period";
  return "";
}

std::string makeIdentity() {
  std::string host;
  if (const char* pod = std::getenv("POD_NAME"); pod != nullptr && *pod != '\0') {
    host = pod;
  } else {
    char buf[256] = {};
    gethostname(buf, sizeof(buf) - 1);
    host = buf;
  }
  std::random_device rd;
  char suffix[17];
  snprintf(suffix, sizeof(suffix), "%08x%08x", rd(), rd());
  return host + "_" + suffix;
}

LeaderElector::LeaderElector(k8s::ApiClient& client, LeaderElectionConfig config,
                             std::function<void(bool)> on_change)
    : config_(std::move(config)),
      // A request may not outlive the renew deadline: past it we are no longer leader anyway.
      lease_(client, config_.lease_namespace, config_.lease_name,
             static_cast<long>(config_.renew_deadline.count())),
      on_change_(std::move(on_change)) {}

LeaderElector::~LeaderElector() { stop(); }

void LeaderElector::start() {
  thread_ = std::thread([this] { run(); });
}

void LeaderElector::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool LeaderElector::isLeader() const {
  if (!leading_.load()) return false;
  // Belt and braces: a renewal stuck in a request must not keep us writing as leader.
  auto since = std::chrono::nanoseconds(steadyNowNs() - renewed_at_ns_.load());
  return since < config_.renew_deadline;
}

bool LeaderElector::sleepFor(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

void LeaderElector::setLeading(bool leading) {
  if (leading_.exchange(leading) == leading) return;
  ++transitions_;
  if (leading) {
    ops::logEvent(ops::LogLevel::kInfo, std::string("leader"),
                  "became leader (Lease %s/%s, identity %s)", config_.lease_namespace.c_str(),
                  config_.lease_name.c_str(), config_.identity.c_str());
  } else {
    ops::logEvent(
        ops::LogLevel::kWarn, std::string("leader"), "stopped leading (Lease %s/%s): %s",
        config_.lease_namespace.c_str(), config_.lease_name.c_str(),
        lease_.lastError().empty() ? "renew deadline passed" : lease_.lastError().c_str());
  }
  if (on_change_) on_change_(leading);
}

void LeaderElector::run() {
  std::minstd_rand rng(std::random_device{}());
  auto jittered = [&](std::chrono::milliseconds base) {
    std::uniform_real_distribution<double> extra(0.0, kJitterFactor);
    return std::chrono::milliseconds(
        static_cast<int64_t>(static_cast<double>(base.count()) * (1.0 + extra(rng))));
  };
  while (true) {
    // Candidate: try now, then every retry period (jittered) until we hold the Lease.
    while (!tryAcquireOrRenew()) {
      if (!sleepFor(jittered(config_.retry_period))) return;
    }
    renewed_at_ns_ = steadyNowNs();
    setLeading(true);
    // Leader: renew every retry period; give up once the renew deadline passes.
    while (true) {
      if (!sleepFor(config_.retry_period)) {
        release();
        setLeading(false);
        return;
      }
      if (tryAcquireOrRenew()) {
        renewed_at_ns_ = steadyNowNs();
        continue;
      }
      if (std::chrono::nanoseconds(steadyNowNs() - renewed_at_ns_.load()) >=
          config_.renew_deadline) {
        break;
      }
    }
    setLeading(false);
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
  }
}

bool LeaderElector::tryAcquireOrRenew() {
  std::string now = microTimeNow();
  LeaseRecord record;
  record.holder_identity = config_.identity;
  record.lease_duration_seconds = static_cast<int>(
      std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count());
  record.acquire_time = now;
  record.renew_time = now;

  // 1. Read the Lease, or create it.
  LeaseRecord current;
  LeaseClient::Result got = lease_.get(current);
  if (got == LeaseClient::Result::kNotFound) {
    if (lease_.create(record) != LeaseClient::Result::kOk) return false;
    observed_ = record;
    observed_time_ = Clock::now();
    return true;
  }
  if (got != LeaseClient::Result::kOk) {
    ops::logEvent(ops::LogLevel::kWarn, std::string("lease-get"), "Lease %s: %s",
                  config_.lease_name.c_str(), lease_.lastError().c_str());
    return false;
  }
  // 2. A record that changed restarts the clock on it: our clock, not the writer's.
  if (!(current == observed_)) {
    observed_ = current;
    observed_time_ = Clock::now();
  }
  bool held_by_us = observed_.holder_identity == config_.identity;
  if (!observed_.holder_identity.empty() && !held_by_us &&
      Clock::now() < observed_time_ + std::chrono::seconds(observed_.lease_duration_seconds)) {
    return false;  // someone else holds it and renews it
  }
  // 3. Take or renew it, conditional on the version we read.
  if (held_by_us) {
    record.acquire_time = current.acquire_time;
    record.lease_transitions = current.lease_transitions;
  } else {
    record.lease_transitions = current.lease_transitions + 1;
  }
  if (lease_.update(record) != LeaseClient::Result::kOk) {
    if (held_by_us) {
      ops::logEvent(ops::LogLevel::kWarn, std::string("lease-renew"), "renewing Lease %s: %s",
                    config_.lease_name.c_str(), lease_.lastError().c_str());
    }
    return false;
  }
  observed_ = record;
  observed_time_ = Clock::now();
  return true;
}

void LeaderElector::release() {
  if (!leading_.load() || observed_.holder_identity != config_.identity) return;
  LeaseRecord record;
  std::string now = microTimeNow();
  record.lease_duration_seconds = 1;
  record.acquire_time = now;
  record.renew_time = now;
  record.lease_transitions = observed_.lease_transitions;
  if (lease_.update(record) == LeaseClient::Result::kOk) {
    observed_ = record;
    ops::logEvent(ops::LogLevel::kInfo, std::string("leader-release"), "released Lease %s",
                  config_.lease_name.c_str());
  }
}

}  // namespace memzone::controlplane::ha
