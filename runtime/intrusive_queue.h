// runtime/intrusive_queue.h — the one singly-linked intrusive queue the
// scheduler's run queues and the descriptor caches are made of.
//
// IntrusiveQueue<T> links elements through T::next; it allocates nothing
// and is not thread-safe (its owner or a lock guards it). Used as a FIFO
// (push_back/pop_front: the yield queue, inboxes, the global queue) or as a
// LIFO (push_front/pop_front: the local cache, death-row classes).
//
// Invariant: head_ == nullptr iff tail_ == nullptr iff size_ == 0; tail_->next
// == nullptr; an element is in at most one queue, and pop_front clears the
// link of the element it hands out.
#pragma once

#include <cstddef>
#include <utility>

#include "sys/raw_log.h"

namespace weft::rt {

template <class T>
class IntrusiveQueue {
 public:
  IntrusiveQueue() = default;
  IntrusiveQueue(const IntrusiveQueue&) = delete;
  IntrusiveQueue& operator=(const IntrusiveQueue&) = delete;

  bool empty() const { return head_ == nullptr; }
  size_t size() const { return size_; }

  void push_back(T* x) {
    x->next = nullptr;
    if (tail_ != nullptr) tail_->next = x; else head_ = x;
    tail_ = x;
    ++size_;
  }
  void push_front(T* x) {
    x->next = head_;
    head_ = x;
    if (tail_ == nullptr) tail_ = x;
    ++size_;
  }
  // Moves every element of `other` to the back of this queue (O(1)).
  void append(IntrusiveQueue& other) {
    if (other.head_ == nullptr) return;
    if (tail_ != nullptr) tail_->next = other.head_; else head_ = other.head_;
    tail_ = other.tail_;
    size_ += other.size_;
    other.reset();
  }
  void swap(IntrusiveQueue& other) {
    std::swap(head_, other.head_);
    std::swap(tail_, other.tail_);
    std::swap(size_, other.size_);
  }
  T* pop_front() {
    T* x = head_;
    if (x == nullptr) return nullptr;
    head_ = x->next;
    if (head_ == nullptr) tail_ = nullptr;
    x->next = nullptr;
    --size_;
    WEFT_DCHECK((head_ == nullptr) == (size_ == 0), "intrusive queue: size %zu with head %p", size_,
                static_cast<void*>(head_));
    return x;
  }
  // Keeps the first n elements; moves the rest, in order, to the back of
  // `rest`.
  // Unlinks x if it is in the queue (O(n)); true if it was.
  bool remove(T* x) {
    T* prev = nullptr;
    for (T* c = head_; c != nullptr; prev = c, c = c->next) {
      if (c != x) continue;
      if (prev == nullptr) {
        head_ = c->next;
      } else {
        prev->next = c->next;
      }
      if (tail_ == c) tail_ = prev;
      c->next = nullptr;
      --size_;
      return true;
    }
    return false;
  }
  // The first element, or null (not removed).
  T* front() const { return head_; }

  void split_after(size_t n, IntrusiveQueue* rest) {
    if (n >= size_) return;
    if (n == 0) {
      rest->append(*this);
      return;
    }
    T* last = head_;
    for (size_t i = 1; i < n; ++i) last = last->next;
    IntrusiveQueue tail_part;
    tail_part.head_ = last->next;
    tail_part.tail_ = tail_;
    tail_part.size_ = size_ - n;
    last->next = nullptr;
    tail_ = last;
    size_ = n;
    rest->append(tail_part);
  }
  template <class F>
  void for_each(F f) const {
    for (T* x = head_; x != nullptr; x = x->next) f(x);
  }
  // In a forked child only: forgets the elements without touching them.
  void reset() {
    head_ = tail_ = nullptr;
    size_ = 0;
  }

 private:
  T* head_ = nullptr;
  T* tail_ = nullptr;
  size_t size_ = 0;
};

}  // namespace weft::rt
