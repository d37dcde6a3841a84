#include "runtime/death_row.h"

#include <algorithm>

#include "runtime/ult.h"
#include "sys/stack.h"

namespace weft::rt {

UltDesc* DeathRow::take(size_t size) {
  UltDesc* head = nullptr;
  return take_batch(size, 1, &head) == 1 ? head : nullptr;
}

uint32_t DeathRow::take_batch(size_t size, uint32_t n, UltDesc** head) {
  if (count_.load(std::memory_order_relaxed) == 0) return 0;
  LockGuard<KltMutex> g(lock_);
  ++activity_;
  for (Class& c : classes_) {
    if (c.size != size || c.head == nullptr) continue;
    uint32_t taken = 0;
    UltDesc* first = c.head;
    UltDesc* last = nullptr;
    while (taken < n && c.head != nullptr) {
      last = c.head;
      c.head = c.head->next;
      ++taken;
    }
    last->next = nullptr;
    c.count -= taken;
    taken_ += taken;
    count_.fetch_sub(taken, std::memory_order_relaxed);
    *head = first;
    return taken;
  }
  return 0;
}

void DeathRow::put(UltDesc* head, uint32_t n, size_t size) {
  UltDesc* overflow = nullptr;
  {
    LockGuard<KltMutex> g(lock_);
    ++activity_;
    decommitted_ = false;
    Class* slot = nullptr;
    for (Class& c : classes_) {
      if (c.size == size) { slot = &c; break; }
      if (slot == nullptr && c.head == nullptr) slot = &c;
    }
    while (head != nullptr) {
      UltDesc* u = head;
      head = head->next;
      if (slot != nullptr && count_.load(std::memory_order_relaxed) < cap_) {
        slot->size = size;
        u->next = slot->head;
        slot->head = u;
        ++slot->count;
        count_.fetch_add(1, std::memory_order_relaxed);
      } else {
        u->next = overflow;
        overflow = u;
      }
    }
  }
  (void)n;
  unmap_list(overflow);
}

void DeathRow::retire(UltDesc* u) {
  u->next = nullptr;
  unmap_list(u);
}

void DeathRow::unmap_list(UltDesc* head) {
  while (head != nullptr) {
    UltDesc* u = head;
    head = head->next;
    u->next = nullptr;
    if (sys::stack_release(&u->stack) != 0) {
      // The kernel would not split the mapping (vm.max_map_count). The
      // stack's pages are back already; keep the descriptor and retry the
      // unmap at the next reap rather than lose the mapping.
      LockGuard<KltMutex> g(lock_);
      u->next = stuck_;
      stuck_ = u;
      continue;
    }
    unmapped_.fetch_add(1, std::memory_order_relaxed);
    ult_table::free(u);
  }
}

void DeathRow::fork_child_for_each(void (*fn)(UltDesc*, void*), void* ctx) {
  lock_.reset_after_fork();
  for (Class& c : classes_)
    for (UltDesc* u = c.head; u != nullptr; u = u->next) fn(u, ctx);
  for (UltDesc* u = stuck_; u != nullptr; u = u->next) fn(u, ctx);
}

uint64_t DeathRow::reap() {
  UltDesc* doomed = nullptr;
  uint64_t recycled = 0;
  {
    LockGuard<KltMutex> g(lock_);
    doomed = stuck_;  // retry stacks the kernel would not unmap last time
    stuck_ = nullptr;
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
        UltDesc** link = &c.head;
        uint64_t kept = 0;
        while (*link != nullptr && kept < keep) {
          link = &(*link)->next;
          ++kept;
        }
        keep -= kept;
        UltDesc* rest = *link;
        *link = nullptr;
        while (rest != nullptr) {
          UltDesc* u = rest;
          rest = rest->next;
          u->next = doomed;
          doomed = u;
          --c.count;
          count_.fetch_sub(1, std::memory_order_relaxed);
          ++recycled;
        }
      }
      if (idle) {
        decommitted_ = true;
        // Decommit under the lock: nobody may take a stack while its pages go.
        for (Class& c : classes_)
          for (UltDesc* u = c.head; u != nullptr; u = u->next) sys::stack_decommit(u->stack, sys::page_size());
      }
    }
  }
  unmap_list(doomed);
  return recycled;
}

}  // namespace weft::rt
