// Tests for weft::blocking() regions and the monitor's handoff and hog
// rescue (runtime/blocking.cc, runtime/monitor.cc). This binary does not
// use weft::io, so the workers wait on the FutexPoller: the tests are about
// the scheduler.
//
// Every test runs under a watchdog that aborts with a message, so a stuck
// worker or a lost ULT fails instead of hanging.
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/watchdog.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/scheduler.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;





int ActiveWorkers(weft::Runtime& rt) {
  int n = 0;
  for (const auto& w : rt.stats().workers) n += w.active ? 1 : 0;
  return n;
}

// Counts ticks of a ULT that sleeps 1 ms in a loop, around a call `blocker`
// made from another ULT on a 1-worker runtime. Returns the ticks counted
// while blocker ran; *ms is its duration, *expected the ticks the ticker's
// own rate (measured over 100 ms just before) predicts for it, and
// *max_gap_ms the longest time without a tick from the start of the call
// to its end.
template <class F>
int TicksDuring(weft::Runtime& rt, F blocker, double* ms, double* expected, double* max_gap_ms = nullptr) {
  std::vector<int64_t> stamps;
  stamps.reserve(20000);
  std::atomic<int64_t> start_ns{0}, end_ns{0};
  std::atomic<int> ticks{0};
  std::atomic<bool> stop{false};
  int during = -1;
  absl::Status s = rt.block_on([&] {
    weft::Ult ticker = weft::spawn([&] {
      while (!stop.load()) {
        weft::this_ult::sleep_for(milliseconds(1));
        if (stamps.size() < stamps.capacity()) stamps.push_back(Clock::now().time_since_epoch().count());
        ++ticks;
      }
    });
    while (ticks.load() < 5) weft::this_ult::sleep_for(milliseconds(1));  // it runs
    int b0 = ticks.load();
    Clock::time_point t0 = Clock::now();
    weft::this_ult::sleep_for(milliseconds(100));
    double rate = (ticks.load() - b0) / MsSince(t0);
    weft::Ult b = weft::spawn([&] {
      int before = ticks.load();
      Clock::time_point t1 = Clock::now();
      start_ns = t1.time_since_epoch().count();
      blocker();
      end_ns = Clock::now().time_since_epoch().count();
      *ms = MsSince(t1);
      during = ticks.load() - before;
    });
    EXPECT_TRUE(b.join().ok());
    *expected = rate * *ms;
    stop = true;
    EXPECT_TRUE(ticker.join().ok());
  });
  EXPECT_TRUE(s.ok()) << s;
  if (max_gap_ms != nullptr) {
    int64_t prev = start_ns.load(), gap = 0;
    for (int64_t t : stamps) {
      if (t <= start_ns.load()) continue;
      if (t > end_ns.load()) break;
      gap = std::max(gap, t - prev);
      prev = t;
    }
    *max_gap_ms = std::max(gap, end_ns.load() - prev) / 1e6;
  }
  return during;
}

// On a 1-worker runtime, a ULT in weft::blocking(sleep 1 s) does not stop a
// ticker ULT: the monitor hands the worker's place to a spare KLT, and the
// ticker keeps ticking: more than half the ticks its own rate predicts, in
// at least one of up to 3 attempts (this VM is shared with other jobs and
// can stall a thread for hundreds of ms; without a handoff every attempt
// counts ~0, see the negative control below), with a handoff counted.
TEST(Blocking, LongRegionDoesNotStopOtherUlts) {
  Watchdog wd(TestName(), 60);
  bool ok = false;
  std::string report;
  for (int attempt = 0; attempt < 3 && !ok; ++attempt) {
    weft::Runtime rt(weft::Options{.workers = 1});
    ASSERT_TRUE(rt.status().ok());
    double ms = 0, expected = 0, gap = 0;
    int during = TicksDuring(rt, [] { weft::blocking([] { sleep(1); }); }, &ms, &expected, &gap);
    EXPECT_GE(rt.stats().handoffs, 1u);
    EXPECT_EQ(ActiveWorkers(rt), 1) << "the handoff must keep the concurrency level";
    char line[200];
    snprintf(line, sizeof line, "%d ticks in %.0f ms (rate predicts %.0f, longest gap %.1f ms); ", during, ms,
             expected, gap);
    report += line;
    ok = during > static_cast<int>(expected * 0.5);
  }
  printf("[   INFO   ] ticks during a 1 s weft::blocking(): %s\n", report.c_str());
  EXPECT_TRUE(ok) << "the ticker was stalled by the blocking region: " << report;
}

// The handoff takes effect about 1 ms after Options::blocking_handoff
// (200 us here) even when the only worker is mostly idle between short
// bursts (a ticker waking every 1 ms, as an io-bound server would): the
// ticker's longest pause during a 300 ms region stays under 20 ms (median
// of 5 rounds). The monitor picks its 100 ms idle tick whenever it happens
// to see every worker asleep, and nothing wakes it when a region starts.
TEST(Blocking, HandoffPromptWhileTickerRuns) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  std::vector<double> gaps;
  std::string all;
  for (int round = 0; round < 5; ++round) {
    double ms = 0, expected = 0, gap = 0;
    TicksDuring(rt, [] { weft::blocking([] { usleep(300 * 1000); }); }, &ms, &expected, &gap);
    gaps.push_back(gap);
    all += std::to_string(static_cast<int>(gap)) + " ";
  }
  std::sort(gaps.begin(), gaps.end());
  printf("[   INFO   ] longest ticker pause per 300 ms region (ms): %s\n", all.c_str());
  EXPECT_LT(gaps[gaps.size() / 2], 20.0) << "the ticker stalled for " << gaps[gaps.size() / 2]
                                         << " ms (median) before the handoff; per round (ms): " << all;
}

// The negative control: the same plain usleep outside weft::blocking, with
// handoffs off (Options::blocking_handoff = max), stalls the only worker,
// so the ticker does not tick (which is what makes the tests above and
// below meaningful); no handoff happens.
TEST(Blocking, PlainBlockingCallStallsTheWorkerWithHandoffsOff) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1, .blocking_handoff = microseconds::max()});
  ASSERT_TRUE(rt.status().ok());
  double ms = 0, expected = 0;
  int during = TicksDuring(rt, [] { usleep(500 * 1000); }, &ms, &expected);
  printf("[   INFO   ] ticks during a plain %.0f ms usleep(), handoffs off: %d (the ticker's rate predicts %.0f)\n", ms,
         during, expected);
  EXPECT_GT(expected, 100) << "the ticker did not tick before the call";
  EXPECT_LE(during, 2);
  EXPECT_EQ(rt.stats().handoffs, 0u);
  EXPECT_EQ(rt.stats().kernel_block_handoffs, 0u);
}

