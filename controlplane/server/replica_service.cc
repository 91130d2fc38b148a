#include "controlplane/server/replica_service.h"

#include <algorithm>
#include <mutex>
#include <set>
#include <string>

#include "memzone/ops/log.h"

namespace memzone::controlplane {
namespace {

class ShareDirtyStream final
    : public grpc::ServerBidiReactor<v1::ReplicaDirty, v1::ReplicaDirtyApplied> {
 public:
  ShareDirtyStream(grpc::CallbackServerContext* context, DirtyServers& dirty,
                   AppliedEverywhere& everywhere)
      : peer_(context->peer()), dirty_(dirty), everywhere_(everywhere) {
    // Outside mu_: the set calls listeners under its own lock, and they take mu_.
    subscription_ = dirty_.subscribe([this] {
      std::lock_guard lock(mu_);
      sendIfNeededLocked();
    });
    std::lock_guard lock(mu_);
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    std::lock_guard lock(mu_);
    if (!ok) {
      finishLocked();
      return;
    }
    if (replica_.empty() && !in_.replica().empty()) {
      replica_ = in_.replica();
      ops::logEvent(ops::LogLevel::kInfo, "replica-in:" + replica_,
                    "replica %s streams its dirty servers (peer %s)", replica_.c_str(),
                    peer_.c_str());
    }
    if (!replica_.empty() && in_.replica() == replica_) {
      // Bounded like the proxies' reports: what a replica's proxies can owe at most, with room.
      constexpr int kMaxAddresses = 64 * static_cast<int>(DirtyServers::kMaxReported);
      if (in_.addresses_size() > kMaxAddresses) {
        ops::logEvent(ops::LogLevel::kWarn, "replica-in-too-many:" + replica_,
                      "replica %s streams %d dirty servers; keeping the first %d", replica_.c_str(),
                      in_.addresses_size(), kMaxAddresses);
      }
      int n = std::min(in_.addresses_size(), kMaxAddresses);
      // Under mu_ is fine: the set calls its listeners on its own thread.
      dirty_.streamPeer(
          replica_, in_.generation(),
          std::set<std::string>(in_.addresses().begin(), in_.addresses().begin() + n));
      if (in_.has_proxies_applied()) {
        said_applied_ = true;
        everywhere_.peerSaid(replica_, !in_.no_proxies(), in_.proxies_applied());
      }
    }
    StartRead(&in_);
    sendIfNeededLocked();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    write_in_flight_ = false;
    if (!ok || finishing_) {
      finishLocked();
      return;
    }
    sendIfNeededLocked();
  }

  void OnDone() override {
    dirty_.unsubscribe(subscription_);
    if (!replica_.empty()) {
      dirty_.dropStreamPeer(replica_);
      if (said_applied_) everywhere_.dropPeer(replica_);
      ops::logEvent(ops::LogLevel::kInfo, "replica-in:" + replica_,
                    "replica %s stopped streaming its dirty servers", replica_.c_str());
    }
    delete this;
  }

 private:
  void sendIfNeededLocked() {
    if (write_in_flight_ || finishing_ || replica_.empty()) return;
    uint64_t applied = dirty_.appliedFor(replica_);
    if (applied <= sent_) return;
    sent_ = applied;
    out_.set_generation(applied);
    write_in_flight_ = true;
    StartWrite(&out_);
  }

  void finishLocked() {
    finishing_ = true;
    if (write_in_flight_ || finished_) return;  // OnWriteDone finishes
    finished_ = true;
    Finish(grpc::Status::OK);
  }

  std::string peer_;
  DirtyServers& dirty_;
  AppliedEverywhere& everywhere_;
  bool said_applied_ = false;  // the replica said what its proxies applied
  uint64_t subscription_ = 0;
  std::mutex mu_;
  v1::ReplicaDirty in_;
  v1::ReplicaDirtyApplied out_;
  std::string replica_;  // the sender, from its first message
  uint64_t sent_ = 0;
  bool write_in_flight_ = false;
  bool finishing_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerBidiReactor<v1::ReplicaDirty, v1::ReplicaDirtyApplied>* ReplicaService::ShareDirty(
    grpc::CallbackServerContext* context) {
  return new ShareDirtyStream(context, dirty_, everywhere_);
}

}  // namespace memzone::controlplane
