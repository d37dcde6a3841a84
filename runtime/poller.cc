// runtime/poller.cc — the futex poller, the poller factory registry and the
// monotonic clock (poller.h, park.h).
#include "runtime/poller.h"

#include "runtime/park.h"

#include <ctime>

#include "sys/futex.h"

namespace weft::rt {

namespace {
std::atomic<PollerFactory> factory{nullptr};
std::atomic<void*> factory_ctx{nullptr};
}  // namespace

void register_poller_factory(PollerFactory f, void* ctx) {
  factory_ctx.store(ctx, std::memory_order_relaxed);
  factory.store(f, std::memory_order_release);
}

PollerFactory registered_poller_factory(void** ctx) {
  PollerFactory f = factory.load(std::memory_order_acquire);
  *ctx = factory_ctx.load(std::memory_order_relaxed);
  return f;
}

int64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // vDSO; does not touch errno on success
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void futex_word_wait(std::atomic<uint32_t>* word, int64_t deadline_ns) {
  if (word->exchange(2, std::memory_order_acq_rel) != 1) {
    if (deadline_ns < 0) {
      sys::futex_wait(word, 2);
    } else {
      timespec ts{deadline_ns / 1000000000LL, deadline_ns % 1000000000LL};
      sys::futex_wait_until(word, 2, &ts);
    }
  }
  // An exchange, not a store: a locked op orders the caller's re-check of
  // its queues after this reset. With a plain store, x86 could let those
  // loads pass it, miss work pushed meanwhile, and erase the waker's 1.
  word->exchange(0, std::memory_order_acq_rel);
}

void FutexPoller::wait(int64_t deadline_ns) { futex_word_wait(&word_, deadline_ns); }

void FutexPoller::wake() {
  if (word_.exchange(1, std::memory_order_acq_rel) == 2) sys::futex_wake(&word_, 1);
}

}  // namespace weft::rt