// Issue 15, layer 2 (the seeds' SIGWAITING): a worker whose KLT sleeps in
// the kernel inside a ULT, outside any weft::blocking region, is found by
// the monitor and its place handed to a spare, so the other ULTs of that
// worker keep running. Each blocker runs 500 ms on a 1-worker runtime
// beside a 1 ms ticker; the ticker's longest pause must stay under 100 ms
// (measured 3-14 ms here, also beside two CPU hogs; best of 5 attempts:
// this VM is shared and can stall a thread for hundreds of ms; without the
// detection every attempt pauses ~500 ms, see the control above), a
// kernel-block handoff is counted, and the concurrency level is kept.
template <class F>
void ExpectHandedOff(const char* what, F blocker) {
  std::string report;
  bool ok = false;
  for (int attempt = 0; attempt < 5 && !ok; ++attempt) {
    weft::Runtime rt(weft::Options{.workers = 1});
    ASSERT_TRUE(rt.status().ok());
    double ms = 0, expected = 0, gap = 0;
    TicksDuring(rt, blocker, &ms, &expected, &gap);
    weft::RuntimeStats st = rt.stats();
    char line[200];
    snprintf(line, sizeof line, "%.0f ms call, longest ticker pause %.1f ms, %lu kernel-block handoffs; ", ms, gap,
             static_cast<unsigned long>(st.kernel_block_handoffs));
    report += line;
    EXPECT_EQ(st.handoffs, 0u) << "no weft::blocking region was opened";
    EXPECT_EQ(ActiveWorkers(rt), 1) << "the handoff must keep the concurrency level";
    ok = gap < 100 && st.kernel_block_handoffs >= 1 && ms >= 400;
  }
  printf("[   INFO   ] %s: %s\n", what, report.c_str());
  EXPECT_TRUE(ok) << what << " stalled the worker: " << report;
}

TEST(Blocking, RawReadOfAnEmptyPipeIsHandedOff) {
  Watchdog wd(TestName(), 120);
  ExpectHandedOff("raw syscall(SYS_read) of a pipe empty for 500 ms", [] {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    std::thread writer([&] {
      std::this_thread::sleep_for(milliseconds(500));
      char c = 'x';
      EXPECT_EQ(::write(p[1], &c, 1), 1);
    });
    char c = 0;
    EXPECT_EQ(syscall(SYS_read, p[0], &c, 1), 1);
    EXPECT_EQ(c, 'x');
    writer.join();
    close(p[0]);
    close(p[1]);
  });
}

TEST(Blocking, PlainUsleepIsHandedOff) {
  Watchdog wd(TestName(), 120);
  ExpectHandedOff("plain usleep(500 ms)", [] { usleep(500 * 1000); });
}

// A std::mutex held by a foreign thread for 500 ms: the ULT's KLT sleeps in
// FUTEX_WAIT (glibc's lock), which is what the detection sees.
TEST(Blocking, SleepingPthreadMutexIsHandedOff) {
  Watchdog wd(TestName(), 120);
  ExpectHandedOff("std::mutex held by a thread for 500 ms", [] {
    std::mutex m;
    std::atomic<bool> held{false};
    std::thread holder([&] {
      std::lock_guard<std::mutex> g(m);
      held = true;
      std::this_thread::sleep_for(milliseconds(500));
    });
    while (!held.load()) std::this_thread::yield();  // the KLT's own yield: the ULT does not switch
    std::lock_guard<std::mutex> g(m);
    holder.join();
  });
}

// After a kernel-block handoff the blocked KLT, once its call returns,
// goes on running its ULT as a retired worker (its ULT has not switched).
// If that ULT then computes without ever calling into weft, one KLT more
// than the concurrency level would run ULTs for as long; when an active
// worker is idle meanwhile (here the spare that took the slot, with
// nothing to run), the two swap back: the ULT's KLT is active again within
// a few monitor ticks (bound 1 s), and the pool has one active worker.
TEST(Blocking, HandedOffWorkerRejoinsWhenItsCallReturns) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::atomic<int> tid{0};
  std::atomic<bool> computing{false}, stop{false};
  weft::Ult a = rt.spawn([&] {
    tid = Tid();
    char c = 0;
    EXPECT_EQ(syscall(SYS_read, p[0], &c, 1), 1);
    computing = true;
    while (!stop.load()) {
    }  // no call into weft: the ULT never switches by itself
  });
  while (tid.load() == 0) std::this_thread::sleep_for(milliseconds(1));
  ASSERT_TRUE(WaitUntil([&] { return rt.stats().kernel_block_handoffs >= 1; }, milliseconds(5000)))
      << "the read was never handed off";
  auto worker_of_a = [&] {
    for (const auto& w : rt.stats().workers)
      if (w.tid == tid.load()) return std::optional<bool>(w.active);
    return std::optional<bool>();
  };
  EXPECT_EQ(worker_of_a(), std::optional<bool>(false)) << "handed off, its worker should be retired";
  char c = 'x';
  ASSERT_EQ(::write(p[1], &c, 1), 1);
  ASSERT_TRUE(WaitUntil([&] { return computing.load(); }, milliseconds(5000)));
  Clock::time_point t0 = Clock::now();
  bool rejoined = WaitUntil([&] { return worker_of_a() == std::optional<bool>(true); }, milliseconds(1000));
  double ms = MsSince(t0);
  int active = ActiveWorkers(rt);
  stop = true;
  EXPECT_TRUE(a.join().ok());
  close(p[0]);
  close(p[1]);
  printf("[   INFO   ] the handed-off worker rejoined %.1f ms after its call returned\n", ms);
  EXPECT_TRUE(rejoined) << "the KLT running the ULT stayed retired while the active worker idled";
  EXPECT_EQ(active, 1);
}

