// runtime/priority.h — a ULT's own priority and priority inheritance
// through weft::Mutex (issue 13). Queueing by priority is in scheduler.cc
// ("Priorities"); the design of inheritance is at the top of priority.cc.
#pragma once

#include <cstdint>

namespace weft::rt {

struct UltDesc;

// this_ult::set_priority: the calling ULT's own priority becomes p; its
// effective priority is the higher of p and what it is lent.
void set_own_priority(UltDesc* self, uint8_t p);

// How priority inheritance sees a lock (weft::Mutex): its holder (a ULT,
// or null for a foreign thread or nobody) — read only while that holder
// is known to be waiting on it, or the lock is known to be alive.
using PiOwnerFn = UltDesc* (*)(const void* lock);

// The calling ULT `self` is about to park waiting for `lock`, held by
// `owner` (a ULT). Records what self waits on (for chains), and lends its
// effective priority to owner and, through the locks they wait for, to
// the holders behind it (at most 16 steps), if higher than theirs. A loan
// recorded on a holder that released the lock meanwhile is taken back at
// once. Scheduler::promote_from_background moves a raised holder out of
// the background queue.
void pi_wait(UltDesc* self, const void* lock, UltDesc* owner, PiOwnerFn owner_of);
// self stopped waiting (it has the lock, or gave up).
void pi_wait_end(UltDesc* self);
// self released `lock`: the loan made through it ends; its effective
// priority drops to the highest of its own and its other loans.
void pi_released(UltDesc* self, const void* lock);

}  // namespace weft::rt
