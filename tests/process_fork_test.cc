// tests/process_fork_test.cc — fork() from ULTs and from foreign threads while
// runtimes run (runtime/fork.cc), on the io backend WEFT_IO names.
//
// A child reports through its exit status: 0 when every check in it passed,
// otherwise the number of the first check that failed (see ChildCheck).
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <string>
#include <vector>

#include "runtime/fork.h"
#include "test_util.h"
#include "watchdog.h"
#include "weft/weft.h"

namespace {

using namespace std::chrono_literals;

// In a child: exits the process with `code` unless `ok`.
#define ChildCheck(ok, code) \
  do {                       \
    if (!(ok)) _exit(code);  \
  } while (0)

// Waits for `pid` without blocking a worker: waitpid inside a blocking
// region. Returns the wait status, or -1 after `limit` (then kills it).
int WaitChild(pid_t pid, std::chrono::milliseconds limit = 10000ms) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = weft::blocking([&] { return waitpid(pid, &status, WNOHANG); });
    if (r == pid) return status;
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    weft::this_ult::sleep_for(1ms);
  }
}

std::string Describe(int status) {
  if (status == -1) return "timed out";
  if (status < 0) return "waitpid failed";
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// What a child does to prove the runtime works there: spawn and join 100
// ULTs, lock a fresh mutex from all of them, sleep, and move bytes through a
// pipe with weft::io (io_uring or epoll, as the parent).
int ChildWork() {
  weft::Mutex mu;
  int counter = 0;
  std::vector<weft::Ult> us;
  for (int i = 0; i < 100; ++i) {
    us.push_back(weft::spawn([&] {
      weft::this_ult::yield();
      std::lock_guard<weft::Mutex> g(mu);
      ++counter;
    }));
  }
  for (auto& u : us)
    if (!u.join().ok()) return 10;
  if (counter != 100) return 11;
  weft::this_ult::sleep_for(1ms);
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return 12;
  char out = 'x', in = 0;
  if (weft::io::write(p[1], &out, 1) != 1) return 13;
  if (weft::io::read(p[0], &in, 1, weft::io::Deadline::in(2s)) != 1 || in != 'x') return 14;
  weft::io::close(p[0]);
  weft::io::close(p[1]);
  return 0;
}

TEST(Fork, ChildOfAUltRunsTheRuntime) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  auto r = rt.block_on([] {
    pid_t pid = fork();
    if (pid == 0) _exit(ChildWork());
    if (pid < 0) return std::string("fork failed");
    return Describe(WaitChild(pid));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0");
}

// A fork child's descriptor table is only as large as the descriptors open
// at the fork need (the kernel sizes the copy to fit them), and the child
// runs the rebuilt runtime with several threads: the atfork child grows the
// table again, as Runtime start did (Options::fd_table_slots), before it
// starts a thread. Fails without it: the child's FDSize is 64 or 256.
TEST(Fork, ChildGrowsTheDescriptorTableAgain) {
  Watchdog wd(TestName(), 60);
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 2048) GTEST_SKIP() << "the soft RLIMIT_NOFILE is below 2048";
  weft::Runtime rt(weft::Options{.workers = 2, .fd_table_slots = 2048});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  ASSERT_GE(FdTableSlots(), 2048);
  auto r = rt.block_on([] {
    pid_t pid = fork();
    if (pid == 0) {
      long slots = FdTableSlots();
      if (slots < 2048) {
        printf("[   INFO   ] the child's FDSize is %ld\n", slots);
        fflush(stdout);
        _exit(20);
      }
      _exit(ChildWork());
    }
    if (pid < 0) return std::string("fork failed");
    return Describe(WaitChild(pid));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0") << "exit 20: the child's table was not grown";
}

// The forking ULT returns in the child: its process exits with status 0,
// as a process does when its last thread exits.
TEST(Fork, ChildExitsWhenItsLastUltReturns) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  auto r = rt.block_on([&] {
    pid_t pid = fork();
    if (pid == 0) {
      // A ULT spawned here is the last to return: the process must live
      // until it has written its byte, then exit 0.
      weft::spawn([&] {
        weft::this_ult::sleep_for(50ms);
        char c = 'z';
        weft::io::write(p[1], &c, 1);
      }).detach().IgnoreError();
      return std::string("child");
    }
    weft::io::close(p[1]);
    std::string st = Describe(WaitChild(pid));
    char c = 0;
    int64_t n = weft::io::read(p[0], &c, 1, weft::io::Deadline::in(1s));
    weft::io::close(p[0]);
    return st + (n == 1 && c == 'z' ? " after the last ULT" : " before the last ULT returned");
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0 after the last ULT");
}

TEST(Fork, FromAForeignThreadWhileUltsRun) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ticks{0};
  std::vector<weft::Ult> load;
  for (int i = 0; i < 8; ++i)
    load.push_back(rt.spawn([&] {
      while (!stop.load()) {
        ticks.fetch_add(1);
        weft::this_ult::yield();
      }
    }));
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      // Not in a ULT: the runtime has fresh workers and no ULT.
      auto res = rt.block_on([] { return ChildWork(); });
      _exit(res.ok() ? *res : 99);
    }
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_EQ(Describe(status), "exit 0") << "fork " << i;
  }
  uint64_t before = ticks.load();
  EXPECT_TRUE(WaitUntil([&] { return ticks.load() > before + 100; })) << "the parent's ULTs stopped";
  stop.store(true);
  for (auto& u : load) ASSERT_TRUE(u.join().ok());
}

}  // namespace

