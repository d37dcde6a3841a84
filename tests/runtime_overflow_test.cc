// tests/runtime_overflow_test.cc — stack overflows in ULTs are reported;
// every other SIGSEGV keeps its usual meaning.
//
// Each case runs in a child process: gtest death tests (threadsafe style:
// the child re-executes this binary and runs only the one test), or, where
// the check is that a message is *absent*, a fork()ed child whose stderr is
// captured through a pipe. Every child arms alarm() so that a hang kills it
// with SIGALRM, which fails the test instead of blocking it.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <weft/weft.h>

#include "tests/sanitizers.h"

namespace {

constexpr unsigned kChildTimeoutSec = 30;

// Never equal to a depth the recursion reaches (volatile: the compiler cannot
// tell, so it does not warn about infinite recursion).
volatile int g_never = -1;

// Recurses without bound; the volatile array keeps each frame alive and the
// call after it keeps the compiler from turning the recursion into a loop.
__attribute__((noinline)) int Recurse(int depth) {
  if (depth == g_never) return 0;
  volatile char frame[256];
  frame[0] = static_cast<char>(depth);
  int r = Recurse(depth + 1);
  return r + frame[depth % 256];
}

// A single frame far larger than the guard page: the first touch of the
// array (its lowest byte) lands below the guard.
__attribute__((noinline)) int BigFrame() {
  volatile char big[128 * 1024];
  big[0] = 1;
  big[sizeof big - 1] = 2;
  return big[0] + big[sizeof big - 1];
}

// A 72 KiB frame on a 64 KiB stack, compiled WITHOUT stack-clash
// protection (as in a library the user did not build): the stack pointer
// drops about 9 KiB below the stack and the first store lands there at once.
__attribute__((noinline, optimize("no-stack-clash-protection"))) int Frame72KiBUnprobed() {
  volatile char big[72 * 1024];
  big[0] = 1;
  return big[0];
}

// The same frame compiled with -fstack-clash-protection (weft's and
// weft.pc's flag): it probes every page on the way down.
__attribute__((noinline)) int Frame72KiBProbed() {
  volatile char big[72 * 1024];
  big[0] = 1;
  return big[0];
}

// A ULT named `name` runs `frame` on a 64 KiB stack while a second ULT,
// spawned just after it (so its fresh stack is mapped directly below the
// first one's), is alive: a frame that skips the guard lands in the
// neighbour's stack instead of faulting.
void RunFrameNextToNeighbour(int (*frame)(), const char* name, size_t guard) {
  alarm(kChildTimeoutSec);
  weft::Runtime rt(weft::Options{.workers = 2, .guard_size = guard});
  static std::atomic<bool> go{false};
  static std::atomic<bool> done{false};
  static int (*fn)() = nullptr;
  fn = frame;
  weft::Ult a = rt.spawn(
      [] {
        while (!go.load()) weft::this_ult::yield();
        (void)fn();
        done = true;
      },
      weft::SpawnOptions{.name = name, .stack_size = 64 * 1024});
  weft::Ult b = rt.spawn(
      [] {
        while (!done.load()) weft::this_ult::yield();
      },
      weft::SpawnOptions{.name = "neighbour", .stack_size = 64 * 1024});
  go = true;
  (void)a.join();
  (void)b.join();
  fprintf(stderr, "the %s frame returned without a fault\n", name);
}

// Not instrumented by UBSan: the null load is the point (a real SIGSEGV),
// not undefined behaviour to report and exit on.
__attribute__((noinline, no_sanitize("undefined"))) int NullDeref() {
  volatile int* volatile p = nullptr;
  return *p;
}

// Runs `body` in a forked child with stderr captured; returns the wait
// status and fills `err`.
int RunInChild(const std::function<void()>& body, std::string* err) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], 2);
    close(fds[1]);
    alarm(kChildTimeoutSec);
    body();
    _exit(0);
  }
  close(fds[1]);
  char buf[4096];
  for (;;) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) {
      err->append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

std::string Describe(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

// The body of most children: a runtime whose one ULT runs `fn`.
void RunInUlt(std::function<void()> fn, weft::SpawnOptions opts, int workers = 2) {
  alarm(kChildTimeoutSec);
  weft::Runtime rt(weft::Options{.workers = workers});
  weft::Ult u = rt.spawn([fn = std::move(fn)] { fn(); }, opts);
  (void)u.join();
}

class Overflow : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// A ULT named "deep" that recurses without bound on the default 64 KiB
// stack aborts the process with a report naming it.
TEST_F(Overflow, UnboundedRecursionIsReported) {
  EXPECT_EXIT(RunInUlt([] { (void)Recurse(0); }, weft::SpawnOptions{.name = "deep"}),
              ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"deep\"");
}

// The same on a bound ULT (its own kernel thread) and on a ULT with a
// larger stack of its own.
TEST_F(Overflow, BoundAndCustomStackAreReported) {
  EXPECT_EXIT(RunInUlt([] { (void)Recurse(0); }, weft::SpawnOptions{.name = "deep-bound", .bound = true}),
              ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"deep-bound\"");
  EXPECT_EXIT(RunInUlt([] { (void)Recurse(0); }, weft::SpawnOptions{.name = "deep-256k", .stack_size = 256 * 1024}),
              ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"deep-256k\".*262144 bytes");
}

// An overflow after the ULT migrated and after other ULTs ran on the same
// stack memory (a recycled descriptor) is reported with the right name.
TEST_F(Overflow, RecycledStackIsReported) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 2});
        for (int i = 0; i < 1000; ++i) {
          (void)rt.spawn([] { weft::this_ult::yield(); }, weft::SpawnOptions{.name = "fine"}).join();
        }
        weft::Ult u = rt.spawn(
            [] {
              for (int i = 0; i < 100; ++i) weft::this_ult::sleep_for(std::chrono::microseconds(10));
              (void)Recurse(0);
            },
            weft::SpawnOptions{.name = "deep-late"});
        (void)u.join();
      },
      ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"deep-late\"");
}

