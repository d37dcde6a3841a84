// sys/futex.cc — futex(2) wait/wake through raw system calls (futex.h).
#include "sys/futex.h"

#include <linux/futex.h>
#include <unistd.h>

#include <cerrno>

#include "sys/raw_syscall.h"
#include "sys/spin.h"

namespace weft::sys {

__thread uint32_t t_locks_held __attribute__((tls_model("initial-exec"))) = 0;
namespace {

long futex(const std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* ts,
           uint32_t val3) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return raw_syscall(SYS_futex, reinterpret_cast<long>(word), op, static_cast<long>(val),
                     reinterpret_cast<long>(ts), 0, static_cast<long>(val3));
}

int clock_flag(FutexClock c) { return c == FutexClock::kRealtime ? FUTEX_CLOCK_REALTIME : 0; }

}  // namespace

#if defined(__SANITIZE_THREAD__)
namespace {
thread_local bool t_unbounded = false;
}  // namespace
void futex_unbounded_waits_on_this_thread() { t_unbounded = true; }
#endif

int futex_wait(const std::atomic<uint32_t>* word, uint32_t expected) {
#if defined(__SANITIZE_THREAD__)
  if (t_unbounded) return static_cast<int>(futex(word, FUTEX_WAIT_PRIVATE, expected, nullptr, 0));
  // ThreadSanitizer runs a handler that interrupts a thread outside its
  // interceptors only when that thread next passes one, and this wait is a
  // raw system call (restarted after the handler): a thread asleep here
  // would hold the signal for as long as it sleeps (a SIGTERM taken by a
  // main thread waiting in block_on). Under TSan an untimed wait on a
  // thread that is not a weft KLT lasts at most 10 ms, reported as -EINTR
  // (a spurious wake-up, which every caller re-checks), and ends in an
  // intercepted call, where deferred handlers run.
  timespec bound{0, 10 * 1000 * 1000};
  long r = futex(word, FUTEX_WAIT_PRIVATE, expected, &bound, 0);
  usleep(0);
  return static_cast<int>(r == -ETIMEDOUT ? -EINTR : r);
#else
  return static_cast<int>(futex(word, FUTEX_WAIT_PRIVATE, expected, nullptr, 0));
#endif
}

int futex_wait_for(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel) {
  // FUTEX_WAIT's timeout is relative (measured on CLOCK_MONOTONIC).
  return static_cast<int>(futex(word, FUTEX_WAIT_PRIVATE, expected, rel, 0));
}

int futex_wait_until(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* abs,
                     FutexClock clock) {
  return futex_wait_bitset(word, expected, abs, kFutexBitsetAll, clock);
}

int futex_wake(const std::atomic<uint32_t>* word, int count) {
  return static_cast<int>(futex(word, FUTEX_WAKE_PRIVATE, static_cast<uint32_t>(count), nullptr, 0));
}

int futex_wait_bitset(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* abs,
                      uint32_t bitset, FutexClock clock) {
  // FUTEX_WAIT_BITSET's timeout is absolute, on the clock the flag selects.
  return static_cast<int>(
      futex(word, FUTEX_WAIT_BITSET_PRIVATE | clock_flag(clock), expected, abs, bitset));
}

int futex_wake_bitset(const std::atomic<uint32_t>* word, int count, uint32_t bitset) {
  return static_cast<int>(
      futex(word, FUTEX_WAKE_BITSET_PRIVATE, static_cast<uint32_t>(count), nullptr, bitset));
}

int futex_wait_shared(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel) {
  return static_cast<int>(futex(word, FUTEX_WAIT, expected, rel, 0));
}

int futex_wake_shared(const std::atomic<uint32_t>* word, int count) {
  return static_cast<int>(futex(word, FUTEX_WAKE, static_cast<uint32_t>(count), nullptr, 0));
}

}  // namespace weft::sys
