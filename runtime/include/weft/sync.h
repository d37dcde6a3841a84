// weft/sync.h — locks and other synchronisation for ULTs and threads.
//
// Every primitive here may be used from ULTs (of any weft::Runtime) and from
// foreign threads, both at once. A ULT that has to wait parks in user space:
// its worker runs other ULTs meanwhile, and no system call is made. A foreign
// thread that has to wait blocks on a futex. Waiters are queued in FIFO
// order, and wake-ups are never lost: a notify/unlock/release that happens
// after a waiter has been queued always reaches it.
//
// weft::Mutex is adaptive (the Solaris design): a ULT that finds it held
// spins only while the holder is running on a CPU right now, and only for
// about as long as this mutex is usually held; otherwise it parks at once.
// A waiter that has been parked for more than 1 ms gets the mutex handed to
// it directly (no barging), and so does every waiter after it while the
// queue holds starving waiters, so nobody starves.
//
// Misuse — unlocking a mutex the caller does not hold, relocking a mutex the
// caller holds, destroying a locked mutex or one with waiters — is detected
// in debug builds of weft (meson -Ddchecks=true) and aborts with a message
// naming the ULT; in release builds it is undefined behaviour.
//
// Timeouts: every *_for / *_until takes any std::chrono duration or time
// point. A value too large to add to the current time (hours::max(),
// time_point::max()) waits without a deadline; a negative duration or a
// time point in the past does not wait (weft/time.h).
//
// None of these types may be copied or moved while anybody uses them (they
// cannot be at all: detail::Pinned).
//
// weft::Channel lives in weft/channel.h, which this header includes;
// weft::select and the Timer/Ticker in weft/select.h and weft/timer.h.
#pragma once

#include <atomic>
#include <chrono>
#include <stop_token>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "weft/time.h"

namespace weft {

namespace detail {

struct SyncWaiter;  // lives on a waiter's stack (runtime/sync/wait_list.h)
struct MutexStats;  // a Mutex's counters, made at its first contention (mutex.cc)
struct MutexPi;     // priority inheritance's view of a Mutex (mutex.cc)
struct RwLockPi;    // ... and of an RwLock (rwlock.cc)

// A FIFO of waiters behind a tiny spinlock. Internal; public only because
// the primitives below embed it.
struct WaitQueue {
  std::atomic<uint32_t> lock{0};
  uint32_t size = 0;  // next to lock: 24 bytes, no padding
  SyncWaiter* head = nullptr;
  SyncWaiter* tail = nullptr;
};

// The base of every primitive here: its waiters and wakers hold its address
// (the queue lives inside it, and a timed-out waiter goes back to it), so it
// is never copied or moved. Empty: it adds no bytes to the primitive.
class Pinned {
 public:
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;

 protected:
  constexpr Pinned() = default;
  ~Pinned() = default;
};

}  // namespace detail

// A mutual-exclusion lock for ULTs and threads. Satisfies the standard
// Lockable and TimedLockable requirements, so std::lock_guard,
// std::unique_lock and std::scoped_lock work with it.
class Mutex : detail::Pinned {
 public:
  constexpr Mutex() = default;
  // Debug builds abort if the mutex is locked or has waiters.
  ~Mutex();

