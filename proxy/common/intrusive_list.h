// A doubly linked list whose links live in the elements: O(1) insert and unlink without
// allocating, so a connection can enter and leave a wait list on every request for free, and
// 10,000 idle connections cost no list nodes. `Tag` lets one type sit in several lists.
// Single-threaded. An element unlinks itself on destruction.
#pragma once

#include <cassert>
#include <cstddef>

namespace memzone {

template <typename Tag>
class ListLink {
 public:
  ListLink() = default;
  ListLink(const ListLink&) = delete;
  ListLink& operator=(const ListLink&) = delete;
  ~ListLink() { unlink(); }

  bool linked() const { return next_ != nullptr; }
  void unlink() {
    if (next_ == nullptr) return;
    prev_->next_ = next_;
    next_->prev_ = prev_;
    prev_ = next_ = nullptr;
  }

 private:
  template <typename T, typename U>
  friend class IntrusiveList;
  ListLink* prev_ = nullptr;
  ListLink* next_ = nullptr;
};

// `T` derives from ListLink<Tag>.
template <typename T, typename Tag>
class IntrusiveList {
  using Link = ListLink<Tag>;

 public:
  IntrusiveList() { head_.prev_ = head_.next_ = &head_; }
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;
  ~IntrusiveList() {
    while (!empty()) front()->Link::unlink();
    head_.prev_ = head_.next_ = nullptr;
  }

  bool empty() const { return head_.next_ == &head_; }
  T* front() { return empty() ? nullptr : static_cast<T*>(head_.next_); }
  void push_back(T* item) { insertBefore(&head_, item); }
  void push_front(T* item) { insertBefore(head_.next_, item); }
  size_t size() const {
    size_t n = 0;
    for (const Link* l = head_.next_; l != &head_; l = l->next_) ++n;
    return n;
  }
  // Moves every element to `other`'s end, in order.
  void spliceTo(IntrusiveList& other) {
    while (T* item = front()) {
      item->Link::unlink();
      other.push_back(item);
    }
  }
  template <typename F>
  void forEach(F f) {
    for (Link* l = head_.next_; l != &head_;) {
      Link* next = l->next_;
      f(static_cast<T*>(l));
      l = next;
    }
  }

 private:
  void insertBefore(Link* at, T* item) {
    Link* l = item;
    assert(!l->linked());
    l->next_ = at;
    l->prev_ = at->prev_;
    at->prev_->next_ = l;
    at->prev_ = l;
  }

  Link head_;
};

}  // namespace memzone
