// runtime/work_deque.h — a bounded Chase–Lev work-stealing deque.
//
// One owner pushes and pops at the bottom (LIFO: a worker runs what it
// spawned last, depth-first, which keeps the number of live ULTs small);
// thieves take from the top (FIFO: they get the oldest, usually largest,
// piece of work). The owner may also take from the top (take_top), which the
// scheduler uses to make yield round-robin.
//
// Memory ordering follows Lê, Pop, Cohen, Zappa Nardelli, "Correct and
// Efficient Work-Stealing for Weak Memory Models" (PPoPP 2013), with a
// fixed-size ring: push fails instead of growing (the caller overflows to the
// global queue). The handshake that keeps a single last element from being
// taken twice:
//
//   owner pop                         thief steal
//   b = bottom - 1; bottom = b        t = top
//   full fence                        full fence
//   t = top                           b = bottom
//   if t == b: CAS top t -> t+1       if t < b: x = buf[t]; CAS top t -> t+1
//
// Both sides CAS `top` for the last element, so exactly one gets it; with
// more than one element the owner takes buf[b] and the thief buf[t], t < b.
// A slot is overwritten only by a push at b == t + capacity, which push
// refuses while t has not been taken, so a thief never returns an element
// whose CAS it lost.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/locks.h"

namespace weft::rt {

template <class T, size_t kCapacity>
class WorkDeque {
  static_assert((kCapacity & (kCapacity - 1)) == 0, "capacity must be a power of two");
  static constexpr int64_t kMask = static_cast<int64_t>(kCapacity) - 1;

 public:
  // Owner only. False when full.
  bool push(T* x) {
    int64_t b = bottom_.load(std::memory_order_relaxed);
    int64_t t = top_.load(std::memory_order_acquire);
    if (b - t >= static_cast<int64_t>(kCapacity)) return false;
    buf_[b & kMask].store(x, std::memory_order_relaxed);
    bottom_.store(b + 1, std::memory_order_release);
    return true;
  }

  // Owner only: true when the deque is empty. Exact for the owner: only
  // the owner adds elements, so an empty deque stays empty until it pushes.
  bool owner_empty() const {
    return top_.load(std::memory_order_acquire) >= bottom_.load(std::memory_order_relaxed);
  }

  // Owner only: the most recently pushed element, or nullptr.
  T* pop() {
    if (owner_empty()) return nullptr;  // skip the fence when there is nothing
    int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    bottom_.store(b, std::memory_order_relaxed);
    full_fence();
    int64_t t = top_.load(std::memory_order_relaxed);
    if (t > b) {  // empty
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T* x = buf_[b & kMask].load(std::memory_order_relaxed);
    if (t == b) {  // the last element: race thieves for it
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed))
        x = nullptr;
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return x;
  }

  // Owner only: the oldest element, or nullptr. No fence is needed because
  // the owner's own `bottom` is current and the CAS orders the rest.
  T* take_top() { return take_oldest<false>(); }

  // Any thread: the oldest element, or nullptr if empty or the race was lost.
  T* steal() { return take_oldest<true>(); }

  // Any thread: a hint, exact only when the deque is quiescent.
  int64_t size_approx() const {
    int64_t b = bottom_.load(std::memory_order_relaxed);
    int64_t t = top_.load(std::memory_order_relaxed);
    return b > t ? b - t : 0;
  }
  // In a forked child only, by the one KLT left: empties the deque without
  // looking at its slots (their ULTs do not exist in the child).
  void reset_after_fork() {
    top_.store(0, std::memory_order_relaxed);
    bottom_.store(0, std::memory_order_relaxed);
  }
  bool empty_approx() const { return size_approx() == 0; }

  static constexpr size_t capacity() { return kCapacity; }

 private:
  // The oldest element by CAS on top_. A thief (kThief) needs the full
  // fence between its loads of top_ and bottom_, and bottom_ by acquire:
  // the owner may be popping the same element from the bottom.
  template <bool kThief>
  T* take_oldest() {
    int64_t t = top_.load(std::memory_order_acquire);
    if constexpr (kThief) full_fence();
    int64_t b = bottom_.load(kThief ? std::memory_order_acquire : std::memory_order_relaxed);
    if (t >= b) return nullptr;
    T* x = buf_[t & kMask].load(std::memory_order_relaxed);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst, std::memory_order_relaxed))
      return nullptr;
    return x;
  }

  alignas(64) std::atomic<int64_t> top_{0};
  alignas(64) std::atomic<int64_t> bottom_{0};
  alignas(64) std::atomic<T*> buf_[kCapacity] = {};
};

}  // namespace weft::rt
