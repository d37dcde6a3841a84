// tests/runtime_preempt_test.cc — fair latency under load (issue 13):
// timers that fire while their worker is busy, yielders and woken ULTs
// that a spawn chain cannot starve, stale timer entries, and time-slice
// preemption. Timing assertions have generous bounds and print the
// measured figure; this program runs alone (suite 'timing', not parallel).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <algorithm>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/channel.h"
#include "weft/io.h"
#include "runtime/preempt.h"
#include "runtime/scheduler.h"
#include "runtime/sync/wait_list.h"
#include "sys/spin.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Spins for `d` of wall time without calling into weft.
void Spin(std::chrono::nanoseconds d) {
  auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

// Issue 13, measured before the fix: a sleep_for(20ms) in a ULT that parked
// on a worker now running a CPU-bound ULT woke about 980 ms late while the
// other worker sat idle (the timer heap was the worker's own, served only
// by its scheduler loop). Fails without the fix: the sleeper then wakes
// only when the hog ends, 300 ms in. Preemption is off, so this is the
// timer path alone.
TEST(Timers, SleepOnBusyWorkerWakesOnTime) {
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = 0us});
  for (int attempt = 0;; ++attempt) {
    std::atomic<int> hog_tid{0};
    int sleeper_tid = 0;
    double late_ms = 0;
    rt.block_on([&] {
      sleeper_tid = Tid();
      // Spawned onto this worker's own deque: it runs here as soon as we
      // park (the other worker is asleep and is not woken for it).
      weft::Ult hog = weft::spawn([&] {
        hog_tid = Tid();
        Spin(300ms);
      });
      auto t0 = Clock::now();
      weft::this_ult::sleep_for(20ms);
      late_ms = MsSince(t0) - 20;
      EXPECT_TRUE(hog.join().ok());
    }).IgnoreError();
    if (hog_tid.load() != sleeper_tid && attempt < 5) continue;  // the hog was stolen: not the case under test
    ASSERT_EQ(hog_tid.load(), sleeper_tid) << "the hog never ran on the sleeper's worker";
    printf("sleep_for(20ms) beside a 300 ms CPU-bound ULT on its worker: woke %.2f ms late\n", late_ms);
    EXPECT_LT(late_ms, 30.0);
    weft::RuntimeStats st = rt.stats();
    EXPECT_GE(st.timers_fired_by_monitor, 1u);
    return;
  }
}

// Issue 13, measured before the fix: on one worker whose deque never
// empties (a ULT that spawns the next and exits, recursively), a
// sleep_for(10ms) woke 0.4-1 s late: timer wakes went to the yield queue,
// served only when run_next and the deque were empty. Fails without the
// fix (the sleeper waits for the chain's end, 1 s).
TEST(Timers, SleepBehindSpawnChainWakesOnTime) {
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = 0us});
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> links{0};
  double late_ms = -1;
  struct Chain {
    static void link(std::atomic<bool>* stop, std::atomic<uint64_t>* links, Clock::time_point end) {
      links->fetch_add(1, std::memory_order_relaxed);
      if (stop->load(std::memory_order_relaxed) || Clock::now() > end) return;
      (void)weft::spawn([=] { link(stop, links, end); }).detach();
    }
  };
  rt.block_on([&] {
    weft::Ult sleeper = weft::spawn([&] {
      auto t0 = Clock::now();
      weft::this_ult::sleep_for(10ms);
      late_ms = MsSince(t0) - 10;
      stop = true;
    });
    weft::this_ult::yield();  // let the sleeper park first
    Chain::link(&stop, &links, Clock::now() + 1s);
    EXPECT_TRUE(sleeper.join().ok());
  }).IgnoreError();
  ASSERT_TRUE(WaitUntil([&] { return rt.stats().live == 0; }));
  printf("sleep_for(10ms) on one worker behind a spawn chain (%llu links): woke %.2f ms late\n",
         static_cast<unsigned long long>(links.load()), late_ms);
  EXPECT_GE(late_ms, -0.5);
  EXPECT_LT(late_ms, 30.0);
}

// A yielder is not starved by a spawn chain either (same queue, same fix).
TEST(Timers, YielderRunsBesideSpawnChain) {
  WEFT_SKIP_UNDER_TSAN("100 yields need ~6,100 switches of the chain (a yielder's turn comes every 61); under "
                       "ThreadSanitizer a switch costs ~0.3 ms, so they outlast the chain whatever the order");
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = 0us});
  std::atomic<bool> stop{false};
  std::atomic<int> yields{0};
  struct Chain {
    static void link(std::atomic<bool>* stop, Clock::time_point end) {
      if (stop->load(std::memory_order_relaxed) || Clock::now() > end) return;
      (void)weft::spawn([=] { link(stop, end); }).detach();
    }
  };
  double ms = 0;
  rt.block_on([&] {
    weft::Ult yielder = weft::spawn([&] {
      auto t0 = Clock::now();
      for (int i = 0; i < 100; ++i) {
        weft::this_ult::yield();
        ++yields;
      }
      ms = MsSince(t0);
      stop = true;
    });
    weft::this_ult::yield();
    Chain::link(&stop, Clock::now() + 2s);
    EXPECT_TRUE(yielder.join().ok());
  }).IgnoreError();
  ASSERT_TRUE(WaitUntil([&] { return rt.stats().live == 0; }));
  printf("100 yields beside a spawn chain on one worker: %.2f ms\n", ms);
  EXPECT_EQ(yields.load(), 100);
  EXPECT_LT(ms, 1000.0);
}

