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

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n - 3;  // ".", "..", and the DIR's own fd
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

// The forking ULT returns in the child: its process exits with status 0,
// as a process does when its last thread exits.
TEST(Fork, ChildExitsWhenItsLastUltReturns) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  auto r = rt.block_on([] {
    pid_t pid = fork();
    if (pid == 0) {
      // A ULT spawned here is the last to return.
      weft::spawn([] { weft::this_ult::sleep_for(20ms); }).detach().IgnoreError();
      return std::string("child");
    }
    return Describe(WaitChild(pid));
  });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "exit 0");
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
