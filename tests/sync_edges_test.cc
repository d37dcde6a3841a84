// tests/sync_edges_test.cc — weft/sync.h at its edges: timeouts too large
// for the clock arithmetic, and a primitive destroyed right after it
// released a timed waiter.
//
// Every wait is bounded (Watchdog). A waiter is proved to be waiting by its
// state — a ULT parked in the scheduler, a thread inside the futex system
// call — never by "nothing happened for a while".
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/scheduler.h"
#include "runtime/sync/wait_list.h"
#include "runtime/ult.h"
#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/ult_probe.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

namespace {

using namespace std::chrono_literals;


// ---------------------------------------------------------------------------
// Timeouts too large for the clock: they mean "practically forever"
// ---------------------------------------------------------------------------

// One timed wait with a huge timeout: `wait` must block (a ULT parks, a
// thread sleeps in futex) until `release` lets it through, and then return
// true. Regression (issue 9 #6): on 15df0bc detail::to_deadline computed
// now + rel without saturation (and hours::max() overflowed in the cast to
// nanoseconds), so the deadline lay in the past and the wait failed at once.
struct HugeCase {
  const char* what;
  std::function<bool()> wait;     // the timed wait; true = got it
  std::function<void()> release;  // lets it through
};

void ExpectBlocksUntilReleased(weft::Runtime& rt, const HugeCase& c, bool on_ult) {
  auto done = std::make_shared<std::atomic<bool>>(false);
  auto got = std::make_shared<std::atomic<bool>>(false);
  std::function<bool()> wait = c.wait;
  if (on_ult) {
    weft::Ult u = rt.spawn([=] {
      got->store(wait());
      done->store(true);
    });
    ASSERT_TRUE(u.status().ok());
    weft::UltId id = u.id();
    ASSERT_TRUE(WaitUntil([&] { return done->load() || Parked(id); })) << c.what;
    EXPECT_FALSE(done->load()) << c.what << " on a ULT gave up at once";
    c.release();
    ASSERT_TRUE(u.join().ok());
  } else {
    auto tid = std::make_shared<std::atomic<int>>(0);
    std::thread t([=] {
      tid->store(Tid());
      got->store(wait());
      done->store(true);
    });
    ASSERT_TRUE(WaitUntil([&] { return done->load() || (tid->load() != 0 && BlockedSyscall(tid->load()) == SYS_futex); }))
        << c.what;
    EXPECT_FALSE(done->load()) << c.what << " on a thread gave up at once";
    c.release();
    t.join();
  }
  EXPECT_TRUE(got->load()) << c.what << (on_ult ? " on a ULT" : " on a thread") << " did not get through";
}

TEST(HugeTimeouts, WaitUntilReleased) {
  Watchdog wd(120s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  for (bool on_ult : {true, false}) {
    {
      weft::Semaphore sem(0);
      ExpectBlocksUntilReleased(rt, {"Semaphore::try_acquire_for(hours::max())",
                                     [&] { return sem.try_acquire_for(std::chrono::hours::max()); },
                                     [&] { sem.release(); }}, on_ult);
      ExpectBlocksUntilReleased(rt, {"Semaphore::try_acquire_for(nanoseconds::max())",
                                     [&] { return sem.try_acquire_for(std::chrono::nanoseconds::max()); },
                                     [&] { sem.release(); }}, on_ult);
      ExpectBlocksUntilReleased(rt, {"Semaphore::try_acquire_until(steady_clock::time_point::max())",
                                     [&] { return sem.try_acquire_until(std::chrono::steady_clock::time_point::max()); },
                                     [&] { sem.release(); }}, on_ult);
      ExpectBlocksUntilReleased(
          rt, {"Semaphore::try_acquire_until(time_point<steady_clock, hours>::max())",
               [&] {
                 return sem.try_acquire_until(
                     std::chrono::time_point<std::chrono::steady_clock, std::chrono::hours>::max());
               },
               [&] { sem.release(); }}, on_ult);
    }
    {
      weft::Mutex m;
      m.lock();
      ExpectBlocksUntilReleased(rt, {"Mutex::try_lock_for(hours::max())",
                                     [&] {
                                       bool ok = m.try_lock_for(std::chrono::hours::max());
                                       if (ok) m.unlock();
                                       return ok;
                                     },
                                     [&] { m.unlock(); }}, on_ult);
      m.lock();
      ExpectBlocksUntilReleased(rt, {"Mutex::try_lock_until(system_clock::time_point::max())",
                                     [&] {
                                       bool ok = m.try_lock_until(std::chrono::system_clock::time_point::max());
                                       if (ok) m.unlock();
                                       return ok;
                                     },
                                     [&] { m.unlock(); }}, on_ult);
    }
    {
      weft::Mutex mu;
      weft::CondVar cv;
      bool flag = false;
      ExpectBlocksUntilReleased(rt, {"CondVar::wait_for(hours::max(), pred)",
                                     [&] {
                                       std::unique_lock<weft::Mutex> g(mu);
                                       return cv.wait_for(g, std::chrono::hours::max(), [&] { return flag; });
                                     },
                                     [&] {
                                       std::lock_guard<weft::Mutex> g(mu);
                                       flag = true;
                                       cv.notify_all();
                                     }}, on_ult);
    }
    {
      weft::Latch l(1);
      ExpectBlocksUntilReleased(rt, {"Latch::wait_for(hours::max())",
                                     [&] { return l.wait_for(std::chrono::hours::max()); },
                                     [&] { l.count_down(); }}, on_ult);
    }
    {
      weft::Channel<int> ch(1);
      ExpectBlocksUntilReleased(rt, {"Channel::recv_for(hours::max())",
                                     [&] { return ch.recv_for(std::chrono::hours::max()).ok(); },
                                     [&] { ASSERT_TRUE(ch.send(1).ok()); }}, on_ult);
    }
  }
}

// The other side of the saturation: time points far in the past and
// hugely negative durations do not wait (this passed on 15df0bc too; it
// guards the fix from turning them into "forever").
TEST(HugeTimeouts, PastDeadlinesDoNotWait) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1});
  auto check = [] {
    weft::Semaphore sem(0);
    EXPECT_FALSE(sem.try_acquire_until(std::chrono::steady_clock::time_point::min()));
    EXPECT_FALSE(sem.try_acquire_until(std::chrono::system_clock::time_point::min()));
    EXPECT_FALSE(sem.try_acquire_for(std::chrono::hours::min()));
    EXPECT_FALSE(sem.try_acquire_for(std::chrono::nanoseconds::min()));
    weft::Latch l(1);
    EXPECT_FALSE(l.wait_for(std::chrono::hours::min()));
    // Locked by a thread that is gone, so nobody will unlock it; leaked
    // (debug builds abort when a locked Mutex is destroyed).
    auto* m = new weft::Mutex;
    LeakedOnPurpose(m);
    std::thread holder([m] { m->lock(); });
    holder.join();
    EXPECT_FALSE(m->try_lock_until(std::chrono::steady_clock::time_point::min()));
    EXPECT_FALSE(m->try_lock_for(std::chrono::hours::min()));
    weft::Channel<int> ch(1);
    EXPECT_EQ(ch.recv_for(std::chrono::hours::min()).status().code(), absl::StatusCode::kDeadlineExceeded);
  };
  check();
  ASSERT_TRUE(rt.block_on(check).ok());
}

