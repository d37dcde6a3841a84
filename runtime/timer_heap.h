// runtime/timer_heap.h — a worker's timed parks (sleep_for, timeouts).
//
// One heap per worker, holding the ULTs that made a timed park while
// running there. It is shared, under its own lock (a KltMutex), so that
// whoever is free fires a due timer: the owner at its scheduler passes, and
// the monitor when the owner is busy running a ULT or blocked in a region
// (monitor.cc) — a timer never waits for a busy worker (issue 13).
//
// Intrusive: a ULT has at most one timed park at a time, so the entry lives
// in its descriptor (UltDesc::timer: deadline, position in the heap, the
// heap). A wait that ends early removes its entry (cancel, O(log n)), so
// nothing stale accumulates: the heap holds exactly the pending timed
// parks. (Until issue 13 entries were values left behind by early wakes;
// 2M such waits kept 47 MB.)
//
// Invariants (under lock_):
//  - u is in heap_ at position p  <=>  u->timer.pos == p (>= 0), and then
//    u->timer.heap == this;
//  - heap_[i]->timer.deadline >= heap_[(i-1)/2]->timer.deadline;
//  - earliest_ == heap_[0]->timer.deadline, or -1 when empty (a copy for
//    lock-free looks: the monitor's scan, the idle check).
// Who decides "timed out": whoever takes the entry out under the lock. The
// firer sets pos = -1 (fired) before it unparks; cancel() finds pos >= 0
// and removes it (not fired) or pos == -1 (fired). The ULT reads its own
// pos only through cancel().
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/locks.h"

namespace weft::rt {

struct UltDesc;
class TimerHeap;

// A ULT's timed park (in UltDesc). Written under the heap's lock, except
// `heap`, which the ULT sets before it adds itself (nobody reads it until
// then).
struct TimerNode {
  int64_t deadline = 0;
  int32_t pos = -1;          // index in heap->heap_, or -1: not in a heap
  TimerHeap* heap = nullptr;  // the heap of the last timed park
};

class TimerHeap {
 public:
  // Adds u (which is not in any heap) with `deadline` (CLOCK_MONOTONIC ns).
  void add(UltDesc* u, int64_t deadline);
  // Removes u's entry if it is still here: true if it was (the timer had
  // not fired), false if a firer took it. Call with u's own heap
  // (u->timer.heap), by u itself.
  bool cancel(UltDesc* u);
  // One fired entry: the ULT to wake and how late (ns) it fired.
  struct Fired {
    UltDesc* ult;
    int64_t late_ns;
  };
  // Takes up to `max` entries due at `now` out (marking each fired) into
  // out[]; returns how many. The caller wakes them, outside the lock, and
  // calls again while it got `max`.
  size_t take_due(int64_t now, Fired* out, size_t max);
  // Earliest deadline, or -1 when empty. Lock-free (a copy).
  int64_t earliest() const { return earliest_.load(std::memory_order_acquire); }
  bool empty() const { return earliest() < 0; }
  size_t size();
  // In a forked child, on its one KLT: the entries belong to ULTs that do
  // not exist there; forget them and free the lock.
  void reset_after_fork();

 private:
  void sift_up(size_t i);
  void sift_down(size_t i);
  void place(size_t i, UltDesc* u);
  void remove_at(size_t i);
  void publish_earliest();

  KltMutex lock_;
  std::vector<UltDesc*> heap_;
  std::atomic<int64_t> earliest_{-1};
};

}  // namespace weft::rt
