// runtime/priority.cc — priority inheritance through weft::Mutex.
//
// A ULT that parks on a Mutex held by a ULT of lower effective priority
// lends it its own (pi_wait): the holder's eff_prio rises, the loan is
// recorded in the holder (UltDesc::pi_mutex/pi_prio, under its pi_lock),
// and if the holder itself waits on a Mutex (pi_waiting_on), the holder of
// that one is raised too, and so on (a chain of at most 16 steps). When
// the holder unlocks a Mutex it checks pi_count; if it has loans, the one
// made through that Mutex ends and eff_prio drops to the highest of its own
// priority and its remaining loans (pi_released). A raised ULT that waits
// in the background queue moves to the queue of its new priority; one
// that is running or queued elsewhere is queued by its new priority the
// next time it becomes runnable, and a preempted background one is picked
// up by its worker's next pass (scheduler.cc).
//
// The race with unlock. The waiter records its loan, then (a full fence)
// checks that the Mutex is still held by that holder; the holder releases
// the Mutex (a locked RMW), then reads pi_count. So either the holder sees
// the loan and ends it, or the waiter sees the release and ends the loan
// itself (both may happen: ending is idempotent). A loan thus never
// outlives the hold it was made for — except one made through a ninth
// Mutex held at once (not recorded; ends at the holder's next recompute)
// and one whose waiter timed out (ends at the holder's unlock).
//
// Reading a chain: a ULT's pi_waiting_on is set and cleared under its
// pi_lock, and while it is set that ULT is parked inside that Mutex's
// lock(), so the Mutex is alive: its holder is read under the same lock.
//
// Foreign threads neither lend nor receive: their priority is the
// kernel's, a Mutex's holder word names a ULT or an opaque thread, and
// FUTEX_LOCK_PI could only boost a kernel thread — the worker, not the ULT
// that holds the lock, which may move to another worker before it unlocks
// (the kernel then refuses the unlock, EPERM).
#include "runtime/priority.h"

#include <atomic>

#include "runtime/scheduler.h"

namespace weft::rt {
namespace {

constexpr int kMaxChain = 16;

// Under u->pi_lock: eff_prio = max(base, loans).
void recompute_locked(UltDesc* u) {
  uint8_t p = u->base_prio.load(std::memory_order_relaxed);
  uint8_t n = u->pi_count.load(std::memory_order_relaxed);
  for (uint8_t i = 0; i < n; ++i)
    if (u->pi_prio[i] > p) p = u->pi_prio[i];
  u->eff_prio.store(p, std::memory_order_relaxed);
}

// Under u->pi_lock: forgets the loan made through `lock`.
void end_loan_locked(UltDesc* u, const void* lock) {
  uint8_t n = u->pi_count.load(std::memory_order_relaxed);
  for (uint8_t i = 0; i < n; ++i) {
    if (u->pi_mutex[i] != lock) continue;
    u->pi_mutex[i] = u->pi_mutex[n - 1];
    u->pi_prio[i] = u->pi_prio[n - 1];
    u->pi_count.store(static_cast<uint8_t>(n - 1), std::memory_order_relaxed);
    break;
  }
  recompute_locked(u);
}

}  // namespace

void set_own_priority(UltDesc* self, uint8_t p) {
  LockGuard<SpinLock> g(self->pi_lock);
  self->base_prio.store(p, std::memory_order_relaxed);
  recompute_locked(self);
}

void pi_wait(UltDesc* self, const void* lock, UltDesc* owner, PiOwnerFn owner_of) {
  {
    LockGuard<SpinLock> g(self->pi_lock);
    self->pi_waiting_on.store(lock, std::memory_order_relaxed);
  }
  Scheduler* s = self->sched;
  uint8_t prio = self->eff_prio.load(std::memory_order_relaxed);
  for (int step = 0; owner != nullptr && owner != self && step < kMaxChain; ++step) {
    const void* next_lock = nullptr;
    UltDesc* next_owner = nullptr;
    bool still_held;
    bool raised = false;
    {
      LockGuard<SpinLock> g(owner->pi_lock);
      // Nothing to lend to a holder whose own priority is as high. (One
      // raised as high by another loan still gets ours recorded: that loan
      // may end first.)
      if (owner->base_prio.load(std::memory_order_relaxed) >= prio) return;
      uint8_t n = owner->pi_count.load(std::memory_order_relaxed);
      int at = -1;
      for (uint8_t i = 0; i < n; ++i)
        if (owner->pi_mutex[i] == lock) at = i;
      if (at < 0 && n < UltDesc::kPiHeld) {
        at = n;
        owner->pi_mutex[at] = lock;
        owner->pi_prio[at] = prio;
        owner->pi_count.store(static_cast<uint8_t>(n + 1), std::memory_order_relaxed);
      } else if (at >= 0 && owner->pi_prio[at] < prio) {
        owner->pi_prio[at] = prio;
      }
      if (owner->eff_prio.load(std::memory_order_relaxed) < prio) {
        owner->eff_prio.store(prio, std::memory_order_relaxed);
        raised = true;
      }
      // The loan is recorded: now look whether the holder still holds the
      // lock (store, full fence, load: the other side is the holder's
      // release, then its read of pi_count).
      std::atomic_thread_fence(std::memory_order_seq_cst);
      still_held = owner_of(lock) == owner;
      if (!still_held) {
        end_loan_locked(owner, lock);
      } else {
        next_lock = owner->pi_waiting_on.load(std::memory_order_relaxed);
        if (next_lock != nullptr) next_owner = owner_of(next_lock);  // alive: owner waits on it
      }
    }
    if (!still_held || !raised) return;  // not raised: its chain already runs at least this high
    s->priority_boosts.fetch_add(1, std::memory_order_relaxed);
    s->promote_from_background(owner);
    lock = next_lock;
    owner = next_owner;
  }
}

void pi_wait_end(UltDesc* self) {
  LockGuard<SpinLock> g(self->pi_lock);
  self->pi_waiting_on.store(nullptr, std::memory_order_relaxed);
}

void pi_released(UltDesc* self, const void* lock) {
  LockGuard<SpinLock> g(self->pi_lock);
  end_loan_locked(self, lock);
}

}  // namespace weft::rt