namespace {

// One worker: `yielders` ULTs spawned into its deque start and keep
// yielding (2,000 times each, under a weft::Pin if `pinned`), then a chain
// of 500 ULTs, each spawned into the deque by the one before, runs beside
// them. Checks that the yielders all started, and the chain ended, within
// 20,000 yields (see the two tests below).
void DequeBesideYielders(int yielders, bool pinned) {
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .time_slice = 0us});
  constexpr long kYieldsEach = 2000;
  constexpr int kLinks = 500;
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::atomic<long> yields{0}, at_start{-1}, at_end{-1};
  struct Chain {
    static void link(int left, std::atomic<long>* yields, std::atomic<long>* at_end, std::atomic<bool>* stop) {
      if (left == 0) {
        at_end->store(yields->load());
        stop->store(true);
        return;
      }
      (void)weft::spawn([=] { link(left - 1, yields, at_end, stop); }).detach();  // into this worker's deque
    }
  };
  // In a ULT of the worker (block_on's own may run elsewhere): its spawns
  // go to the worker's deque.
  rt.block_on([&] { EXPECT_TRUE(weft::spawn([&] {
    std::vector<weft::Ult> ults;
    for (int i = 0; i < yielders; ++i) {
      ults.push_back(weft::spawn([&] {
        std::optional<weft::Pin> pin;
        if (pinned) pin.emplace();
        ++started;
        for (long k = 0; k < kYieldsEach && !stop.load(std::memory_order_relaxed); ++k) {
          yields.fetch_add(1, std::memory_order_relaxed);
          weft::this_ult::yield();
        }
      }));
    }
    while (started.load() < yielders) weft::this_ult::yield();
    at_start = yields.load();
    Chain::link(kLinks, &yields, &at_end, &stop);
    for (weft::Ult& u : ults) EXPECT_TRUE(u.join().ok());
  }).join().ok()); }).IgnoreError();
  ASSERT_TRUE(WaitUntil([&] { return rt.stats().live == 0; }));
  ASSERT_GE(at_end.load(), 0) << "the chain did not end";
  long waited = at_end.load() - at_start.load();
  printf("%d %syielders started within %ld yields; a chain of %d spawns beside them ended after %ld more\n",
         yielders, pinned ? "pinned " : "", at_start.load(), kLinks, waited);
  EXPECT_LT(at_start.load(), 20000) << "the last yielders waited for the first ones to stop";
  EXPECT_LT(waited, 20000) << "the chain waited in the deque for the yielders to stop";
}

}  // namespace

// The converse: a steady stream of yielders (or of ULTs woken by io
// completions, which join the same queue) does not starve the deque. Each
// scheduler pass granted the yield queue's whole length a turn again,
// before the previous batch was used up: 200 ULTs that keep yielding never
// let the batch end, so a ULT in the deque at a pass ran only when they
// stopped (in echo_bench a new connection's ULT waited up to 13 s behind
// 1,000 connections' io). Here 200 yielders and the chain of 500
// (DequeBesideYielders). Fails without the fix (the last yielders start
// only after the first ones' 2,000 yields each, about 250,000); now the
// deque runs between batches.
TEST(Timers, DequeRunsBesideStreamOfYielders) { DequeBesideYielders(200, /*pinned=*/false); }

// Issue 15 (see Priority.HighRunsBesidePinnedYielders): a pinned ULT's
// requeues went to its worker's inbox, served before everything else, so
// pinned ULTs that keep yielding (or are woken by the worker's io, as
// epoll readiness waits are) starved the rest of that worker. Here 100
// pinned yielders and the chain of 500 (DequeBesideYielders). Fails
// without the fix: the yielders run one at a time, each alone until done,
// and the chain ends after all 200,000 yields; now the pinned ULTs wait in
// the yield queue, in turn with the deque.
TEST(Timers, DequeRunsBesidePinnedYielders) { DequeBesideYielders(100, /*pinned=*/true); }

// Issue 13: timer entries of waits that ended early stayed in the heap until
// their deadline (2M such waits kept 47 MB). Now a wait that ends early
// takes its entry out: nothing is pending once the waits are over, however
// far their deadlines. Fails without the fix (every entry would still be
// pending, an hour from now).
TEST(Timers, WaitsEndedEarlyLeaveNoEntries) {
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kWaits = 100000;
  rt.block_on([&] {
    weft::Mutex mu;
    weft::CondVar cv;
    bool go = false;
    int done = 0;
    weft::Ult waiter = weft::spawn([&] {
      std::unique_lock<weft::Mutex> l(mu);
      for (int i = 0; i < kWaits; ++i) {
        while (!go) (void)cv.wait_for(l, 1h);  // ends early: notified
        go = false;
        ++done;
        cv.notify_all();
      }
    });
    for (int i = 0; i < kWaits; ++i) {
      std::unique_lock<weft::Mutex> l(mu);
      go = true;
      cv.notify_all();
      while (done <= i) cv.wait(l);
    }
    EXPECT_TRUE(waiter.join().ok());
    EXPECT_EQ(done, kWaits);
  }).IgnoreError();
  weft::RuntimeStats st = rt.stats();
  EXPECT_EQ(st.timers_pending, 0u);
}

// Lateness is counted: every fired timer lands in one bucket.
TEST(Timers, LatenessIsCounted) {
  weft::Runtime rt(weft::Options{.workers = 2});
  rt.block_on([&] {
    for (int i = 0; i < 20; ++i) weft::this_ult::sleep_for(200us);
  }).IgnoreError();
  weft::RuntimeStats st = rt.stats();
  uint64_t total = 0;
  for (uint64_t b : st.timer_lateness) total += b;
  EXPECT_GE(total, 20u);
  EXPECT_EQ(st.timers_pending, 0u);
}

}  // namespace

// ---------------------------------------------------------------------------
// Time-slice preemption
// ---------------------------------------------------------------------------

