// runtime/timer_heap.h — a worker's timed parks (sleep_for, timeouts).
//
// Owner-only: entries are added by ULTs running on the worker and fired by
// the worker's scheduler loop. An entry is a value (deadline, ULT, sequence
// number), never a pointer into a ULT's stack, so a ULT that returns early
// (woken before its deadline) simply leaves a stale entry behind: firing it
// later fails the sequence check (UltDesc::timer_seq) and does nothing.
#pragma once

#include <cstdint>
#include <queue>
#include <vector>

namespace weft::rt {

struct UltDesc;

struct TimerEntry {
  int64_t deadline_ns;
  UltDesc* ult;
  uint64_t seq;
  bool operator>(const TimerEntry& o) const { return deadline_ns > o.deadline_ns; }
};

class TimerHeap {
 public:
  void push(const TimerEntry& e) { heap_.push(e); }
  bool empty() const { return heap_.empty(); }
  // Earliest deadline, or -1 when empty.
  int64_t earliest() const { return heap_.empty() ? -1 : heap_.top().deadline_ns; }
  // Pops one entry whose deadline is <= now; false if none.
  bool pop_expired(int64_t now, TimerEntry* out) {
    if (heap_.empty() || heap_.top().deadline_ns > now) return false;
    *out = heap_.top();
    heap_.pop();
    return true;
  }
  size_t size() const { return heap_.size(); }
  void clear() { heap_ = {}; }
  // Pops the earliest entry whatever its deadline; false if empty.
  bool pop(TimerEntry* out) {
    if (heap_.empty()) return false;
    *out = heap_.top();
    heap_.pop();
    return true;
  }

 private:
  std::priority_queue<TimerEntry, std::vector<TimerEntry>, std::greater<TimerEntry>> heap_;
};

}  // namespace weft::rt