  // Acquires the mutex, waiting as long as it takes (a ULT parks; a thread
  // blocks). Not recursive.
  void lock();
  // Acquires the mutex if it is free right now. Never waits.
  bool try_lock();
  // Acquires the mutex, waiting at most `d` / until `t`. False on timeout
  // (honoured within a few milliseconds).
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return try_lock() || lock_until(detail::to_deadline(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return try_lock() || lock_until(detail::to_deadline(t));
  }
  // Acquires the mutex unless `stop` is requested first: OK with the mutex
  // held, or Cancelled without it (at once if the stop was requested
  // before the call, even if the mutex is free). A ULT wakes as soon as
  // the stop is requested; a thread notices within about a millisecond.
  absl::Status lock(std::stop_token stop);
  // Releases the mutex. The caller must hold it.
  void unlock();

  // Counters for tests and tuning, kept outside the Mutex (allocated at its
  // first contention; an uncontended Mutex has none and reports zeros).
  // Cheap unlocked increments: under heavy contention they may under-count
  // slightly, never over-count.
  struct Stats {
    uint64_t contended = 0;       // lock() calls that did not succeed at once
    uint64_t spins = 0;           // contended calls that spun
    uint64_t spin_acquired = 0;   // ... and got the mutex while spinning
    uint64_t parks = 0;           // times a waiter parked (ULT) or blocked (thread)
    uint64_t handoffs = 0;        // unlocks that handed the mutex to a starving waiter
    uint64_t hold_estimate_ns = 0;  // running estimate of the hold time
  };
  Stats stats() const;

 private:
  friend struct detail::MutexPi;
  bool lock_until(int64_t deadline_ns);
  bool lock_slow(int64_t deadline_ns, const std::stop_token* stop = nullptr);
  void unlock_slow(uint32_t state, bool woken_stale);
  void wake_one_waiter();

  // 64 bytes, one cache line when 64-aligned. state_: see
  // runtime/sync/mutex.cc for the bits and transitions.
  std::atomic<uint32_t> state_{0};
  std::atomic<uint32_t> woken_unlocks_{0};  // unlocks seen with kWoken set (sampling)
  std::atomic<uintptr_t> owner_{0};         // the holder: a ULT, or a thread (tagged)
  detail::WaitQueue queue_;
  std::atomic<uint32_t> hold_ticks_{0};     // running estimate (TSC ticks, saturated)
  std::atomic<uint32_t> acquired_at_{0};    // low 32 bits of the TSC at a contended acquisition, or 0
  std::atomic<int64_t> woken_at_{0};        // when kWoken was last set (monotonic ns)
  std::atomic<detail::MutexStats*> stats_{nullptr};  // counters, from the first contention on
};

// A condition variable for weft::Mutex (and any BasicLockable: like
// std::condition_variable_any). Spurious wake-ups do not happen in weft,
// but code should still wait with a predicate (the predicate forms never
// return with the predicate false, except on timeout).
class CondVar : detail::Pinned {
 public:
  constexpr CondVar() = default;
  ~CondVar();

  // Wakes the longest-waiting waiter, if any.
  void notify_one();
  // Wakes every waiter.
  void notify_all();

  // Atomically releases `lock` and waits for a notify; reacquires `lock`
  // before returning.
  template <class Lock>
  void wait(Lock& lock) {
    wait_until_ns(lock, -1);
  }
  template <class Lock, class Pred>
  void wait(Lock& lock, Pred pred) {
    while (!pred()) wait(lock);
  }
  // As wait(), but gives up at the deadline: std::cv_status::timeout then.
  template <class Lock, class Clock, class Duration>
  std::cv_status wait_until(Lock& lock, const std::chrono::time_point<Clock, Duration>& t) {
    return wait_until_ns(lock, detail::to_deadline(t)) ? std::cv_status::no_timeout : std::cv_status::timeout;
  }
  template <class Lock, class Rep, class Period>
  std::cv_status wait_for(Lock& lock, const std::chrono::duration<Rep, Period>& d) {
    return wait_until_ns(lock, detail::to_deadline(d)) ? std::cv_status::no_timeout : std::cv_status::timeout;
  }
  // Predicate forms: return pred() (false only if it is still false at the
  // deadline).
  template <class Lock, class Clock, class Duration, class Pred>
  bool wait_until(Lock& lock, const std::chrono::time_point<Clock, Duration>& t, Pred pred) {
    return wait_until_ns(lock, detail::to_deadline(t), pred);
  }
  template <class Lock, class Rep, class Period, class Pred>
  bool wait_for(Lock& lock, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return wait_until_ns(lock, detail::to_deadline(d), pred);
  }
  // The C++20 interruptible waits (std::condition_variable_any's): wait
  // until pred() is true or `stop` is requested, then return pred() (false
  // means stopped, or also timed out for the timed forms). `lock` is held
  // again on return either way. A ULT wakes as soon as the stop is
  // requested; a thread notices within about a millisecond.
  template <class Lock, class Pred>
  bool wait(Lock& lock, std::stop_token stop, Pred pred) {
    return wait_stoppable(lock, -1, stop, pred);
  }
  template <class Lock, class Clock, class Duration, class Pred>
  bool wait_until(Lock& lock, std::stop_token stop, const std::chrono::time_point<Clock, Duration>& t, Pred pred) {
    return wait_stoppable(lock, detail::to_deadline(t), stop, pred);
  }
  template <class Lock, class Rep, class Period, class Pred>
  bool wait_for(Lock& lock, std::stop_token stop, const std::chrono::duration<Rep, Period>& d, Pred pred) {
    return wait_stoppable(lock, detail::to_deadline(d), stop, pred);
  }

