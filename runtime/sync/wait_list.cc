// runtime/sync/wait_list.cc — the waiter queue, block/wake and the timed-out
// waiter's cancel_wait shared by weft's sync primitives (design: wait_list.h).
#include "runtime/sync/wait_list.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>
#include <optional>

#include "runtime/debug_info.h"
#include "runtime/poller.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"
#include "sys/raw_log.h"

namespace weft::detail {
int64_t monotonic_now_ns() { return rt::monotonic_ns(); }
}  // namespace weft::detail

namespace weft::rt::sync {

namespace {
// Links w between prev and next, either of which may be null (an end of
// the queue): the mirror of remove().
void insert(WaitQueue& q, SyncWaiter* w, SyncWaiter* prev, SyncWaiter* next) {
  w->prev = prev;
  w->next = next;
  if (prev) prev->next = w; else q.head = w;
  if (next) next->prev = w; else q.tail = w;
  w->queued = true;
  ++q.size;
}
}  // namespace

void push_back(WaitQueue& q, SyncWaiter* w) { insert(q, w, q.tail, nullptr); }

void push_front(WaitQueue& q, SyncWaiter* w) { insert(q, w, nullptr, q.head); }

SyncWaiter* pop_front(WaitQueue& q) {
  SyncWaiter* w = q.head;
  if (w != nullptr) remove(q, w);
  return w;
}

bool remove(WaitQueue& q, SyncWaiter* w) {
  if (!w->queued) return false;
  if (w->prev) w->prev->next = w->next; else q.head = w->next;
  if (w->next) w->next->prev = w->prev; else q.tail = w->prev;
  w->prev = w->next = nullptr;
  w->queued = false;
  --q.size;
  return true;
}

void init_waiter(SyncWaiter* w, const char* what, const void* obj) {
  w->what = what;
  w->obj = obj;
  w->ult = current_ult();
  w->who = w->ult != nullptr ? reinterpret_cast<uintptr_t>(w->ult) : (static_cast<uintptr_t>(pthread_self()) | 1);
  w->state.store(0, std::memory_order_relaxed);
}

namespace {
// A stop token's callback for a waiting ULT: a spurious wake-up, after
// which block() sees the stop. The callback is removed (waiting for it if
// it runs) before block() returns, so w is alive whenever it runs.
struct UnparkWaiter {
  SyncWaiter* w;
  void operator()() const { unpark(w->ult); }
};

// A thread waiting with a stop token: its futex word is the handshake's,
// which a stop callback must not touch, so it re-checks the token every
// millisecond.
bool block_thread_stoppable(SyncWaiter* w, int64_t deadline_ns, const std::stop_token& stop) {
  while (w->state.load(std::memory_order_acquire) == 0) {
    if (stop.stop_requested()) return w->state.load(std::memory_order_acquire) != 0;
    int64_t now = monotonic_ns();
    if (deadline_ns >= 0 && now >= deadline_ns) return w->state.load(std::memory_order_acquire) != 0;
    int64_t until = now + 1000 * 1000;
    if (deadline_ns >= 0 && deadline_ns < until) until = deadline_ns;
    timespec ts{until / 1000000000LL, until % 1000000000LL};
    (void)sys::futex_wait_until(&w->state, 0, &ts);
  }
  return true;
}
}  // namespace

bool block(SyncWaiter* w, int64_t deadline_ns, const std::stop_token* stop) {
  if (deadline_ns == detail::kForeverNs) deadline_ns = -1;  // saturated: no timer (weft/time.h)
  if (stop != nullptr && !stop->stop_possible()) stop = nullptr;
  if (w->ult != nullptr) {
    WaitNote note(w->ult, w->what, w->obj);
    std::optional<std::stop_callback<UnparkWaiter>> cb;
    if (stop != nullptr) cb.emplace(*stop, UnparkWaiter{w});
    while (w->state.load(std::memory_order_acquire) == 0) {
      if (stop != nullptr && stop->stop_requested()) return w->state.load(std::memory_order_acquire) != 0;
      if (deadline_ns < 0) {
        park_current(w->ult);
      } else {
        if (monotonic_ns() >= deadline_ns) return w->state.load(std::memory_order_acquire) != 0;
        park_current_until(w->ult, deadline_ns);
      }
    }
    return true;
  }
  if (stop != nullptr) return block_thread_stoppable(w, deadline_ns, *stop);
  while (w->state.load(std::memory_order_acquire) == 0) {
    if (deadline_ns < 0) {
      sys::futex_wait(&w->state, 0);
    } else {
      timespec ts{deadline_ns / 1000000000LL, deadline_ns % 1000000000LL};
      if (sys::futex_wait_until(&w->state, 0, &ts) == -ETIMEDOUT)
        return w->state.load(std::memory_order_acquire) != 0;
    }
  }
  return true;
}

void (*g_cancel_wait_hook)(SyncWaiter* w, int stage) = nullptr;

namespace {
// Waits while w.state == from (the waiter's own record; after a timeout).
void wait_while_state(SyncWaiter* w, uint32_t from) {
  while (w->state.load(std::memory_order_acquire) == from) {
    if (w->ult != nullptr) {
      park_current(w->ult);
    } else {
      sys::futex_wait(&w->state, from);
    }
  }
}
}  // namespace

bool cancel_wait(WaitQueue& q, SyncWaiter* w) {
  if (g_cancel_wait_hook != nullptr) g_cancel_wait_hook(w, 0);
  uint32_t s = SyncWaiter::kWaiting;
  if (!w->state.compare_exchange_strong(s, SyncWaiter::kCancelling, std::memory_order_acq_rel)) {
    // Woken already: the waker is done with w and may have destroyed the
    // primitive. Do not touch q.
    WEFT_DCHECK(s == SyncWaiter::kWoken, "waiter %p in state %u", static_cast<void*>(w), s);
    return true;
  }
  if (g_cancel_wait_hook != nullptr) g_cancel_wait_hook(w, 1);
  // The CAS won: until we store kCancelled, no wake of w completes, so q is
  // alive (wait_list.h, "Timeouts"). No park between here and that store.
  bool removed;
  {
    QueueLock g(q);
    removed = remove(q, w);
  }
  if (removed) return false;  // timed out for real: nobody else has w
  // Popped by a waker whose wake(w) waits for this store; after it, q may
  // be gone.
  w->state.store(SyncWaiter::kCancelled, std::memory_order_release);
  wait_while_state(w, SyncWaiter::kCancelled);
  return true;
}

void wake(SyncWaiter* w) {
  UltDesc* u = w->ult;  // before the state changes: the record may vanish after it
  uint32_t s = SyncWaiter::kWaiting;
  if (!w->state.compare_exchange_strong(s, SyncWaiter::kWoken, std::memory_order_acq_rel)) {
    // The waiter timed out and claimed the right to use the queue (state
    // kCancelling): we are still inside our operation on the primitive, so
    // it stays alive until the waiter has finished with the queue
    // (kCancelled). A short wait: the waiter does not park meanwhile.
    for (int spins = 0; (s = w->state.load(std::memory_order_acquire)) == SyncWaiter::kCancelling;) {
      if (++spins < 256) {
        cpu_relax();
      } else {
        sys::sched_yield();
      }
    }
    WEFT_DCHECK(s == SyncWaiter::kCancelled, "woken waiter %p in state %u", static_cast<void*>(w), s);
    w->state.store(SyncWaiter::kWoken, std::memory_order_release);
  }
  if (u != nullptr) {
    unpark(u);
  } else {
    sys::futex_wake(&w->state, 1);
  }
}

}  // namespace weft::rt::sync