// Never for a ULT that computes: 300 ms of a loop with no call, on one
// worker with time slices off, beside queued ULTs — the monitor sees its
// KLT on a CPU ('R') and hands nothing off (the hog rescue may move the
// queued ULTs: that is its business, not this one's).
TEST(Blocking, ComputingUltIsNotHandedOff) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = microseconds(0)});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<bool> spin_started{false};
  weft::Ult hog = rt.spawn([&] {
    spin_started = true;
    Clock::time_point t0 = Clock::now();
    volatile uint64_t x = 0;
    while (Clock::now() - t0 < milliseconds(300)) x = x + 1;
  });
  while (!spin_started.load()) std::this_thread::sleep_for(milliseconds(1));
  std::vector<weft::Ult> queued;
  for (int i = 0; i < 4; ++i) queued.push_back(rt.spawn([] {}));
  EXPECT_TRUE(hog.join().ok());
  for (auto& u : queued) EXPECT_TRUE(u.join().ok());
  EXPECT_EQ(rt.stats().kernel_block_handoffs, 0u) << "a computing ULT was taken for a blocked one";
}

// A region shorter than Options::blocking_handoff causes no handoff, and fn
// runs on the caller's own KLT: gettid() is the same before and inside, and
// the ULT's id is unchanged after. (After the region the ULT may go on on
// another KLT: its end is a scheduling point, like a yield.)
TEST(Blocking, ShortRegionNoHandoffSameKlt) {
  Watchdog wd(TestName(), 60);
  // A 2 s threshold: this shared VM can deschedule a thread for hundreds of ms.
  weft::Runtime rt(weft::Options{.workers = 2, .blocking_handoff = milliseconds(2000)});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<int> mismatches{0};
  absl::Status s = rt.block_on([&] {
    std::vector<weft::Ult> us;
    for (int u = 0; u < 4; ++u) {
      us.push_back(weft::spawn([&] {
        for (int i = 0; i < 50; ++i) {
          weft::UltId id = weft::this_ult::id();
          int before = Tid();
          int inside = weft::blocking([] {
            usleep(1000);  // 1 ms, far below the threshold
            return Tid();
          });
          if (before != inside || weft::this_ult::id() != id) ++mismatches;
          weft::this_ult::yield();
        }
      }));
    }
    for (auto& u : us) EXPECT_TRUE(u.join().ok());
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(rt.stats().handoffs, 0u) << "a region shorter than blocking_handoff was handed off";
}


// Inside the region the KLT counts as a foreign thread: in_ult() is false
// and id() invalid; a weft::Mutex held by another ULT is waited for by
// blocking the thread (it is taken once the holder releases it, 30 ms
// later). After the region the caller is a ULT again, with the same id.
TEST(Blocking, InsideRegionIsForeign) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  weft::Mutex m;
  std::atomic<bool> held{false};
  std::atomic<int64_t> released_at{0};
  absl::Status s = rt.block_on([&] {
    weft::Ult holder = weft::spawn([&] {
      m.lock();
      held = true;
      weft::this_ult::sleep_for(milliseconds(30));
      released_at = Clock::now().time_since_epoch().count();
      m.unlock();
    });
    while (!held.load()) weft::this_ult::yield();
    weft::UltId id = weft::this_ult::id();
    ASSERT_TRUE(id.valid());
    bool in_ult = true;
    weft::UltId id_inside = id;
    int tid_lock_before = 0, tid_lock_after = 0;
    int64_t acquired_at = 0;
    bool try_inside = true;
    weft::blocking([&] {
      in_ult = weft::this_ult::in_ult();
      id_inside = weft::this_ult::id();
      try_inside = m.try_lock();  // held: fails
      tid_lock_before = Tid();
      m.lock();  // blocks this KLT until the holder unlocks
      acquired_at = Clock::now().time_since_epoch().count();
      tid_lock_after = Tid();
      m.unlock();
      // Uncontended lock/unlock inside works too.
      m.lock();
      m.unlock();
    });
    EXPECT_FALSE(in_ult);
    EXPECT_FALSE(id_inside.valid());
    EXPECT_FALSE(try_inside);
    EXPECT_EQ(tid_lock_before, tid_lock_after) << "the region's lock() must block the thread, not move it";
    EXPECT_GE(acquired_at, released_at.load()) << "lock() returned before the holder released the mutex";
    EXPECT_TRUE(weft::this_ult::in_ult());
    EXPECT_EQ(weft::this_ult::id(), id);
    // And the mutex works from the ULT afterwards.
    m.lock();
    m.unlock();
    EXPECT_TRUE(holder.join().ok());
  });
  ASSERT_TRUE(s.ok()) << s;
}

// After a handoff the ULT that was blocking carries on correctly: the
// region's result is right, and it can yield, sleep, lock, spawn and join
// afterwards. During the region, 2,000 ULTs spawned from a foreign thread
// all run to completion (the runtime kept its concurrency: the blocked
// worker's place went to a spare), and the number of active workers is
// unchanged.
TEST(Blocking, HandoffKeepsConcurrencyAndCallerContinues) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  constexpr int kSpawned = 2000;
  std::atomic<bool> in_region{false};
  std::atomic<int> done{0};
  int seen_in_region = -1;
  int active_before = ActiveWorkers(rt);
  std::thread spawner([&] {
    while (!in_region.load()) std::this_thread::sleep_for(microseconds(100));
    for (int i = 0; i < kSpawned; ++i) {
      weft::Ult u = rt.spawn([&] {
        weft::this_ult::yield();
        if (done.load() % 7 == 0) weft::this_ult::sleep_for(microseconds(50));
        ++done;
      });
      EXPECT_TRUE(u.status().ok());
      EXPECT_TRUE(u.detach().ok());
    }
  });
  absl::Status s = rt.block_on([&] {
    weft::UltId id = weft::this_ult::id();
    int result = weft::blocking([&] {
      in_region = true;
      // Stay in the region until every spawned ULT has run (at most 10 s).
      Clock::time_point t0 = Clock::now();
      while (done.load() < kSpawned && MsSince(t0) < 10000) usleep(1000);
      seen_in_region = done.load();
      return 6 * 7;
    });
    EXPECT_EQ(result, 42);
    EXPECT_EQ(weft::this_ult::id(), id);
    EXPECT_TRUE(weft::this_ult::in_ult());
    // Everything a ULT does still works.
    for (int i = 0; i < 10; ++i) weft::this_ult::yield();
    weft::this_ult::sleep_for(milliseconds(2));
    weft::Mutex m;
    m.lock();
    m.unlock();
    std::atomic<int> child{0};
    weft::Ult c = weft::spawn([&] {
      weft::this_ult::sleep_for(milliseconds(1));
      child = 1;
    });
    EXPECT_TRUE(c.join().ok());
    EXPECT_EQ(child.load(), 1);
    // A second region on the same ULT (now on the spare's worker) works.
    EXPECT_EQ(weft::blocking([] {
                usleep(5000);
                return 7;
              }),
              7);
  });
  spawner.join();
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(seen_in_region, kSpawned) << "ULTs spawned during the region did not all run while it lasted";
  EXPECT_GE(rt.stats().handoffs, 1u);
  EXPECT_EQ(ActiveWorkers(rt), active_before);
  EXPECT_EQ(rt.concurrency(), 1);
  ASSERT_TRUE(rt.shutdown().ok());
  EXPECT_EQ(rt.stats().live, 0u);
}