 private:
  template <class Lock>
  static void unlock_fn(void* l) { static_cast<Lock*>(l)->unlock(); }
  template <class Lock>
  static void lock_fn(void* l) { static_cast<Lock*>(l)->lock(); }
  // True if notified, false on timeout (or stop requested).
  bool wait_impl(void* lock, int64_t deadline_ns, void (*unlock)(void*), void (*relock)(void*),
                 const std::stop_token* stop = nullptr);
  template <class Lock, class Pred>
  bool wait_stoppable(Lock& lock, int64_t deadline_ns, std::stop_token& stop, Pred& pred) {
    while (!pred()) {
      if (stop.stop_requested()) return pred();
      if (!wait_impl(&lock, deadline_ns, &unlock_fn<Lock>, &lock_fn<Lock>, &stop) && !stop.stop_requested())
        return pred();  // the deadline passed
    }
    return true;
  }
  // wait_impl for a Lock; deadline_ns: -1 none, else monotonic ns.
  template <class Lock>
  bool wait_until_ns(Lock& lock, int64_t deadline_ns) {
    return wait_impl(&lock, deadline_ns, &unlock_fn<Lock>, &lock_fn<Lock>);
  }
  // The predicate forms' loop (the caller's pred, by reference).
  template <class Lock, class Pred>
  bool wait_until_ns(Lock& lock, int64_t deadline_ns, Pred& pred) {
    while (!pred()) {
      if (!wait_until_ns(lock, deadline_ns)) return pred();
    }
    return true;
  }

  detail::WaitQueue queue_;
};

// A counting semaphore. Waiters get permits in FIFO order.
class Semaphore : detail::Pinned {
 public:
  explicit Semaphore(uint64_t initial = 0) : count_(initial) {}
  ~Semaphore();

  // Takes one permit, waiting for it.
  void acquire();
  // Takes one permit if one is available now.
  bool try_acquire();
  template <class Rep, class Period>
  bool try_acquire_for(const std::chrono::duration<Rep, Period>& d) {
    return acquire_until(detail::to_deadline(d));
  }
  template <class Clock, class Duration>
  bool try_acquire_until(const std::chrono::time_point<Clock, Duration>& t) {
    return acquire_until(detail::to_deadline(t));
  }
  // Takes one permit unless `stop` is requested first: OK, or Cancelled
  // without a permit (at once if the stop was requested before the call).
  // A ULT wakes as soon as the stop is requested; a thread notices within
  // about a millisecond.
  absl::Status acquire(std::stop_token stop);
  // Adds `n` permits, handing them to waiters first.
  void release(uint64_t n = 1);
  // Permits available now (a hint).
  uint64_t available() const;

 private:
  bool acquire_until(int64_t deadline_ns, const std::stop_token* stop = nullptr);
  detail::WaitQueue queue_;
  uint64_t count_;  // guarded by queue_.lock
};

// A reader-writer lock, granted in arrival order. Writers are not starved:
// once anyone waits, new readers queue too (behind a waiting writer they
// wait for its turn); when the lock frees, the front of the queue goes
// next: one writer, or every reader up to the next queued writer.
// Satisfies SharedTimedLockable and TimedLockable (std::shared_lock and
// std::unique_lock work, also with a timeout: std::shared_lock(l, 1s)).
class RwLock : detail::Pinned {
 public:
  constexpr RwLock() = default;
  ~RwLock();

  // Exclusive (writer) hold: waits as long as it takes / never waits.
  void lock();
  bool try_lock();
  // Exclusive hold, waiting at most `d` / until `t`: false on timeout (a
  // waiter that gives up lets the readers queued behind it in, if they can
  // go now).
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return try_lock() || lock_until(detail::to_deadline(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return try_lock() || lock_until(detail::to_deadline(t));
  }
  void unlock();
  // Shared (reader) hold, the same four ways.
  void lock_shared();
  bool try_lock_shared();
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& d) {
    return try_lock_shared() || lock_shared_until(detail::to_deadline(d));
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t) {
    return try_lock_shared() || lock_shared_until(detail::to_deadline(t));
  }
  void unlock_shared();

