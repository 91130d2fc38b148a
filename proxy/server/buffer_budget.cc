#include "proxy/server/buffer_budget.h"

#include <algorithm>

namespace memzone::server {

BufferBudget::BufferBudget(uint64_t share, uint64_t max_item_size)
    : share_(share),
      throttle_at_(share / 10 * 8),
      resume_at_(share / 10 * 7),
      light_limit_(std::max<uint64_t>(64 * 1024, share / 256)),
      // Enough for a few large values in flight (throughput), little enough that a small
      // request queued behind them on a backend connection waits milliseconds, not seconds.
      large_cap_(std::max(std::min<uint64_t>(share / 8, 8 << 20), max_item_size)) {
  cutoff_at_ = share + 2 * large_cap_;
}

Admission BufferBudget::admit(const Asker& asker, uint64_t reservation) const {
  if (asker.held + reservation <= kGuaranteedShare) return Admission::kAdmit;
  uint64_t now = committed();
  // Before the heavy check: a guess in flight makes a connection look heavy, and refusing
  // its next request would punish it for the proxy's guess, not for what it holds.
  if (now >= throttle_at_ && asker.guessing) return Admission::kWaitReply;
  if (now >= throttle_at_ && heavy(asker.held)) {
    return now >= share_ ? Admission::kReject : Admission::kWait;
  }
  if (reservation < kLargeReply) return Admission::kAdmit;
  Admission go = Admission::kAdmit;
  if (now >= share_) {
    // At the budget a connection that is owed something gets no more large replies; one that
    // is owed nothing (it reads what it is sent) still gets one at a time from the allowance,
    // until the allowance itself is spent past the budget; a new one gets its one on credit.
    if (!asker.owes_nothing) return Admission::kReject;
    if (asker.unknown) {
      go = Admission::kAdmitOnCredit;
    } else if (buffered() + large_reserved_ >= share_ + large_cap_) {
      return Admission::kReject;
    }
  }
  bool queue_ahead = !asker.granted && !large_waiters_.empty();
  if (queue_ahead || !largeRoom(reservation)) return Admission::kWaitLarge;
  return go;
}

void BufferBudget::reserve(uint64_t bytes) {
  reserved_ += bytes;
  if (bytes >= kLargeReply) large_reserved_ += bytes;
  counters_.reserved.set(reserved_);
}

void BufferBudget::unreserve(uint64_t bytes) {
  reserved_ -= bytes;
  if (bytes >= kLargeReply) large_reserved_ -= bytes;
  counters_.reserved.set(reserved_);
}

void BufferBudget::waitForMemory(BudgetWaiter* waiter) {
  if (waiter->waiting_for_memory_) return;
  forget(waiter);
  memory_waiters_.push_back(waiter);
  waiter->waiting_for_memory_ = true;
  counters_.throttled_now.add();
  counters_.throttled.add();
}

void BufferBudget::forget(BudgetWaiter* waiter) {
  if (waiter->waiting_for_memory_) {
    waiter->waiting_for_memory_ = false;
    counters_.throttled_now.sub();
  }
  waiter->ListLink<BudgetWaitTag>::unlink();
}

void BufferBudget::waitForLarge(BudgetWaiter* waiter, uint64_t wanted, bool front) {
  if (!front && waiter->waitingForLarge()) {
    waiter->wanted_ = wanted;  // already queued: keeps its place
    return;
  }
  forget(waiter);
  waiter->wanted_ = wanted;
  if (!front) counters_.large_waits.add();
  if (front) {
    large_waiters_.push_front(waiter);
  } else {
    large_waiters_.push_back(waiter);
  }
}

bool BufferBudget::wake() {
  bool woke = false;
  if (!memory_waiters_.empty() && committed() < resume_at_) {
    // Everyone gets a try; those still too heavy come back to the (real) list.
    IntrusiveList<BudgetWaiter, BudgetWaitTag> waking;
    memory_waiters_.spliceTo(waking);
    while (BudgetWaiter* w = waking.front()) {
      forget(w);
      w->onBudgetAvailable(false);
      woke = true;
    }
  }
  // In order: the head either takes room (and the next is considered) or, if it cannot,
  // goes back to the front and stops the loop.
  while (BudgetWaiter* w = large_waiters_.front()) {
    if (!largeRoom(w->wanted_)) break;
    forget(w);
    w->onBudgetAvailable(true);
    woke = true;
  }
  return woke;
}

}  // namespace memzone::server