// ---------------------------------------------------------------------------
// A primitive destroyed right after it released a timed waiter
// ---------------------------------------------------------------------------

// The primitive lives alone in a page that the test unmaps as soon as the
// releasing call (notify_one, count_down, release) has returned — legal, as
// for std::condition_variable: every waiter has been notified. Any later
// touch of the primitive by the released waiter is a SIGSEGV.
template <class T>
struct InPage {
  void* page = nullptr;
  T* obj = nullptr;
  template <class... A>
  explicit InPage(A&&... a) {
    page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED) obj = new (page) T(std::forward<A>(a)...);
  }
  void destroy_and_unmap() {
    obj->~T();
    munmap(page, 4096);
    obj = nullptr;
  }
};

// The test hook in cancel_wait (wait_list.h): stops the timed-out waiter at
// one stage so that the waker runs in the window the race needs.
struct HookCtl {
  std::atomic<int> stop_at{-1};        // stage to stop at once, or -1
  std::atomic<bool> reached{false};    // the waiter is stopped in the hook
  std::atomic<bool> go{false};         // stage 0: the waker is done, continue
  std::atomic<bool> notifying{false};  // stage 1: the waker is about to release
};
HookCtl g_hook;

void CancelHook(weft::detail::SyncWaiter*, int stage) {
  int want = stage;
  if (!g_hook.stop_at.compare_exchange_strong(want, -1)) return;
  g_hook.reached = true;
  auto limit = std::chrono::steady_clock::now() + 10s;
  if (stage == 0) {
    // Timed out, nothing decided yet: let the waker pop us, wake us,
    // return, and the primitive be unmapped.
    while (!g_hook.go.load() && std::chrono::steady_clock::now() < limit) sched_yield();
  } else {
    // Claimed (state 2): let the waker pop us and reach wake(), which must
    // now wait for us, then go on to the queue.
    while (!g_hook.notifying.load() && std::chrono::steady_clock::now() < limit) sched_yield();
    auto t = std::chrono::steady_clock::now() + 2ms;
    while (std::chrono::steady_clock::now() < t) sched_yield();
  }
}