// A single frame larger than the guard (the stack pointer jumps past it)
// is still reported as a stack overflow.
TEST_F(Overflow, FrameLargerThanGuardIsReported) {
  EXPECT_EXIT(RunInUlt([] { (void)BigFrame(); }, weft::SpawnOptions{.name = "big-frame"}),
              ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"big-frame\"");
}

// Regression (issue 9 #2): on 15df0bc (4 KiB guard, no stack-clash
// protection) a 72 KiB frame on a 64 KiB ULT stack wrote into the
// neighbouring ULT's stack without a fault and the ULT returned normally.
// Code built without stack-clash protection is covered by the default
// guard (256 KiB)...
TEST_F(Overflow, Frame72KiBWithoutProbesIsReportedWithTheDefaultGuard) {
  EXPECT_EXIT(RunFrameNextToNeighbour(Frame72KiBUnprobed, "frame-72k", weft::Options{}.guard_size),
              ::testing::KilledBySignal(SIGABRT), "weft: stack overflow in ULT .* \"frame-72k\"");
}

// ... and code built with it (weft's flag, passed on by weft.pc) by any
// guard, even a single page.
TEST_F(Overflow, Frame72KiBWithProbesIsReportedWithAOnePageGuard) {
  EXPECT_EXIT(RunFrameNextToNeighbour(Frame72KiBProbed, "frame-72k-probed", 4096),
              ::testing::KilledBySignal(SIGABRT), "weft: stack overflow in ULT .* \"frame-72k-probed\"");
}

// A SIGSEGV in a ULT that is not an overflow (a null dereference) kills the
// process with SIGSEGV, and is not reported as a stack overflow. (The
// children start from the default SIGSEGV action, as without a sanitizer:
// under ASan weft's handler would otherwise pass the fault on to ASan's.)
TEST_F(Overflow, NullDerefInUltIsPlainSegv) {
  EXPECT_EXIT(
      {
        UseDefaultSegvAction();
        RunInUlt([] { (void)NullDeref(); }, weft::SpawnOptions{.name = "null"});
      },
      ::testing::KilledBySignal(SIGSEGV), "");
  std::string err;
  int status = RunInChild(
      [] {
        UseDefaultSegvAction();
        RunInUlt([] { (void)NullDeref(); }, weft::SpawnOptions{.name = "null"});
      },
      &err);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << Describe(status) << "\n" << err;
  EXPECT_EQ(err.find("stack overflow"), std::string::npos) << err;
}

// A SIGSEGV on a foreign thread (here main) while a runtime exists kills
// the process with SIGSEGV as usual, without an overflow report.
TEST_F(Overflow, SegvOnForeignThreadIsPlainSegv) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        UseDefaultSegvAction();
        weft::Runtime rt(weft::Options{.workers = 2});
        (void)rt.block_on([] { weft::this_ult::yield(); });
        (void)NullDeref();
      },
      ::testing::KilledBySignal(SIGSEGV), "");
  std::string err;
  int status = RunInChild(
      [] {
        UseDefaultSegvAction();
        weft::Runtime rt(weft::Options{.workers = 2});
        (void)rt.block_on([] { weft::this_ult::yield(); });
        (void)NullDeref();
      },
      &err);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << Describe(status) << "\n" << err;
  EXPECT_EQ(err.find("stack overflow"), std::string::npos) << err;
}

