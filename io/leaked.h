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

}  // namespace weft::io_internal
