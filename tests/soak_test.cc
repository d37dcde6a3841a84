// tests/soak_test.cc — a bounded soak: many repetitions of the runtime's
// everyday operations, with the process's resident memory (VmRSS) and open
// descriptors sampled as they go. After a warm-up slice (10% of the work:
// caches, stacks, rings and the malloc arenas reach their working size),
// neither may grow: RSS by at most kRssSlackKiB (4 MiB), descriptors not at
// all (except the workers' own: io engines, which each worker makes at its
// first io, and the /proc stat file of a worker started after the warm-up,
// e.g. a spare for a handoff: at most 3 per worker of the pool).
// Every sample is printed. What each phase proves:
//   - SpawnJoin: 10^7 ULTs spawned and joined (batches of 100 from a ULT,
//     stolen by the other worker) leave nothing behind: descriptors and
//     stacks are recycled, not leaked or accumulated.
//   - Io: 10^6 weft::io operations (write/read and send/recv ping-pong over
//     socketpairs, half of them with a 100 ms deadline that does not fire,
//     a new socketpair every 10,000 operations) leak no descriptor, no
//     completion record and no cancelled-timeout state. (The epoll backend
//     keeps a timer-heap entry per such operation until its deadline, as
//     for timed waits below: short deadlines keep that bounded.)
//   - TimedWaitsEndingEarly: 10^6 Semaphore::try_acquire_for(10 ms) that
//     are satisfied at once (one worker, so each really parks with a timer
//     and is woken by the other ULT's release). Such a wait leaves a stale
//     entry in its worker's timer heap until the 10 ms deadline
//     (runtime/timer_heap.h); this proves that with short timeouts those
//     entries expire and the heap stays bounded. It does not cover long
//     timeouts that end early (stale entries then live for the whole
//     timeout: the preemption issue changes that).
//   - EverythingAtOnce: the three together on two workers for
//     WEFT_SOAK_SECONDS (default 20), plus a foreign thread spawning and
//     joining: their interactions leak nothing either.
// meson runs it once per io backend. The counts are the issue's, unscaled:
// on the 2-vCPU development VM (debugoptimized, dchecks, other builds
// running) the first three phases took 1.7 s, 4.4 s and 0.4 s.
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr long kRssSlackKiB = 4 * 1024;
constexpr int kSlices = 10;  // the first is the warm-up

// The counts of the first three phases divided by WEFT_SOAK_DIVISOR (default
// 1). The sanitizer builds set it (tests/meson.build): under ASan the
// issue's counts take minutes per phase.
long Scaled(long n) {
  const char* e = getenv("WEFT_SOAK_DIVISOR");
  long d = e != nullptr ? atol(e) : 1;
  return n / (d > 0 ? d : 1);
}

long RssKiB() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

// Runs slice(k) for k in [0, kSlices) and checks RSS and fds after each
// slice against the values after the first `warmup_slices` slices.
template <class F>
void Soak(const char* what, F slice, const weft::Runtime* rt = nullptr, int warmup_slices = 1,
          long slack_kib = kRssSlackKiB) {
  Clock::time_point t0 = Clock::now();
  long rss0 = 0, rss_max = 0;
  int fds0 = 0;
  for (int k = 0; k < kSlices; ++k) {
    slice(k);
    long rss = RssKiB();
    Fds fds = OpenFds();
    printf("[   INFO   ] %s: slice %d/%d at %6.0f ms: VmRSS %ld KiB, %d fds (+%d of workers: io engines, stat files)", what, k + 1, kSlices,
           MsSince(t0), rss, fds.other, fds.engine);
    if (rt != nullptr) {
      weft::RuntimeStats st = rt->stats();
      printf("; stacks mapped %lu, unmapped %lu, cached %lu", static_cast<unsigned long>(st.stacks_mapped),
             static_cast<unsigned long>(st.stacks_unmapped), static_cast<unsigned long>(st.cached));
      EXPECT_LE(fds.engine, kEngineFdsPerWorker * static_cast<int>(st.workers.size())) << what;
    }
    printf("\n");
    fflush(stdout);
    if (k < warmup_slices) {
      rss0 = rss;
      fds0 = fds.other;
    } else {
      rss_max = std::max(rss_max, rss);
      EXPECT_EQ(fds.other, fds0) << what << ": descriptors changed after the warm-up (slice " << k + 1 << ")";
    }
  }
  // Not under ASan: its quarantine keeps freed blocks resident (up to
  // 256 MiB), so RSS grows with every free by design. Descriptors are still
  // checked, and ASan checks the memory itself.
  if (!kUnderAsan) {
    EXPECT_LE(rss_max - rss0, slack_kib) << what << ": RSS grew after the warm-up";
  }
  printf("[   INFO   ] %s: RSS after warm-up %ld KiB, max later %ld KiB (%+ld KiB); %.1f s\n", what, rss0, rss_max,
         rss_max - rss0, MsSince(t0) / 1000);
}