// True once thread `tid` of this process is asleep in its poller's idle
// wait: futex(2) (FutexPoller, or an io engine whose ring is not set up),
// io_uring_enter(2) (an io_uring engine) or epoll_wait (the epoll engine);
// false after 5 s. (Every program that links weft has the io engines: the
// process calls weft interposes live in io/, so an idle worker sets up its
// ring at its first wait. This looked for futex(2) only, and failed every
// round once the io layer was always linked.)
// Waits without sleeping in the kernel: these helpers run in a ULT, and
// a ULT whose KLT sleeps past Options::blocking_handoff is handed off
// (which would move the test's ULT to a retired worker).
void SpinFor(microseconds d) {
  for (Clock::time_point t = Clock::now(); Clock::now() - t < d;) {
  }
}

bool WaitAsleepInIdleWait(int tid) {
  std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
  Clock::time_point t0 = Clock::now();
  while (MsSince(t0) < 5000) {
    FILE* f = fopen(path.c_str(), "re");
    if (f == nullptr) return false;
    long nr = -1;
    int got = fscanf(f, "%ld", &nr);
    fclose(f);
    if (got == 1 && (nr == SYS_futex || nr == SYS_io_uring_enter || nr == SYS_epoll_wait || nr == SYS_epoll_pwait ||
                     nr == SYS_epoll_pwait2))
      return true;
    SpinFor(microseconds(100));
  }
  return false;
}

// The tid of the active worker other than the caller's (0 after 5 s).
int OtherWorkerTid(weft::Runtime& rt, int mine) {
  Clock::time_point t0 = Clock::now();
  while (MsSince(t0) < 5000) {
    for (const auto& w : rt.stats().workers)
      if (w.active && w.tid != 0 && w.tid != mine) return w.tid;
    SpinFor(microseconds(100));
  }
  return 0;
}

// Hog rescue: on a 2-worker runtime a ULT waits until the other worker is
// asleep, spawns a child (it lands in the hog's own deque, its wake-up
// deferred: nobody else is woken for it) and spins for 50 ms without a
// switch (longer, up to 10 s, until the child has run: this VM is shared and
// a woken thread may wait for a CPU). Only the monitor can get the child
// out: it must run during the spin, on the other kernel thread, and
// hog_rescues must grow. (Before
// spawning, the hog keeps its worker busy for 110 ms, so that the monitor
// is past any 100 ms idle tick: see HogRescueAfterIdleIsPrompt.)
TEST(Blocking, HogRescueRunsQueuedUltsElsewhere) {
  Watchdog wd(TestName(), 60);
  // The hog rescue alone: time-slice preemption would run the queued ULT on the hog's own KLT.
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = microseconds(0)});
  ASSERT_TRUE(rt.status().ok());
  for (int round = 0; round < 5; ++round) {
    uint64_t rescues_before = rt.stats().hog_rescues;
    std::atomic<int64_t> child_ran_at{0};
    std::atomic<int> child_tid{0};
    int hog_tid = 0;
    int64_t spin_end = 0;
    absl::Status s = rt.block_on([&] {
      hog_tid = Tid();
      int other = OtherWorkerTid(rt, hog_tid);
      ASSERT_NE(other, 0);
      ASSERT_TRUE(WaitAsleepInIdleWait(other)) << "the other worker never went to sleep";
      // Busy (not idle) for one idle monitor tick: a spin, not a sleep (a
      // KLT asleep in the kernel is handed off, and the child would be
      // spawned on a retired worker).
      for (Clock::time_point b = Clock::now(); MsSince(b) < 110;) {
      }
      ASSERT_TRUE(WaitAsleepInIdleWait(other));
      weft::Ult child = weft::spawn([&] {
        child_tid = Tid();
        child_ran_at = Clock::now().time_since_epoch().count();
      });
      Clock::time_point t0 = Clock::now();
      while (MsSince(t0) < 50 || (child_ran_at.load() == 0 && MsSince(t0) < 10000)) {
      }  // no switch, no runtime call
      spin_end = Clock::now().time_since_epoch().count();
      EXPECT_TRUE(child.join().ok());
    });
    ASSERT_TRUE(s.ok());
    EXPECT_NE(child_ran_at.load(), 0);
    EXPECT_LT(child_ran_at.load(), spin_end) << "round " << round << ": the queued ULT waited for the hog";
    EXPECT_NE(child_tid.load(), hog_tid);
    EXPECT_GT(rt.stats().hog_rescues, rescues_before) << "round " << round;
  }
}

