// tests/sync_primitives_test.cc — the contracts of weft/sync.h, one
// primitive at a time: Mutex (std adapters, try_lock, FIFO wake order with
// mixed ULT/thread waiters, adaptive spinning, misuse detection), CondVar,
// Semaphore, RwLock, Barrier, Latch, Once and Channel, and every timed wait
// (not early, not much late) from ULTs and from foreign threads.
//
// Every wait is bounded: a Watchdog aborts the process with a message if a
// test hangs, so a lost wake-up fails instead of blocking the suite. The
// adaptive-spinning tests are white-box: they read the holder's ULT state
// and set Worker::in_blocking through runtime/scheduler.h.
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

#include "runtime/scheduler.h"
#include "runtime/sync/wait_list.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;




void SpinFor(std::chrono::nanoseconds d) {
  auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

uint64_t WorkerParks(const weft::Runtime& rt) {
  uint64_t n = 0;
  for (const auto& w : rt.stats().workers) n += w.parks;
  return n;
}

uint32_t UltStateOf(const weft::rt::UltDesc* u) {
  return u->state.load(std::memory_order_acquire) & weft::rt::ult_state::kStateMask;
}

// Kernel scheduling state of one of our threads ('S' = sleeping, e.g. in
// futex_wait), from /proc.
char ThreadState(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  size_t p = s.rfind(')');
  return p == std::string::npos || p + 2 >= s.size() ? '?' : s[p + 2];
}

// A foreign thread that holds a weft lock until told to let go.
template <class M>
class ThreadHolder {
 public:
  explicit ThreadHolder(M& m) : m_(m) {
    t_ = std::thread([this] {
      m_.lock();
      held_.store(true);
      while (!release_.load()) std::this_thread::sleep_for(100us);
      m_.unlock();
    });
    while (!held_.load()) std::this_thread::sleep_for(50us);
  }
  ~ThreadHolder() { Release(); }
  void Release() {
    release_.store(true);
    if (t_.joinable()) t_.join();
  }

 private:
  M& m_;
  std::atomic<bool> held_{false}, release_{false};
  std::thread t_;
};

// ---------------------------------------------------------------------------
// Mutex: the standard lockable adapters and try_lock
// ---------------------------------------------------------------------------

// std::lock_guard, std::unique_lock (plain, try_to_lock, defer_lock,
// try_lock_for) and std::scoped_lock over two weft::Mutex compile and give
// mutual exclusion from ULTs and foreign threads; scoped_lock's deadlock
// avoidance works when callers name the mutexes in opposite orders.
TEST(MutexStd, AdaptersCompileAndExclude) {
  Watchdog wd(60s, "MutexStd.AdaptersCompileAndExclude");
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  weft::Mutex a, b;
  long in_a = 0, in_ab = 0;  // guarded by a / by a and b
  std::atomic<int> occupancy_errors{0};
  std::atomic<int> inside_a{0};
  constexpr int kIters = 3000;

  auto body = [&](int who) {
    for (int i = 0; i < kIters; ++i) {
      switch ((i + who) % 4) {
        case 0: {
          std::lock_guard<weft::Mutex> g(a);
          if (inside_a.fetch_add(1) != 0) occupancy_errors.fetch_add(1);
          ++in_a;
          inside_a.fetch_sub(1);
          break;
        }
        case 1: {
          std::unique_lock<weft::Mutex> l(a, std::defer_lock);
          EXPECT_FALSE(l.owns_lock());
          l.lock();
          if (inside_a.fetch_add(1) != 0) occupancy_errors.fetch_add(1);
          ++in_a;
          inside_a.fetch_sub(1);
          l.unlock();
          l.lock();  // relock through the same unique_lock
          ++in_a;
          break;
        }
        case 2: {
          std::unique_lock<weft::Mutex> l(a, std::try_to_lock);
          if (!l.owns_lock()) l.lock();
          ++in_a;
          std::unique_lock<weft::Mutex> t(b, 5s);  // try_lock_for via unique_lock
          EXPECT_TRUE(t.owns_lock());
          ++in_ab;
          break;
        }
        default: {
          if (who % 2 == 0) {
            std::scoped_lock s(a, b);
            ++in_a;
            ++in_ab;
          } else {
            std::scoped_lock s(b, a);  // opposite order: std::lock must not deadlock
            ++in_a;
            ++in_ab;
          }
        }
      }
      if (i % 97 == 0) weft::this_ult::yield();
    }
  };
  std::vector<weft::Ult> ults;
  for (int i = 0; i < 6; ++i) ults.push_back(rt.spawn([&body, i] { body(i); }));
  std::vector<std::thread> threads;
  for (int i = 6; i < 8; ++i) threads.emplace_back([&body, i] { body(i); });
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();

  // Per participant and 4 iterations: case 0 +1, case 1 +2, case 2 +1, case 3 +1 on in_a.
  EXPECT_EQ(in_a, 8L * kIters / 4 * 5);
  EXPECT_EQ(in_ab, 8L * kIters / 4 * 2);
  EXPECT_EQ(occupancy_errors.load(), 0);
  EXPECT_TRUE(a.try_lock());
  a.unlock();
  EXPECT_TRUE(b.try_lock());
  b.unlock();
}

// try_lock: succeeds on a free mutex, fails (without waiting) while a ULT
// or a foreign thread holds it, and succeeds again once it is released;
// try_lock_for on a free mutex succeeds at once.
TEST(MutexStd, TryLockSemantics) {
  Watchdog wd(30s, "MutexStd.TryLockSemantics");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;

  // Free: from a thread and from a ULT.
  ASSERT_TRUE(m.try_lock());
  m.unlock();
  ASSERT_TRUE(rt.block_on([&] {
                  bool ok = m.try_lock();
                  if (ok) m.unlock();
                  return ok;
                }).value());

  // Held by a ULT (parked while holding): others' try_lock fails at once.
  weft::Semaphore hold_sem(0);
  std::atomic<bool> held{false};
  weft::Ult holder = rt.spawn([&] {
    m.lock();
    held = true;
    hold_sem.acquire();
    m.unlock();
  });
  ASSERT_TRUE(WaitUntil([&] { return held.load(); }));
  auto t0 = Clock::now();
  EXPECT_FALSE(m.try_lock());
  EXPECT_FALSE(rt.block_on([&] { return m.try_lock(); }).value());
  EXPECT_LT(Clock::now() - t0, 1s) << "try_lock must not wait";
  hold_sem.release();
  ASSERT_TRUE(holder.join().ok());
  EXPECT_TRUE(rt.block_on([&] {
                  bool ok = m.try_lock();
                  if (ok) m.unlock();
                  return ok;
                }).value());

  // Held by a foreign thread.
  {
    ThreadHolder<weft::Mutex> h(m);
    EXPECT_FALSE(m.try_lock());
    EXPECT_FALSE(rt.block_on([&] { return m.try_lock(); }).value());
    h.Release();
  }
  EXPECT_TRUE(m.try_lock());
  EXPECT_TRUE(m.try_lock() == false) << "not recursive: a second try_lock by the holder fails";
  m.unlock();

  // try_lock_for / try_lock_until on a free mutex.
  auto t1 = Clock::now();
  ASSERT_TRUE(m.try_lock_for(10s));
  m.unlock();
  ASSERT_TRUE(m.try_lock_until(Clock::now() + 10s));
  m.unlock();
  EXPECT_LT(Clock::now() - t1, 1s);
  EXPECT_EQ(m.stats().parks, 0u);
}

// A timed lock that gets the mutex before its deadline returns true soon
// after the release, from a ULT and from a thread, and then holds it.
TEST(MutexStd, TimedLockSucceedsWhenReleased) {
  Watchdog wd(30s, "MutexStd.TimedLockSucceedsWhenReleased");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  for (int from_ult = 0; from_ult < 2; ++from_ult) {
    m.lock();
    const uint64_t parks0 = m.stats().parks;
    std::atomic<int> result{-1};
    std::atomic<bool> started{false};
    auto attempt = [&] {
      started = true;
      auto t0 = Clock::now();
      bool ok = m.try_lock_for(10s);
      auto waited = Clock::now() - t0;
      if (ok) m.unlock();
      result = ok && waited < 5s ? 1 : 0;
    };
    weft::Ult u;
    std::thread t;
    if (from_ult) u = rt.spawn(attempt); else t = std::thread(attempt);
    ASSERT_TRUE(WaitUntil([&] { return started.load(); }));
    // The attempt is queued: Mutex counts a park only after queuing the
    // waiter. While queued behind the held mutex it has not returned.
    ASSERT_TRUE(WaitUntil([&] { return m.stats().parks > parks0; })) << "the timed lock never queued";
    EXPECT_EQ(result.load(), -1) << "acquired a held mutex";
    m.unlock();
    ASSERT_TRUE(WaitUntil([&] { return result.load() != -1; }));
    EXPECT_EQ(result.load(), 1) << (from_ult ? "ULT" : "thread");
    if (from_ult) ASSERT_TRUE(u.join().ok()); else t.join();
  }
}

// ---------------------------------------------------------------------------
// Mixed ULT / foreign-thread waiters on one primitive
// ---------------------------------------------------------------------------

// Mutex: ULTs and foreign threads queue on one held mutex, interleaved; each
// really waits (Mutex::stats().parks counts every one, the workers' park
// counters count the ULTs), nobody spins on a foreign-thread holder, and on
// release they get the mutex one at a time in arrival (FIFO) order.
TEST(MixedWaiters, MutexFifoAcrossUltsAndThreads) {
  Watchdog wd(60s, "MixedWaiters.MutexFifoAcrossUltsAndThreads");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  const std::vector<bool> is_thread = {false, true, false, false, true, false, true, false, false, true};
  const int n = static_cast<int>(is_thread.size());
  std::vector<int> order;  // guarded by m
  int inside = 0, overlap = 0;
  std::vector<weft::Ult> ults;
  std::vector<std::thread> threads;

  m.lock();  // main, a foreign thread, holds it while everyone arrives
  uint64_t ult_parks0 = WorkerParks(rt);
  for (int i = 0; i < n; ++i) {
    auto body = [&, i] {
      m.lock();
      if (++inside != 1) ++overlap;
      order.push_back(i);
      --inside;
      m.unlock();
    };
    if (is_thread[static_cast<size_t>(i)]) threads.emplace_back(body); else ults.push_back(rt.spawn(body));
    ASSERT_TRUE(WaitUntil([&] { return m.stats().parks == static_cast<uint64_t>(i + 1); }))
        << "waiter " << i << " did not park; parks=" << m.stats().parks;
  }
  weft::Mutex::Stats s = m.stats();
  EXPECT_EQ(s.parks, static_cast<uint64_t>(n));
  EXPECT_EQ(s.contended, static_cast<uint64_t>(n));
  EXPECT_EQ(s.spins, 0u) << "a foreign-thread holder is never 'running' for a spinner";
  EXPECT_GE(WorkerParks(rt) - ult_parks0, static_cast<uint64_t>(ults.size())) << "the ULT waiters parked";
  EXPECT_TRUE(order.empty());
  m.unlock();
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();
  std::vector<int> expect(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) expect[static_cast<size_t>(i)] = i;
  EXPECT_EQ(order, expect) << "waiters must get the mutex in arrival order when nobody barges";
  EXPECT_EQ(overlap, 0);
  EXPECT_TRUE(m.try_lock());
  m.unlock();
}

// CondVar: ULTs and foreign threads wait on one condvar, interleaved (all
// provably queued: each counts itself under the mutex before waiting, and
// wait() queues before it releases the mutex). notify_one wakes exactly one,
// the longest-waiting; notify_all wakes the rest.
TEST(MixedWaiters, CondVarNotifyOneFifoThenAll) {
  Watchdog wd(60s, "MixedWaiters.CondVarNotifyOneFifoThenAll");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  weft::CondVar cv;
  const std::vector<bool> is_thread = {true, false, false, true, false, true, false, false};
  const int n = static_cast<int>(is_thread.size());
  int waiting = 0;             // guarded by m
  std::vector<int> woken;      // guarded by m
  std::vector<bool> may_go(static_cast<size_t>(n), false);  // guarded by m
  bool all = false;            // guarded by m
  std::vector<weft::Ult> ults;
  std::vector<std::thread> threads;
  uint64_t ult_parks0 = WorkerParks(rt);
  for (int i = 0; i < n; ++i) {
    auto body = [&, i] {
      std::unique_lock<weft::Mutex> l(m);
      ++waiting;
      // Without spurious wake-ups, each return from wait() is a notify.
      cv.wait(l);
      woken.push_back(i);
      cv.wait(l, [&] { return all || may_go[static_cast<size_t>(i)]; });
    };
    if (is_thread[static_cast<size_t>(i)]) threads.emplace_back(body); else ults.push_back(rt.spawn(body));
    ASSERT_TRUE(WaitUntil([&] {
      std::lock_guard<weft::Mutex> g(m);
      return waiting == i + 1;
    }));
  }
  EXPECT_GE(WorkerParks(rt) - ult_parks0, static_cast<uint64_t>(ults.size())) << "the ULT waiters parked";
  // notify_one, one at a time: exactly the longest waiter wakes each time.
  for (int k = 0; k < n / 2; ++k) {
    {
      std::lock_guard<weft::Mutex> g(m);
      cv.notify_one();
    }
    ASSERT_TRUE(WaitUntil([&] {
      std::lock_guard<weft::Mutex> g(m);
      return static_cast<int>(woken.size()) >= k + 1;
    })) << "notify_one #" << k << " woke nobody (lost wake-up)";
    std::this_thread::sleep_for(2ms);
    std::lock_guard<weft::Mutex> g(m);
    ASSERT_EQ(static_cast<int>(woken.size()), k + 1) << "notify_one woke more than one waiter";
    EXPECT_EQ(woken.back(), k) << "notify_one must wake the longest-waiting waiter";
  }
  // The woken ones now wait again (predicate form); notify_all wakes everyone.
  {
    std::lock_guard<weft::Mutex> g(m);
    cv.notify_all();
  }
  ASSERT_TRUE(WaitUntil([&] {
    std::lock_guard<weft::Mutex> g(m);
    return static_cast<int>(woken.size()) == n;
  })) << "notify_all missed a waiter";
  {
    std::lock_guard<weft::Mutex> g(m);
    all = true;
    cv.notify_all();
  }
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();
}

// Semaphore: ULTs and foreign threads block in acquire() on an empty
// semaphore (each verified blocked: the ULT parked, the thread asleep in the
// kernel); release(1) lets exactly one through, in arrival order; a bulk
// release(n) serves the rest and the leftover goes to the count.
TEST(MixedWaiters, SemaphoreFifoAcrossUltsAndThreads) {
  Watchdog wd(60s, "MixedWaiters.SemaphoreFifoAcrossUltsAndThreads");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Semaphore sem(0);
  const std::vector<bool> is_thread = {false, true, true, false, false, true, false};
  const int n = static_cast<int>(is_thread.size());
  std::mutex order_mu;
  std::vector<int> order;
  std::atomic<int> passed{0};
  std::vector<weft::Ult> ults;
  std::vector<std::thread> threads;
  std::vector<std::atomic<weft::rt::UltDesc*>> descs(static_cast<size_t>(n));
  std::vector<std::atomic<int>> tids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::atomic<weft::rt::UltDesc*>& self = descs[static_cast<size_t>(i)];
    std::atomic<int>& tid = tids[static_cast<size_t>(i)];
    auto body = [&, i] {
      if (weft::this_ult::in_ult()) self = weft::rt::current_ult(); else tid = Tid();
      sem.acquire();
      {
        std::lock_guard<std::mutex> g(order_mu);
        order.push_back(i);
      }
      passed.fetch_add(1);
    };
    if (is_thread[static_cast<size_t>(i)]) {
      threads.emplace_back(body);
      ASSERT_TRUE(WaitUntil([&] { return tid.load() != 0 && ThreadState(tid.load()) == 'S'; }))
          << "thread waiter " << i << " never blocked";
    } else {
      ults.push_back(rt.spawn(body));
      ASSERT_TRUE(WaitUntil([&] {
        weft::rt::UltDesc* u = self.load();
        return u != nullptr && UltStateOf(u) == weft::rt::ult_state::kParked;
      })) << "ULT waiter " << i << " never parked";
    }
    // A blocked thread could in theory be asleep elsewhere (e.g. an
    // allocator lock); give it a moment so FIFO order is well defined.
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(passed.load(), 0);
  EXPECT_FALSE(sem.try_acquire()) << "waiters queue ahead of try_acquire";
  for (int k = 0; k < 3; ++k) {
    sem.release(1);
    ASSERT_TRUE(WaitUntil([&] { return passed.load() >= k + 1; })) << "release #" << k << " lost";
    std::this_thread::sleep_for(2ms);
    ASSERT_EQ(passed.load(), k + 1) << "release(1) let more than one waiter through";
    EXPECT_EQ(sem.available(), 0u);
  }
  sem.release(static_cast<uint64_t>(n - 3 + 2));  // the rest, plus two spare permits
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();
  EXPECT_EQ(passed.load(), n);
  EXPECT_EQ(sem.available(), 2u);
  std::vector<int> expect(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) expect[static_cast<size_t>(i)] = i;
  {
    std::lock_guard<std::mutex> g(order_mu);
    // The first three were served one by one; they must be the three oldest.
    ASSERT_GE(order.size(), 3u);
    EXPECT_EQ(std::vector<int>(order.begin(), order.begin() + 3), std::vector<int>({0, 1, 2}));
  }
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire());
}