namespace {

// A loop with no calls at all: only preemption can take the CPU from it.
__attribute__((noinline)) uint64_t CallFreeLoop(const std::atomic<bool>* stop) {
  uint64_t x = 1;
  while (!stop->load(std::memory_order_relaxed)) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}

struct TickResult {
  int ticks_during_hog = 0;
  double max_gap_ms = 0;
};

// One worker: a ticker ULT that sleeps 1 ms per tick, and a hog that runs a
// call-free loop for `hog_for`, stopped by a foreign thread.
TickResult TickerBesideHog(std::chrono::microseconds slice, std::chrono::milliseconds hog_for) {
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = slice});
  std::atomic<bool> stop_hog{false}, stop_ticker{false}, hog_running{false};
  std::atomic<int> ticks{0};
  std::vector<Clock::time_point> stamps;
  stamps.reserve(100000);
  weft::Ult ticker = rt.spawn([&] {
    while (!stop_ticker.load()) {
      weft::this_ult::sleep_for(1ms);
      if (hog_running.load()) {
        stamps.push_back(Clock::now());
        ++ticks;
      }
    }
  });
  std::atomic<int64_t> hog_started{0};  // only the ticker touches `stamps`
  weft::Ult hog = rt.spawn([&] {
    hog_started = Clock::now().time_since_epoch().count();
    hog_running = true;
    (void)CallFreeLoop(&stop_hog);
    hog_running = false;
  });
  std::this_thread::sleep_for(hog_for);
  TickResult r;
  r.ticks_during_hog = ticks.load();
  stop_hog = true;
  EXPECT_TRUE(hog.join().ok());
  stop_ticker = true;
  EXPECT_TRUE(ticker.join().ok());
  stamps.insert(stamps.begin(), Clock::time_point(Clock::duration(hog_started.load())));
  for (size_t i = 1; i < stamps.size(); ++i)
    r.max_gap_ms = std::max(r.max_gap_ms, std::chrono::duration<double, std::milli>(stamps[i] - stamps[i - 1]).count());
  return r;
}

}  // namespace

TEST(Preempt, TickerTicksBesideCallFreeLoop) {
  WEFT_SKIP_UNDER_TSAN("ThreadSanitizer runs a signal handler only when the thread next enters one of its "
                       "interceptors, which a call-free loop never does: no preemption can happen there");
  TickResult r = TickerBesideHog(10ms, 400ms);
  printf("time_slice 10 ms, call-free loop on the only worker: ticker ticked %d times in 400 ms, largest gap "
         "%.2f ms\n",
         r.ticks_during_hog, r.max_gap_ms);
  EXPECT_GE(r.ticks_during_hog, 10);
  EXPECT_LT(r.max_gap_ms, 60.0);
}

TEST(Preempt, NoPreemptionWithZeroSlice) {
  TickResult r = TickerBesideHog(0us, 200ms);
  printf("time_slice 0, call-free loop on the only worker: ticker ticked %d times in 200 ms\n", r.ticks_during_hog);
  EXPECT_EQ(r.ticks_during_hog, 0);
}

// Preempted ULTs resume on the KLT they were preempted on: registers,
// FP state, errno, thread id; and a pinned one too.
TEST(Preempt, ResumesWhereItWasWithItsState) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = 1000us});
  std::atomic<int> moved{0}, errno_lost{0}, fp_wrong{0};
  std::atomic<bool> stop{false};
  auto body = [&](bool pin, int my_errno) {
    std::optional<weft::Pin> p;
    if (pin) p.emplace();
    int tid = Tid();
    errno = my_errno;
    double acc = 0;
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      acc += 0.5;  // exact in binary: acc == n / 2 at every step
      ++n;
      if ((n & 0xfffff) == 0) {
        if (acc != static_cast<double>(n) / 2) ++fp_wrong;
        if (errno != my_errno) ++errno_lost;
        if (Tid() != tid) ++moved;
      }
    }
  };
  std::vector<weft::Ult> us;
  for (int i = 0; i < 6; ++i) us.push_back(rt.spawn([&, i] { body(i % 2 == 0, 100 + i); }));
  std::this_thread::sleep_for(500ms);
  stop = true;
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
  weft::RuntimeStats st = rt.stats();
  printf("6 CPU-bound ULTs (3 pinned) on 2 workers, 500 ms, slice 1 ms: %llu preemptions taken, %llu deferred, "
         "%llu requested\n",
         static_cast<unsigned long long>(st.preemptions_taken), static_cast<unsigned long long>(st.preemptions_deferred),
         static_cast<unsigned long long>(st.preemptions_requested));
  EXPECT_GE(st.preemptions_taken, 50u);
  EXPECT_EQ(moved.load(), 0);
  EXPECT_EQ(errno_lost.load(), 0);
  EXPECT_EQ(fp_wrong.load(), 0);
}

// A ULT blocked in a system call of its own (not weft io) is never sent
// the preemption signal: poll(2) would end with EINTR whatever SA_RESTART
// says. The monitor asks only a KLT that is on a CPU.
TEST(Preempt, BlockingSystemCallIsNotInterrupted) {
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = 1000us});
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::atomic<bool> stop{false};
  int result = -2, err = 0;
  weft::Ult waiter = rt.spawn([&] {
    pollfd p{fds[0], POLLIN, 0};
    result = poll(&p, 1, 300);  // blocks the worker: the other ULT waits (and would be a reason to preempt)
    err = errno;
  });
  weft::Ult other = rt.spawn([&] { stop = true; });
  EXPECT_TRUE(waiter.join().ok());
  EXPECT_TRUE(other.join().ok());
  EXPECT_EQ(result, 0) << "errno " << err;
  close(fds[0]);
  close(fds[1]);
}