// The monitor looks at the workers every 1 ms while any is awake but every
// 100 ms when all were idle, and nothing wakes it early. A hog that starts
// right after an idle period must still be rescued about 1 ms after the
// threshold (Options::blocking_handoff): measured as spawn -> child start
// over 10 rounds, each after 150 ms of idleness (the median must be under
// 20 ms; the hog spins up to 150 ms).
TEST(Blocking, HogRescueAfterIdleIsPrompt) {
  Watchdog wd(TestName(), 60);
  // The hog rescue alone: time-slice preemption would run the queued ULT on the hog's own KLT.
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = microseconds(0)});
  ASSERT_TRUE(rt.status().ok());
  std::vector<double> lat;
  for (int round = 0; round < 10; ++round) {
    std::this_thread::sleep_for(milliseconds(150));  // everything idle: the monitor slows down
    std::atomic<int64_t> child_ran_at{0};
    int64_t spawned_at = 0;
    absl::Status s = rt.block_on([&] {
      int other = OtherWorkerTid(rt, Tid());
      ASSERT_NE(other, 0);
      ASSERT_TRUE(WaitAsleepInIdleWait(other));
      spawned_at = Clock::now().time_since_epoch().count();
      weft::Ult child = weft::spawn([&] { child_ran_at = Clock::now().time_since_epoch().count(); });
      Clock::time_point t0 = Clock::now();
      while (child_ran_at.load() == 0 && MsSince(t0) < 150) {
      }
      EXPECT_TRUE(child.join().ok());
    });
    ASSERT_TRUE(s.ok());
    lat.push_back((child_ran_at.load() - spawned_at) / 1e6);
  }
  std::string all;
  for (double l : lat) all += std::to_string(static_cast<int>(l)) + " ";
  std::sort(lat.begin(), lat.end());
  double med = lat[lat.size() / 2];
  printf("[   INFO   ] hog rescue after idle: spawn -> run ms: %s\n", all.c_str());
  EXPECT_LT(med, 20.0) << "a ULT queued behind a hog waited " << med << " ms (median)"
                      << " ms (the monitor was asleep in its 100 ms idle tick); latencies (ms): " << all;
}

// The same for a blocking region: a region entered right after an idle
// period is handed off about 1 ms after Options::blocking_handoff, not after
// the monitor's 100 ms idle tick. Measured from inside the region (until
// stats().handoffs grows) over 10 rounds; the median must be under 20 ms.
TEST(Blocking, HandoffAfterIdleIsPrompt) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  std::vector<double> lat;
  for (int round = 0; round < 10; ++round) {
    std::this_thread::sleep_for(milliseconds(150));
    uint64_t before = rt.stats().handoffs;
    double took = -1;
    absl::Status s = rt.block_on([&] {
      weft::blocking([&] {
        Clock::time_point t0 = Clock::now();
        while (rt.stats().handoffs == before && MsSince(t0) < 2000) std::this_thread::sleep_for(microseconds(100));
        took = MsSince(t0);
      });
    });
    ASSERT_TRUE(s.ok());
    lat.push_back(took);
  }
  std::string all;
  for (double l : lat) all += std::to_string(static_cast<int>(l)) + " ";
  std::sort(lat.begin(), lat.end());
  double med = lat[lat.size() / 2];
  printf("[   INFO   ] handoff after idle: region -> handoff ms: %s\n", all.c_str());
  EXPECT_LT(med, 20.0) << "handoff took " << med << " ms (median)"
                      << " ms (blocking_handoff is 200 us; the monitor slept its 100 ms idle tick); latencies (ms): "
                      << all;
}

