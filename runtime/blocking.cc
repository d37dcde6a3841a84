// runtime/blocking.cc — weft::blocking(): blocking regions and handoffs.
//
// The handshake with the monitor (monitor.cc, handoff_locked):
//
//   the region's KLT                       monitor
//   current = null                         sees flag 1 for longer than the
//   blocking = epoch|1  (seq_cst)          threshold, takes the pool lock,
//   kick the monitor if it sleeps long     CAS blocking epoch|1 -> epoch|3;
//   ... fn() ...                           on success swaps the worker's slot
//                                          with a spare's, moves its queued
//                                          ULTs and timers, then stores
//                                          blocking = epoch+1|2
//   CAS blocking epoch|1 -> epoch|0
//   ok:   nothing happened, carry on
//   fail: handed off (now retired): wait while the flag is 3 (the monitor
//         is still moving our state), then set flag 0 under the new epoch
//   current = the ULT again
//
// Between the store of flag 1 and the CAS, the KLT runs only fn, which sees
// no current ULT and in_blocking set, so nothing it calls touches the
// worker's owner-only queues or timers (a spawn goes through the global
// queue, an unpark too: scheduler.cc) — exactly the window in which the
// monitor may take them. Before the region opens, the worker's batched io
// requests go out (poll) and a deferred notify is settled, so that ULTs
// queued or readied just before it are not held for the whole call when no
// handoff comes (no spare worker left).
//
// The end of a region is a scheduling point: if the worker owes its
// scheduler loop a pass (Worker::loop_owed: it was retired meanwhile, by a
// handoff or by set_concurrency, or other ULTs, io completions or due
// timers wait), the ULT requeues itself before it goes on. Without it a
// ULT that calls weft::blocking in a loop with regions shorter than the
// handoff threshold, or on a retired worker (which is never handed off),
// never lets its worker's loop run: ULTs parked with a timer there slept
// forever (the credentials churn test hung in CI; tests/
// runtime_blocking_test.cc, RegionLoop*). Not while an exception or a
// ULT's exit unwinds through the region: that path switches nowhere.
//
// Every region opens under a new epoch (and a handoff moves on to the next
// one), so the monitor's claim fails for a region that ended meanwhile,
// and the region's closing CAS fails precisely when a handoff happened.
#include <exception>

#include <algorithm>

#include "runtime/log.h"
#include "runtime/poller.h"
#include "runtime/scheduler.h"
#include "runtime/signal.h"
#include "sys/raw_log.h"

namespace weft::detail {

BlockingRegion blocking_enter() {
  rt::Worker* w = rt::current_worker();
  if (w == nullptr) return {};
  rt::UltDesc* self = w->current.load(std::memory_order_relaxed);
  if (self == nullptr) return {};  // a foreign-like context already (nested region)
  uint64_t st = w->blocking.load(std::memory_order_relaxed);
  WEFT_DCHECK((st & 3) == 0, "worker %d enters a blocking region in state %lu", w->index.load(std::memory_order_relaxed),
              static_cast<unsigned long>(st));
  // A fresh epoch for every region: a monitor that read the word of an
  // earlier region (and its start time) and claims only now fails its CAS,
  // instead of handing off a region that has just begun.
  st += 4;
  w->poller->poll();  // submit batched io, take in completions (they queue here, notified below)
  if (w->core().notify_deferred) w->sched->settle_deferred_notify(w);
  w->blocking_ult = self;
  if (__builtin_expect(w->trace != nullptr, 0)) w->trace->put(rt::trace::kBlockBegin, self->id_value());
  w->blocking_since_ns.store(rt::monotonic_ns(), std::memory_order_relaxed);
  w->current.store(nullptr, std::memory_order_relaxed);
  w->in_blocking.store(true, std::memory_order_relaxed);
  w->blocking.store(st | 1, std::memory_order_seq_cst);
  w->sched->kick_monitor();  // so the threshold is noticed on time
  return BlockingRegion{self, w, st};
}

void blocking_exit(const BlockingRegion& r) {
  if (r.ult == nullptr) return;
  auto* w = static_cast<rt::Worker*>(r.worker);
  uint64_t expected = r.epoch | 1;
  if (!w->blocking.compare_exchange_strong(expected, r.epoch, std::memory_order_acq_rel)) {
    // Handed off while we were away: this worker is retired now. The
    // monitor may still be moving its queues (flag 3): wait for it, then
    // ready the word for later regions (flag 0 under the new epoch).
    while ((expected & 3) == 3) {
      rt::cpu_relax();
      expected = w->blocking.load(std::memory_order_acquire);
    }
    WEFT_DCHECK((expected & 3) == 2, "blocking word %lu after handoff", static_cast<unsigned long>(expected));
    w->blocking.store(expected & ~uint64_t{3}, std::memory_order_release);
  }
  w->in_blocking.store(false, std::memory_order_relaxed);
  // Only this KLT adds to its worker's blocking_ns (a retired worker's
  // KLT is still its own).
  int64_t in_region = rt::monotonic_ns() - w->blocking_since_ns.load(std::memory_order_relaxed);
  rt::bump_by(w->blocking_ns, std::max<int64_t>(0, in_region));
  w->blocking_ult = nullptr;
  auto* self = static_cast<rt::UltDesc*>(r.ult);
  if (__builtin_expect(w->trace != nullptr, 0)) w->trace->put(rt::trace::kBlockEnd, self->id_value());
  w->current.store(self, std::memory_order_relaxed);
  if (std::uncaught_exceptions() == 0 && !self->exit_unwinding) {
    if (w->loop_owed()) rt::requeue_current(self);
    if (rt::sig::deliverable(self)) rt::sig::deliver(self);  // signals that came during fn
  }
}

}  // namespace weft::detail
