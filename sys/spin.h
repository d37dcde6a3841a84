// sys/spin.h — sys/'s own small locks (sys/ cannot use runtime/locks.h).
//
// SpinFlag: weft's one spinlock (a test-and-test-and-set lock; every other
// spinning lock in weft waits through the same spin_acquire), for critical
// sections of a few loads and stores that may be taken on any kind of
// thread (a KLT before its user code, a reaper, a foreign thread). It spins
// with `pause` for a while, then yields the CPU with sched_yield on every
// further round: on a shared 2-vCPU machine the holder may be a preempted
// vCPU, and a waiter that only spins burns its whole time slice while the
// holder cannot run (issue 9 #13). Async-signal-safe only if no handler
// takes the same lock.
//
// SysMutex: a futex mutex (Drepper's three-state lock: 0 unlocked, 1 locked,
// 2 locked with possible sleepers; the unlocker wakes one sleeper iff it saw
// 2) for longer critical sections, such as the KLT registry's (klt.h). A
// waiter sleeps in FUTEX_WAIT, where signal handlers can run. Not
// recursive.
#pragma once

#include <atomic>
#include <cstdint>

#include "sys/futex.h"
#include "sys/raw_syscall.h"

namespace weft::sys {

// How every spinlock in weft waits for its word (SpinFlag, and the sync
// primitives' queue lock, whose word lives in a public header): test, then
// test-and-set; `pause` for kRounds rounds (default
// kSpinRoundsBeforeYield), then sched_yield on every further round, calling
// on_yield() after each.
inline constexpr int kSpinRoundsBeforeYield = 128;

template <int kRounds = kSpinRoundsBeforeYield, class Word, class OnYield>
inline void spin_acquire(std::atomic<Word>& word, OnYield on_yield) {
  int spins = 0;
  while (word.exchange(Word{1}, std::memory_order_acquire) != Word{0}) {
    while (word.load(std::memory_order_relaxed) != Word{0}) {
      if (++spins < kRounds) {
        __builtin_ia32_pause();
      } else {
        sched_yield();
        on_yield();
      }
    }
  }
}
template <int kRounds = kSpinRoundsBeforeYield, class Word>
inline void spin_acquire(std::atomic<Word>& word) {
  spin_acquire<kRounds>(word, [] {});
}
template <class Word>
inline bool spin_try_acquire(std::atomic<Word>& word) {
  return word.load(std::memory_order_relaxed) == Word{0} && word.exchange(Word{1}, std::memory_order_acquire) == Word{0};
}
template <class Word>
inline void spin_release(std::atomic<Word>& word) {
  word.store(Word{0}, std::memory_order_release);
}

// SpinFlags and SysMutexes the calling thread holds now. Time-slice
// preemption (runtime/preempt.cc) never switches a ULT out while its KLT
// holds one: another ULT on the same KLT could then wait for it forever.
// Initial-exec TLS: one %fs-relative add per lock and unlock. `__thread`,
// not `thread_local`: no TLS wrapper or init-function call (GCC emits a
// weak-init check for an extern thread_local, which UBSan's null check
// flags in the sanitizer build).
extern __thread uint32_t t_locks_held __attribute__((tls_model("initial-exec")));
// Changes and reads of t_locks_held. Plain under normal builds; atomic
// builtins under ThreadSanitizer, which sees the ULTs of one KLT as threads
// of their own sharing this word (a switch between them is not a
// synchronisation for it) and would report the plain accesses as races.
inline void locks_held_add(uint32_t d) {
#if defined(__SANITIZE_THREAD__)
  __atomic_fetch_add(&t_locks_held, d, __ATOMIC_RELAXED);
#else
  t_locks_held += d;
#endif
}
inline uint32_t locks_held() {
#if defined(__SANITIZE_THREAD__)
  return __atomic_load_n(&t_locks_held, __ATOMIC_RELAXED);
#else
  return t_locks_held;
#endif
}
inline void set_locks_held(uint32_t v) {
#if defined(__SANITIZE_THREAD__)
  __atomic_store_n(&t_locks_held, v, __ATOMIC_RELAXED);
#else
  t_locks_held = v;
#endif
}

// weft's one spinlock (runtime/locks.h calls it rt::SpinLock).
class SpinFlag {
 public:
  void lock() {
    locks_held_add(1);  // before the acquire, as SysMutex::lock
    spin_acquire(locked_, [this] { yields_.fetch_add(1, std::memory_order_relaxed); });
  }
  bool try_lock() {
    if (!spin_try_acquire(locked_)) return false;
    locks_held_add(1);
    return true;
  }
  void unlock() {
    spin_release(locked_);
    locks_held_add(static_cast<uint32_t>(-1));
  }
  // In a forked child only: the holder may be a thread that does not exist
  // there. Resets the lock to unlocked.
  void reset_after_fork() { locked_.store(false, std::memory_order_relaxed); }
  // Times a waiter yielded the CPU (for tests).
  uint64_t yields() const { return yields_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> locked_{false};
  std::atomic<uint64_t> yields_{0};
};

class SysMutex {
 public:
  void lock() {
    locks_held_add(1);  // before: a preemption request must not land between the acquire and the count
    uint32_t c = 0;
    if (word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    for (int i = 0; i < 64; ++i) {
      __builtin_ia32_pause();
      c = 0;
      if (word_.load(std::memory_order_relaxed) == 0 && word_.compare_exchange_strong(c, 1, std::memory_order_acquire))
        return;
    }
    if (c != 2) c = word_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      futex_wait(&word_, 2);
      c = word_.exchange(2, std::memory_order_acquire);
    }
  }
  bool try_lock() {
    uint32_t c = 0;
    if (!word_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return false;
    locks_held_add(1);
    return true;
  }
  void unlock() {
    if (word_.exchange(0, std::memory_order_release) == 2) futex_wake(&word_, 1);
    locks_held_add(static_cast<uint32_t>(-1));
  }
  // In a forked child only: the holder may be a thread that does not exist
  // there. Resets the lock to unlocked (runtime/fork.cc).
  void reset_after_fork() { word_.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> word_{0};
};

template <class L>
class SysLockGuard {
 public:
  explicit SysLockGuard(L& l) : l_(l) { l_.lock(); }
  ~SysLockGuard() { l_.unlock(); }
  SysLockGuard(const SysLockGuard&) = delete;
  SysLockGuard& operator=(const SysLockGuard&) = delete;

 private:
  L& l_;
};

}  // namespace weft::sys
