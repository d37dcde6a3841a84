#include "runtime/sync/wait_list.h"

#include <pthread.h>

#include <cerrno>
#include <ctime>

#include "runtime/poller.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"

namespace weft::detail {
int64_t monotonic_now_ns() { return rt::monotonic_ns(); }
}  // namespace weft::detail

namespace weft::rt::sync {

void push_back(WaitQueue& q, SyncWaiter* w) {
  w->next = nullptr;
  w->prev = q.tail;
  if (q.tail) q.tail->next = w; else q.head = w;
  q.tail = w;
  w->queued = true;
  ++q.size;
}

void push_front(WaitQueue& q, SyncWaiter* w) {
  w->prev = nullptr;
  w->next = q.head;
  if (q.head) q.head->prev = w; else q.tail = w;
  q.head = w;
  w->queued = true;
  ++q.size;
}

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

void init_waiter(SyncWaiter* w) {
  w->ult = current_ult();
  w->who = w->ult != nullptr ? reinterpret_cast<uintptr_t>(w->ult) : (static_cast<uintptr_t>(pthread_self()) | 1);
  w->state.store(0, std::memory_order_relaxed);
}

bool block(SyncWaiter* w, int64_t deadline_ns) {
  if (deadline_ns == detail::kForeverNs) deadline_ns = -1;  // saturated: no timer (weft/time.h)
  if (w->ult != nullptr) {
    while (w->state.load(std::memory_order_acquire) == 0) {
      if (deadline_ns < 0) {
        park_current(w->ult);
      } else {
        if (monotonic_ns() >= deadline_ns) return w->state.load(std::memory_order_acquire) != 0;
        park_current_until(w->ult, deadline_ns);
      }
    }
    return true;
  }
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

bool cancel_wait(WaitQueue& q, SyncWaiter* w) {
  {
    QueueLock g(q);
    if (remove(q, w)) return false;
  }
  block(w, -1);  // popped by a waker: its wake-up is on the way
  return true;
}

void wake(SyncWaiter* w) {
  Ult* u = w->ult;  // before the store: the record may vanish after it
  w->state.store(1, std::memory_order_release);
  if (u != nullptr) {
    unpark(u);
  } else {
    sys::futex_wake(&w->state, 1);
  }
}

}  // namespace weft::rt::sync