 private:
  // deadline_ns: -1 none, else monotonic ns. True once held.
  bool lock_until(int64_t deadline_ns);
  bool lock_shared_until(int64_t deadline_ns);
  bool try_lock_locked();         // try_lock with queue_.lock held
  bool try_lock_shared_locked();  // try_lock_shared with queue_.lock held
  detail::WaitQueue queue_;  // readers and writers, in arrival order
  uint32_t readers_ = 0;     // active readers; guarded by queue_.lock
  bool writer_ = false;      // a writer holds it
  // The writer holding it (a ULT, a tagged thread, or 0), for priority
  // inheritance: waiters lend their priority to a ULT writer. Written under
  // queue_.lock; read by priority inheritance (relaxed).
  std::atomic<uintptr_t> writer_owner_{0};
  friend struct detail::RwLockPi;
};

// A reusable barrier for a fixed number of participants.
class Barrier : detail::Pinned {
 public:
  // `count` must be at least 1.
  explicit Barrier(uint32_t count);
  ~Barrier();

  // Waits until `count` callers have arrived, then releases them all and
  // resets for the next round. Returns true in exactly one caller per round
  // (like PTHREAD_BARRIER_SERIAL_THREAD).
  bool arrive_and_wait();

 private:
  detail::WaitQueue queue_;
  uint32_t count_;
  uint32_t arrived_ = 0;  // guarded by queue_.lock
};

// A counter of work in flight that can count up and down, and lets callers
// wait for it to reach zero: a wait group (Go's sync.WaitGroup). wait()
// returns once the count is zero; every waiter is released when a
// count_down() brings it there, and the group can then be counted up again.
class WaitGroup : detail::Pinned {
 public:
  explicit WaitGroup(uint64_t count = 0) : count_(count) {}
  // Debug builds abort if anybody still waits.
  ~WaitGroup();

  // Adds `n` to the count (work about to start).
  void add(uint64_t n = 1);
  // Subtracts `n`; at zero every waiter is released. Counting below zero is
  // a bug: debug builds abort, release builds clamp at zero.
  void count_down(uint64_t n = 1);
  // Waits until the count is zero.
  void wait();
  // As wait(), but gives up after `d`: false on timeout.
  template <class Rep, class Period>
  bool wait_for(const std::chrono::duration<Rep, Period>& d) {
    return wait_until_ns(detail::to_deadline(d));
  }
  // True if the count is zero now. Never waits.
  bool try_wait() const;
  // count_down(n), then wait().
  void arrive_and_wait(uint64_t n = 1) {
    count_down(n);
    wait();
  }

 private:
  bool wait_until_ns(int64_t deadline_ns);
  mutable detail::WaitQueue queue_;
  uint64_t count_;  // guarded by queue_.lock
};

// The name WaitGroup had first (after std::latch, which only counts down).
// Kept so existing code compiles unchanged; new code should say WaitGroup.
using Latch = WaitGroup;

// Runs a function exactly once, however many callers race (std::call_once
// for ULTs). Callers that arrive while it runs wait for it to finish. If the
// function throws, the exception propagates to its caller and the Once
// stays un-run: the next caller runs it.
class Once : detail::Pinned {
 public:
  constexpr Once() = default;

  template <class F>
  void call(F&& fn) {
    if (done_.load(std::memory_order_acquire)) return;
    if (!begin()) return;  // somebody else ran it while we waited
    try {
      fn();
    } catch (...) {
      finish(false);
      throw;
    }
    finish(true);
  }
  bool done() const { return done_.load(std::memory_order_acquire); }

 private:
  // True if the caller must run the function now.
  bool begin();
  void finish(bool ran);
  std::atomic<bool> done_{false};
  bool running_ = false;  // guarded by queue_.lock
  detail::WaitQueue queue_;
};

}  // namespace weft

// Channel has its own header; included here so that #include
// "weft/sync.h" keeps providing it (the two headers include each other:
// either may come first).
#include "weft/channel.h"
