// Which topology version every proxy connected here has applied (README, churn: proxies on
// different rings). The key mover of a proxy moves a key off its old owner only once no proxy
// can still write it there through the old ring; this is what tells it so.
//
// Every topology stream attaches with the version its proxy said it serves (its hello, e.g.
// from its state file) and reports each ACK. A NACK changes nothing: that proxy keeps its old
// version, so the proxies differ and no version is applied everywhere. A proxy serving
// nothing yet (hello with no version) routes no write and is not counted until it ACKs.
//
// Other controller replicas serve proxies this one does not see: while any is known, nothing
// is said (""), and proxies wait their bound.
//
// Listeners (the streams) are called on this object's own thread whenever version() changed,
// never on a reporter's: a stream reports under its own lock, and its listener takes that lock.
// Any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "controlplane/server/listener_set.h"

namespace memzone::controlplane {

class AppliedEverywhere {
 public:
  AppliedEverywhere();
  ~AppliedEverywhere();  // stops the notifier thread
  AppliedEverywhere(const AppliedEverywhere&) = delete;
  AppliedEverywhere& operator=(const AppliedEverywhere&) = delete;

  // A stream started; `version` is what its proxy serves ("" = nothing yet).
  void attach(uint64_t stream, const std::string& version);
  // Its proxy ACKed `version`.
  void applied(uint64_t stream, const std::string& version);
  void detach(uint64_t stream);
  // Whether other controller replicas are known (their proxies are not counted here).
  void setOtherReplicas(bool known);

  // The version every counted proxy applied; "" while they differ, none is counted, or other
  // replicas are known.
  std::string version() const;

  uint64_t subscribe(ListenerSet::Listener listener);
  void unsubscribe(uint64_t id);

 private:
  void recomputeLocked();
  void run();

  mutable std::mutex mu_;
  std::map<uint64_t, std::string> applied_;  // stream -> version its proxy serves
  bool other_replicas_ = false;
  std::string version_;
  bool changed_ = false;  // listeners have not heard of the latest version_
  bool stopping_ = false;
  std::condition_variable wake_;
  ListenerSet listeners_;
  std::thread thread_;
};

}  // namespace memzone::controlplane