TEST(Soak, SpawnJoin) {
  Watchdog wd(TestName(), 240);
  const long kTotal = Scaled(10'000'000), kBatch = 100;
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<long> ran{0};
  Soak("spawn+join", [&](int) {
    absl::Status s = rt.block_on([&] {
      std::vector<weft::Ult> batch;
      batch.reserve(kBatch);
      for (long i = 0; i < kTotal / kSlices; i += kBatch) {
        for (long j = 0; j < kBatch; ++j) batch.push_back(weft::spawn([&ran] { ran.fetch_add(1, std::memory_order_relaxed); }));
        for (weft::Ult& u : batch) ASSERT_TRUE(u.join().ok());
        batch.clear();
      }
    });
    ASSERT_TRUE(s.ok()) << s;
  }, &rt);
  EXPECT_EQ(ran.load(), kTotal);
  weft::RuntimeStats st = rt.stats();
  printf("[   INFO   ] spawned %lu, live %lu, stacks mapped %lu, unmapped %lu, cached %lu\n",
         static_cast<unsigned long>(st.spawned), static_cast<unsigned long>(st.live),
         static_cast<unsigned long>(st.stacks_mapped), static_cast<unsigned long>(st.stacks_unmapped),
         static_cast<unsigned long>(st.cached));
}

// Writes then reads exactly n bytes (looping over short transfers).
// Io deadlines: long enough never to fire on a healthy machine, short
// enough that the epoll backend's timer-heap entries for operations that
// completed first (kept until their deadline, like those of timed waits)
// expire within the warm-up slice. With 10 s deadlines RSS grew linearly,
// about 24 bytes per operation, for the 10 s.
constexpr auto kIoDeadline = 100ms;
std::atomic<long> g_io_timeouts{0};  // deadlines that fired anyway (retried)

