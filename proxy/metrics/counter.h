// A counter written by one thread (its worker) and read by any thread at scrape time.
// Relaxed load + store compiles to a plain add on x86: no lock prefix, no shared cache line
// bouncing, yet scrapes are race-free.
#pragma once

#include <atomic>
#include <cstdint>

namespace memzone::metrics {

class Counter {
 public:
  void add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void sub(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  void set(uint64_t n) { value_.store(n, std::memory_order_relaxed); }
  uint64_t get() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace memzone::metrics