// ---------------------------------------------------------------------------
// Mutex starvation guarantee
// ---------------------------------------------------------------------------

// sync.h: "A waiter that has been parked for more than 1 ms gets the mutex
// handed to it directly (no barging) ... so nobody starves." Scenario, all
// on one worker so that it does not depend on timing: ULT H locks the
// mutex, spawns W and yields; W queues on the mutex and parks; H resumes,
// unlocks (W has waited microseconds: it is woken to compete, kWoken, no
// hand-off) and then computes for 1 s without switching, so W, runnable,
// cannot run. A foreign thread T now queues on the mutex while the main
// thread keeps re-locking it (barging is allowed). T must be handed the
// mutex soon after it has waited 1 ms; it must not wait until W runs.
TEST(MutexStarvation, QueuedWaiterNotStarvedWhileWokenWaiterCannotRun) {
  Watchdog wd(60s, "MutexStarvation.QueuedWaiterNotStarvedWhileWokenWaiterCannotRun");
  weft::Runtime rt(weft::Options{.workers = 1});
  bool conclusive = false;
  for (int round = 0; round < 5 && !conclusive; ++round) {
    weft::Mutex m;
    std::atomic<bool> hogging{false}, release_hog{false};
    std::atomic<int> plain_wake{-1};
    weft::Ult h = rt.spawn([&] {
      m.lock();
      weft::Ult w = weft::spawn([&] {
        m.lock();
        m.unlock();
      });
      weft::this_ult::yield();  // W runs, queues, parks; we resume
      uint64_t handoffs0 = m.stats().handoffs;
      m.unlock();  // W is woken to compete
      plain_wake = m.stats().handoffs == handoffs0 ? 1 : 0;
      hogging = true;
      auto end = Clock::now() + 20s;
      while (!release_hog.load() && Clock::now() < end) {  // W cannot run meanwhile
      }
      w.join().IgnoreError();
    });
    ASSERT_TRUE(WaitUntil([&] { return hogging.load(); }));
    uint64_t parks0 = m.stats().parks;
    std::atomic<int64_t> t_wait_ns{-1};
    // The main thread holds the mutex until T has queued and parked: left
    // to chance, T (whose start TSan slows) found the mutex free in most
    // rounds and the scenario never set up (the test failed on main too).
    m.lock();
    std::thread t([&] {
      auto t0 = Clock::now();
      m.lock();
      t_wait_ns = (Clock::now() - t0).count();
      m.unlock();
    });
    bool t_parked = WaitUntil([&] { return m.stats().parks > parks0; }, 5000ms);
    m.unlock();
    auto barge_until = Clock::now() + 1s;
    while (t_wait_ns.load() < 0 && Clock::now() < barge_until) {
      if (m.try_lock_for(100ms)) {
        SpinFor(50us);
        m.unlock();
      }
    }
    release_hog = true;
    t.join();
    ASSERT_TRUE(h.join().ok());
    conclusive = plain_wake.load() == 1 && t_parked;
    double ms = static_cast<double>(t_wait_ns.load()) / 1e6;
    printf("[ starving ] round %d: W woken plainly=%d, T parked=%d, T waited %.3f ms\n", round,
           plain_wake.load(), t_parked, ms);
    if (conclusive) {
      EXPECT_LT(ms, 100.0) << "a thread queued behind a woken-but-stalled waiter starved while a barger "
                              "kept re-taking the mutex; it should have been handed the mutex after 1 ms";
    }
  }
  EXPECT_TRUE(conclusive) << "the scenario never set up (W handed the mutex, or T never queued)";
}