// A ULT that computes 300 us and then sleeps 1 ms in a direct usleep(),
// over and over, without ever parking in weft: the monitor asks it to
// yield at most ticks (its switch count never moves and its CPU clock
// advances), and its computing (in libstdc++ and the vDSO, where no ULT is
// switched out) defers every request, so the requests go on, and some come
// just as it enters the kernel. It runs until the monitor has asked 40
// times and 300 usleeps are done (at most 5 s). Under ThreadSanitizer no
// preemption signal is sent (it could never switch a ULT out there, and
// TSan runs handlers late): no usleep may end with EINTR. Regression (CI
// of a3d953c, TSan): a ULT's direct usleep(500 ms) ended after 80 us with
// EINTR (Blocking.PlainBlockingCallStallsTheWorkerWithHandoffsOff); this
// test fails without the fix under TSan (1-4 EINTRs in 300). Elsewhere the
// signal goes only to a KLT on a CPU, and one that enters the call in the
// microseconds between that look and the signal sees EINTR (runtime.h,
// "Preemption"; 0-6 per 40-55 requests here): counted, printed, and bounded
// at a third of the requests (a doorbell rung whatever the task state
// would interrupt about three quarters: the KLT sleeps 1 ms in every 1.3).
TEST(Preempt, DirectSleepAfterComputingIsRarelyInterrupted) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<bool> stop{false};
  std::atomic<int> rounds{0};
  int eintr = 0, other_errors = 0;
  const uint64_t requested_before = rt.stats().preemptions_requested;
  weft::Ult sleeper = rt.spawn([&] {
    while (!stop.load()) {
      Spin(300us);
      if (usleep(1000) != 0) ++(errno == EINTR ? eintr : other_errors);
      ++rounds;
    }
  });
  uint64_t requested = 0;
  for (auto end = Clock::now() + 5s; Clock::now() < end;) {
    std::this_thread::sleep_for(10ms);
    requested = rt.stats().preemptions_requested - requested_before;
    if (requested >= 40 && rounds.load() >= 300) break;
  }
  stop = true;
  EXPECT_TRUE(sleeper.join().ok());
  requested = rt.stats().preemptions_requested - requested_before;
  printf("[   INFO   ] %d rounds of 300 us computing + usleep(1 ms): %d ended with EINTR, %llu preemptions "
         "requested\n",
         rounds.load(), eintr, static_cast<unsigned long long>(requested));
  EXPECT_EQ(other_errors, 0);
  EXPECT_GE(requested, 20u) << "the monitor did not ask often enough for the test to mean anything";
  if (kUnderTsan) {
    EXPECT_EQ(eintr, 0);
  } else {
    EXPECT_LE(static_cast<uint64_t>(eintr), requested / 3);
  }
}

// The monitor and the preemption doorbell read a worker's task state
// ('R', 'S', ...) through a /proc stat file the worker opened at its start.
// Regression (CI of 084b9d6: IoFault.AcceptUnderEmfile under TSan, 3 runs
// in 10 here): they opened /proc/self/task/<tid>/stat at each look, which
// took the lowest free descriptor number for a few microseconds at moments
// the program cannot see: an accept meant to fail with EMFILE got a
// descriptor freed that way, and open() did not always return the lowest
// free number. Fails without the fix: while a call-free loop is asked to
// yield every millisecond, open() here returns another number now and then.
TEST(Preempt, TaskStateLooksTakeNoDescriptorNumber) {
  // The runtime's threads (the worker, the monitor) share one CPU and this
  // thread watches from another: the monitor then runs its looks beside
  // this loop instead of in its place.
  cpu_set_t all;
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &all)) cpus.push_back(c);
  if (cpus.size() < 2) GTEST_SKIP() << "needs two CPUs";
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpus[0], &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);  // inherited by the threads the Runtime starts
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .time_slice = 1000us});
  CPU_ZERO(&one);
  CPU_SET(cpus[1], &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  struct RestoreAffinity {
    cpu_set_t set;
    ~RestoreAffinity() { sched_setaffinity(0, sizeof set, &set); }
  } restore{all};
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  // The worker has started (and opened its file) and been idle once (an
  // io engine, if linked, is set up at the first idle wait).
  ASSERT_TRUE(rt.block_on([] { weft::this_ult::sleep_for(2ms); }).ok());
  int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(lowest, 0);
  close(lowest);
  std::atomic<bool> stop{false};
  weft::Ult hog = rt.spawn([&] { (void)CallFreeLoop(&stop); });
  int other = 0, other_fd = -1;
  uint64_t opens = 0;
  const uint64_t requested_before = rt.stats().preemptions_requested;
  auto end = Clock::now() + 600ms;
  while (Clock::now() < end) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    if (fd != lowest) {
      ++other;
      other_fd = fd;
    }
    close(fd);
    ++opens;
  }
  uint64_t requested = rt.stats().preemptions_requested - requested_before;
  stop = true;
  EXPECT_TRUE(hog.join().ok());
  printf("%llu opens beside a call-free loop asked to yield %llu times (slice 1 ms): %d returned another number "
         "than %d (last %d)\n",
         static_cast<unsigned long long>(opens), static_cast<unsigned long long>(requested), other, lowest, other_fd);
  EXPECT_GE(requested, 20u) << "the monitor did not look at the hog's task state often enough for the test to mean "
                               "anything";
  EXPECT_EQ(other, 0);
}

namespace {
__attribute__((noinline)) int ApplicationFunction(int x) { return x * 3 + 1; }

// The executable PLT sections (.plt, .plt.sec, .plt.got) of this program,
// as loaded: read from /proc/self/exe's section headers.
std::vector<std::pair<uintptr_t, uintptr_t>> PltSections() {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  uintptr_t bias = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* arg) {
        *static_cast<uintptr_t*>(arg) = info->dlpi_addr;  // the first object is the program
        return 1;
      },
      &bias);
  FILE* f = fopen("/proc/self/exe", "rb");
  if (f == nullptr) return out;
  std::vector<char> file;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) file.insert(file.end(), buf, buf + n);
  fclose(f);
  if (file.size() < sizeof(Elf64_Ehdr)) return out;
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(file.data());
  if (eh->e_shoff + eh->e_shnum * sizeof(Elf64_Shdr) > file.size() || eh->e_shstrndx >= eh->e_shnum) return out;
  const auto* sh = reinterpret_cast<const Elf64_Shdr*>(file.data() + eh->e_shoff);
  const char* names = file.data() + sh[eh->e_shstrndx].sh_offset;
  for (int i = 0; i < eh->e_shnum; ++i) {
    const char* name = names + sh[i].sh_name;
    if (strncmp(name, ".plt", 4) == 0 && (sh[i].sh_flags & SHF_EXECINSTR) && sh[i].sh_size > 0)
      out.push_back({bias + sh[i].sh_addr, bias + sh[i].sh_addr + sh[i].sh_size});
  }
  return out;
}
}  // namespace

