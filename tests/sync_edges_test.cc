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
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

namespace {

using namespace std::chrono_literals;

// The system call the thread `tid` of this process is blocked in, or -1.
long BlockedSyscall(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string first;
  if (!(f >> first) || first == "running") return -1;
  try {
    return std::stol(first);
  } catch (...) {
    return -1;
  }
}

// Whether the ULT `id` is parked (white-box: its descriptor's state).
bool Parked(weft::UltId id) {
  weft::rt::Ult* u = weft::rt::ult_table::lookup(id.value());
  return u != nullptr && u->generation.load() == id.generation() &&
         (u->state.load() & weft::rt::ult_state::kStateMask) == weft::rt::ult_state::kParked;
}

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
// Sizes: the Mutex is one cache line, its counters live outside it
// ---------------------------------------------------------------------------

// Regression (issue 9 #13): on 15df0bc weft::Mutex was 128 bytes, its
// statistics counters on its own cache lines (written on contended paths),
// with a dead field (permits_); Barrier and RwLock carried dead fields too.
TEST(Sizes, MutexIsOneCacheLine) {
  EXPECT_LE(sizeof(weft::Mutex), 64u);
  EXPECT_LE(sizeof(weft::detail::WaitQueue), 24u);
  EXPECT_LE(sizeof(weft::Barrier), 32u);
  EXPECT_LE(sizeof(weft::RwLock), 32u);
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
