// RAII wrappers over libevent. This directory is the only place that includes <event2/*>.
// Every object here belongs to one worker thread and is used only on that thread, except
// EventBase::runInLoop (and exit()), which any thread may call.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

struct event_base;
struct event;

namespace memzone::event {

// One event loop; owns its libevent base and a cross-thread task queue.
class EventBase {
 public:
  EventBase();
  ~EventBase();
  EventBase(const EventBase&) = delete;
  EventBase& operator=(const EventBase&) = delete;

  event_base* raw() const { return base_; }
  // Runs until exit() is called (or no events remain). `after_batch`, if given, runs after
  // each turn of the loop, once every event that was ready has been handled: the place to
  // flush output that many callbacks queued (one write per socket per turn).
  void run(const std::function<void()>& after_batch = {});
  // Thread-safe: asks the loop to stop after the current iteration.
  void exit();
  // Thread-safe: queues `task` to run on the loop's thread.
  void runInLoop(std::function<void()> task);

 private:
  static void onWake(int fd, short what, void* arg);
  void drainTasks();

  event_base* base_;
  int wake_fd_;
  ::event* wake_event_;
  std::mutex tasks_mu_;  // control path only (topology swaps, shutdown), never per request
  std::vector<std::function<void()>> tasks_;
};

// Readiness notifications for one file descriptor (persistent until disabled).
class IoEvent {
 public:
  using Callback = std::function<void(bool readable, bool writable)>;
  IoEvent(EventBase& base, int fd, Callback cb);
  ~IoEvent();
  IoEvent(const IoEvent&) = delete;
  IoEvent& operator=(const IoEvent&) = delete;

  // Sets which readiness kinds we want; cheap when nothing changes.
  void want(bool read, bool write);

 private:
  static void onEvent(int fd, short what, void* arg);
  ::event* ev_;
  Callback cb_;
  bool want_read_ = false;
  bool want_write_ = false;
  int fd_;
  EventBase& base_;
};

// A one-shot timer that can be re-armed or cancelled.
class Timer {
 public:
  Timer(EventBase& base, std::function<void()> cb);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm(std::chrono::microseconds delay);
  void cancel();
  bool armed() const;

 private:
  static void onFire(int fd, short what, void* arg);
  ::event* ev_;
  std::function<void()> cb_;
};

// Monotonic clock in microseconds (vDSO; no syscall).
int64_t nowMicros();

}  // namespace memzone::event