// Several ULTs queued behind a hog all run during its spin (by stealing or
// by a rescue; the spin lasts 50 ms, longer up to 10 s until they ran), none
// is lost.
TEST(Blocking, HogWithManyQueuedUlts) {
  Watchdog wd(TestName(), 60);
  // The hog rescue alone: time-slice preemption would run the queued ULT on the hog's own KLT.
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = microseconds(0)});
  ASSERT_TRUE(rt.status().ok());
  constexpr int kChildren = 32;
  std::atomic<int> ran_during{0}, ran{0};
  std::atomic<bool> spinning{true};
  absl::Status s = rt.block_on([&] {
    std::vector<weft::Ult> cs;
    for (int i = 0; i < kChildren; ++i) {
      cs.push_back(weft::spawn([&] {
        if (spinning.load()) ++ran_during;
        ++ran;
      }));
    }
    Clock::time_point t0 = Clock::now();
    while (MsSince(t0) < 50 || (ran.load() < kChildren && MsSince(t0) < 10000)) {
    }
    spinning = false;
    for (auto& c : cs) EXPECT_TRUE(c.join().ok());
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(ran.load(), kChildren);
  EXPECT_EQ(ran_during.load(), kChildren) << "queued ULTs waited for the hog";
}

// Many ULTs entering regions of random lengths (some shorter, some longer
// than the threshold) at once, mixed with ULTs that only compute and yield:
// every ULT finishes, every region returns its own result, and the pool
// keeps its concurrency level. Spare KLTs stay bounded by max_workers.
TEST(Blocking, ManyConcurrentRegions) {
  Watchdog wd(TestName(), 90);
  weft::Runtime rt(weft::Options{.workers = 2, .max_workers = 6});
  ASSERT_TRUE(rt.status().ok());
  constexpr int kUlts = 64, kRegions = 20;
  std::atomic<int> wrong{0}, finished{0}, other{0};
  absl::Status s = rt.block_on([&] {
    std::vector<weft::Ult> us;
    for (int u = 0; u < kUlts; ++u) {
      us.push_back(weft::spawn([&, u] {
        uint64_t rng = static_cast<uint64_t>(u) * 7919 + 1;
        weft::UltId id = weft::this_ult::id();
        for (int i = 0; i < kRegions; ++i) {
          rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
          int us_sleep = static_cast<int>((rng >> 33) % 1500);
          int r = weft::blocking([&] {
            usleep(static_cast<useconds_t>(us_sleep));
            return u * 1000 + i;
          });
          if (r != u * 1000 + i || weft::this_ult::id() != id || !weft::this_ult::in_ult()) ++wrong;
          if ((rng >> 40) % 3 == 0) weft::this_ult::yield();
          if ((rng >> 42) % 5 == 0) weft::this_ult::sleep_for(microseconds(200));
        }
        ++finished;
      }));
      us.push_back(weft::spawn([&] {
        for (int i = 0; i < 200; ++i) {
          weft::this_ult::yield();
          if (i % 50 == 0) weft::this_ult::sleep_for(microseconds(300));
        }
        ++other;
      }));
    }
    for (auto& u : us) EXPECT_TRUE(u.join().ok());
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(finished.load(), kUlts);
  EXPECT_EQ(other.load(), kUlts);
  weft::RuntimeStats st = rt.stats();
  EXPECT_GE(st.handoffs, 1u);
  EXPECT_LE(static_cast<int>(st.workers.size()), 6) << "more KLTs than max_workers";
  EXPECT_EQ(ActiveWorkers(rt), 2);
  printf("[   INFO   ] %llu handoffs, %zu pool KLTs\n", static_cast<unsigned long long>(st.handoffs),
         st.workers.size());
}

// Spawns made from inside a long region (the KLT counts as a foreign
// thread there) run while the region lasts, including spawns made right
// around the moment of the handoff (waiting up to 10 s for them: this VM
// is shared and can stall a thread for long).
TEST(Blocking, SpawnFromInsideRegionRuns) {
  Watchdog wd(TestName(), 90);
  weft::Runtime rt(weft::Options{.workers = 1, .blocking_handoff = microseconds(200)});
  ASSERT_TRUE(rt.status().ok());
  int stranded_rounds = 0;
  for (int round = 0; round < 40; ++round) {
    std::atomic<int> done{0};
    int spawned = 0;
    int seen = -1;
    absl::Status s = rt.block_on([&] {
      weft::blocking([&] {
        Clock::time_point t0 = Clock::now();
        // Spawn continuously across the handoff (~200 us .. ~1.2 ms).
        while (MsSince(t0) < 3) {
          weft::Ult u = rt.spawn([&] { ++done; });
          if (u.status().ok()) {
            ++spawned;
            (void)u.detach();
          }
        }
        Clock::time_point t1 = Clock::now();
        while (done.load() < spawned && MsSince(t1) < 10000) usleep(200);
        seen = done.load();
      });
    });
    ASSERT_TRUE(s.ok());
    if (seen != spawned) ++stranded_rounds;
    EXPECT_EQ(seen, spawned) << "round " << round << ": " << spawned - seen
                             << " ULTs spawned inside the region did not run while it lasted";
    // They all run eventually.
    Clock::time_point t2 = Clock::now();
    while (done.load() < spawned && MsSince(t2) < 5000) std::this_thread::sleep_for(milliseconds(1));
    EXPECT_EQ(done.load(), spawned);
  }
  EXPECT_EQ(stranded_rounds, 0);
}

// A join inside a region releases the joined ULT's descriptor on a KLT
// that is foreign for the region's length: the worker's local cache is its
// owner-only core, which the monitor may be holding for a handoff at that
// moment. The descriptor goes to the process-wide death row instead, so
// the worker's `reaped` count (descriptors recycled into its cache) does
// not move.
//
// Regression (issue 11 review): before the fix release() pushed to the
// worker's cache from inside the region (reaped grew by one; a debug build
// with the core() check aborts: "worker core used off its KLT or inside a
// blocking region").
TEST(Blocking, JoinInsideRegionLeavesTheWorkersCacheAlone) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  auto reaped_here = [&] {
    uint64_t n = 0;
    for (const auto& w : rt.stats().workers) n += w.reaped;
    return n;
  };
  absl::Status s = rt.block_on([&] {
    std::atomic<bool> ran{false};
    weft::Ult u = rt.spawn([&] { ran = true; });
    // One worker: u runs and exits while this ULT yields (live counts
    // this ULT alone once u has exited).
    for (int i = 0; i < 1000000 && (!ran.load() || rt.stats().live != 1); ++i) weft::this_ult::yield();
    ASSERT_TRUE(ran.load());
    ASSERT_EQ(rt.stats().live, 1u) << "the spawned ULT did not exit";
    const uint64_t before = reaped_here();
    absl::Status joined;
    weft::blocking([&] { joined = u.join(); });
    EXPECT_TRUE(joined.ok()) << joined;
    EXPECT_EQ(reaped_here(), before) << "a release inside a blocking region went to the worker's local cache";
  });
  ASSERT_TRUE(s.ok()) << s;
}

// fn inside a region wakes parked ULTs (a semaphore release). Inside the
// region the KLT is foreign: each woken ULT goes to the global queue, and
// runs on another worker while the region lasts. A wake that went to the
// blocked worker's own yield queue instead would stay there until the
// region ends (first case: 2 workers, no handoff within the test), or be
// lost outright if the monitor was moving that queue at the same moment
// (second case: 1 worker, wakes continuous across the handoff).
TEST(Blocking, UnparkFromInsideRegionRuns) {
  Watchdog wd(TestName(), 120);
  for (int workers : {2, 1}) {
  SCOPED_TRACE(workers);
  weft::Runtime rt(weft::Options{.workers = workers,
                                 .blocking_handoff = workers == 1 ? microseconds(200) : microseconds(600000000)});
  ASSERT_TRUE(rt.status().ok());
  int stranded_rounds = 0;
  for (int round = 0; round < (workers == 1 ? 40 : 10); ++round) {
    constexpr int kWaiters = 200;
    weft::Semaphore sem;
    std::atomic<int> done{0};
    int released = 0;
    int seen = -1;
    absl::Status s = rt.block_on([&] {
      std::vector<weft::Ult> waiters;
      for (int i = 0; i < kWaiters; ++i) waiters.push_back(weft::spawn([&] {
        sem.acquire();
        ++done;
      }));
      weft::this_ult::sleep_for(milliseconds(1));  // they all park
      weft::blocking([&] {
        Clock::time_point t0 = Clock::now();
        // Release one every ~15 us, across the handoff (~200 us .. ~1.2 ms).
        while (released < kWaiters) {
          sem.release();
          ++released;
          Clock::time_point t = Clock::now();
          while (MsSince(t) < 0.015) {
          }
          if (MsSince(t0) > 3000) break;
        }
        Clock::time_point t1 = Clock::now();
        while (done.load() < released && MsSince(t1) < 2000) usleep(200);
        seen = done.load();
      });
      for (int i = released; i < kWaiters; ++i) sem.release();
      for (auto& w : waiters) EXPECT_TRUE(w.join().ok());
    });
    ASSERT_TRUE(s.ok());
    if (seen != released) ++stranded_rounds;
    EXPECT_EQ(seen, released) << "round " << round << ": " << released - seen
                              << " ULTs woken inside the region did not run while it lasted";
    EXPECT_EQ(done.load(), kWaiters);
  }
  EXPECT_EQ(stranded_rounds, 0);
  }
}

// After a handoff, the blocked kernel thread sits in a retired slot until
// its call returns. Raising the concurrency must not make that slot active
// (it could run nothing): set_concurrency(2) on a 1-worker runtime whose
// only other thread is still blocked gives two workers that really run
// ULTs at once. Two ULTs that spin without yielding until both have
// started meet only if two workers run them.
TEST(Blocking, RaisedConcurrencySkipsBlockedThread) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1, .blocking_handoff = microseconds(200)});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<bool> release{false};
  weft::Ult blocker = rt.spawn([&] {
    weft::blocking([&] {
      while (!release.load()) usleep(1000);
    });
  });
  ASSERT_TRUE(blocker.status().ok());
  Clock::time_point t0 = Clock::now();
  while (rt.stats().handoffs == 0 && MsSince(t0) < 5000) std::this_thread::sleep_for(milliseconds(1));
  ASSERT_EQ(rt.stats().handoffs, 1u) << "no handoff within 5 s";
  ASSERT_TRUE(rt.set_concurrency(2).ok());
  std::atomic<int> arrived{0};
  std::atomic<int> met{0};
  absl::Status s = rt.block_on([&] {
    auto spinner = [&] {
      ++arrived;
      Clock::time_point t = Clock::now();
      while (arrived.load() < 2 && MsSince(t) < 300) {
      }
      if (arrived.load() == 2) ++met;
    };
    weft::Ult a = weft::spawn(spinner);
    weft::Ult b = weft::spawn(spinner);
    EXPECT_TRUE(a.join().ok());
    EXPECT_TRUE(b.join().ok());
  });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(met.load(), 2) << "the second spinner started only after the first gave up: one worker ran ULTs";
  release = true;
  EXPECT_TRUE(blocker.join().ok());
}