// The table of code where a ULT may be switched out: the application's
// code yes; weft's, libc's, libstdc++'s no.
TEST(Preempt, CodeTableTellsApplicationFromRuntime) {
  weft::Runtime rt(weft::Options{.workers = 1});  // builds the table (time_slice defaults to 10 ms)
  ASSERT_TRUE(rt.status().ok());
  auto at = [](auto* f) { return reinterpret_cast<uintptr_t>(reinterpret_cast<void*>(f)); };
  EXPECT_TRUE(weft::rt::preempt::pc_preemptible(at(&ApplicationFunction) + 1));
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(&weft::rt::yield_current) + 1));
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(&weft::rt::preempt::pc_preemptible) + 1));
  void (*sleep_ns)(std::chrono::nanoseconds) = &weft::this_ult::sleep_for;
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(sleep_ns) + 1));
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(&malloc) + 1));
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(&pthread_mutex_lock) + 1));  // weft's interposer
  void* (*op_new)(size_t) = &::operator new;
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(at(op_new) + 1));
  // The vDSO: weft reads the clock there with internal locks held (a ULT
  // switched out there deadlocked RandomizedMix.InvariantsHold in
  // sync_stress before the vDSO was denied and queue locks were counted).
  uintptr_t vdso = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* arg) {
        if (info->dlpi_name == nullptr || strstr(info->dlpi_name, "vdso") == nullptr) return 0;
        for (int i = 0; i < info->dlpi_phnum; ++i)
          if (info->dlpi_phdr[i].p_type == PT_LOAD && (info->dlpi_phdr[i].p_flags & PF_X))
            *static_cast<uintptr_t*>(arg) = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
        return 1;
      },
      &vdso);
  ASSERT_NE(vdso, 0u) << "no vDSO mapped";
  EXPECT_FALSE(weft::rt::preempt::pc_preemptible(vdso + 16));
  // The PLT stubs of the program that holds weft: weft's calls to other
  // objects go through them. Regression: the clean-clone ASan run of b1f9671
  // failed runtime_signal_test (1 run in 40 here) when a preemption signal
  // found a ULT in the stub of __sanitizer_finish_switch_fiber, on its way
  // out of a switch ("starting fiber switch while in fiber switch"). Fails
  // without the fix: the stubs were the program's code, preemptible.
  std::vector<std::pair<uintptr_t, uintptr_t>> plts = PltSections();
  ASSERT_FALSE(plts.empty()) << "no .plt section in the test program";
  for (auto [lo, hi] : plts) {
    for (uintptr_t pc = lo; pc < hi; pc += 4) ASSERT_FALSE(weft::rt::preempt::pc_preemptible(pc)) << std::hex << pc;
  }
  // weft's locks are counted on the KLT (the sync primitives' queue locks too).
  uint32_t before = weft::sys::locks_held();
  weft::detail::WaitQueue q;
  {
    weft::rt::sync::QueueLock g(q);
    EXPECT_EQ(weft::sys::locks_held(), before + 1);
  }
  EXPECT_EQ(weft::sys::locks_held(), before);
}

namespace {

// Issue 13's safety case: CPU-bound ULTs that live in libc and libstdc++
// (malloc/free, std::string, printf to /dev/null) and take a std::mutex in
// tight loops, preempted every millisecond. A ULT switched out inside
// malloc, stdio or while its KLT holds the std::mutex would corrupt the
// heap or deadlock the KLT (the next ULT there asks for the same lock).
// Checksums: each ULT's strings are rebuilt and compared; the shared
// counter under the mutex equals the sum of the ULTs' own counts.
void SafetyRun(int workers, std::chrono::seconds run_for) {
  weft::Runtime rt(weft::Options{.workers = workers, .time_slice = 1000us});
  FILE* devnull = fopen("/dev/null", "w");
  ASSERT_NE(devnull, nullptr);
  std::mutex mu;
  uint64_t shared = 0;
  volatile uint64_t mix = 0;
  std::atomic<bool> stop{false};
  std::atomic<int> corrupt{0};
  constexpr int kUlts = 8;
  std::vector<uint64_t> mine(kUlts, 0);
  std::vector<weft::Ult> us;
  for (int i = 0; i < kUlts; ++i) {
    us.push_back(rt.spawn([&, i] {
      uint64_t seed = 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(i + 1);
      while (!stop.load(std::memory_order_relaxed)) {
        size_t n = 1 + NextRand(&seed) % 512;
        auto* p = static_cast<unsigned char*>(malloc(n));
        memset(p, static_cast<int>(n & 0xff), n);
        std::string s = "ult-" + std::to_string(i) + "-" + std::to_string(n);
        s.append(n % 64, 'x');
        fprintf(devnull, "%s %zu\n", s.c_str(), n);
        if (p[n - 1] != static_cast<unsigned char>(n & 0xff) ||
            s.size() != 4 + std::to_string(i).size() + 1 + std::to_string(n).size() + n % 64)
          ++corrupt;
        free(p);
        {
          // Application code under a KLT-level lock, long enough that many
          // preemption signals land inside it.
          std::lock_guard<std::mutex> g(mu);
          uint64_t x = shared;
          for (int k = 0; k < 256; ++k) x = x * 6364136223846793005ULL + 1;
          mix = mix ^ x;
          ++shared;
        }
        ++mine[static_cast<size_t>(i)];
      }
    }));
  }
  std::this_thread::sleep_for(run_for);
  stop = true;
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
  fclose(devnull);
  uint64_t sum = 0;
  for (uint64_t m : mine) sum += m;
  weft::RuntimeStats st = rt.stats();
  printf("%d workers, %d ULTs in malloc/string/printf/std::mutex loops for %lld s, slice 1 ms: %llu iterations, "
         "%llu preemptions taken, %llu deferred, %llu kernel-block handoffs\n",
         workers, kUlts, static_cast<long long>(run_for.count()), static_cast<unsigned long long>(sum),
         static_cast<unsigned long long>(st.preemptions_taken), static_cast<unsigned long long>(st.preemptions_deferred),
         static_cast<unsigned long long>(st.kernel_block_handoffs));
  EXPECT_EQ(corrupt.load(), 0);
  EXPECT_EQ(shared, sum);
  EXPECT_GT(sum, 0u);
  EXPECT_GE(st.preemptions_taken, static_cast<uint64_t>(run_for.count()) * 50);
}

}  // namespace