// ---------------------------------------------------------------------------
// Timeouts: never early, at most a little late; from ULTs and threads
// ---------------------------------------------------------------------------

constexpr auto kTimeout = 30ms;
constexpr auto kSlack = 20ms;  // the VM is noisy; measured values are printed

struct TimeoutCase {
  std::string name;
  std::function<bool()> op;  // true if the operation reported a timeout
};

// Runs `op` up to 3 times on the calling context (ULT or thread). Every run
// must report a timeout and take at least kTimeout; the best run must be
// late by less than kSlack (a scheduler hiccup on this VM can delay any one
// run, a broken timer delays all of them).
void CheckTimeout(const std::string& where, const TimeoutCase& c) {
  using Ms = std::chrono::duration<double, std::milli>;
  const double slack_ms = Ms(kSlack).count();
  double best = 1e9, worst = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto t0 = Clock::now();
    bool timed_out = c.op();
    auto el = Clock::now() - t0;
    EXPECT_TRUE(timed_out) << c.name << " from " << where << " did not report a timeout";
    EXPECT_GE(el, kTimeout) << c.name << " from " << where << " returned early";
    double late = Ms(el - kTimeout).count();
    best = std::min(best, late);
    worst = std::max(worst, late);
    if (late < slack_ms / 2) break;
  }
  printf("[ lateness ] %-28s from %-6s best %.3f ms, worst %.3f ms\n", c.name.c_str(), where.c_str(), best,
         worst);
  EXPECT_LT(best, slack_ms)
      << c.name << " from " << where << " is late";
}

// Builds the timeout cases. Mutex cases need the mutex held by somebody else:
// `held` is locked by a helper thread for the whole test.
std::vector<TimeoutCase> TimeoutCases(weft::Mutex& held) {
  std::vector<TimeoutCase> v;
  v.push_back({"Mutex::try_lock_for", [&held] {
                 bool got = held.try_lock_for(kTimeout);
                 if (got) held.unlock();
                 return !got;
               }});
  v.push_back({"Mutex::try_lock_until", [&held] {
                 bool got = held.try_lock_until(Clock::now() + kTimeout);
                 if (got) held.unlock();
                 return !got;
               }});
  v.push_back({"CondVar::wait_for", [] {
                 weft::Mutex m;
                 weft::CondVar cv;
                 std::unique_lock<weft::Mutex> l(m);
                 bool to = cv.wait_for(l, kTimeout) == std::cv_status::timeout;
                 return to && l.owns_lock();
               }});
  v.push_back({"CondVar::wait_until", [] {
                 weft::Mutex m;
                 weft::CondVar cv;
                 std::unique_lock<weft::Mutex> l(m);
                 return cv.wait_until(l, Clock::now() + kTimeout) == std::cv_status::timeout;
               }});
  v.push_back({"CondVar::wait_for(pred)", [] {
                 weft::Mutex m;
                 weft::CondVar cv;
                 std::unique_lock<weft::Mutex> l(m);
                 int calls = 0;
                 bool r = cv.wait_for(l, kTimeout, [&] {
                   ++calls;
                   return false;
                 });
                 return !r && calls >= 2 && l.owns_lock();
               }});
  v.push_back({"Semaphore::try_acquire_for", [] {
                 weft::Semaphore s(0);
                 return !s.try_acquire_for(kTimeout);
               }});
  v.push_back({"Semaphore::try_acquire_until", [] {
                 weft::Semaphore s(0);
                 return !s.try_acquire_until(Clock::now() + kTimeout);
               }});
  v.push_back({"Latch::wait_for", [] {
                 weft::Latch l(1);
                 bool r = l.wait_for(kTimeout);
                 l.count_down();
                 return !r;
               }});
  v.push_back({"Channel::send_for", [] {
                 weft::Channel<std::string> ch(1);
                 if (!ch.send(std::string("first")).ok()) return false;
                 std::string val = "second";
                 absl::Status st = ch.send_for(std::move(val), kTimeout);
                 return absl::IsDeadlineExceeded(st) && val == "second" && ch.size() == 1;
               }});
  v.push_back({"Channel::recv_for", [] {
                 weft::Channel<int> ch(4);
                 absl::StatusOr<int> r = ch.recv_for(kTimeout);
                 return absl::IsDeadlineExceeded(r.status());
               }});
  return v;
}

// Every timed wait reports its timeout no earlier than asked and at most a
// few ms late, from a ULT (which parks with a timer on its worker) and from
// a foreign thread (futex with an absolute deadline).
TEST(Timeouts, EveryTimedWaitFromUltAndThread) {
  Watchdog wd(60s, "Timeouts.EveryTimedWaitFromUltAndThread");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex held;
  ThreadHolder<weft::Mutex> holder(held);
  for (const TimeoutCase& c : TimeoutCases(held)) {
    ASSERT_TRUE(rt.block_on([&] { CheckTimeout("ULT", c); }).ok());
    CheckTimeout("thread", c);
  }
}