struct TimedCase {
  const char* what;
  // Makes the primitive in its page, runs the timed wait (returns whether
  // it was released), releases it, and destroys it.
  std::function<void*()> make;
  std::function<bool(void*)> timed_wait;    // times out after ~1 ms unless released
  std::function<void(void*)> release;        // notify_one / count_down / release
  std::function<void(void*)> unmap;
};

// One race: the waiter times out and stops at `stage`; the waker releases
// it and the primitive is unmapped; the waiter must return "released"
// without touching the primitive again.
void RunRace(weft::Runtime& rt, const TimedCase& c, int stage, bool on_ult) {
  SCOPED_TRACE(std::string(c.what) + (on_ult ? " on a ULT" : " on a thread") + ", stage " + std::to_string(stage));
  g_hook.reached = false;
  g_hook.go = false;
  g_hook.notifying = false;
  void* prim = c.make();
  ASSERT_NE(prim, nullptr);
  std::atomic<int> result{-1};
  g_hook.stop_at = stage;
  auto waiter = [&] { result = c.timed_wait(prim) ? 1 : 0; };
  weft::Ult u;
  std::thread t;
  if (on_ult) {
    u = rt.spawn(waiter);
  } else {
    t = std::thread(waiter);
  }
  ASSERT_TRUE(WaitUntil([&] { return g_hook.reached.load(); })) << "the wait never timed out into the hook";
  g_hook.notifying = true;
  c.release(prim);  // stage 1: returns only once the waiter is off the queue
  c.unmap(prim);
  g_hook.go = true;
  if (on_ult) {
    ASSERT_TRUE(u.join().ok());
  } else {
    t.join();
  }
  EXPECT_EQ(result.load(), 1) << "the waiter was released, but reported a timeout";
}