// A region that ends just as the monitor hands its worker off: the KLT
// comes back (its CAS fails: handed off) and its ULT at once yields or
// sleeps on that worker (pushing onto its yield queue or timer heap) while
// the monitor may still be moving those very queues to the spare. 32 ULTs
// run 600 regions each of 100..500 us (spinning, so they end right around
// the 200 us threshold), each followed by a yield or a short sleep, beside
// 64 ULTs that keep timers queued on every worker. Nothing may be lost: a
// ULT whose wake-up timer or queue entry got dropped never finishes. The
// runtime is leaked if that happens (it cannot shut down with a ULT parked
// forever), so the failure is reported instead of hanging. Last in this
// file: when the race corrupts a queue instead, the process crashes.
TEST(Blocking, RegionEndRacingHandoffLosesNothing) {
  Watchdog wd(TestName(), 100);
  auto* rt = new weft::Runtime(weft::Options{.workers = 2, .max_workers = 4});
  ASSERT_TRUE(rt->status().ok());
  constexpr int kRegionUlts = 32, kRegions = 600, kSleepers = 64;
  std::atomic<int> finished{0}, wrong{0};
  std::atomic<bool> stop_sleepers{false};
  std::atomic<int> sleepers_done{0};
  std::vector<weft::Ult> us;
  for (int i = 0; i < kSleepers; ++i) {
    us.push_back(rt->spawn([&, i] {
      while (!stop_sleepers.load()) weft::this_ult::sleep_for(microseconds(300 + (i % 7) * 100));
      ++sleepers_done;
    }));
  }
  for (int u = 0; u < kRegionUlts; ++u) {
    us.push_back(rt->spawn([&, u] {
      uint64_t rng = static_cast<uint64_t>(u) * 2654435761u + 7;
      for (int i = 0; i < kRegions; ++i) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t spin_ns = 100000 + static_cast<int64_t>((rng >> 33) % 400000);
        int r = weft::blocking([&] {
          Clock::time_point t0 = Clock::now();
          while ((Clock::now() - t0).count() < spin_ns) {
          }
          return i;
        });
        if (r != i) ++wrong;
        if ((rng >> 20) & 1) {
          weft::this_ult::yield();
        } else {
          weft::this_ult::sleep_for(microseconds((rng >> 40) % 50));
        }
      }
      ++finished;
    }));
  }
  Clock::time_point t0 = Clock::now();
  while (finished.load() < kRegionUlts && MsSince(t0) < 30000) std::this_thread::sleep_for(milliseconds(5));
  stop_sleepers = true;
  while (sleepers_done.load() < kSleepers && MsSince(t0) < 35000) std::this_thread::sleep_for(milliseconds(5));
  uint64_t handoffs = rt->stats().handoffs;
  printf("[   INFO   ] %d/%d region ULTs and %d/%d sleepers finished in %.0f ms, %llu handoffs\n", finished.load(),
         kRegionUlts, sleepers_done.load(), kSleepers, MsSince(t0), static_cast<unsigned long long>(handoffs));
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(handoffs, 100u) << "the test did not exercise handoffs";
  bool all = finished.load() == kRegionUlts && sleepers_done.load() == kSleepers;
  EXPECT_TRUE(all) << "ULTs were lost (parked forever): a yield-queue entry or timer moved by a handoff while the "
                      "returning region's ULT used the same worker";
  if (!all) return;  // leak rt: its stuck ULTs would make shutdown wait forever
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
  delete rt;
}