// A ULT's timeout fires on time even while its worker is kept busy by other
// ULTs that switch among themselves (the timers are served from the
// scheduler loop, which a worker must still visit regularly).
TEST(Timeouts, FireWhileWorkerBusyWithYieldingUlts) {
  Watchdog wd(60s, "Timeouts.FireWhileWorkerBusyWithYieldingUlts");
  weft::Runtime rt(weft::Options{.workers = 1});
  weft::Mutex held;
  ThreadHolder<weft::Mutex> holder(held);
  std::atomic<bool> stop{false};
  std::vector<weft::Ult> spinners;
  // The yielders give up after 10 s, so a timer that never fires shows up
  // as a failed lateness check rather than a hang.
  const auto give_up = Clock::now() + 10s;
  for (int i = 0; i < 3; ++i) {
    spinners.push_back(rt.spawn([&] {
      while (!stop.load() && Clock::now() < give_up) weft::this_ult::yield();
    }));
  }
  auto cases = TimeoutCases(held);
  ASSERT_TRUE(rt.block_on([&] {
                  CheckTimeout("ULT+busy", cases[0]);   // Mutex::try_lock_for
                  CheckTimeout("ULT+busy", cases[2]);   // CondVar::wait_for
                  CheckTimeout("ULT+busy", cases[5]);   // Semaphore::try_acquire_for
                  CheckTimeout("ULT+busy", cases[9]);   // Channel::recv_for
                }).ok());
  stop = true;
  for (auto& u : spinners) ASSERT_TRUE(u.join().ok());
}

// A ULT's timeout must fire even when the other ULTs of its worker only
// yield to each other. Worker::pick_local counts down until_loop and
// returns null at zero so that the switch goes through the scheduler loop
// (which fires timers); but when that happens in yield_current with no
// "loop work" (no timers, global queue or inbox work at that instant), the
// yield returns without switching and until_loop is never reset: it wraps
// to 2^32-1, and from then on yields between local ULTs never visit the
// loop. Here a ULT first yields alone (wrapping the counter), then two
// local ULTs ping-pong with yield while a third waits in
// Mutex::try_lock_for(30 ms) / CondVar::wait_for(30 ms): the timeout must
// fire on time, not when the yielders stop 2 s later.
TEST(Timeouts, FireWhileLocalUltsOnlyYieldToEachOther) {
  Watchdog wd(60s, "Timeouts.FireWhileLocalUltsOnlyYieldToEachOther");
  weft::Runtime rt(weft::Options{.workers = 1});
  weft::Mutex held;
  ThreadHolder<weft::Mutex> holder(held);
  for (int which = 0; which < 2; ++which) {
    std::atomic<bool> stop{false}, done{false}, timed_out{false};
    std::atomic<int64_t> elapsed_ns{-1};
    ASSERT_TRUE(rt.block_on([&] {
                    for (int i = 0; i < 100; ++i) weft::this_ult::yield();  // alone
                    weft::Ult y1 = weft::spawn([&] {
                      while (!stop.load()) weft::this_ult::yield();
                    });
                    weft::Ult y2 = weft::spawn([&] {
                      while (!stop.load()) weft::this_ult::yield();
                    });
                    weft::Ult waiter = weft::spawn([&] {
                      auto t0 = Clock::now();
                      if (which == 0) {
                        bool got = held.try_lock_for(kTimeout);
                        if (got) held.unlock();
                        timed_out = !got;
                      } else {
                        weft::Mutex m;
                        weft::CondVar cv;
                        std::unique_lock<weft::Mutex> l(m);
                        timed_out = cv.wait_for(l, kTimeout) == std::cv_status::timeout;
                      }
                      elapsed_ns = (Clock::now() - t0).count();
                      done = true;
                    });
                    auto end = Clock::now() + 2s;
                    while (!done.load() && Clock::now() < end) weft::this_ult::yield();
                    stop = true;
                    y1.join().IgnoreError();
                    y2.join().IgnoreError();
                    waiter.join().IgnoreError();
                  }).ok());
    const char* what = which == 0 ? "Mutex::try_lock_for" : "CondVar::wait_for";
    double ms = static_cast<double>(elapsed_ns.load()) / 1e6;
    printf("[ lateness ] %-28s among local yielders: took %.3f ms for a %lld ms timeout\n", what, ms,
           static_cast<long long>(kTimeout.count()));
    EXPECT_TRUE(timed_out.load()) << what;
    // The defect this guards against ends the wait only when the yielders
    // stop, 2 s in. The worker is CPU-bound here, so when meson runs other
    // busy tests beside this one the kernel may keep its KLT off a CPU for
    // tens of ms (seen: 66 ms for the 30 ms timeout): the bound sits
    // between those, not at kSlack.
    EXPECT_LT(ms, static_cast<double>((kTimeout + 500ms).count()))
        << what << ": the timer did not fire while local ULTs yielded to each other (until_loop wrapped)";
  }
}

// Timed waits that are satisfied in time return success promptly (not at
// their deadline): CondVar::wait_for notified, Semaphore::try_acquire_for
// released, Latch::wait_for counted down, Channel::recv_for fed.
TEST(Timeouts, SatisfiedBeforeDeadlineReturnsEarly) {
  Watchdog wd(60s, "Timeouts.SatisfiedBeforeDeadlineReturnsEarly");
  weft::Runtime rt(weft::Options{.workers = 2});
  for (int from_ult = 0; from_ult < 2; ++from_ult) {
    weft::Mutex m;
    weft::CondVar cv;
    bool flag = false;
    weft::Semaphore sem(0);
    weft::Latch latch(1);
    weft::Channel<int> ch(1);
    std::atomic<int> stage{0};
    std::atomic<int> failures{0};
    auto waiter = [&] {
      auto t0 = Clock::now();
      {
        std::unique_lock<weft::Mutex> l(m);
        stage = 1;
        if (!cv.wait_for(l, 20s, [&] { return flag; })) failures.fetch_add(1);
      }
      if (!sem.try_acquire_for(20s)) failures.fetch_add(1);
      if (!latch.wait_for(20s)) failures.fetch_add(1);
      absl::StatusOr<int> v = ch.recv_for(20s);
      if (!v.ok() || *v != 7) failures.fetch_add(1);
      if (Clock::now() - t0 > 10s) failures.fetch_add(100);
      stage = 2;
    };
    weft::Ult u;
    std::thread t;
    if (from_ult) u = rt.spawn(waiter); else t = std::thread(waiter);
    ASSERT_TRUE(WaitUntil([&] { return stage.load() == 1; }));
    {
      std::lock_guard<weft::Mutex> g(m);
      flag = true;
      cv.notify_one();
    }
    std::this_thread::sleep_for(1ms);
    sem.release();
    std::this_thread::sleep_for(1ms);
    latch.count_down();
    std::this_thread::sleep_for(1ms);
    ASSERT_TRUE(ch.send(7).ok());
    ASSERT_TRUE(WaitUntil([&] { return stage.load() == 2; }));
    EXPECT_EQ(failures.load(), 0) << (from_ult ? "ULT" : "thread");
    if (from_ult) ASSERT_TRUE(u.join().ok()); else t.join();
  }
}

// ---------------------------------------------------------------------------
// Adaptive spinning (white-box through Mutex::stats and the scheduler)
// ---------------------------------------------------------------------------