TEST(Preempt, SafeInLibcLibstdcxxAndUnderStdMutexOneWorker) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  SafetyRun(1, 10s);
}

TEST(Preempt, SafeInLibcLibstdcxxAndUnderStdMutexTwoWorkers) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  SafetyRun(2, 10s);
}

// ---------------------------------------------------------------------------
// Priorities
// ---------------------------------------------------------------------------

// On one worker, without time slices: a runnable high ULT runs before the
// normal ones queued ahead of it, and a background one after them all.
TEST(Priority, HighFirstBackgroundLast) {
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = 0us});
  std::vector<char> order;
  rt.block_on([&] {
    std::vector<weft::Ult> us;
    us.push_back(weft::spawn([&] { order.push_back('b'); }, {.priority = weft::Priority::kBackground}));
    for (int i = 0; i < 3; ++i) us.push_back(weft::spawn([&] { order.push_back('n'); }));
    us.push_back(weft::spawn([&] { order.push_back('h'); }, {.priority = weft::Priority::kHigh}));
    for (auto& u : us) EXPECT_TRUE(u.join().ok());
  }).IgnoreError();
  EXPECT_EQ(std::string(order.begin(), order.end()), "hnnnb");
}

TEST(Priority, BadValuesAreErrors) {
  EXPECT_TRUE(absl::IsFailedPrecondition(weft::this_ult::set_priority(weft::Priority::kHigh)));
  weft::Runtime rt(weft::Options{.workers = 1});
  weft::Ult u = rt.spawn([] {}, {.priority = static_cast<weft::Priority>(7)});
  EXPECT_TRUE(absl::IsInvalidArgument(u.status())) << u.status();
  rt.block_on([] {
    EXPECT_TRUE(absl::IsInvalidArgument(weft::this_ult::set_priority(static_cast<weft::Priority>(3))));
    EXPECT_EQ(weft::this_ult::priority(), weft::Priority::kNormal);
    EXPECT_TRUE(weft::this_ult::set_priority(weft::Priority::kHigh).ok());
    EXPECT_EQ(weft::this_ult::priority(), weft::Priority::kHigh);
    EXPECT_TRUE(weft::this_ult::set_priority(weft::Priority::kBackground).ok());
    EXPECT_EQ(weft::this_ult::priority(), weft::Priority::kBackground);
  }).IgnoreError();
}

// Issue 13: with 2 workers saturated by normal ULTs, a high-priority ULT
// woken by a channel starts within 2 ms (p99 over 1,000 wakes): the waker
// preempts the worker running the lowest-priority ULT.
// One round: the p99 (us) of 1,000 wakes of a high ULT by a foreign
// thread's channel send while 4 normal ULTs saturate both workers.
double HighWakeP99Us() {
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  std::vector<weft::Ult> hogs;
  for (int i = 0; i < 4; ++i) hogs.push_back(rt.spawn([&] { (void)CallFreeLoop(&stop); }));
  weft::Channel<int64_t> ch(1);
  constexpr int kWakes = 1000;
  std::vector<double> lat_us;
  lat_us.reserve(kWakes);
  weft::Ult high = rt.spawn(
      [&] {
        for (int i = 0; i < kWakes; ++i) {
          absl::StatusOr<int64_t> sent = ch.recv();
          if (!sent.ok()) return;
          lat_us.push_back(static_cast<double>(weft::rt::monotonic_ns() - *sent) / 1e3);
        }
      },
      {.priority = weft::Priority::kHigh});
  std::this_thread::sleep_for(20ms);  // the hogs hold both workers
  for (int i = 0; i < kWakes; ++i) {
    EXPECT_TRUE(ch.send(weft::rt::monotonic_ns()).ok());
    std::this_thread::sleep_for(300us);
  }
  EXPECT_TRUE(high.join().ok());
  stop = true;
  for (auto& h : hogs) EXPECT_TRUE(h.join().ok());
  std::sort(lat_us.begin(), lat_us.end());
  EXPECT_EQ(lat_us.size(), static_cast<size_t>(kWakes));
  if (lat_us.size() != static_cast<size_t>(kWakes)) return 1e9;
  double p50 = lat_us[kWakes / 2], p99 = lat_us[kWakes * 99 / 100];
  weft::RuntimeStats st = rt.stats();
  printf("high ULT woken by a channel, 2 workers saturated by 4 normal ULTs: p50 %.1f us, p99 %.1f us, max %.1f "
         "us (%llu priority preemptions)\n",
         p50, p99, lat_us.back(), static_cast<unsigned long long>(st.priority_preemptions));
  return p99;
}

// The p99 of a round includes the kernel's scheduling of the sending
// thread, which competes with the two busy workers for two CPUs: on a
// shared machine one round in several had a p99 of 1.4-2.7 ms from that
// alone (its median stayed ~22 us). The claim holds if one of three rounds
// shows it.
TEST(Priority, HighWakesWithinTwoMsOnSaturatedWorkers) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  double best = 1e9;
  for (int round = 0; round < 3 && best >= 2000.0; ++round) best = std::min(best, HighWakeP99Us());
  EXPECT_LT(best, 2000.0) << "the best of three rounds' p99 (us)";
}

