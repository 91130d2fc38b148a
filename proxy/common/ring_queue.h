// A FIFO over a power-of-two ring: push/pop never allocate once the ring has grown to the
// connection's working depth (std::deque allocates and frees blocks as it moves).
#pragma once

#include <cassert>
#include <cstddef>
#include <utility>
#include <vector>

namespace memzone {

template <typename T>
class RingQueue {
 public:
  bool empty() const { return head_ == tail_; }
  size_t size() const { return tail_ - head_; }
  T& front() { return slots_[head_ & mask_]; }
  T& back() { return slots_[(tail_ - 1) & mask_]; }
  T& at(size_t i) { return slots_[(head_ + i) & mask_]; }
  const T& at(size_t i) const { return slots_[(head_ + i) & mask_]; }

  void push_back(T value) {
    if (size() == slots_.size()) grow();
    slots_[tail_++ & mask_] = std::move(value);
  }
  void pop_front() {
    assert(!empty());
    ++head_;
  }

 private:
  void grow() {
    // Small at first: a connection that asks one thing at a time (most, and every idle one
    // of a client pool) never needs more, and 10,000 of them should cost little.
    size_t n = slots_.empty() ? 4 : slots_.size() * 2;
    std::vector<T> bigger(n);
    for (size_t i = 0; i < size(); ++i) bigger[i] = std::move(slots_[(head_ + i) & mask_]);
    tail_ = size();
    head_ = 0;
    slots_.swap(bigger);
    mask_ = n - 1;
  }

  std::vector<T> slots_;
  size_t head_ = 0;
  size_t tail_ = 0;
  size_t mask_ = 0;
};

}  // namespace memzone
