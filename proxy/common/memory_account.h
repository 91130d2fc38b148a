// Bytes of buffer memory charged to an owner and rolled up to its parents: a connection's
// output account feeds its worker's "client output" account, which feeds the worker's total.
// ByteBuffers charge their capacity (what they hold from the allocator, not what they hold in
// bytes), so the totals track what the buffers really cost in RSS.
//
// Written by one thread (the owning worker); read by any (scrapes, `stats`). Like
// metrics::Counter, a relaxed load + store: a plain add on x86, no lock, race-free reads.
#pragma once

#include <atomic>
#include <cstdint>

namespace memzone {

class MemoryAccount {
 public:
  explicit MemoryAccount(MemoryAccount* parent = nullptr) : parent_(parent) {}
  MemoryAccount(const MemoryAccount&) = delete;
  MemoryAccount& operator=(const MemoryAccount&) = delete;

  void charge(int64_t delta) {
    for (MemoryAccount* a = this; a != nullptr; a = a->parent_) {
      a->bytes_.store(a->bytes_.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
    }
  }
  int64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  MemoryAccount* parent() const { return parent_; }
  // Moves what this account holds from its parent's chain to `parent`'s: one walk each way,
  // however many buffers feed this account (a request changing owner).
  void setParent(MemoryAccount* parent) {
    if (parent == parent_) return;
    int64_t held = bytes();
    if (held != 0) {
      for (MemoryAccount* a = parent_; a != nullptr; a = a->parent_) {
        a->bytes_.store(a->bytes_.load(std::memory_order_relaxed) - held,
                        std::memory_order_relaxed);
      }
    }
    parent_ = parent;
    if (held != 0) {
      for (MemoryAccount* a = parent_; a != nullptr; a = a->parent_) {
        a->bytes_.store(a->bytes_.load(std::memory_order_relaxed) + held,
                        std::memory_order_relaxed);
      }
    }
  }

 private:
  std::atomic<int64_t> bytes_{0};
  MemoryAccount* parent_;
};

}  // namespace memzone
