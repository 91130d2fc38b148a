// The controller's current topology snapshot, and who wants to hear when it changes.
// Sources publish; stream reactors read and subscribe. Any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "controlplane/server/listener_set.h"
#include "memzone/v1/topology.pb.h"

namespace memzone::controlplane {

class SnapshotCache {
 public:
  using Listener = std::function<void()>;

  // Replaces the snapshot if its version differs; listeners hear about it.
  // Returns whether it changed.
  bool publish(v1::TopologySnapshot snapshot);
  std::shared_ptr<const v1::TopologySnapshot> current() const;
  // The current snapshot as a proxy of `zone` is sent it: proxy_zone set, and a nonce of this
  // publication and zone (a stream is sent each publication at most once, so it never sees a
  // nonce twice). Built once per publication and zone and shared by every stream: with
  // thousands of proxies, no copy per send. Null before the first publication.
  std::shared_ptr<const v1::TopologySnapshot> forZone(const std::string& zone);
  // Whether this controller published `version` (the current one, or one it replaced and
  // still remembers: the last 8).
  bool published(const std::string& version) const;
  // Whether a proxy serving `version` ("" = nothing) needs `recent` to follow: it serves
  // neither the current version nor the one the current replaced.
  bool missedSwitches(const std::string& version) const;
  // `shared` (a forZone() copy) with `recent` filled: the snapshots published before, replaced
  // in the last hour (at most 8, oldest first). Its own copy; `shared` itself when a newer
  // version was published meanwhile (the next send follows).
  std::shared_ptr<const v1::TopologySnapshot> withRecent(
      std::shared_ptr<const v1::TopologySnapshot> shared) const;

  // Listeners run on the publisher's thread (and, with many, on a few helper threads it
  // joins): listener_set.h.
  uint64_t subscribe(Listener listener);
  void unsubscribe(uint64_t id);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const v1::TopologySnapshot> current_;
  uint64_t publication_ = 0;
  std::map<std::string, std::shared_ptr<const v1::TopologySnapshot>> by_zone_;  // of current_
  // The snapshots current_ replaced, oldest first, with when (at most kRecent).
  struct Replaced {
    std::shared_ptr<const v1::TopologySnapshot> snapshot;
    std::chrono::steady_clock::time_point at;
  };
  std::deque<Replaced> replaced_;
  ListenerSet listeners_;
};

}  // namespace memzone::controlplane
