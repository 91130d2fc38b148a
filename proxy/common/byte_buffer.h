// A growable byte buffer with a read cursor: bytes are appended at the end and consumed from
// the front. Capacity is kept across uses so a steady-state connection does not allocate;
// owners give it back (release, shrinkIfAbove, shrinkIfSparse) when it goes idle or drains.
//
// Its capacity can be charged to a MemoryAccount (the proxy's buffer budget): every change of
// capacity is charged, and setAccount() moves the charge when the buffer changes owner.
// Storage is not zero-filled: a 1 MiB reply is copied once, not cleared and then copied.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

#include "proxy/common/memory_account.h"

namespace memzone {

class ByteBuffer {
 public:
  ByteBuffer() = default;
  explicit ByteBuffer(MemoryAccount* account) : account_(account) {}
  ~ByteBuffer() { setCapacity(nullptr, 0); }
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  // Moving takes the storage and its charge along (std::vector moves its elements this way).
  ByteBuffer(ByteBuffer&& other) noexcept
      : data_(std::move(other.data_)),
        capacity_(std::exchange(other.capacity_, 0)),
        begin_(std::exchange(other.begin_, 0)),
        end_(std::exchange(other.end_, 0)),
        account_(other.account_) {}
  ByteBuffer& operator=(ByteBuffer&& other) noexcept {
    if (this != &other) {
      setCapacity(nullptr, 0);
      data_ = std::move(other.data_);
      capacity_ = std::exchange(other.capacity_, 0);
      begin_ = std::exchange(other.begin_, 0);
      end_ = std::exchange(other.end_, 0);
      account_ = other.account_;
    }
    return *this;
  }

  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  void append(std::string_view bytes) {
    if (bytes.empty()) return;
    char* dst = prepare(bytes.size());
    std::memcpy(dst, bytes.data(), bytes.size());
    end_ += bytes.size();
  }
  void append(char c) {
    *prepare(1) = c;
    ++end_;
  }

  // Returns room for at least `n` bytes at the end; call commit(k) after writing k of them.
  char* prepare(size_t n) {
    if (capacity_ - end_ < n) makeRoom(n);
    return data_.get() + end_;
  }
  void commit(size_t n) { end_ += n; }
  size_t writableBytes() const { return capacity_ - end_; }

  void consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void clear() { begin_ = end_ = 0; }
  // Replaces bytes already appended, `at` counted from the start of view().
  void overwrite(size_t at, std::string_view bytes) {
    std::memcpy(data_.get() + begin_ + at, bytes.data(), bytes.size());
  }

  // Gives memory back after an unusually large request or reply.
  void shrinkIfAbove(size_t cap) {
    if (capacity_ > cap && size() <= cap) resize(cap);
  }
  // Frees the storage of an empty buffer (an idle connection keeps no buffer at all).
  void release() {
    if (empty() && capacity_ > 0) setCapacity(nullptr, 0);
  }
  // A buffer that drains slowly (a slow reader's output) gives back what it no longer needs:
  // once at most a quarter of a large capacity is in use, it keeps twice what is left.
  void shrinkIfSparse(size_t min_capacity) {
    if (capacity_ > min_capacity && size() * 4 <= capacity_) {
      resize(std::max(size() * 2, min_capacity));
    }
  }
  size_t capacity() const { return capacity_; }

  // Moves this buffer's charge to `account` (nullptr: uncharged).
  void setAccount(MemoryAccount* account) {
    if (account == account_) return;
    if (account_ != nullptr && capacity_ > 0) account_->charge(-static_cast<int64_t>(capacity_));
    account_ = account;
    if (account_ != nullptr && capacity_ > 0) account_->charge(static_cast<int64_t>(capacity_));
  }
  MemoryAccount* account() const { return account_; }

 private:
  void makeRoom(size_t n) {
    size_t live = end_ - begin_;
    if (begin_ > 0 && capacity_ - live >= n && begin_ >= live) {
      std::memmove(data_.get(), data_.get() + begin_, live);  // cheap compaction
      begin_ = 0;
      end_ = live;
      return;
    }
    size_t want = std::max(live + n, capacity_ * 2);
    if (want < 512) want = 512;  // a one-line reply does not need a page
    resize(want);
  }

  // New storage of exactly `capacity` bytes (>= size()) holding the live bytes at its start.
  void resize(size_t capacity) {
    size_t live = size();
    std::unique_ptr<char[]> bigger(new char[capacity]);
    if (live > 0) std::memcpy(bigger.get(), data_.get() + begin_, live);
    setCapacity(std::move(bigger), capacity);
    begin_ = 0;
    end_ = live;
  }

  void setCapacity(std::unique_ptr<char[]> data, size_t capacity) {
    if (account_ != nullptr && capacity != capacity_) {
      account_->charge(static_cast<int64_t>(capacity) - static_cast<int64_t>(capacity_));
    }
    data_ = std::move(data);
    capacity_ = capacity;
    if (capacity_ == 0) begin_ = end_ = 0;
  }

  std::unique_ptr<char[]> data_;
  size_t capacity_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
  MemoryAccount* account_ = nullptr;
};

}  // namespace memzone
