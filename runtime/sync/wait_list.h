// runtime/sync/wait_list.h — waiting and waking for weft's sync primitives.
//
// Every primitive keeps its waiters in a detail::WaitQueue (FIFO, behind a
// tiny spinlock) of SyncWaiter records that live on the waiters' stacks. A
// waiter is a parked ULT or a foreign thread blocked on a futex, and the
// two mix freely in one queue.
//
// The wake-up handshake (why no wake-up is lost):
//
//   waiter                                  waker
//   lock queue; check the condition;        lock queue; change the condition;
//   push w; unlock queue                    pop w; unlock queue
//   block(w): until w.state != 0            wake(w): read w.ult, then
//     (park the ULT / futex-wait on state)    w.state = 1 (release), then
//                                             unpark(ult) or futex_wake(&state)
//
// The waiter re-checks w.state after every return from park or futex_wait,
// and the waker sets it before waking, so a wake that comes before the
// waiter sleeps makes the park return at once (the ULT's permit, ult.h) or
// the futex_wait fail with EAGAIN. After setting state the waker touches
// only the futex address (harmless if the waiter has gone) or the ULT it
// read before — never the record itself.
//
// Timeouts (cancel_wait). A waker may destroy the primitive as soon as its
// notify/release/unlock returns (legal for std::condition_variable once
// every waiter was notified; likewise a WaitGroup or Semaphore freed by the
// last party): a timed-out waiter that was already popped must then never
// touch the primitive's queue. So the waiter and the waker race for w.state
// with a CAS, and the waker, once it popped w, does not return while the
// waiter might still be using the queue:
//
//   timed-out waiter (cancel_wait)          waker (wake, after its pop)
//   CAS state 0 -> 2 (cancelling)           CAS state 0 -> 1 (woken)
//   fails (state is 1): woken; return,      ok: unpark / futex_wake; return
//     never touching the queue              fails (state is 2): the waiter
//   ok: lock queue; remove(w); unlock         may be in the queue: wait
//     removed: timed out; return              while state == 2, then
//     not queued (popped): state = 3,         state = 1; unpark/futex_wake
//       then wait while state == 3; take
//       the wake (and its grant); return
//
// Why the queue is alive whenever the waiter locks it: its CAS 0 -> 2 won,
// so no wake has completed. Either w was still queued (no waker has it; a
// primitive with a waiter queued must not be destroyed), or a waker popped
// it and is still inside its operation on the primitive — and that waker's
// wake(w) now waits for state 3, which the waiter stores only after its
// last touch of the queue. Between its CAS and that store the waiter runs
// a few instructions and a QueueLock (it never parks), so the waker's wait
// is short. No wake() is ever called with a queue lock held.
#pragma once

#include <atomic>
#include <cstdint>
#include <stop_token>

#include <pthread.h>

#include "runtime/locks.h"
#include "runtime/scheduler.h"
#include "weft/sync.h"

namespace weft::rt {
struct UltDesc;
}

namespace weft::detail {

struct SyncWaiter {
  // state (also the futex word of a waiting thread; see the pictures above)
  static constexpr uint32_t kWaiting = 0;     // queued, or popped and not woken yet
  static constexpr uint32_t kWoken = 1;       // the waker is done with the record
  static constexpr uint32_t kCancelling = 2;  // timed out; the waiter may be in the queue
  static constexpr uint32_t kCancelled = 3;   // timed out, found popped: waits for the wake

  rt::UltDesc* ult = nullptr;            // the parked ULT; null for a foreign thread
  uintptr_t who = 0;                 // the waiter's identity (Mutex owner encoding)
  std::atomic<uint32_t> state{kWaiting};
  SyncWaiter* prev = nullptr;
  SyncWaiter* next = nullptr;
  bool queued = false;
  int64_t since_ns = 0;              // when it first queued (starvation checks)
  uintptr_t tag = 0;                 // the primitive's: reader/writer, handed off, ...
  // What a parked ULT waits for, for dumps and gdb (runtime/debug_info.h):
  // init_waiter's arguments, a string with static storage and the primitive.
  const char* what = nullptr;
  const void* obj = nullptr;
};

}  // namespace weft::detail

namespace weft::rt::sync {

using detail::SyncWaiter;
using detail::WaitQueue;

// The queue's spinlock (sys::spin_acquire, as every spinlock in weft).
// Critical sections are a few pointer updates; never park or call user code
// while holding it. It pauses kSpinRounds rounds before it yields, twice the
// default: the primitives' contended paths were tuned with that figure.
class QueueLock {
 public:
  explicit QueueLock(WaitQueue& q) : q_(q) { lock(q_); }
  ~QueueLock() { unlock(q_); }
  QueueLock(const QueueLock&) = delete;
  QueueLock& operator=(const QueueLock&) = delete;
  static constexpr int kSpinRounds = 256;
  // Counted in sys::t_locks_held like every weft lock: a ULT is never
  // switched out by time-slice preemption while its KLT holds one (the
  // code under it may call out of weft's text: the vDSO's clock_gettime).
  static void lock(WaitQueue& q) {
    sys::locks_held_add(1);
    sys::spin_acquire<kSpinRounds>(q.lock);
  }
  static void unlock(WaitQueue& q) {
    sys::spin_release(q.lock);
    sys::locks_held_add(static_cast<uint32_t>(-1));
  }