// (a) The holder is a ULT parked in this_ult::sleep_for while it holds the
// mutex: waiter ULTs (on both workers) must park at once, never spin.
// The snapshot is taken when every waiter has parked; if the holder woke
// before that (a stalled VM), the round is inconclusive and is redone.
TEST(AdaptiveSpin, ParkedHolderMeansNoSpinning) {
  Watchdog wd(60s, "AdaptiveSpin.ParkedHolderMeansNoSpinning");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kWaiters = 6;
  bool conclusive = false;
  for (int round = 0; round < 3 && !conclusive; ++round) {
    weft::Mutex m;
    std::atomic<weft::rt::UltDesc*> holder_desc{nullptr};
    std::atomic<bool> woke{false};
    int count = 0;
    weft::Ult holder = rt.spawn([&] {
      m.lock();
      holder_desc = weft::rt::current_ult();
      weft::this_ult::sleep_for(200ms);
      woke = true;
      m.unlock();
    });
    ASSERT_TRUE(WaitUntil([&] {
      weft::rt::UltDesc* u = holder_desc.load();
      return u != nullptr && UltStateOf(u) == weft::rt::ult_state::kParked;
    }));
    // Waiters arrive one at a time, each parked before the next comes (the
    // stats counters are unlocked increments: sequential ones are exact).
    std::vector<weft::Ult> waiters;
    std::vector<std::atomic<weft::rt::UltDesc*>> descs(kWaiters);
    for (int i = 0; i < kWaiters && !woke.load(); ++i) {
      std::atomic<weft::rt::UltDesc*>& self = descs[static_cast<size_t>(i)];
      waiters.push_back(rt.spawn([&] {
        self = weft::rt::current_ult();
        m.lock();
        ++count;
        m.unlock();
      }));
      ASSERT_TRUE(WaitUntil([&] {
        weft::rt::UltDesc* u = self.load();
        return woke.load() || (u != nullptr && UltStateOf(u) == weft::rt::ult_state::kParked);
      }));
    }
    weft::Mutex::Stats s = m.stats();
    conclusive = !woke.load();
    if (conclusive) {
      printf("[ spinning ] parked holder: contended=%lu spins=%lu parks=%lu\n",
             static_cast<unsigned long>(s.contended), static_cast<unsigned long>(s.spins),
             static_cast<unsigned long>(s.parks));
      EXPECT_EQ(s.spins, 0u) << "a waiter spun on a parked holder";
      EXPECT_EQ(s.parks, static_cast<uint64_t>(kWaiters));
      EXPECT_EQ(s.contended, static_cast<uint64_t>(kWaiters));
    }
    ASSERT_TRUE(holder.join().ok());
    for (auto& w : waiters) ASSERT_TRUE(w.join().ok());
    EXPECT_EQ(count, static_cast<int>(waiters.size()));
  }
  EXPECT_TRUE(conclusive) << "the holder never stayed asleep long enough to observe the waiters";
}

// (b) The holder is a ULT inside a blocking region (Worker::in_blocking set
// around a real blocking call, usleep): its KLT is stuck in the kernel, so
// waiters must park, not spin. Control: the very same scenario without the
// flag makes every waiter spin exactly once before it parks (the holder
// looks like it is running), which shows the flag is what decides.
TEST(AdaptiveSpin, HolderInBlockingRegionMeansNoSpinning) {
  Watchdog wd(60s, "AdaptiveSpin.HolderInBlockingRegionMeansNoSpinning");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kWaiters = 5;
  for (int flagged = 1; flagged >= 0; --flagged) {
    weft::Mutex m;
    std::atomic<bool> blocking{false}, release{false};
    int count = 0;
    weft::Ult holder = rt.spawn([&] {
      m.lock();
      weft::rt::Worker* w = weft::rt::current_worker();
      if (flagged) w->in_blocking.store(true);
      blocking = true;
      auto end = Clock::now() + 20s;
      while (!release.load() && Clock::now() < end) usleep(500);  // blocks the KLT
      if (flagged) w->in_blocking.store(false);
      m.unlock();
    });
    ASSERT_TRUE(WaitUntil([&] { return blocking.load(); }));
    std::vector<weft::Ult> waiters;
    std::vector<std::atomic<weft::rt::UltDesc*>> descs(kWaiters);
    for (int i = 0; i < kWaiters; ++i) {  // one at a time: exact counters
      std::atomic<weft::rt::UltDesc*>& self = descs[static_cast<size_t>(i)];
      waiters.push_back(rt.spawn([&] {
        self = weft::rt::current_ult();
        m.lock();
        ++count;
        m.unlock();
      }));
      ASSERT_TRUE(WaitUntil([&] {
        weft::rt::UltDesc* u = self.load();
        return u != nullptr && UltStateOf(u) == weft::rt::ult_state::kParked;
      })) << "waiter " << i << " never parked";
    }
    weft::Mutex::Stats s = m.stats();
    release = true;
    ASSERT_TRUE(holder.join().ok());
    for (auto& w : waiters) ASSERT_TRUE(w.join().ok());
    EXPECT_EQ(count, kWaiters);
    printf("[ spinning ] holder in usleep, in_blocking=%d: contended=%lu spins=%lu parks=%lu\n", flagged,
           static_cast<unsigned long>(s.contended), static_cast<unsigned long>(s.spins),
           static_cast<unsigned long>(s.parks));
    EXPECT_EQ(s.parks, static_cast<uint64_t>(kWaiters));
    if (flagged) {
      EXPECT_EQ(s.spins, 0u) << "a waiter spun on a holder inside a blocking region";
    } else {
      EXPECT_EQ(s.spins, static_cast<uint64_t>(kWaiters))
          << "control: a holder that is its worker's current ULT counts as running";
      EXPECT_EQ(s.spin_acquired, 0u);
    }
  }
}

// (c) The holder runs a short busy critical section on one worker while a
// waiter on the other worker contends: the waiter spins (and sometimes gets
// the mutex while spinning instead of parking). Whether a contended lock
// sees the holder "running" is decided by the runtime's own bookkeeping
// (Worker::current), not by the hypervisor, so this holds on a noisy VM
// too, provided the two ULTs really run on different workers: A starts and
// busy-waits (never switching) until B has started, so B must be on the
// other worker. The test hammers until both counters move, for at most 10 s.
TEST(AdaptiveSpin, BusyHolderOnOtherWorkerMakesWaitersSpin) {
#if defined(__SANITIZE_THREAD__)
  // TSan slows the holder's 2 us section several times over, past the spin
  // budget: whether a spin succeeds is a timing property that TSan builds
  // (which are here for races) cannot show.
  GTEST_SKIP() << "spin success depends on timing that ThreadSanitizer distorts";
#endif
  Watchdog wd(60s, "AdaptiveSpin.BusyHolderOnOtherWorkerMakesWaitersSpin");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  std::atomic<bool> stop{false};
  long counter = 0;
  std::atomic<long> iters{0};
  std::atomic<weft::rt::Worker*> start_worker[2] = {nullptr, nullptr};
  auto hammer = [&](int me) {
    start_worker[me] = weft::rt::current_worker();
    // No yield here: a yielded ULT is not stealable until its worker passes
    // through the scheduler loop, which a busy ULT never lets it do.
    auto give_up = Clock::now() + 10s;
    while (start_worker[1 - me].load() == nullptr && Clock::now() < give_up) {
    }
    while (!stop.load()) {
      m.lock();
      SpinFor(2us);
      ++counter;
      m.unlock();
      SpinFor(1us);
      iters.fetch_add(1, std::memory_order_relaxed);
    }
  };
  weft::Ult a = rt.spawn([&] { hammer(0); });
  ASSERT_TRUE(WaitUntil([&] { return start_worker[0].load() != nullptr; }));
  weft::Ult b = rt.spawn([&] { hammer(1); });
  ASSERT_TRUE(WaitUntil([&] { return start_worker[1].load() != nullptr; }));
  EXPECT_NE(start_worker[0].load(), start_worker[1].load());
  auto end = Clock::now() + 10s;
  while (Clock::now() < end) {
    weft::Mutex::Stats s = m.stats();
    if (s.spins > 0 && s.spin_acquired > 0 && iters.load() > 20000) break;
    std::this_thread::sleep_for(1ms);
  }
  stop = true;
  ASSERT_TRUE(a.join().ok());
  ASSERT_TRUE(b.join().ok());
  weft::Mutex::Stats s = m.stats();
  printf("[ spinning ] busy holder: iters=%ld contended=%lu spins=%lu spin_acquired=%lu parks=%lu "
         "hold_estimate=%lu ns\n",
         iters.load(), static_cast<unsigned long>(s.contended), static_cast<unsigned long>(s.spins),
         static_cast<unsigned long>(s.spin_acquired), static_cast<unsigned long>(s.parks),
         static_cast<unsigned long>(s.hold_estimate_ns));
  EXPECT_EQ(counter, iters.load()) << "lost increments";
  EXPECT_GT(s.spins, 0u) << "a busy holder on another worker never made a waiter spin";
  EXPECT_GT(s.spin_acquired, 0u) << "no waiter ever got the mutex while spinning";
  // (No ordering between the counters is asserted: a contended call may spin
  // again after every wake-up, and the counters are unlocked increments
  // that may under-count.)
  EXPECT_GT(s.hold_estimate_ns, 0u);
  // A running average: one long VM stall inside a hold can inflate it for a
  // while, so only an absurd value fails.
  EXPECT_LT(s.hold_estimate_ns, 100000000u) << "2 us holds estimated as > 100 ms";
}

