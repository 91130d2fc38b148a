// A growable byte buffer with a read cursor: bytes are appended at the end and consumed from
// the front. Capacity is kept across uses so a steady-state connection does not allocate.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>
#include <vector>

namespace memzone {

class ByteBuffer {
 public:
  std::string_view view() const { return {data_.data() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }

  void append(std::string_view bytes) {
    char* dst = prepare(bytes.size());
    if (!bytes.empty()) std::memcpy(dst, bytes.data(), bytes.size());
    end_ += bytes.size();
  }
  void append(char c) {
    *prepare(1) = c;
    ++end_;
  }

  // Returns room for at least `n` bytes at the end; call commit(k) after writing k of them.
  char* prepare(size_t n) {
    if (data_.size() - end_ < n) makeRoom(n);
    return data_.data() + end_;
  }
  void commit(size_t n) { end_ += n; }
  size_t writableBytes() const { return data_.size() - end_; }

  void consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void clear() { begin_ = end_ = 0; }

  // Gives memory back after an unusually large request or reply.
  void shrinkIfAbove(size_t cap) {
    if (data_.size() > cap && size() <= cap) {
      std::vector<char> smaller(cap);
      std::memcpy(smaller.data(), data_.data() + begin_, size());
      end_ = size();
      begin_ = 0;
      data_.swap(smaller);
    }
  }
  size_t capacity() const { return data_.size(); }

 private:
  void makeRoom(size_t n) {
    size_t live = end_ - begin_;
    if (begin_ > 0 && data_.size() - live >= n && begin_ >= live) {
      std::memmove(data_.data(), data_.data() + begin_, live);  // cheap compaction
      begin_ = 0;
      end_ = live;
      return;
    }
    size_t want = std::max(live + n, data_.size() * 2);
    if (want < 4096) want = 4096;
    std::vector<char> bigger(want);
    if (live) std::memcpy(bigger.data(), data_.data() + begin_, live);
    data_.swap(bigger);
    begin_ = 0;
    end_ = live;
  }

  std::vector<char> data_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

}  // namespace memzone
