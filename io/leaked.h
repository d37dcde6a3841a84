// io/leaked.h — a process-wide object made on first use and never
// destroyed, which a forked child may drop to start afresh.
#pragma once

#include <atomic>

namespace weft::io_internal {

// *slot, made with new T() by its first caller (callers racing to make it:
// one wins, the others delete theirs). Never destroyed: helper threads may
// still use it after static destructors have run. A forked child stores
// nullptr in slot to leak the parent's (its threads are not in the child)
// and gets a fresh one at its next call.
template <class T>
T& leaked_instance(std::atomic<T*>& slot) {
  T* p = slot.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  auto* fresh = new T();
  if (slot.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *p;
}

// In a forked child: forgets the parent's instance (*slot becomes null;
// the next leaked_instance() call makes a fresh one). The old object is
// kept reachable from `graveyard` rather than dropped, so a leak checker
// (LeakSanitizer at exit) does not report an object the design leaks on
// purpose (found when a death test's forked child exited under ASan).
// Async-signal-safe (atomic loads and stores only).
template <class T>
void abandon_instance(std::atomic<T*>& slot, std::atomic<T*>& graveyard) {
  T* old = slot.load(std::memory_order_relaxed);
  if (old != nullptr) graveyard.store(old, std::memory_order_relaxed);
  slot.store(nullptr, std::memory_order_relaxed);
}

}  // namespace weft::io_internal