// A worker retired by set_concurrency while its KLT is inside a long
// blocking region keeps ULTs it had queued: no thief looks at a retired
// slot, the monitor hands off only active workers' regions, and its own
// hand-over waits for a scheduler pass. The monitor moves them.
// Regression: on the code before this fix (a credentials test under churn
// hung here) the children ran only once the region ended.
TEST(Blocking, RetiredWorkerInRegionGivesUpItsQueuedUlts) {
  Watchdog wd(TestName(), 60);
  for (int attempt = 0; attempt < 50; ++attempt) {
    // No handoff of the region itself within the test.
    weft::Runtime rt(weft::Options{.workers = 2, .blocking_handoff = std::chrono::seconds(30)});
    std::atomic<bool> release_hog{false}, end_region{false}, in_region{false};
    std::atomic<int> ran{0};
    std::atomic<int> slot{-1};
    // Keep the other worker busy so that it steals nothing meanwhile.
    weft::Ult hog = rt.spawn([&] {
      while (!release_hog.load()) {
      }
    });
    std::vector<weft::Ult> children;
    weft::Ult region = rt.spawn([&] {
      slot.store(weft::rt::current_worker()->index.load());
      if (slot.load() != 1) return;  // must run in the slot that retires
      for (int i = 0; i < 4; ++i) children.push_back(weft::spawn([&] { ran.fetch_add(1); }));
      weft::blocking([&] {
        in_region.store(true);
        while (!end_region.load()) usleep(1000);
      });
    });
    while (slot.load() < 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (slot.load() != 1) {
      release_hog.store(true);
      ASSERT_TRUE(hog.join().ok());
      ASSERT_TRUE(region.join().ok());
      continue;
    }
    while (!in_region.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
    ASSERT_TRUE(rt.set_concurrency(1).ok());  // slot 1 (the region's worker) retires
    release_hog.store(true);                  // slot 0 idles: it can run the children
    bool all_ran = WaitUntil([&] { return ran.load() == 4; }, std::chrono::milliseconds(5000));
    int ran_in_region = ran.load();
    end_region.store(true);
    ASSERT_TRUE(hog.join().ok());
    ASSERT_TRUE(region.join().ok());
    for (auto& c : children) ASSERT_TRUE(c.join().ok());
    EXPECT_TRUE(all_ran) << ran_in_region << " of 4 children ran while their retired worker was in a region";
    return;
  }
  GTEST_SKIP() << "the region ULT never landed in slot 1";
}

// Defect (UBSan, clean-clone ASan run: hook_redis_uring): with handoffs
// off (Options::blocking_handoff = max, "never"), a region that opened
// just after the monitor read the clock had a start later than the
// monitor's "now", and the time left, threshold minus a negative elapsed
// time, overflowed int64. Short regions in a loop on two workers for
// 300 ms make the monitor meet regions that have just opened many
// times; fails under UBSan without the fix (checked: the same report in
// the first round; monitor.cc, scan: elapsed is clamped at 0); elsewhere
// it checks that the regions ran.
TEST(Blocking, RegionsOpeningAsTheMonitorLooksWithHandoffsOff) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2, .blocking_handoff = microseconds::max()});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<int64_t> regions{0};
  std::vector<weft::Ult> us;
  for (int k = 0; k < 2; ++k)
    us.push_back(rt.spawn([&] {
      for (Clock::time_point t0 = Clock::now(); MsSince(t0) < 300;) {
        weft::blocking([] {});
        ++regions;
      }
    }));
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
  EXPECT_GT(regions.load(), 1000);
  EXPECT_EQ(rt.stats().handoffs, 0u);
}

// A ULT that calls weft::blocking in a loop, each region far shorter than
// the handoff threshold, must still let its worker's scheduler loop run:
// a ULT parked there with a timer wakes on time. Regression: without the
// scheduling point at the end of a region (blocking.cc) the sleeper woke
// only when the loop gave up, after 3 s (on one worker nothing else could
// fire its timer).
TEST(Blocking, RegionLoopLetsDueTimersFire) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1, .blocking_handoff = std::chrono::seconds(30)});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<bool> woke{false};
  int64_t slept_ms = -1;
  int regions = 0;
  absl::Status s = rt.block_on([&] {
    weft::Ult loop = weft::spawn([&] {  // runs once the sleeper parks
      auto give_up = Clock::now() + std::chrono::seconds(3);
      while (!woke.load() && Clock::now() < give_up) {
        weft::blocking([] { usleep(100); });
        ++regions;
      }
    });
    auto t0 = Clock::now();
    weft::this_ult::sleep_for(milliseconds(5));
    slept_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
    woke.store(true);
    EXPECT_TRUE(loop.join().ok());
  });
  ASSERT_TRUE(s.ok());
  EXPECT_GT(regions, 0) << "the loop never ran while the sleeper slept";
  EXPECT_LT(slept_ms, 1000) << "a 5 ms sleep took " << slept_ms << " ms beside a loop of short regions";
}

// The same on a worker that set_concurrency retires while the loop runs
// there: a retired worker is never handed off, so only the end of a region
// gives its loop (and the sleeper's timer) a turn; the looping ULT then
// moves on to the active worker. Regression: this is how the credentials
// churn test hung in CI (a block_on ULT's 5 ms sleep never ended). Without
// the fix the sleeper woke only when the loop gave up, after 5 s.
TEST(Blocking, RegionLoopOnARetiredWorkerLetsDueTimersFire) {
  Watchdog wd(TestName(), 120);
  for (int attempt = 0; attempt < 50; ++attempt) {
    weft::Runtime rt(weft::Options{.workers = 2, .blocking_handoff = std::chrono::seconds(30)});
    std::atomic<bool> hog_running{false}, release_hog{false}, looping{false}, woke{false};
    std::atomic<int> loop_slot{-1}, sleeper_slot{-1};
    std::atomic<int64_t> slept_ms{-1};
    // Keeps slot 0 busy so that it steals nothing from slot 1 meanwhile.
    weft::Ult hog = rt.spawn([&] {
      hog_running.store(true);
      while (!release_hog.load()) {
      }
    });
    while (!hog_running.load()) std::this_thread::sleep_for(microseconds(100));
    weft::Ult loop = rt.spawn([&] {
      loop_slot.store(weft::rt::current_worker()->index.load());
      if (loop_slot.load() != 1) return;  // must run in the slot that retires
      weft::Ult sleeper = weft::spawn([&] {
        sleeper_slot.store(weft::rt::current_worker()->index.load());
        auto t0 = Clock::now();
        weft::this_ult::sleep_for(milliseconds(50));  // its timer is in slot 1's worker
        slept_ms.store(std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count());
        woke.store(true);
      });
      weft::this_ult::yield();  // the sleeper runs and parks
      auto give_up = Clock::now() + std::chrono::seconds(5);
      while (!woke.load() && Clock::now() < give_up) {
        weft::blocking([] { usleep(100); });
        looping.store(true);
      }
      EXPECT_TRUE(sleeper.join().ok());
    });
    while (loop_slot.load() < 0) std::this_thread::sleep_for(microseconds(100));
    if (loop_slot.load() == 1) {
      while (!looping.load() && !woke.load()) std::this_thread::sleep_for(microseconds(100));
      ASSERT_TRUE(rt.set_concurrency(1).ok());  // slot 1 retires
    }
    release_hog.store(true);
    ASSERT_TRUE(hog.join().ok());
    ASSERT_TRUE(loop.join().ok());
    if (loop_slot.load() != 1 || sleeper_slot.load() != 1) continue;
    EXPECT_LT(slept_ms.load(), 2000) << "a 50 ms sleep took " << slept_ms.load()
                                     << " ms beside a loop of short regions on a retired worker";
    return;
  }
  GTEST_SKIP() << "the loop and the sleeper never both ran in slot 1";
}

}  // namespace
