// Deferred writes: connections that have new output register here and are flushed once, at
// the end of the event callback that produced the output, so a batch of pipelined requests
// becomes one write() per socket instead of one per request. Single-threaded (one per worker).
#pragma once

#include <algorithm>
#include <vector>

namespace memzone {

class Flushable {
 public:
  virtual ~Flushable() = default;
  virtual void flushNow() = 0;

 private:
  friend class FlushList;
  bool flush_scheduled_ = false;
};

class FlushList {
 public:
  void schedule(Flushable* f) {
    if (f->flush_scheduled_) return;
    f->flush_scheduled_ = true;
    items_.push_back(f);
  }
  // Flushing may schedule more (a write failure fails requests, which may send elsewhere).
  void run() {
    for (size_t i = 0; i < items_.size(); ++i) {
      Flushable* f = items_[i];
      if (f == nullptr) continue;
      f->flush_scheduled_ = false;
      f->flushNow();
    }
    items_.clear();
  }
  // Called by a Flushable that is being destroyed.
  void forget(Flushable* f) {
    if (!f->flush_scheduled_) return;
    std::replace(items_.begin(), items_.end(), f, static_cast<Flushable*>(nullptr));
  }

 private:
  std::vector<Flushable*> items_;
};

}  // namespace memzone