namespace {

long RssKb() { return ProcStatusField("VmRSS"); }

// The stress test: 1,000 forks from a ULT while 1,000 other ULTs do
// io and take a lock on every worker. Every child runs ChildWork and exits
// 0 within 5 s; the parent's counts are exact afterwards; the parent's fds
// and memory do not grow with the number of forks.
TEST(Fork, ThousandForksUnderLoad) {
  Watchdog wd(TestName(), 240);
  const int kForks = 1000, kLoad = 1000;
  // No time slices: each preemption doorbell pushes a signal frame on the
  // running ULT's stack, which may commit one more page of it once (about
  // 1.5-3 MB over these 1,000 ULTs while forks' copy-on-write faults keep
  // workers from switching): a bounded cost of preemption, not of fork,
  // that the RSS check below would mistake for a leak.
  weft::Runtime rt(weft::Options{.workers = 2, .time_slice = std::chrono::microseconds(0)});
  weft::Mutex mu;
  uint64_t locked_count = 0;               // guarded by mu
  std::atomic<uint64_t> done_count{0};     // each load ULT adds its own count at the end
  std::atomic<bool> stop{false};
  std::atomic<int> io_errors{0};
  std::vector<weft::Ult> load;
  for (int i = 0; i < kLoad; ++i) {
    load.push_back(rt.spawn([&] {
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) {
        io_errors.fetch_add(1);
        return;
      }
      uint64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        char c = 'a';
        if (weft::io::write(p[1], &c, 1) != 1 || weft::io::read(p[0], &c, 1) != 1) io_errors.fetch_add(1);
        {
          std::lock_guard<weft::Mutex> g(mu);
          ++locked_count;
        }
        ++mine;
        weft::this_ult::yield();
      }
      weft::io::close(p[0]);
      weft::io::close(p[1]);
      done_count.fetch_add(mine);
    }));
  }
  long rss_after_warmup = 0;
  Fds fds_after_warmup;  // the load's pipes exist by then
  std::vector<std::string> failures;
  auto r = rt.block_on([&] {
    for (int i = 0; i < kForks; ++i) {
      if (i == 100) {
        rss_after_warmup = RssKb();
        fds_after_warmup = OpenFds();
      }
      pid_t pid = fork();
      if (pid == 0) _exit(ChildWork());
      if (pid < 0) {
        failures.push_back("fork " + std::to_string(i) + ": " + strerror(errno));
        continue;
      }
      std::string d = Describe(WaitChild(pid, 5000ms));
      if (d != "exit 0") failures.push_back("fork " + std::to_string(i) + ": " + d);
    }
  });
  ASSERT_TRUE(r.ok()) << r;
  long rss_end = RssKb();
  Fds fds_end = OpenFds();
  stop.store(true);
  for (auto& u : load) ASSERT_TRUE(u.join().ok());
  EXPECT_TRUE(failures.empty()) << failures.size() << " children failed, first: " << failures.front();
  EXPECT_EQ(io_errors.load(), 0);
  EXPECT_EQ(locked_count, done_count.load()) << "the parent lost or duplicated work across forks";
  EXPECT_GT(done_count.load(), static_cast<uint64_t>(kLoad)) << "the load did not run";
  // Engine descriptors apart: a worker (a spare, the fork KLT) may make its
  // ring at its first idle wait after the warm-up (seen: one more io_uring
  // fd at the end in one run of 20); each worker has at most its own.
  EXPECT_EQ(fds_end.other, fds_after_warmup.other) << "fds leaked across forks";
  EXPECT_LE(fds_end.engine, kEngineFdsPerWorker * static_cast<int>(rt.stats().workers.size() + 1))
      << "io engine descriptors leaked across forks";
  // 900 forks after the warm-up: a leak of one page per fork would be 3.6 MB.
  EXPECT_LT(rss_end - rss_after_warmup, 2048) << "RSS grew from " << rss_after_warmup << " to " << rss_end << " KiB";
  printf("1000 forks under load: %llu lock+io rounds in the parent; RSS %ld -> %ld KiB\n",
         static_cast<unsigned long long>(done_count.load()), rss_after_warmup, rss_end);
}