// Issue 15, found in a trace of hook_redis on epoll: the high-priority ticker
// waited up to 56 ms while both workers ran ULTs from their inboxes. A ULT
// that must resume on its worker (under a Pin: the epoll engine pins every
// readiness wait, since the registration is that worker's) went to the
// worker's inbox whenever it was requeued or woken, and the scheduler pass
// served the inbox before anything else. Here 100 pinned ULTs keep yielding
// on one worker, and one of them releases a high ULT every 20 of its
// yields, 50 times; the high ULT notes how many yields ran between the
// release and its run. Fails without the fix: the releaser, requeued to
// the inbox, runs again before the high ULT, and alone (the others wait
// behind the inbox too) until its 2,000 yields are done. It also failed
// with that fixed alone: a yield with a high ULT waiting returned at once
// when nothing else was local (yield_current), 22 yields. Now at most 1.
TEST(Priority, HighRunsBesidePinnedYielders) {
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .time_slice = 0us});
  constexpr int kPinned = 100;
  constexpr long kYieldsEach = 2000;
  constexpr int kRounds = 50;
  std::atomic<long> yields{0}, released_at{-1}, worst{0};
  std::atomic<int> rounds{0};
  weft::Semaphore go;
  weft::Ult high = rt.spawn(
      [&] {
        for (int i = 0; i < kRounds; ++i) {
          go.acquire();
          worst.store(std::max(worst.load(), yields.load() - released_at.load()));
          rounds.fetch_add(1);
        }
      },
      {.priority = weft::Priority::kHigh});
  std::vector<weft::Ult> pinned;
  for (int i = 0; i < kPinned; ++i) {
    pinned.push_back(rt.spawn([&, i] {
      weft::Pin pin;  // its requeues went to the worker's inbox
      int seen = 0;  // rounds done when this ULT last released
      for (long k = 0; k < kYieldsEach; ++k) {
        if (i == 0 && k % 20 == 0 && rounds.load() == seen && seen < kRounds) {
          released_at.store(yields.load());
          ++seen;
          go.release();
        }
        yields.fetch_add(1, std::memory_order_relaxed);
        weft::this_ult::yield();
      }
    }));
  }
  for (weft::Ult& u : pinned) EXPECT_TRUE(u.join().ok());
  // Without the fix the high ULT may still be short of rounds: release the rest.
  while (rounds.load() < kRounds) {
    released_at.store(yields.load());
    go.release();
    ASSERT_TRUE(WaitUntil([&, r = rounds.load()] { return rounds.load() > r; }));
  }
  EXPECT_TRUE(high.join().ok());
  printf("a high ULT released %d times beside %d pinned yielders ran after at most %ld of their yields (of %ld)\n",
         kRounds, kPinned, worst.load(), yields.load());
  EXPECT_LE(worst.load(), 5) << "the high ULT waited behind the pinned yielders";
}

namespace {

// Issue 13's inversion: low (background) holds a Mutex and is descheduled
// (it slept while holding it), medium (normal) ULTs hog both workers, high
// waits for the Mutex. Returns how long high waited, in ms.
template <class Lock = weft::Mutex>
double InversionWaitMs(bool inheritance) {
  weft::Runtime rt(weft::Options{.workers = 2, .priority_inheritance = inheritance});
  Lock mu;
  std::atomic<bool> stop{false}, low_locked{false};
  weft::Ult low = rt.spawn(
      [&] {
        std::lock_guard<Lock> g(mu);
        low_locked = true;
        weft::this_ult::sleep_for(5ms);  // descheduled while holding it: queued as background when woken
        Spin(2ms);                       // the rest of the critical section
      },
      {.priority = weft::Priority::kBackground});
  EXPECT_TRUE(WaitUntil([&] { return low_locked.load(); }));
  std::vector<weft::Ult> medium;
  for (int i = 0; i < 4; ++i) medium.push_back(rt.spawn([&] { (void)CallFreeLoop(&stop); }));
  std::this_thread::sleep_for(20ms);  // low is awake now, and waits behind the hogs
  double waited = -1;
  weft::Ult high = rt.spawn(
      [&] {
        auto t0 = Clock::now();
        mu.lock();
        waited = MsSince(t0);
        mu.unlock();
      },
      {.priority = weft::Priority::kHigh});
  EXPECT_TRUE(high.join().ok());
  stop = true;
  for (auto& m : medium) EXPECT_TRUE(m.join().ok());
  EXPECT_TRUE(low.join().ok());
  weft::RuntimeStats st = rt.stats();
  printf("inversion, inheritance %s: high waited %.2f ms for the mutex (%llu boosts, %llu background runs past "
         "the bound)\n",
         inheritance ? "on" : "off", waited, static_cast<unsigned long long>(st.priority_boosts),
         static_cast<unsigned long long>(st.background_starvation_runs));
  return waited;
}

}  // namespace

TEST(Priority, InheritanceBoundsInversion) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  double with = InversionWaitMs(true);
  EXPECT_LT(with, 20.0) << "with inheritance, high must get the mutex within 2 time slices";
  double without = InversionWaitMs(false);
  EXPECT_GT(without, 20.0) << "without inheritance, low waits for its background turn (~100 ms)";
  EXPECT_LT(without, 1000.0) << "the background bound still lets low finish";
}

// A chain: high waits for M1, held by mid (background), which waits for
// M2, held by low (background, descheduled). The loan goes down the chain.
TEST(Priority, InheritanceFollowsChains) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m1, m2;
  std::atomic<bool> stop{false}, low_locked{false}, mid_locked{false};
  weft::Ult low = rt.spawn(
      [&] {
        std::lock_guard<weft::Mutex> g(m2);
        low_locked = true;
        weft::this_ult::sleep_for(5ms);
        Spin(2ms);
      },
      {.priority = weft::Priority::kBackground});
  ASSERT_TRUE(WaitUntil([&] { return low_locked.load(); }));
  weft::Ult mid = rt.spawn(
      [&] {
        std::lock_guard<weft::Mutex> g1(m1);
        mid_locked = true;
        std::lock_guard<weft::Mutex> g2(m2);  // waits for low
      },
      {.priority = weft::Priority::kBackground});
  ASSERT_TRUE(WaitUntil([&] { return mid_locked.load(); }));
  std::vector<weft::Ult> medium;
  for (int i = 0; i < 4; ++i) medium.push_back(rt.spawn([&] { (void)CallFreeLoop(&stop); }));
  std::this_thread::sleep_for(20ms);
  double waited = -1;
  weft::Ult high = rt.spawn(
      [&] {
        auto t0 = Clock::now();
        m1.lock();
        waited = MsSince(t0);
        m1.unlock();
      },
      {.priority = weft::Priority::kHigh});
  EXPECT_TRUE(high.join().ok());
  stop = true;
  for (auto& m : medium) EXPECT_TRUE(m.join().ok());
  EXPECT_TRUE(mid.join().ok());
  EXPECT_TRUE(low.join().ok());
  printf("chain high -> M1 (mid) -> M2 (low): high waited %.2f ms (%llu boosts)\n", waited,
         static_cast<unsigned long long>(rt.stats().priority_boosts));
  EXPECT_LT(waited, 20.0);
  EXPECT_GE(rt.stats().priority_boosts, 2u);
}