// Writes / reads exactly n bytes (looping over short transfers; a deadline
// that fires cancels the operation, which is then retried). With `timed`
// each call has a deadline, and alternates write/read with send/recv.
bool WriteAll(int fd, const char* p, size_t n, bool timed) {
  for (size_t done = 0; done < n;) {
    int64_t r = timed ? weft::io::send(fd, p + done, n - done, 0, weft::io::Deadline::in(kIoDeadline))
                      : weft::io::write(fd, p + done, n - done);
    if (r == -ETIMEDOUT) {
      g_io_timeouts.fetch_add(1);
      continue;
    }
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}
bool ReadAll(int fd, char* p, size_t n, bool timed) {
  for (size_t done = 0; done < n;) {
    int64_t r = timed ? weft::io::recv(fd, p + done, n - done, 0, weft::io::Deadline::in(kIoDeadline))
                      : weft::io::read(fd, p + done, n - done);
    if (r == -ETIMEDOUT) {
      g_io_timeouts.fetch_add(1);
      continue;
    }
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

// In a ULT: `rounds` 64-byte round trips over a new socketpair, the far end
// echoed by a ULT of its own (which may run on either worker). Both sides
// alternate write/read without a deadline with send/recv with one (which
// does not fire). Counts 4 operations per
// round trip into *ops; false if any failed or returned wrong data.
bool IoRoundTrips(long rounds, std::atomic<long>* ops) {
  constexpr size_t kMsg = 64;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  std::atomic<bool> echo_ok{true};
  weft::Ult echo = weft::spawn([&, fd = sv[1]] {
    char buf[kMsg];
    for (long i = 0; i < rounds; ++i) {
      bool timed = i % 2 == 1;
      if (!ReadAll(fd, buf, kMsg, timed) || !WriteAll(fd, buf, kMsg, timed)) {
        echo_ok = false;
        return;
      }
      ops->fetch_add(2, std::memory_order_relaxed);
    }
  });
  bool ok = echo.status().ok();
  char out[kMsg], in[kMsg];
  for (long i = 0; ok && i < rounds; ++i) {
    bool timed = i % 2 == 0;
    memset(out, static_cast<int>(i & 0xff), kMsg);
    ok = WriteAll(sv[0], out, kMsg, timed) && ReadAll(sv[0], in, kMsg, timed) && memcmp(in, out, kMsg) == 0;
    if (ok) ops->fetch_add(2, std::memory_order_relaxed);
  }
  // On a failure, closing our end ends the echo ULT's wait (EOF).
  ok = weft::io::close(sv[0]) == 0 && ok;
  ok = echo.join().ok() && ok && echo_ok.load();
  return weft::io::close(sv[1]) == 0 && ok;
}

TEST(Soak, Io) {
  Watchdog wd(TestName(), 240);
  const long kOps = Scaled(1'000'000);  // 4 per round trip
  const long kRoundsPerPair = std::min<long>(10'000 / 4, kOps / 4 / kSlices);
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<long> ops{0};
  Soak("io", [&](int) {
    for (long r = 0; r < kOps / 4 / kSlices; r += kRoundsPerPair) {
      absl::StatusOr<bool> ok = rt.block_on([&] { return IoRoundTrips(kRoundsPerPair, &ops); });
      ASSERT_TRUE(ok.ok() && *ok) << "an io operation failed or returned wrong data";
    }
  }, &rt);
  EXPECT_EQ(ops.load(), kOps);
  printf("[   INFO   ] %ld io operations on the %s backend; %ld deadlines fired (retried)\n", ops.load(),
         weft::io::default_backend(), g_io_timeouts.load());
  EXPECT_LT(g_io_timeouts.load(), kOps / 100);
}

// In a ULT: `rounds` ping-pongs with `partner` (spawned here): each side
// waits for its semaphore with try_acquire_for(10 ms), and the other side
// releases it. Counts waits that succeeded into *early and expired ones
// (retried: a descheduled VM) into *timeouts.
bool TimedWaitRounds(long rounds, std::atomic<long>* early, std::atomic<long>* timeouts) {
  weft::Semaphore ping(0), pong(0);
  auto wait = [&](weft::Semaphore& sem) {
    while (!sem.try_acquire_for(10ms)) timeouts->fetch_add(1, std::memory_order_relaxed);
    early->fetch_add(1, std::memory_order_relaxed);
  };
  weft::Ult partner = weft::spawn([&] {
    for (long i = 0; i < rounds; ++i) {
      ping.release();
      wait(pong);
    }
  });
  if (!partner.status().ok()) return false;
  for (long i = 0; i < rounds; ++i) {
    wait(ping);
    pong.release();
  }
  return partner.join().ok();
}

TEST(Soak, TimedWaitsEndingEarly) {
  Watchdog wd(TestName(), 240);
  const long kWaits = Scaled(1'000'000);  // 2 per round
  // One worker: a waiter always finds no permit (its partner has not run
  // yet), so it parks with a 10 ms timer, and the partner's release wakes it.
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<long> early{0}, timeouts{0};
  auto parks = [&] {
    uint64_t n = 0;
    for (const auto& w : rt.stats().workers) n += w.parks;
    return n;
  };
  uint64_t parks0 = parks();
  Soak("timed waits", [&](int) {
    absl::StatusOr<bool> ok = rt.block_on([&] { return TimedWaitRounds(kWaits / 2 / kSlices, &early, &timeouts); });
    ASSERT_TRUE(ok.ok() && *ok);
  }, &rt);
  uint64_t parked = parks() - parks0;
  printf("[   INFO   ] %ld timed waits ended early, %ld timed out, %lu parks\n", early.load(), timeouts.load(),
         static_cast<unsigned long>(parked));
  EXPECT_EQ(early.load(), kWaits);
  EXPECT_LT(timeouts.load(), kWaits / 100) << "most waits should be woken long before their 10 ms deadline";
  EXPECT_GE(parked, static_cast<uint64_t>(kWaits) * 9 / 10) << "the waits did not really park with a timer";
}

// All of the above at once for WEFT_SOAK_SECONDS (default 20) on two
// workers, plus a foreign thread that spawns and joins through the
// injection queue: the interactions (stealing, io completions and timers on
// the same workers, foreign joins) leak nothing either. The warm-up is the
// first half here, and the slack four times the phases': RSS moves in steps of
// 1-2 MiB for a while (recycled stacks touched ever deeper by the different
// kinds of ULT that reuse them, the stack cache growing to the largest
// burst, about 170, malloc arenas), then stays flat: +1.4 MiB (io_uring)
// and +2.3 MiB (epoll) after the warm-up in 60 s and 80 s runs. The timer
// heaps also grow in steps to the peak rate of timed waits (each early end
// leaves its entry until the 10 ms deadline: the preemption issue removes
// them): when the machine got quieter in the middle of a run, the rate
// rose and RSS stepped up once by 8.5-9 MiB (between slices 3 and 5 in one
// run, 5 and 7 in another), then stayed flat. So the slack here is 16 MiB
// over the second half. A leak of even one byte per ten operations (over
// 10^8 operations in that half) would still exceed it several times over.
TEST(Soak, EverythingAtOnce) {
  const char* env = getenv("WEFT_SOAK_SECONDS");
  const double seconds = env != nullptr ? atof(env) : 20;
  Watchdog wd(TestName(), static_cast<int>(seconds) + 120);
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok());
  std::atomic<long> spawned{0}, foreign{0}, ops{0}, early{0}, timeouts{0}, failures{0};
  Soak("everything at once", [&](int) {
    Clock::time_point end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(seconds / kSlices));
    std::thread outsider([&] {
      while (Clock::now() < end) {
        weft::Ult u = rt.spawn([&] { foreign.fetch_add(1, std::memory_order_relaxed); });
        if (!u.join().ok()) failures.fetch_add(1);
      }
    });
    absl::Status s = rt.block_on([&] {
      std::vector<weft::Ult> drivers;
      drivers.push_back(weft::spawn([&] {
        std::vector<weft::Ult> batch;
        while (Clock::now() < end) {
          for (int j = 0; j < 100; ++j) batch.push_back(weft::spawn([&] { spawned.fetch_add(1, std::memory_order_relaxed); }));
          for (weft::Ult& u : batch)
            if (!u.join().ok()) failures.fetch_add(1);
          batch.clear();
        }
      }));
      drivers.push_back(weft::spawn([&] {
        while (Clock::now() < end)
          if (!IoRoundTrips(250, &ops)) failures.fetch_add(1);
      }));
      drivers.push_back(weft::spawn([&] {
        while (Clock::now() < end)
          if (!TimedWaitRounds(1000, &early, &timeouts)) failures.fetch_add(1);
      }));
      for (weft::Ult& d : drivers)
        if (!d.join().ok()) failures.fetch_add(1);
    });
    outsider.join();
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(failures.load(), 0);
  }, &rt, /*warmup_slices=*/5, /*slack_kib=*/4 * kRssSlackKiB);
  printf("[   INFO   ] in %.0f s: %ld spawn+join from ULTs, %ld from a thread, %ld io operations, %ld timed waits "
         "ended early, %ld timed out\n",
         seconds, spawned.load(), foreign.load(), ops.load(), early.load(), timeouts.load());
  EXPECT_GT(spawned.load(), 0);
  EXPECT_GT(foreign.load(), 0);
  EXPECT_GT(ops.load(), 0);
  EXPECT_GT(early.load(), 0);
}

}  // namespace
