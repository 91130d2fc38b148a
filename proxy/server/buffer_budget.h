// One worker's share of --max-buffer-memory and the admission decisions made against it.
//
// What is counted: the capacity of every client-side buffer (input, unsent output, requests
// and the replies they hold for their client), the backend connections' buffers, and the free
// requests pooled for reuse: MemoryAccounts charged by the buffers themselves, so the count is
// exact, not sampled. On top of it, `reserved`: the bytes expected back for replies still in
// flight (each request reserves its connection's recent reply size, times its keys), so the
// proxy does not ask its backends for more than it can hold.
//
// Why a static split (share = budget / workers) rather than one shared total: a decision is
// made for every request, and a shared total would be a cache line written by every worker on
// every buffer change. A per-worker share needs no cross-thread traffic at all and is a hard
// bound by construction; SO_REUSEPORT spreads connections over workers by address hash, so a
// client cannot pick the worker it loads. The price: one worker cannot borrow an idle
// worker's share (size the budget per worker, README "Limits").
//
// The decisions, modelled on Envoy's overload manager (pressure levels with actions) and its
// "reset the streams holding the most memory" action:
//   committed < 80% of the share      everything flows (per-connection limits only)
//   committed >= 80%                  connections holding more than the light limit are no
//                                     longer read; requests they already sent wait
//   committed >= 100%                 requests on those connections are answered
//                                     SERVER_ERROR out of memory; requests that may bring a
//                                     large reply are too, unless their connection is owed
//                                     nothing: then one at a time, through the allowance
//                                     below, until buffered + allowance in use reach share +
//                                     allowance. A connection whose reply sizes are unknown
//                                     yet (new) always gets its one, on credit: a small reply
//                                     is delivered (and teaches the connection), a large one
//                                     is answered out of memory instead, so a new client of
//                                     small values is served while slow readers hold the
//                                     budget, and a new slow reader gets nothing to hold
//   buffered > share + 2 allowances   estimates were wrong (a client switched to large
//                                     values mid-pipeline): the connection with the most
//                                     reply bytes unread is closed (cut off), one per turn
// Whatever the pressure, a connection is guaranteed a small share (kGuaranteedShare): while
// what it holds plus what a request reserves stays within it, the request goes (neither
// refused nor held back). So the connections refused are always the ones holding the most.
// Under pressure, a connection whose reply sizes are still a guess (a new one) sends one
// retrieval at a time until its first reply teaches it (kWaitReply): its pipelined small
// gets wait for that reply instead of being refused for a guessed large one.
// A request that expands after parsing (a multi-get's per-key bookkeeping, its keys copied,
// per-server sub-requests) is weighed before it is dispatched (affords()): if it would take
// the worker past its share it is refused before anything is built for it.
// Independently of pressure, replies expected to be large (>= 64 KiB) may be in flight only up
// to the large-reply allowance at once (FIFO for the rest): a backend connection is shared by
// every client of the worker, and what is queued on it ahead of a small request is what that
// request waits for (head-of-line). Worker thread only; the accounts are read by scrapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proxy/common/intrusive_list.h"
#include "proxy/common/memory_account.h"
#include "proxy/metrics/counter.h"

namespace memzone::server {

// Buffer memory of one worker, by kind (all roll up into `total`).
struct BufferMemory {
  MemoryAccount total;
  MemoryAccount client_input{&total};
  MemoryAccount client_output{&total};
  MemoryAccount requests{&total};  // requests in flight and the replies they hold
  MemoryAccount backend{&total};   // backend connections' input and output
  MemoryAccount pooled{&total};    // free requests kept for reuse
  MemoryAccount tls{&total};       // OpenSSL state of client TLS connections (an estimate)
};

struct BudgetCounters {
  metrics::Counter reserved;           // gauge: bytes expected from replies in flight
  metrics::Counter throttled;          // connections that stopped being read for memory
  metrics::Counter rejected;           // requests answered SERVER_ERROR out of memory
  metrics::Counter large_waits;        // requests that waited for the large-reply allowance
  metrics::Counter cut_off;            // connections closed for holding the most
  metrics::Counter throttled_now;      // gauge: connections not read for memory right now
  metrics::Counter pool_trimmed;       // pooled requests freed by the idle trim
  metrics::Counter backend_oversized;  // backend connections failed for an oversized reply
};

enum class Admission : uint8_t {
  kAdmit,
  // At the budget, from a connection whose reply sizes are not known yet: it goes, and should
  // its reply turn out large it is answered out of memory instead (the bytes are dropped).
  kAdmitOnCredit,
  kWait,       // memory pressure: keep the request unread until pressure drops
  kWaitLarge,  // the large-reply allowance is used up: wait for it, in arrival order
  // Memory pressure, and the connection's replies are a guess with one in flight: wait for
  // that reply (it wakes the connection), which tells how large its replies are.
  kWaitReply,
  kReject,  // answer SERVER_ERROR out of memory
};

struct BudgetWaitTag {};
class BudgetWaiter : public ListLink<BudgetWaitTag> {
 public:
  virtual ~BudgetWaiter() = default;
  // Budget is available again: try the waiting request. Called from BufferBudget::wake();
  // `large_turn`: it is this waiter's turn at the large-reply allowance.
  virtual void onBudgetAvailable(bool large_turn) = 0;
  bool waitingForMemory() const { return waiting_for_memory_; }
  bool waitingForLarge() const { return linked() && !waiting_for_memory_; }