// (d) With one worker a ULT can never find its holder running (the holder
// is on the same worker, or is a foreign thread), so no ULT ever spins,
// however contended: 40 ULTs that yield inside the critical section plus
// two foreign threads hammering the same mutex.
TEST(AdaptiveSpin, OneWorkerNeverSpins) {
  Watchdog wd(60s, "AdaptiveSpin.OneWorkerNeverSpins");
  weft::Runtime rt(weft::Options{.workers = 1});
  // Rounds until the mutex was contended enough to mean something (at least
  // ten parks), at most ten: under TSan on a loaded machine one round once
  // parked only 7 times and the test failed its own precondition.
  uint64_t contended = 0, parks = 0, spins = 0;
  for (int round = 0; round < 10 && parks <= 10; ++round) {
    weft::Mutex m;
    long counter = 0;
    constexpr int kUlts = 40, kIters = 500, kThreadIters = 5000;
    std::vector<weft::Ult> ults;
    for (int i = 0; i < kUlts; ++i) {
      ults.push_back(rt.spawn([&] {
        for (int k = 0; k < kIters; ++k) {
          std::lock_guard<weft::Mutex> g(m);
          long v = counter;
          if (k % 4 == 0) weft::this_ult::yield();  // others find it held
          counter = v + 1;
        }
      }));
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < 2; ++i) {
      threads.emplace_back([&] {
        for (int k = 0; k < kThreadIters; ++k) {
          std::lock_guard<weft::Mutex> g(m);
          ++counter;
        }
      });
    }
    for (auto& u : ults) ASSERT_TRUE(u.join().ok());
    for (auto& t : threads) t.join();
    weft::Mutex::Stats s = m.stats();
    printf("[ spinning ] one worker, round %d: contended=%lu spins=%lu parks=%lu handoffs=%lu\n", round,
           static_cast<unsigned long>(s.contended), static_cast<unsigned long>(s.spins),
           static_cast<unsigned long>(s.parks), static_cast<unsigned long>(s.handoffs));
    EXPECT_EQ(counter, static_cast<long>(kUlts) * kIters + 2L * kThreadIters);
    contended += s.contended;
    parks += s.parks;
    spins += s.spins;
  }
  EXPECT_GT(contended, 0u) << "the test did not contend";
  EXPECT_GT(parks, 10u) << "the test did not contend in ten rounds";
  EXPECT_EQ(spins, 0u) << "a ULT spun on a one-worker runtime";
}

// ---------------------------------------------------------------------------
// RwLock
// ---------------------------------------------------------------------------

// Readers share: a ULT and a foreign thread hold the lock shared at the same
// time (each waits, bounded, to see the other inside); while readers hold
// it, try_lock fails and try_lock_shared succeeds; std::shared_lock works.
TEST(RwLock, ReadersShare) {
  Watchdog wd(30s, "RwLock.ReadersShare");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::RwLock rw;
  std::atomic<int> inside{0};
  std::atomic<int> saw_other{0};
  auto reader = [&] {
    std::shared_lock<weft::RwLock> l(rw);
    inside.fetch_add(1);
    if (WaitUntil([&] { return inside.load() == 2; }, 5000ms)) saw_other.fetch_add(1);
    EXPECT_FALSE(rw.try_lock()) << "a writer got in while readers hold the lock";
    EXPECT_TRUE(rw.try_lock_shared());
    rw.unlock_shared();
    WaitUntil([&] { return saw_other.load() == 2; }, 5000ms);
  };
  weft::Ult u = rt.spawn(reader);
  std::thread t(reader);
  ASSERT_TRUE(u.join().ok());
  t.join();
  EXPECT_EQ(saw_other.load(), 2) << "the two readers never held the lock at the same time";
  EXPECT_TRUE(rw.try_lock());
  rw.unlock();
}

// Test-only access to RwLock's private wait queue (weft/sync.h has no
// accessor; an explicit instantiation may name a private member, and the
// friend function it defines hands the member pointer out).
template <class Tag, typename Tag::type M>
struct PrivateMember {
  friend typename Tag::type get(Tag) { return M; }
};
struct RwLockQueue {
  using type = weft::detail::WaitQueue weft::RwLock::*;
  friend type get(RwLockQueue);
};
template struct PrivateMember<RwLockQueue, &weft::RwLock::queue_>;

// Readers and writers queued on rw now, read under its queue lock.
uint32_t QueuedOn(weft::RwLock& rw) {
  weft::detail::WaitQueue& q = rw.*get(RwLockQueue{});
  weft::rt::sync::QueueLock g(q);
  return q.size;
}

// A writer excludes everyone: readers and writers (ULTs and a thread) that
// arrive while it holds the lock do not get in until it unlocks, then all
// get in; try_lock/try_lock_shared fail meanwhile.
TEST(RwLock, WriterExcludesReadersAndWriters) {
  Watchdog wd(30s, "RwLock.WriterExcludesReadersAndWriters");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::RwLock rw;
  std::atomic<bool> writer_in{false};
  std::atomic<int> got_in{0}, violated{0};
  rw.lock();
  writer_in = true;
  EXPECT_FALSE(rw.try_lock());
  EXPECT_FALSE(rw.try_lock_shared());
  std::vector<weft::Ult> ults;
  ults.push_back(rt.spawn([&] {
    rw.lock_shared();
    if (writer_in.load()) violated.fetch_add(1);
    got_in.fetch_add(1);
    rw.unlock_shared();
  }));
  ults.push_back(rt.spawn([&] {
    std::lock_guard<weft::RwLock> g(rw);
    if (writer_in.load()) violated.fetch_add(1);
    got_in.fetch_add(1);
  }));
  std::thread t([&] {
    std::shared_lock<weft::RwLock> l(rw);
    if (writer_in.load()) violated.fetch_add(1);
    got_in.fetch_add(1);
  });
  // All three are queued behind the writer (not in, not still on the way).
  ASSERT_TRUE(WaitUntil([&] { return QueuedOn(rw) == 3; })) << QueuedOn(rw) << " of 3 queued";
  EXPECT_EQ(got_in.load(), 0) << "got in while a writer held the lock";
  writer_in = false;
  rw.unlock();
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  t.join();
  EXPECT_EQ(got_in.load(), 3);
  EXPECT_EQ(violated.load(), 0);
}

// A waiting writer blocks new readers (writer preference): with a reader
// inside and a writer queued, try_lock_shared fails and a new reader gets
// in only after the writer has had the lock.
TEST(RwLock, QueuedWriterGoesBeforeLaterReaders) {
  Watchdog wd(30s, "RwLock.QueuedWriterGoesBeforeLaterReaders");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::RwLock rw;
  std::mutex order_mu;
  std::vector<char> order;
  auto record = [&](char c) {
    std::lock_guard<std::mutex> g(order_mu);
    order.push_back(c);
  };
  rw.lock_shared();  // reader R (main) inside
  weft::Ult writer = rt.spawn([&] {
    rw.lock();
    record('W');
    rw.unlock();
  });
  // The writer has queued once new readers are refused.
  ASSERT_TRUE(WaitUntil([&] {
    if (rw.try_lock_shared()) {
      rw.unlock_shared();
      return false;
    }
    return true;
  })) << "a queued writer does not block new readers";
  weft::Ult late_reader = rt.spawn([&] {
    rw.lock_shared();
    record('r');
    rw.unlock_shared();
  });
  std::thread late_thread([&] {
    rw.lock_shared();
    record('t');
    rw.unlock_shared();
  });
  // Both late readers are queued behind the writer before R leaves (else
  // the order below would prove nothing).
  ASSERT_TRUE(WaitUntil([&] { return QueuedOn(rw) == 3; })) << QueuedOn(rw) << " of 3 queued";
  {
    std::lock_guard<std::mutex> g(order_mu);
    EXPECT_TRUE(order.empty());
  }
  rw.unlock_shared();
  ASSERT_TRUE(writer.join().ok());
  ASSERT_TRUE(late_reader.join().ok());
  late_thread.join();
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], 'W') << "readers that came after a queued writer went first";
}

// ---------------------------------------------------------------------------
// Barrier, Latch, Once
// ---------------------------------------------------------------------------

// Barrier over 4 ULTs and 2 threads, 300 rounds: nobody leaves a round
// before all have arrived, and exactly one caller per round gets true.
TEST(Barrier, RoundsWithOneSerialCallerEach) {
  Watchdog wd(60s, "Barrier.RoundsWithOneSerialCallerEach");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kUlts = 4, kThreads = 2, kN = kUlts + kThreads, kRounds = 300;
  weft::Barrier bar(kN);
  std::vector<std::atomic<int>> arrived(kRounds), serial(kRounds);
  std::atomic<int> early{0};
  auto body = [&] {
    for (int r = 0; r < kRounds; ++r) {
      arrived[static_cast<size_t>(r)].fetch_add(1);
      if (bar.arrive_and_wait()) serial[static_cast<size_t>(r)].fetch_add(1);
      if (arrived[static_cast<size_t>(r)].load() != kN) early.fetch_add(1);
    }
  };
  std::vector<weft::Ult> ults;
  for (int i = 0; i < kUlts; ++i) ults.push_back(rt.spawn(body));
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) threads.emplace_back(body);
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();
  EXPECT_EQ(early.load(), 0) << "someone left a round before everyone arrived";
  int bad = 0;
  for (int r = 0; r < kRounds; ++r) bad += serial[static_cast<size_t>(r)].load() != 1;
  EXPECT_EQ(bad, 0) << "rounds without exactly one serial caller";
  weft::Barrier one(1);
  EXPECT_TRUE(one.arrive_and_wait());
  EXPECT_TRUE(one.arrive_and_wait());
}