// POSIX order: prepare handlers in reverse order of registration, parent
// and child handlers in order. weft registered its handlers when the
// library was loaded (before these), so its prepare runs after all three
// of these and its parent/child handlers before them.
std::string order;
weft::rt::ForkCounts seen[9];
void Note(char c, int slot) {
  order += c;
  seen[slot] = weft::rt::fork_counts();
}

TEST(Fork, AtforkHandlersRunInPosixOrderAroundWefts) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  static bool registered = false;
  if (!registered) {
    registered = true;
    pthread_atfork([] { Note('1', 0); }, [] { Note('a', 3); }, [] { Note('A', 6); });
    pthread_atfork([] { Note('2', 1); }, [] { Note('b', 4); }, [] { Note('B', 7); });
    pthread_atfork([] { Note('3', 2); }, [] { Note('c', 5); }, [] { Note('C', 8); });
  }
  auto r = rt.block_on([] {
    order.clear();
    weft::rt::ForkCounts before = weft::rt::fork_counts();
    pid_t pid = fork();
    if (pid == 0) {
      // Child: the application's child handlers ran after weft's.
      bool ok = order == "321ABC";
      for (int i = 6; i < 9; ++i) ok = ok && seen[i].child == before.child + 1;
      for (int i = 0; i < 3; ++i) ok = ok && seen[i].prepare == before.prepare;
      _exit(ok ? 0 : 1);
    }
    std::string parent_order = order;
    bool counts_ok = true;
    for (int i = 0; i < 3; ++i) counts_ok = counts_ok && seen[i].prepare == before.prepare;  // before weft's
    for (int i = 3; i < 6; ++i) counts_ok = counts_ok && seen[i].parent == before.parent + 1;  // after weft's
    return parent_order + (counts_ok ? " counts ok " : " counts wrong ") + Describe(WaitChild(pid));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "321abc counts ok exit 0");
}