 private:
  friend class BufferBudget;
  uint64_t wanted_ = 0;              // kWaitLarge: the reservation it waits to make
  bool waiting_for_memory_ = false;  // on the memory list (else, if linked, the large one)
};

class BufferBudget {
 public:
  // Replies expected at or above this are "large": they go through the allowance.
  static constexpr uint64_t kLargeReply = 64 * 1024;
  // What every connection may hold and still be served whatever the pressure.
  static constexpr uint64_t kGuaranteedShare = 64 * 1024;

  BufferBudget(uint64_t share, uint64_t max_item_size);

  BufferMemory& memory() { return memory_; }
  const BufferMemory& memory() const { return memory_; }
  BudgetCounters& counters() { return counters_; }
  const BudgetCounters& counters() const { return counters_; }
  uint64_t share() const { return share_; }
  uint64_t largeAllowance() const { return large_cap_; }
  // The most a connection may hold and still count as light (never throttled).
  uint64_t lightLimit() const { return light_limit_; }

  uint64_t buffered() const { return static_cast<uint64_t>(memory_.total.bytes()); }
  uint64_t committed() const { return buffered() + reserved_; }
  bool throttling() const { return committed() >= throttle_at_; }
  bool heavy(uint64_t held) const { return held > light_limit_; }
  // Beyond this the connection holding the most is cut off.
  bool overCutoff() const { return buffered() > cutoff_at_; }
  // Worth trimming pools and caches now.
  bool underPressure() const { return committed() >= throttle_at_; }

  // What a connection asking is known for.
  struct Asker {
    uint64_t held = 0;          // its buffer bytes plus its reservations
    bool owes_nothing = false;  // no reply in flight or unsent: it reads what it is sent
    bool unknown = false;       // no retrieval reply yet: its reply sizes are a guess
    bool granted = false;       // just woken at the head of the large-reply queue
    bool guessing = false;      // unknown, and a reservation made on the guess is in flight
  };
  // May a request expecting `reservation` reply bytes go?
  Admission admit(const Asker& asker, uint64_t reservation) const;
  // May a request that will hold `bytes` once dispatched go, from a connection holding
  // `held`? Within the guaranteed share always; beyond, only if the worker stays within its
  // share.
  bool affords(uint64_t held, uint64_t bytes) const {
    return held + bytes <= kGuaranteedShare || committed() + bytes <= share_;
  }
  // At take time: is a large reply admitted on credit to be refused after all?
  bool saturated() const { return committed() >= share_; }

  void reserve(uint64_t bytes);
  void unreserve(uint64_t bytes);

  // A waiting connection: woken (onBudgetAvailable) when pressure drops below the low mark
  // (kWait) or, in order, when the allowance has room for `wanted` (kWaitLarge).
  void waitForMemory(BudgetWaiter* waiter);
  void waitForLarge(BudgetWaiter* waiter, uint64_t wanted, bool front);
  // Takes the waiter off whichever list it is on (a closing connection).
  void forget(BudgetWaiter* waiter);
  bool hasLargeWaiters() const { return !large_waiters_.empty(); }
  // Once per event-loop turn: wakes whom the budget now allows. True if anyone was woken.
  bool wake();

 private:
  bool largeRoom(uint64_t bytes) const {
    return large_reserved_ == 0 || large_reserved_ + bytes <= large_cap_;
  }

  uint64_t share_;
  uint64_t throttle_at_;
  uint64_t resume_at_;  // hysteresis: throttled connections are read again below this
  uint64_t cutoff_at_;
  uint64_t light_limit_;
  uint64_t large_cap_;
  uint64_t reserved_ = 0;
  uint64_t large_reserved_ = 0;
  BufferMemory memory_;
  BudgetCounters counters_;
  IntrusiveList<BudgetWaiter, BudgetWaitTag> memory_waiters_;
  IntrusiveList<BudgetWaiter, BudgetWaitTag> large_waiters_;
};

}  // namespace memzone::server