// Regression (issue 9 #7): on 15df0bc cancel_wait locked the primitive's
// queue after the timeout whether or not a waker had popped the waiter, so
// here (stage 0: popped, woken, primitive unmapped) the waiter faulted on
// the unmapped page (SIGSEGV in QueueLock::lock).
TEST(DestroyAfterRelease, TimedWaiterNeverTouchesThePrimitive) {
  Watchdog wd(120s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::rt::sync::g_cancel_wait_hook = CancelHook;
  struct CvState {
    weft::Mutex mu;
    weft::CondVar cv;
  };
  auto* cvs = new CvState;  // the user's mutex stays; only the CondVar is unmapped
  const TimedCase cases[] = {
      {"CondVar::wait_for",
       [] { return static_cast<void*>(new InPage<weft::CondVar>()); },
       [cvs](void* p) {
         std::unique_lock<weft::Mutex> g(cvs->mu);
         return static_cast<InPage<weft::CondVar>*>(p)->obj->wait_for(g, 1ms) == std::cv_status::no_timeout;
       },
       [cvs](void* p) {
         std::lock_guard<weft::Mutex> g(cvs->mu);
         static_cast<InPage<weft::CondVar>*>(p)->obj->notify_one();
       },
       [](void* p) {
         auto* ip = static_cast<InPage<weft::CondVar>*>(p);
         ip->destroy_and_unmap();
         delete ip;
       }},
      {"Latch::wait_for",
       [] { return static_cast<void*>(new InPage<weft::Latch>(1)); },
       [](void* p) { return static_cast<InPage<weft::Latch>*>(p)->obj->wait_for(1ms); },
       [](void* p) { static_cast<InPage<weft::Latch>*>(p)->obj->count_down(); },
       [](void* p) {
         auto* ip = static_cast<InPage<weft::Latch>*>(p);
         ip->destroy_and_unmap();
         delete ip;
       }},
      {"Semaphore::try_acquire_for",
       [] { return static_cast<void*>(new InPage<weft::Semaphore>(0)); },
       [](void* p) { return static_cast<InPage<weft::Semaphore>*>(p)->obj->try_acquire_for(1ms); },
       [](void* p) { static_cast<InPage<weft::Semaphore>*>(p)->obj->release(); },
       [](void* p) {
         auto* ip = static_cast<InPage<weft::Semaphore>*>(p);
         ip->destroy_and_unmap();
         delete ip;
       }},
  };
  for (const TimedCase& c : cases)
    for (int stage : {0, 1})
      for (bool on_ult : {false, true}) RunRace(rt, c, stage, on_ult);
  weft::rt::sync::g_cancel_wait_hook = nullptr;
  delete cvs;
}

// The same protocol without the hook, at full speed: a timed waiter races
// a release(), and when the permit went to the waiter (the waiter was
// popped: it counts as released) the semaphore is deleted at once, while
// the waiter may still be timing out in cancel_wait. Run under ASan
// (build-asan) a late touch is a heap-use-after-free report; here the
// outcomes must be consistent and nothing may hang.
TEST(DestroyAfterRelease, RaceWithoutHook) {
  Watchdog wd(120s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kRounds = 3000;
  int early = 0, timed_out = 0;
  for (int i = 0; i < kRounds; ++i) {
    auto* sem = new weft::Semaphore(0);
    std::atomic<bool> waiter_started{false};
    std::atomic<int> got{-1};
    weft::Ult u = rt.spawn([&got, &waiter_started, sem, i] {
      waiter_started = true;
      got = sem->try_acquire_for(std::chrono::microseconds(i % 50)) ? 1 : 0;
    });
    while (!waiter_started.load()) std::this_thread::yield();
    for (int k = 0; k < i % 7; ++k) std::this_thread::yield();
    sem->release();
    if (sem->available() == 0) {
      // The waiter was popped with the permit: it is released, so the
      // semaphore may go now, whatever the waiter is doing.
      delete sem;
      ++early;
      ASSERT_TRUE(u.join().ok());
      EXPECT_EQ(got.load(), 1) << "round " << i << ": popped with the permit but reported a timeout";
    } else {
      // The waiter had not taken it yet: it may still take it from the
      // count, or have timed out. Either way exactly one permit exists.
      ASSERT_TRUE(u.join().ok());
      EXPECT_EQ(sem->available(), got.load() == 1 ? 0u : 1u) << "round " << i << ": a permit lost or duplicated";
      timed_out += got.load() == 0;
      delete sem;
    }
  }
  printf("[   INFO   ] %d deleted while the waiter may still run, %d timed out\n", early, timed_out);
}

// ---------------------------------------------------------------------------
// Sizes: the Mutex is one cache line, its counters live outside it
// A thread that is not a worker releases a parked ULT, the ULT exits, and
// the runtime is shut down and freed at once, while the releasing thread
// may still be inside the scheduler (it queues the ULT, then wakes a
// worker, reading the workers' pollers). shutdown must wait for it.
// Regression (issue 9, found by the TSan gate): before the foreign-waker
// count, shutdown did not wait, and ~Runtime freed the pollers under the
// waker: under ThreadSanitizer (tests/run-all.sh) this test reports a data
// race between ~UringEngine/~EpollEngine and Engine::wake(), and under ASan
// a heap-use-after-free when the interleaving happens.
TEST(DestroyAfterRelease, RuntimeFreedRightAfterAForeignWake) {
  Watchdog wd(120s, TestName());
  for (int round = 0; round < 200; ++round) {
    auto rt = std::make_unique<weft::Runtime>(weft::Options{.workers = 2});
    ASSERT_TRUE(rt->status().ok());
    weft::Semaphore sem(0);
    std::atomic<bool> done{false};
    weft::Ult u = rt->spawn([&] {
      sem.acquire();
      done = true;
    });
    const weft::UltId id = u.id();
    ASSERT_TRUE(WaitUntil([&] { return Parked(id); })) << "round " << round << ": the ULT never parked";
    std::thread waker([&] { sem.release(); });
    ASSERT_TRUE(u.join().ok());
    EXPECT_TRUE(done.load());
    ASSERT_TRUE(rt->shutdown().ok());
    rt.reset();  // frees the workers and their pollers
    waker.join();
  }
}

// ---------------------------------------------------------------------------

// Regression (issue 9 #13): on 15df0bc weft::Mutex was 128 bytes, its
// statistics counters on its own cache lines (written on contended paths),
// with a dead field (permits_); Barrier and RwLock carried dead fields too.
// (RwLock grew from 32 to 40 bytes in issue 13: the writer's identity, which
// priority inheritance lends to.)
TEST(Sizes, MutexIsOneCacheLine) {
  EXPECT_LE(sizeof(weft::Mutex), 64u);
  EXPECT_LE(sizeof(weft::detail::WaitQueue), 24u);
  EXPECT_LE(sizeof(weft::Barrier), 32u);
  EXPECT_LE(sizeof(weft::RwLock), 40u);
}

// The counters still count, from the first contention on; an uncontended
// Mutex reports zeros.
TEST(Sizes, MutexStatsStillCount) {
  Watchdog wd(60s, TestName());
  weft::Mutex m;
  m.lock();
  m.unlock();
  EXPECT_EQ(m.stats().contended, 0u);
  EXPECT_EQ(m.stats().parks, 0u);
  m.lock();
  std::thread t([&] {
    m.lock();
    m.unlock();
  });
  ASSERT_TRUE(WaitUntil([&] { return m.stats().parks == 1; }));
  weft::Mutex::Stats s = m.stats();
  EXPECT_EQ(s.contended, 1u);
  m.unlock();
  t.join();
}

}  // namespace
