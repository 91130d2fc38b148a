// Acknowledging a write only once every proxy knows its failed copy (DESIGN.md, dirty
// servers). When a write's copy to server S fails and S was not yet known dirty to every
// proxy, the client's "STORED" would reach it ~1-2 ms before the other proxies stop reading
// S: a read through them in that gap returns the value the write replaced. So the reply waits
// until the controller confirms that every proxy applied a dirty set holding S, or a bound
// passes (a controller that stopped answering must not stall writes). Only the first failures
// of a server wait: once it is confirmed dirty, later failures are answered at once.
//
// "Confirmed" is about this proxy's own debt, not just the server's presence in the set
// (another proxy's debt may be about to clear): a worker that starts owing a server bumps its
// debt epoch; the report thread sends the epoch with the server; the controller says which
// report it had seen when it built a set (report_seen), and only a report seen, followed by
// reports that all still list the server, in a set every proxy applied, confirms that epoch.
//
// Per worker: a waiting request is polled every millisecond while any waits (there is no
// cross-thread wake-up on the request path); nothing runs when nothing waits.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "proxy/event/event_base.h"

namespace memzone::backend {

// How long a write's reply may wait for the confirmation.
inline constexpr int64_t kDirtyConfirmationWaitUs = 500'000;

class ConfirmationWaiter {
 public:
  virtual ~ConfirmationWaiter() = default;
  // True when the wait is over (the waiter has answered its client); it is then forgotten.
  virtual bool confirmationCheck(int64_t now_us) = 0;
};

class DirtyConfirmations {
 public:
  explicit DirtyConfirmations(event::EventBase& base) : timer_(base, [this] { poll(); }) {}

  void wait(ConfirmationWaiter* waiter) {
    waiting_.push_back(waiter);
    if (!timer_.armed()) timer_.arm(kPollInterval);
  }

 private:
  static constexpr std::chrono::microseconds kPollInterval{1000};

  void poll() {
    std::vector<ConfirmationWaiter*> current;
    current.swap(waiting_);
    int64_t now = event::nowMicros();
    // A check may answer the client and start new waits: those land in waiting_.
    for (ConfirmationWaiter* w : current) {
      if (!w->confirmationCheck(now)) waiting_.push_back(w);
    }
    if (!waiting_.empty()) timer_.arm(kPollInterval);
  }

  event::Timer timer_;
  std::vector<ConfirmationWaiter*> waiting_;
};

}  // namespace memzone::backend