// Latch as a wait group: add() before each task, count_down() when it is
// done (ULTs and threads), wait() returns only after all are done; wait on
// zero returns at once; add after zero re-arms it; bulk count_down(n);
// arrive_and_wait.
TEST(Latch, WaitGroup) {
  Watchdog wd(60s, "Latch.WaitGroup");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Latch wg;
  EXPECT_TRUE(wg.try_wait());
  wg.wait();  // zero: returns at once
  EXPECT_TRUE(wg.wait_for(0ms));
  std::atomic<int> done{0};
  std::vector<weft::Ult> ults;
  std::vector<std::thread> threads;
  for (int i = 0; i < 40; ++i) {
    wg.add();
    ults.push_back(rt.spawn([&, i] {
      weft::this_ult::sleep_for(std::chrono::microseconds(100 * (i % 7)));
      done.fetch_add(1);
      wg.count_down();
    }));
  }
  for (int i = 0; i < 3; ++i) {
    wg.add();
    threads.emplace_back([&] {
      std::this_thread::sleep_for(2ms);
      done.fetch_add(1);
      wg.count_down();
    });
  }
  EXPECT_FALSE(wg.try_wait());
  // A ULT and this thread both wait.
  std::atomic<int> ult_saw{-1};
  weft::Ult waiter = rt.spawn([&] {
    wg.wait();
    ult_saw = done.load();
  });
  wg.wait();
  EXPECT_EQ(done.load(), 43);
  ASSERT_TRUE(waiter.join().ok());
  EXPECT_EQ(ult_saw.load(), 43);
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (auto& t : threads) t.join();
  EXPECT_TRUE(wg.try_wait());

  // Re-armed; bulk count_down; arrive_and_wait by the last arrival.
  wg.add(5);
  EXPECT_FALSE(wg.try_wait());
  std::atomic<bool> passed{false};
  weft::Ult w2 = rt.spawn([&] {
    wg.wait();
    passed = true;
  });
  wg.count_down(3);
  std::this_thread::sleep_for(10ms);
  EXPECT_FALSE(passed.load()) << "released at count 2";
  wg.count_down(1);
  rt.block_on([&] { wg.arrive_and_wait(1); }).IgnoreError();
  ASSERT_TRUE(w2.join().ok());
  EXPECT_TRUE(passed.load());
  EXPECT_TRUE(wg.try_wait());
}

// Once: among 16 racing ULTs and 4 threads exactly one runs the function
// (which parks for a while, so others really wait), and every caller sees
// its side effect when call() returns.
TEST(Once, ExactlyOneRunAndEveryoneSeesIt) {
  Watchdog wd(60s, "Once.ExactlyOneRunAndEveryoneSeesIt");
  weft::Runtime rt(weft::Options{.workers = 2});
  for (int rep = 0; rep < 20; ++rep) {
    weft::Once once;
    std::atomic<int> runs{0};
    int value = 0;  // written by the function, read by everyone after call()
    std::atomic<int> saw_bad{0};
    std::atomic<int> go{0};
    auto body = [&] {
      while (go.load() == 0) {
      }
      once.call([&] {
        runs.fetch_add(1);
        if (weft::this_ult::in_ult()) weft::this_ult::sleep_for(2ms); else std::this_thread::sleep_for(2ms);
        value = 42;
      });
      if (value != 42 || !once.done()) saw_bad.fetch_add(1);
    };
    std::vector<weft::Ult> ults;
    for (int i = 0; i < 16; ++i) ults.push_back(rt.spawn(body));
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back(body);
    go = 1;
    for (auto& u : ults) ASSERT_TRUE(u.join().ok());
    for (auto& t : threads) t.join();
    EXPECT_EQ(runs.load(), 1);
    EXPECT_EQ(saw_bad.load(), 0);
    EXPECT_TRUE(once.done());
    once.call([&] { runs.fetch_add(1); });
    EXPECT_EQ(runs.load(), 1);
  }
}

// Once with a throwing function: the exception reaches its caller, the Once
// stays un-run, and the next caller runs it; with racers, the waiters that
// queued behind the thrower are woken and one of them runs it.
TEST(Once, ThrowLetsTheNextCallerRun) {
  Watchdog wd(60s, "Once.ThrowLetsTheNextCallerRun");
  weft::Runtime rt(weft::Options{.workers = 2});
  {
    weft::Once once;
    EXPECT_THROW(once.call([] { throw std::runtime_error("first"); }), std::runtime_error);
    EXPECT_FALSE(once.done());
    int ran = 0;
    once.call([&] { ++ran; });
    EXPECT_EQ(ran, 1);
    EXPECT_TRUE(once.done());
  }
  for (int rep = 0; rep < 20; ++rep) {
    weft::Once once;
    std::atomic<int> attempts{0}, successes{0}, throws_seen{0}, saw_bad{0};
    int value = 0;
    std::atomic<int> go{0};
    auto body = [&] {
      while (go.load() == 0) {
      }
      try {
        once.call([&] {
          int a = attempts.fetch_add(1);
          if (weft::this_ult::in_ult()) weft::this_ult::sleep_for(1ms); else std::this_thread::sleep_for(1ms);
          if (a == 0) throw std::runtime_error("first attempt fails");
          value = 7;
          successes.fetch_add(1);
        });
        if (value != 7) saw_bad.fetch_add(1);
      } catch (const std::runtime_error&) {
        throws_seen.fetch_add(1);
      }
    };
    std::vector<weft::Ult> ults;
    for (int i = 0; i < 10; ++i) ults.push_back(rt.spawn(body));
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) threads.emplace_back(body);
    go = 1;
    for (auto& u : ults) ASSERT_TRUE(u.join().ok());
    for (auto& t : threads) t.join();
    EXPECT_EQ(throws_seen.load(), 1);
    EXPECT_EQ(successes.load(), 1);
    EXPECT_EQ(attempts.load(), 2);
    EXPECT_EQ(saw_bad.load(), 0);
    EXPECT_TRUE(once.done());
  }
}

// ---------------------------------------------------------------------------
// Channel
// ---------------------------------------------------------------------------