// A mutex another ULT holds at the fork stays held in the child (as with
// threads); a fresh one works; none of weft's internal locks is held there.
TEST(Fork, MutexHeldByAnotherUlt) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex held;
  weft::Latch locked(1), release(1);
  weft::Ult holder = rt.spawn([&] {
    std::lock_guard<weft::Mutex> g(held);
    locked.count_down();
    release.wait();
  });
  locked.wait();
  auto r = rt.block_on([&] {
    pid_t pid = fork();
    if (pid == 0) {
      ChildCheck(weft::rt::internal_locks_free(), 1);
      ChildCheck(!held.try_lock(), 2);
      weft::Mutex fresh;
      int n = 0;
      std::vector<weft::Ult> us;
      for (int i = 0; i < 10; ++i)
        us.push_back(weft::spawn([&] {
          for (int k = 0; k < 100; ++k) {
            std::lock_guard<weft::Mutex> g(fresh);
            ++n;
            weft::this_ult::yield();
          }
        }));
      for (auto& u : us) ChildCheck(u.join().ok(), 3);
      ChildCheck(n == 1000, 4);
      _exit(0);
    }
    return Describe(WaitChild(pid));
  });
  release.count_down();
  ASSERT_TRUE(holder.join().ok());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0");
}

// fork() inside weft::blocking(): the child goes on inside the region, and
// its runtime works once the region ends.
TEST(Fork, InsideABlockingRegion) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  auto r = rt.block_on([] {
    pid_t pid = weft::blocking([] { return fork(); });
    if (pid == 0) _exit(ChildWork());
    return Describe(WaitChild(pid));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0");
}

// Ids of the parent's other ULTs are stale in the child.
TEST(Fork, OtherUltsDoNotExistInTheChild) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Latch release(1);
  weft::Ult other = rt.spawn([&] { release.wait(); });
  auto r = rt.block_on([&] {
    pid_t pid = fork();
    if (pid == 0) {
      absl::Status s = other.join();
      _exit(absl::IsNotFound(s) ? 0 : 1);
    }
    return Describe(WaitChild(pid));
  });
  release.count_down();
  ASSERT_TRUE(other.join().ok());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0");
}

// fork() that fails (EAGAIN under RLIMIT_NPROC) returns -1 with errno as
// glibc's does, and the runtime is intact: weft's prepare/parent handlers
// ran (glibc calls the parent handlers on failure too) and released every
// lock. Run in a child process that drops to an unprivileged uid (root is
// not bound by RLIMIT_NPROC).
TEST(Fork, FailingForkLeavesTheRuntimeIntact) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to an unprivileged uid";
  Watchdog wd(TestName(), 60);
  pid_t outer = fork();
  if (outer == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
    weft::Runtime rt(weft::Options{.workers = 2});
    // Now no new process or thread of this uid can be made.
    rlimit lim{0, 0};
    if (setrlimit(RLIMIT_NPROC, &lim) != 0) _exit(11);
    auto r = rt.block_on([] {
      errno = 0;
      pid_t pid = fork();
      if (pid == 0) _exit(0);
      int e = errno;
      if (pid != -1 || e != EAGAIN) return 20;
      if (!weft::rt::internal_locks_free()) return 21;
      // Spawn, join, lock and io still work.
      int n = 0;
      weft::Mutex mu;
      std::vector<weft::Ult> us;
      for (int i = 0; i < 50; ++i)
        us.push_back(weft::spawn([&] {
          std::lock_guard<weft::Mutex> g(mu);
          ++n;
        }));
      for (auto& u : us)
        if (!u.join().ok()) return 22;
      if (n != 50) return 23;
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) return 24;
      char c = 'q';
      if (weft::io::write(p[1], &c, 1) != 1 || weft::io::read(p[0], &c, 1) != 1) return 25;
      return 0;
    });
    _exit(r.ok() ? *r : 30);
  }
  int st = 0;
  ASSERT_EQ(waitpid(outer, &st, 0), outer);
  EXPECT_EQ(Describe(st), "exit 0");
}

}  // namespace
