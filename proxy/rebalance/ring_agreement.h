// Whether every proxy has switched to a ring change yet (README, churn: proxies on different
// rings). A proxy that applies a change late keeps writing moved keys to their old owners;
// if the key mover had already moved them, the new owner would keep serving the older copy.
// So the mover starts a change's moves only once the controller says every proxy connected
// to it applied that change's topology version, or a later one (key_mover.h).
//
// Versions are content hashes, not ordered: "later" is what this proxy applied after it. A
// word naming a version this proxy applied at or after the change covers the change: every
// proxy serves that content, whose rings include it (a later change of the same zone replaces
// the mover's job, and with it the version it waits for).
//
// Fed by the topology applier (applied, in order) and the controller client (agreed); read by
// the mover. Any thread.
#pragma once

#include <deque>
#include <mutex>
#include <string>

namespace memzone::rebalance {

class RingAgreement {
 public:
  // This proxy applied `version` (every topology, in the order applied).
  void applied(const std::string& version);
  // The controller's word: every proxy it counts applied `version` ("" = they differ).
  void agreed(const std::string& version);
  // Whether a controller ever said so (an older one never does: then movers cannot wait on it).
  bool heard() const;
  // Whether the word covers `version` (one applied here): the agreed version is `version` or
  // one applied here after it.
  bool covers(const std::string& version) const;

 private:
  static constexpr size_t kKept = 64;  // versions remembered; an older change is not covered
  mutable std::mutex mu_;
  std::deque<std::string> applied_;  // oldest first
  std::string agreed_;
  bool heard_ = false;
};

}  // namespace memzone::rebalance
