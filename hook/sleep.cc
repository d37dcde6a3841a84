// hook/sleep.cc — nanosleep, clock_nanosleep, usleep, sleep on a ULT: the
// ULT parks on its worker's timer (rt::park_current_until) instead of the
// worker sleeping in the kernel.
//
// As the system calls: a signal handler that runs on the sleeping ULT ends
// the sleep with EINTR (never restarted, whatever SA_RESTART says, as
// nanosleep(2)) and the time left is written to *rem; a stop request ends
// it with ECANCELED (weft/hook.h), *rem written too. A zero duration
// yields the worker (this_ult::yield) and returns 0: usleep(0) and
// sleep(0) in spin-wait loops let the other ULTs run, as they let other
// threads run.
#include <time.h>
#include <unistd.h>

#include "hook/hook_internal.h"
#include "runtime/park.h"

namespace weft::hook_internal {
namespace {

HOOK_DECLARE_NEXT(nanosleep);
HOOK_DECLARE_NEXT(clock_nanosleep);
HOOK_DECLARE_NEXT(usleep);
HOOK_DECLARE_NEXT(sleep);

__attribute__((constructor)) void resolve_sleep() {
  (void)HOOK_NEXT(nanosleep);
  (void)HOOK_NEXT(clock_nanosleep);
  (void)HOOK_NEXT(usleep);
  (void)HOOK_NEXT(sleep);
}

constexpr int64_t kNs = 1000000000LL;

int64_t to_ns(const timespec& t) {
  if (t.tv_sec > INT64_MAX / kNs - 1) return INT64_MAX;
  return static_cast<int64_t>(t.tv_sec) * kNs + t.tv_nsec;
}

void write_left(timespec* rem, int64_t dl) {
  if (rem == nullptr) return;
  int64_t left = dl == INT64_MAX ? INT64_MAX : dl - now_ns();
  if (left < 0) left = 0;
  rem->tv_sec = static_cast<time_t>(left / kNs);
  rem->tv_nsec = static_cast<long>(left % kNs);
}

// Parks the calling ULT until CLOCK_MONOTONIC reaches dl: 0, -EINTR (a
// handler ran on it) or -ECANCELED (asked to stop).
int sleep_until(int64_t dl) {
  rt::UltDesc* self = rt::caller().ult;
  uint64_t mark = rt::handler_mark(self);
  for (;;) {
    if (rt::stop_requested(self)) return -ECANCELED;
    if (rt::handler_interrupts(self, mark, /*restartable=*/false)) return -EINTR;
    if (now_ns() >= dl) return 0;
    if (dl == INT64_MAX) {
      rt::park_current(self);
    } else {
      (void)rt::park_current_until(self, dl);
    }
  }
}

// A relative sleep of `rel` ns with *rem on EINTR/ECANCELED: 0 or -errno.
int sleep_rel(int64_t rel, timespec* rem) {
  if (rel == 0) {
    weft::this_ult::yield();
    return 0;
  }
  int64_t dl = rel == INT64_MAX ? INT64_MAX : deadline_after_ns(rel);
  int r = sleep_until(dl);
  if (r != 0) write_left(rem, dl);
  return r;
}

bool valid(const timespec* t) { return t->tv_nsec >= 0 && t->tv_nsec < kNs; }

// Reads `clock` in ns (CLOCK_REALTIME, CLOCK_TAI, CLOCK_BOOTTIME).
int64_t clock_ns(clockid_t clock) {
  timespec t{};
  sys(SYS_clock_gettime, clock, arg(&t));
  return to_ns(t);
}

// clock_nanosleep on a ULT: 0 or an error number (not errno: the call
// returns it). Only the clocks below; others are forwarded.
int clock_sleep_on_ult(clockid_t clock, int flags, const timespec* req, timespec* rem) {
  if (!valid(req) || req->tv_sec < 0) return EINVAL;
  int64_t want = to_ns(*req);
  if (!(flags & TIMER_ABSTIME)) {
    int r = sleep_rel(want, rem);
    return -r;
  }
  if (clock == CLOCK_MONOTONIC) {
    if (want <= now_ns()) {
      weft::this_ult::yield();
      return 0;
    }
    return -sleep_until(want);
  }
  // An absolute time on another clock: sleep for the difference, read that
  // clock again, repeat while it is still early (a clock stepped meanwhile
  // is followed at the next wake-up).
  for (;;) {
    int64_t left = want - clock_ns(clock);
    if (left <= 0) return 0;
    int r = sleep_until(deadline_after_ns(left));
    if (r != 0) return -r;
  }
}

}  // namespace
}  // namespace weft::hook_internal

using namespace weft::hook_internal;

extern "C" {

WEFT_HOOK_EXPORT int nanosleep(const struct timespec* req, struct timespec* rem) {
  if (!on_ult()) return HOOK_NEXT(nanosleep)(req, rem);
  if (!valid(req) || req->tv_sec < 0) return fail(EINVAL);
  return static_cast<int>(from_result(sleep_rel(to_ns(*req), rem)));
}

WEFT_HOOK_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec* req, struct timespec* rem) {
  if (!on_ult() || (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME && clock != CLOCK_TAI &&
                    clock != CLOCK_BOOTTIME))
    return HOOK_NEXT(clock_nanosleep)(clock, flags, req, rem);
  return clock_sleep_on_ult(clock, flags, req, rem);
}

WEFT_HOOK_EXPORT int usleep(useconds_t us) {
  if (!on_ult()) return HOOK_NEXT(usleep)(us);
  return static_cast<int>(from_result(sleep_rel(static_cast<int64_t>(us) * 1000, nullptr)));
}

WEFT_HOOK_EXPORT unsigned int sleep(unsigned int s) {
  if (!on_ult()) return HOOK_NEXT(sleep)(s);
  timespec left{};
  int r = sleep_rel(static_cast<int64_t>(s) * kNs, &left);
  if (r == 0) return 0;
  fail(-r);
  // glibc: the whole seconds not slept.
  return static_cast<unsigned int>(left.tv_sec);
}

}  // extern "C"