// The same with an RwLock held exclusively by low (writers lend and
// receive as Mutex holders do).
TEST(Priority, InheritanceThroughRwLockWriter) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  double with = InversionWaitMs<weft::RwLock>(true);
  EXPECT_LT(with, 20.0);
  double without = InversionWaitMs<weft::RwLock>(false);
  EXPECT_GT(without, 20.0);
}

// Defect (TSan, http_badinput_epoll in the clean-clone run of c7738db): a
// high ULT waiting on a weft::Mutex follows the mutex's owner word to the
// holder's descriptor and lends it its priority under the holder's
// pi_lock; the holder may meanwhile have unlocked, exited and had its
// descriptor reused by a spawn, which wrote base_prio and pi_waiting_on
// without that lock: a data race TSan reports (the fields are atomic now;
// pi_wait takes its loan back when the descriptor does not hold the lock).
// Here a high ULT takes a mutex over and over while short-lived normal
// ULTs, spawned and joined in a loop, take it too and exit, so holders'
// descriptors are reused under the waiter's feet. Fails without the fix
// in the TSan build (checked: the same report, create_ult against
// pi_wait, in the first round); in the others it checks that every
// acquisition happened.
TEST(Priority, InheritanceFromAWaiterWhileTheHolderExitsAndIsReused) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex m;
  int64_t inside = 0;  // guarded by m
  std::atomic<bool> stop{false};
  constexpr int kShort = 3000;
  weft::Ult high = rt.spawn(
      [&] {
        while (!stop.load()) {
          std::lock_guard<weft::Mutex> g(m);
          ++inside;
        }
      },
      {.priority = weft::Priority::kHigh});
  auto r = rt.block_on([&] {
    for (int i = 0; i < kShort; ++i) {
      weft::Ult u = weft::spawn([&] {
        std::lock_guard<weft::Mutex> g(m);
        ++inside;
        // Held a little (20 us, no call) so that the high ULT waits and lends.
        for (Clock::time_point t = Clock::now(); Clock::now() - t < 20us;) {
        }
      });
      EXPECT_TRUE(u.join().ok());
    }
  });
  stop = true;
  EXPECT_TRUE(r.ok());
  EXPECT_TRUE(high.join().ok());
  EXPECT_GE(inside, kShort);
  printf("%lld acquisitions, %llu priority boosts\n", static_cast<long long>(inside),
         static_cast<unsigned long long>(rt.stats().priority_boosts));
}

// The background bound: 2 workers saturated by normal ULTs; a background
// ULT still runs within about 100 ms plus a slice.
TEST(Priority, BackgroundStarvationIsBounded) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  std::vector<weft::Ult> hogs;
  for (int i = 0; i < 4; ++i) hogs.push_back(rt.spawn([&] { (void)CallFreeLoop(&stop); }));
  std::this_thread::sleep_for(20ms);
  auto t0 = Clock::now();
  std::atomic<double> ran_after{-1};
  weft::Ult bg = rt.spawn([&] { ran_after = MsSince(t0); }, {.priority = weft::Priority::kBackground});
  EXPECT_TRUE(bg.join().ok());
  stop = true;
  for (auto& h : hogs) EXPECT_TRUE(h.join().ok());
  printf("background ULT beside 4 normal hogs on 2 workers: ran after %.1f ms\n", ran_after.load());
  EXPECT_GT(ran_after.load(), 50.0) << "it ran before its bound: normal work did not come first";
  EXPECT_LT(ran_after.load(), 300.0);
}

// io of a hogged worker: a ULT waiting in weft::io on a worker whose other
// ULT computes without a call gets its completion within about a slice (the
// preemption sends the worker through its scheduler loop, which reaps its
// ring or epoll); with time slices off it waits for the hog to end.
namespace {
double IoWaitBesideHogMs(std::chrono::microseconds slice) {
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = slice});
  int p[2];
  EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
  std::atomic<bool> stop{false}, reading{false};
  std::atomic<int64_t> got_at{0};
  weft::Ult reader = rt.spawn([&] {
    char c;
    reading = true;
    int64_t n = weft::io::read(p[0], &c, 1);
    EXPECT_EQ(n, 1);
    got_at = weft::rt::monotonic_ns();
  });
  EXPECT_TRUE(WaitUntil([&] { return reading.load(); }));
  std::this_thread::sleep_for(5ms);  // the read is submitted and parked
  weft::Ult hog = rt.spawn([&] { (void)CallFreeLoop(&stop); });
  std::this_thread::sleep_for(20ms);  // the hog holds the only worker
  int64_t t0 = weft::rt::monotonic_ns();
  EXPECT_EQ(write(p[1], "x", 1), 1);
  while (got_at.load() == 0 && weft::rt::monotonic_ns() - t0 < 300'000'000) std::this_thread::sleep_for(100us);
  double ms = got_at.load() == 0 ? 300.0 : static_cast<double>(got_at.load() - t0) / 1e6;
  stop = true;
  EXPECT_TRUE(hog.join().ok());
  EXPECT_TRUE(reader.join().ok());
  close(p[0]);
  close(p[1]);
  return ms;
}
}  // namespace

TEST(Preempt, IoOfAHoggedWorkerIsReapedWithinASlice) {
  WEFT_SKIP_UNDER_TSAN("no asynchronous preemption under ThreadSanitizer (see TickerTicksBesideCallFreeLoop)");
  Watchdog wd(60s, TestName());
  double on = IoWaitBesideHogMs(10ms);
  double off = IoWaitBesideHogMs(0us);
  printf("pipe read completed beside a CPU-bound ULT on the only worker: %.2f ms with 10 ms slices, %.2f ms "
         "without (capped at 300)\n",
         on, off);
  EXPECT_LT(on, 30.0);
  EXPECT_GE(off, 300.0);
}