 private:
  WaitQueue& q_;
};

// Queue operations; the caller holds the queue lock.
void push_back(WaitQueue& q, SyncWaiter* w);
void push_front(WaitQueue& q, SyncWaiter* w);
SyncWaiter* pop_front(WaitQueue& q);
// Removes w if it is queued; false if a waker already popped it.
bool remove(WaitQueue& q, SyncWaiter* w);

// Pops the first waiter, if any, and links it onto the front of *woken
// (through next): the list a waker collects under the queue lock and hands
// to wake_list() after releasing it. Returns the waiter, or null. The caller
// holds the queue lock.
inline SyncWaiter* take_front_locked(WaitQueue& q, SyncWaiter** woken) {
  SyncWaiter* w = pop_front(q);
  if (w != nullptr) {
    w->next = *woken;
    *woken = w;
  }
  return w;
}

// Pops every waiter; returns them linked through next, the last queued
// first. The caller holds the queue lock.
inline SyncWaiter* take_all_locked(WaitQueue& q) {
  SyncWaiter* woken = nullptr;
  while (take_front_locked(q, &woken) != nullptr) {
  }
  return woken;
}

// Fills in the calling ULT/thread's identity, and what it will wait for
// (`what`: the primitive's kind, a static string; `obj`: the primitive),
// which block() leaves in the ULT's wait note while it parks.
void init_waiter(SyncWaiter* w, const char* what = nullptr, const void* obj = nullptr);

// The identity the Mutex records for its owner: the ULT descriptor's
// address, or the thread's pthread_t with the low bit set.
inline uintptr_t self_identity() {
  UltDesc* self = current_ult();
  if (self != nullptr) return reinterpret_cast<uintptr_t>(self);
  return static_cast<uintptr_t>(pthread_self()) | 1;
}

// Blocks until w.state != 0 (true) or the deadline passes or `stop` (if
// given) is requested (false; the caller then cancels the wait as for a
// timeout). deadline_ns: CLOCK_MONOTONIC, -1 for none; detail::kForeverNs
// (a saturated timeout, weft/time.h) also means none. With a stop token,
// a std::stop_callback unparks a waiting ULT at once; a waiting thread
// re-checks the token every millisecond (its futex word is the wake-up
// handshake's, which the callback must not touch).
bool block(SyncWaiter* w, int64_t deadline_ns, const std::stop_token* stop = nullptr);

// After a false block(): removes w from q, or, if a waker got there first,
// waits for its wake-up without touching q again (see "Timeouts" above).
// Returns true if w was woken after all.
bool cancel_wait(WaitQueue& q, SyncWaiter* w);

// Test hook (sync_edges_test): called by cancel_wait with stage 0 when a
// timed wait has just timed out (before the CAS) and with stage 1 after the
// CAS 0 -> 2 won (before the queue lock). Null in production.
extern void (*g_cancel_wait_hook)(SyncWaiter* w, int stage);

// Wakes a waiter already popped from its queue (see the handshake above).
void wake(SyncWaiter* w);

// Wakes every waiter of a list linked through next (take_front_locked,
// take_all_locked), with no queue lock held. Reads each record's next
// before waking it: the record may vanish once woken.
inline void wake_list(SyncWaiter* w) {
  while (w != nullptr) {
    SyncWaiter* next = w->next;
    wake(w);
    w = next;
  }
}

// The waiting half shared by the primitives whose wakers grant what was
// waited for (a permit, the lock, a zero count). Under the queue lock,
// `ready()` either takes it at once (true: return true without waiting) or
// not; then, unless deadline_ns is 0 (do not wait: return false), queues a
// waiter tagged `tag` and blocks until woken (true) or the deadline passes
// and cancel_wait finds it still queued (false). deadline_ns as for block().
template <class Ready>
inline bool wait_until_ready(WaitQueue& q, int64_t deadline_ns, uintptr_t tag, Ready ready,
                             const std::stop_token* stop = nullptr) {
  SyncWaiter w;
  {
    QueueLock g(q);
    if (ready()) return true;
    if (deadline_ns == 0) return false;
    init_waiter(&w);
    w.tag = tag;
    push_back(q, &w);
  }
  return block(&w, deadline_ns, stop) || cancel_wait(q, &w);
}

}  // namespace weft::rt::sync