// try_send on a full channel and try_recv on an empty one are Unavailable
// (and do not consume the value); FIFO order. (Capacity 0 used to behave
// as 1; since issue 14 it is unbuffered: tests/sync_channel_test.cc.)
TEST(Channel, TryOpsAndCapacity) {
  weft::Channel<std::unique_ptr<int>> ch(1);
  EXPECT_EQ(ch.capacity(), 1u);
  EXPECT_TRUE(absl::IsUnavailable(ch.try_recv().status()));
  auto p = std::make_unique<int>(1);
  ASSERT_TRUE(ch.try_send(std::move(p)).ok());
  auto q = std::make_unique<int>(2);
  absl::Status s = ch.try_send(std::move(q));
  EXPECT_TRUE(absl::IsUnavailable(s)) << s;
  ASSERT_NE(q, nullptr) << "a failed try_send consumed the value";
  EXPECT_EQ(*q, 2);
  auto r = ch.try_recv();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(**r, 1);
  EXPECT_TRUE(absl::IsUnavailable(ch.try_recv().status()));

  weft::Channel<int> c3(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c3.try_send(int{i}).ok());
  EXPECT_TRUE(absl::IsUnavailable(c3.try_send(9)));
  EXPECT_EQ(c3.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(*c3.recv(), i);
}

// close(): wakes receivers blocked on an empty channel (ULTs and a thread:
// OutOfRange) and senders blocked on a full one (FailedPrecondition, value
// untouched); later sends fail with the value untouched; receivers drain
// the buffered values first, then get OutOfRange; close is idempotent.
TEST(Channel, CloseSemantics) {
  Watchdog wd(60s, "Channel.CloseSemantics");
  weft::Runtime rt(weft::Options{.workers = 2});
  // Blocked receivers.
  {
    weft::Channel<int> ch(4);
    std::atomic<int> out_of_range{0}, other{0};
    auto recv = [&] {
      absl::StatusOr<int> r = ch.recv();
      if (absl::IsOutOfRange(r.status())) out_of_range.fetch_add(1); else other.fetch_add(1);
    };
    uint64_t parks0 = WorkerParks(rt);
    std::vector<weft::Ult> ults;
    for (int i = 0; i < 3; ++i) ults.push_back(rt.spawn(recv));
    std::thread t(recv);
    ASSERT_TRUE(WaitUntil([&] { return WorkerParks(rt) - parks0 >= 3; })) << "receivers never parked";
    std::this_thread::sleep_for(20ms);  // the thread too is asleep by now
    EXPECT_EQ(out_of_range.load() + other.load(), 0);
    ch.close();
    for (auto& u : ults) ASSERT_TRUE(u.join().ok());
    t.join();
    EXPECT_EQ(out_of_range.load(), 4);
    EXPECT_EQ(other.load(), 0);
  }
  // Blocked senders.
  {
    weft::Channel<std::string> ch(1);
    ASSERT_TRUE(ch.send(std::string("buffered")).ok());
    std::atomic<int> failed_untouched{0}, other{0};
    auto send = [&](std::string v) {
      std::string mine = v;
      absl::Status s = ch.send(std::move(mine));
      if (absl::IsFailedPrecondition(s) && mine == v) failed_untouched.fetch_add(1); else other.fetch_add(1);
    };
    uint64_t parks0 = WorkerParks(rt);
    std::vector<weft::Ult> ults;
    for (int i = 0; i < 3; ++i) ults.push_back(rt.spawn([&, i] { send("ult" + std::to_string(i)); }));
    std::thread t([&] { send("thread"); });
    ASSERT_TRUE(WaitUntil([&] { return WorkerParks(rt) - parks0 >= 3; })) << "senders never parked";
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(failed_untouched.load() + other.load(), 0);
    ch.close();
    for (auto& u : ults) ASSERT_TRUE(u.join().ok());
    t.join();
    EXPECT_EQ(failed_untouched.load(), 4);
    EXPECT_EQ(other.load(), 0);
    // The buffered value is still delivered, then OutOfRange.
    auto r = ch.recv();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, "buffered");
    EXPECT_TRUE(absl::IsOutOfRange(ch.recv().status()));
  }
  // Drain after close; sends after close.
  {
    weft::Channel<std::unique_ptr<int>> ch(8);
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(ch.send(std::make_unique<int>(i)).ok());
    ch.close();
    ch.close();  // idempotent
    EXPECT_TRUE(ch.closed());
    auto p = std::make_unique<int>(99);
    EXPECT_TRUE(absl::IsFailedPrecondition(ch.send(std::move(p))));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(*p, 99);
    EXPECT_TRUE(absl::IsFailedPrecondition(ch.try_send(std::move(p))));
    ASSERT_NE(p, nullptr);
    EXPECT_TRUE(absl::IsFailedPrecondition(ch.send_for(std::move(p), 10ms)));
    ASSERT_NE(p, nullptr);
    ASSERT_TRUE(rt.block_on([&] {
                    for (int i = 0; i < 3; ++i) {
                      auto r = ch.recv();
                      if (!r.ok() || **r != i) return false;
                    }
                    return true;
                  }).value());
    auto r3 = ch.try_recv();
    ASSERT_TRUE(r3.ok());
    EXPECT_EQ(**r3, 3);
    auto r4 = ch.recv_for(10ms);
    ASSERT_TRUE(r4.ok());
    EXPECT_EQ(**r4, 4);
    EXPECT_TRUE(absl::IsOutOfRange(ch.recv().status()));
    EXPECT_TRUE(absl::IsOutOfRange(ch.try_recv().status())) << "closed+drained is OutOfRange, not Unavailable";
    EXPECT_TRUE(absl::IsOutOfRange(ch.recv_for(10ms).status()));
    EXPECT_EQ(ch.size(), 0u);
  }
}

// ---------------------------------------------------------------------------
// Misuse detection (debug builds: -Ddchecks=true)
// ---------------------------------------------------------------------------
#if WEFT_DCHECK_ENABLED

class MutexMisuseDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// A ULT that unlocks a mutex nobody holds aborts with a message naming it.
TEST_F(MutexMisuseDeathTest, UnlockNotHeldFromUlt) {
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Mutex m;
        rt.block_on([&] {
            weft::Ult u = weft::spawn([&] { m.unlock(); }, weft::SpawnOptions{.name = "bad-unlocker"});
            u.join().IgnoreError();
          }).IgnoreError();
      },
      R"(ULT [0-9]+\.[0-9]+ "bad-unlocker" unlocks Mutex 0x[0-9a-f]+, which it does not hold \(holder: nobody\))");
}

// A ULT that unlocks a mutex another ULT holds: both are named.
TEST_F(MutexMisuseDeathTest, UnlockHeldByAnotherUlt) {
  EXPECT_DEATH(
      {
        Watchdog child_wd(20s, "UnlockHeldByAnotherUlt child");
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Mutex m;
        weft::Semaphore sem(0);
        weft::Ult owner = rt.spawn(
            [&] {
              m.lock();
              sem.acquire();
            },
            weft::SpawnOptions{.name = "rightful-owner"});
        while (m.try_lock() ? (m.unlock(), true) : false) std::this_thread::sleep_for(1ms);
        weft::Ult thief = rt.spawn([&] { m.unlock(); }, weft::SpawnOptions{.name = "thief"});
        thief.join().IgnoreError();
        sem.release();
      },
      R"(ULT [0-9]+\.[0-9]+ "thief" unlocks Mutex 0x[0-9a-f]+, which it does not hold \(holder: ULT [0-9]+\.[0-9]+ "rightful-owner"\))");
}

// A foreign thread that unlocks a mutex it does not hold (here: held by a
// named ULT) aborts, naming the thread and the holder.
TEST_F(MutexMisuseDeathTest, UnlockNotHeldFromThread) {
  EXPECT_DEATH(
      {
        weft::Mutex m;
        m.unlock();
      },
      R"(thread 0x[0-9a-f]+ unlocks Mutex 0x[0-9a-f]+, which it does not hold \(holder: nobody\))");
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 1});
        weft::Mutex m;
        weft::Semaphore sem(0);
        std::atomic<bool> held{false};
        weft::Ult owner = rt.spawn(
            [&] {
              m.lock();
              held = true;
              sem.acquire();
            },
            weft::SpawnOptions{.name = "holder-ult"});
        while (!held.load()) std::this_thread::sleep_for(1ms);
        m.unlock();
      },
      R"(thread 0x[0-9a-f]+ unlocks Mutex 0x[0-9a-f]+, which it does not hold \(holder: ULT [0-9]+\.[0-9]+ "holder-ult"\))");
}

// A ULT that locks a mutex it already holds (lock or try_lock_for) aborts
// with "relocks" instead of deadlocking; so does a foreign thread.
TEST_F(MutexMisuseDeathTest, RelockFromSameUltOrThread) {
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Mutex m;
        weft::Ult u = rt.spawn(
            [&] {
              m.lock();
              m.lock();
            },
            weft::SpawnOptions{.name = "relocker"});
        u.join().IgnoreError();
      },
      R"(ULT [0-9]+\.[0-9]+ "relocker" relocks Mutex 0x[0-9a-f]+, which it already holds)");
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Mutex m;
        weft::Ult u = rt.spawn(
            [&] {
              m.lock();
              m.try_lock_for(std::chrono::seconds(1));
            },
            weft::SpawnOptions{.name = "timed-relocker"});
        u.join().IgnoreError();
      },
      R"(ULT [0-9]+\.[0-9]+ "timed-relocker" relocks Mutex)");
  EXPECT_DEATH(
      {
        weft::Mutex m;
        m.lock();
        m.lock();
      },
      R"(thread 0x[0-9a-f]+ relocks Mutex 0x[0-9a-f]+, which it already holds)");
}

// Destroying a locked mutex aborts with "destroyed while locked", naming
// the holder; destroying one with waiters says so.
TEST_F(MutexMisuseDeathTest, DestroyLocked) {
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Ult u = rt.spawn(
            [] {
              auto m = std::make_unique<weft::Mutex>();
              m->lock();
              m.reset();
            },
            weft::SpawnOptions{.name = "destroyer"});
        u.join().IgnoreError();
      },
      R"(Mutex 0x[0-9a-f]+ destroyed while locked \(held by ULT [0-9]+\.[0-9]+ "destroyer"\))");
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 2});
        auto m = std::make_unique<weft::Mutex>();
        m->lock();
        weft::Mutex* raw = m.get();
        weft::Ult w = rt.spawn([raw] { raw->lock(); });
        while (raw->stats().parks == 0) std::this_thread::sleep_for(1ms);
        m.reset();
      },
      R"(Mutex 0x[0-9a-f]+ destroyed while it has waiters \(held by thread 0x[0-9a-f]+\))");
}

#endif  // WEFT_DCHECK_ENABLED

}  // namespace
