// Who wants to hear that something the streams send has changed (the topology snapshot, the
// dirty-server set). Each listener starts a write to its proxy, and gRPC may do that write on
// the calling thread: with thousands of proxies one thread would send them one after the
// other, so callAll() spreads them over a few threads it joins. Listeners run under the set's
// lock, so once unsubscribe() has returned a listener is never called again; they must not
// block, and may run concurrently with each other. Any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace memzone::controlplane {

class ListenerSet {
 public:
  using Listener = std::function<void()>;

  uint64_t subscribe(Listener listener);
  void unsubscribe(uint64_t id);
  void callAll();

 private:
  std::mutex mu_;
  std::map<uint64_t, Listener> listeners_;
  uint64_t next_id_ = 1;
};

}  // namespace memzone::controlplane