// A SIGSEGV handler the application installed before the runtime still
// gets faults that are not overflows, in a ULT and on a foreign thread.
TEST_F(Overflow, PreviousHandlerStillGetsOtherFaults) {
  static auto handler = [](int, siginfo_t* si, void*) {
    const char msg[] = "app handler\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(si->si_addr == nullptr ? 42 : 43);
  };
  auto install = [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, nullptr);
  };
  EXPECT_EXIT(
      {
        install();
        RunInUlt([] { (void)NullDeref(); }, weft::SpawnOptions{.name = "null"});
      },
      ::testing::ExitedWithCode(42), "app handler");
  EXPECT_EXIT(
      {
        install();
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 1});
        (void)NullDeref();
      },
      ::testing::ExitedWithCode(42), "app handler");
  // An overflow is still reported by weft, not passed to the app's handler.
  EXPECT_EXIT(
      {
        install();
        RunInUlt([] { (void)Recurse(0); }, weft::SpawnOptions{.name = "deep"});
      },
      ::testing::KilledBySignal(SIGABRT), "stack overflow in ULT .* \"deep\"");
}

// An exception escaping a detached ULT's function (nobody will see it)
// aborts the process with a message naming the ULT and the exception.
// (A joined ULT's exception is rethrown by join: runtime_task_test.)
TEST_F(Overflow, EscapingExceptionNamesTheUlt) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Ult u = rt.spawn([] { throw std::runtime_error("oops-42"); }, weft::SpawnOptions{.name = "thrower"});
        (void)u.detach();
        (void)rt.shutdown();
      },
      ::testing::KilledBySignal(SIGABRT), "exception escaped ULT .* \"thrower\".*oops-42");
}

}  // namespace

// glibc's view of the stack follows the running ULT (issue 9 #2).
namespace {

using CutoffFn = int (*)(size_t);

struct StackView {
  int small_ok = -1;    // __libc_alloca_cutoff(size / 4)
  int large_ok = -1;    // __libc_alloca_cutoff(size / 4 + 1)
  bool getattr_ok = false;  // pthread_getattr_np's stack holds a local of the ULT
  size_t getattr_size = 0;
};

StackView Look(CutoffFn cutoff, size_t size) {
  StackView v;
  v.small_ok = cutoff(size / 4);
  v.large_ok = cutoff(size / 4 + 1);
  pthread_attr_t a;
  if (pthread_getattr_np(pthread_self(), &a) == 0) {
    void* addr = nullptr;
    size_t sz = 0;
    pthread_attr_getstack(&a, &addr, &sz);
    // The frame, not a local's address: under ASan's
    // detect_stack_use_after_return locals live on a heap "fake stack".
    const char* p = static_cast<const char*>(__builtin_frame_address(0));
    v.getattr_ok = p >= static_cast<char*>(addr) && p < static_cast<char*>(addr) + sz;
    v.getattr_size = sz;
    pthread_attr_destroy(&a);
  }
  return v;
}

}  // namespace

// Regression (issue 9 #2): on 15df0bc __libc_alloca_cutoff allowed 64 KiB
// of alloca on a 64 KiB ULT stack (glibc saw a stack size of 0); it must be
// a quarter of the running ULT's stack, for ULTs of different sizes on the
// same workers, also after they migrated; and pthread_getattr_np in a ULT
// reports that ULT's stack.
TEST(GlibcStackView, AllocaCutoffAndGetattrFollowTheRunningUlt) {
  auto cutoff = reinterpret_cast<CutoffFn>(dlsym(RTLD_DEFAULT, "__libc_alloca_cutoff"));
  if (cutoff == nullptr) GTEST_SKIP() << "this glibc does not export __libc_alloca_cutoff";
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  const size_t sizes[] = {32 * 1024, 64 * 1024, 256 * 1024};
  constexpr int kRounds = 50;
  StackView views[3][kRounds];
  std::vector<weft::Ult> ults;
  for (int i = 0; i < 3; ++i) {
    ults.push_back(rt.spawn(
        [&, i] {
          for (int r = 0; r < kRounds; ++r) {
            views[i][r] = Look(cutoff, sizes[i]);
            weft::this_ult::yield();  // interleave with the others, migrate
          }
        },
        weft::SpawnOptions{.stack_size = sizes[i]}));
  }
  for (auto& u : ults) ASSERT_TRUE(u.join().ok());
  for (int i = 0; i < 3; ++i) {
    for (int r = 0; r < kRounds; ++r) {
      SCOPED_TRACE(testing::Message() << "stack " << sizes[i] << " round " << r);
      EXPECT_EQ(views[i][r].small_ok, 1);
      EXPECT_EQ(views[i][r].large_ok, 0) << "glibc allows more alloca than a quarter of the ULT's stack";
      EXPECT_TRUE(views[i][r].getattr_ok);
      EXPECT_EQ(views[i][r].getattr_size, sizes[i]);
    }
  }
}
