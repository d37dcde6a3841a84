// runtime/death_row.cc — the process-wide cache of released descriptors and
// their stacks (the design is in death_row.h).
#include "runtime/death_row.h"

#include <algorithm>

#include "runtime/ult.h"
#include "sys/stack.h"

namespace weft::rt {

UltDesc* DeathRow::take(size_t size) {
  IntrusiveQueue<UltDesc> one;
  return take_batch(size, 1, &one) == 1 ? one.pop_front() : nullptr;
}

uint32_t DeathRow::take_batch(size_t size, uint32_t n, IntrusiveQueue<UltDesc>* out) {
  if (count_.load(std::memory_order_relaxed) == 0) return 0;
  LockGuard<KltMutex> g(lock_);
  ++activity_;
  for (Class& c : classes_) {
    if (c.size != size || c.list.empty()) continue;
    uint32_t taken = 0;
    for (; taken < n && !c.list.empty(); ++taken) out->push_back(c.list.pop_front());
    taken_ += taken;
    count_.fetch_sub(taken, std::memory_order_relaxed);
    return taken;
  }
  return 0;
}

void DeathRow::put(IntrusiveQueue<UltDesc>* list, size_t size) {
  IntrusiveQueue<UltDesc> overflow;
  {
    LockGuard<KltMutex> g(lock_);
    ++activity_;
    decommitted_ = false;
    Class* slot = nullptr;
    for (Class& c : classes_) {
      if (c.size == size) { slot = &c; break; }
      if (slot == nullptr && c.list.empty()) slot = &c;
    }
    while (UltDesc* u = list->pop_front()) {
      if (slot != nullptr && count_.load(std::memory_order_relaxed) < cap_) {
        slot->size = size;
        slot->list.push_front(u);
        count_.fetch_add(1, std::memory_order_relaxed);
      } else {
        overflow.push_front(u);
      }
    }
  }
  unmap_list(&overflow);
}

void DeathRow::retire(UltDesc* u) {
  IntrusiveQueue<UltDesc> one;
  one.push_back(u);
  unmap_list(&one);
}

void DeathRow::unmap_list(IntrusiveQueue<UltDesc>* list) {
  while (UltDesc* u = list->pop_front()) {
    if (sys::stack_release(&u->stack) != 0) {
      // The kernel would not split the mapping (vm.max_map_count). The
      // stack's pages are back already; keep the descriptor and retry the
      // unmap at the next reap rather than lose the mapping.
      LockGuard<KltMutex> g(lock_);
      stuck_.push_front(u);
      continue;
    }
    unmapped_.fetch_add(1, std::memory_order_relaxed);
    ult_table::free(u);
  }
}

void DeathRow::fork_child_for_each(void (*fn)(UltDesc*, void*), void* ctx) {
  lock_.reset_after_fork();
  for (Class& c : classes_) c.list.for_each([&](UltDesc* u) { fn(u, ctx); });
  stuck_.for_each([&](UltDesc* u) { fn(u, ctx); });
}

uint64_t DeathRow::reap() {
  IntrusiveQueue<UltDesc> doomed;
  uint64_t recycled = 0;
  {
    LockGuard<KltMutex> g(lock_);
    doomed.swap(stuck_);  // retry stacks the kernel would not unmap last time
    bool idle = activity_ == reaped_activity_;
    reaped_activity_ = activity_;
    uint64_t mapped = mapped_.load(std::memory_order_relaxed);
    cap_ = std::clamp<uint64_t>(2 * (taken_ + (mapped - mapped_at_reap_)), kMinCap, kMaxCap);
    taken_ = 0;
    mapped_at_reap_ = mapped;
    if ((idle && !decommitted_) || count_.load(std::memory_order_relaxed) > cap_) {
      // Keep what demand calls for (kIdleKeep when idle, decommitted).
      uint64_t keep = idle ? kIdleKeep : cap_;
      for (Class& c : classes_) {
        const size_t before = c.list.size();
        c.list.split_after(std::min<uint64_t>(keep, before), &doomed);
        keep -= c.list.size();
        const size_t dropped = before - c.list.size();
        count_.fetch_sub(dropped, std::memory_order_relaxed);
        recycled += dropped;
      }
      if (idle) {
        decommitted_ = true;
        // Decommit under the lock: nobody may take a stack while its pages go.
        for (Class& c : classes_) c.list.for_each([](UltDesc* u) { sys::stack_decommit(u->stack, sys::page_size()); });
      }
    }
  }
  unmap_list(&doomed);
  return recycled;
}

}  // namespace weft::rt
