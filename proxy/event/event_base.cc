#include "proxy/event/event_base.h"

#include <event2/event.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>

namespace memzone::event {
namespace {

timeval toTimeval(std::chrono::microseconds d) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(d.count() / 1000000);
  tv.tv_usec = static_cast<suseconds_t>(d.count() % 1000000);
  return tv;
}

}  // namespace

EventBase::EventBase() {
  event_config* cfg = event_config_new();
  // One thread runs each base, and other threads reach it only through runInLoop (an eventfd
  // and a mutex of our own): libevent's own locks, taken several times per loop turn, would
  // only cost (issue 26: about 1,500 instructions per turn).
  event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
  base_ = event_base_new_with_config(cfg);
  event_config_free(cfg);
  if (base_ == nullptr) throw std::runtime_error("event_base_new failed");
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error("eventfd failed");
  wake_event_ = event_new(base_, wake_fd_, EV_READ | EV_PERSIST, &EventBase::onWake, this);
  event_add(wake_event_, nullptr);
}

EventBase::~EventBase() {
  event_free(wake_event_);
  close(wake_fd_);
  event_base_free(base_);
}

void EventBase::run(const std::function<void()>& after_batch) {
  if (!after_batch) {
    event_base_loop(base_, 0);
    return;
  }
  while (true) {
    int rc = event_base_loop(base_, EVLOOP_ONCE);
    after_batch();
    if (rc != 0 || event_base_got_exit(base_) || event_base_got_break(base_)) return;
  }
}

void EventBase::exit() {
  // Any thread may ask; the loop's own thread does it (the base has no locks).
  runInLoop([this] { event_base_loopexit(base_, nullptr); });
}

void EventBase::runInLoop(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks_.push_back(std::move(task));
  }
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;  // a full counter still wakes the loop
}

void EventBase::onWake(int fd, short, void* arg) {
  uint64_t count;
  ssize_t n = read(fd, &count, sizeof(count));
  (void)n;
  static_cast<EventBase*>(arg)->drainTasks();
}

void EventBase::drainTasks() {
  std::vector<std::function<void()>> tasks;
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    tasks.swap(tasks_);
  }
  for (auto& task : tasks) task();
}

IoEvent::IoEvent(EventBase& base, int fd, Callback cb) : cb_(std::move(cb)), fd_(fd), base_(base) {
  ev_ = event_new(base.raw(), fd, EV_READ | EV_WRITE | EV_PERSIST, &IoEvent::onEvent, this);
}

IoEvent::~IoEvent() { event_free(ev_); }

void IoEvent::want(bool read, bool write) {
  if (read == want_read_ && write == want_write_) return;
  want_read_ = read;
  want_write_ = write;
  event_del(ev_);
  if (!read && !write) return;
  short what = EV_PERSIST | (read ? EV_READ : 0) | (write ? EV_WRITE : 0);
  event_assign(ev_, base_.raw(), fd_, what, &IoEvent::onEvent, this);
  event_add(ev_, nullptr);
}

void IoEvent::onEvent(int, short what, void* arg) {
  auto* self = static_cast<IoEvent*>(arg);
  self->cb_((what & EV_READ) != 0, (what & EV_WRITE) != 0);
}

Timer::Timer(EventBase& base, std::function<void()> cb) : cb_(std::move(cb)) {
  ev_ = evtimer_new(base.raw(), &Timer::onFire, this);
}

Timer::~Timer() { event_free(ev_); }

void Timer::arm(std::chrono::microseconds delay) {
  timeval tv = toTimeval(delay);
  evtimer_add(ev_, &tv);
}

void Timer::cancel() { evtimer_del(ev_); }

bool Timer::armed() const { return evtimer_pending(ev_, nullptr) != 0; }

void Timer::onFire(int, short, void* arg) { static_cast<Timer*>(arg)->cb_(); }

int64_t nowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace memzone::event
