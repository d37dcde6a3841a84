// tests/runtime_overflow_test.cc — stack overflows in ULTs are reported;
// every other SIGSEGV keeps its usual meaning.
//
// Each case runs in a child process: gtest death tests (threadsafe style:
// the child re-executes this binary and runs only the one test), or, where
// the check is that a message is *absent*, a fork()ed child whose stderr is
// captured through a pipe. Every child arms alarm() so that a hang kills it
// with SIGALRM, which fails the test instead of blocking it.
#include <fcntl.h>
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

#include <gtest/gtest.h>
#include <weft/weft.h>

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

__attribute__((noinline)) int NullDeref() {
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

// A SIGSEGV in a ULT that is not an overflow (a null dereference) kills the
// process with SIGSEGV, and is not reported as a stack overflow.
TEST_F(Overflow, NullDerefInUltIsPlainSegv) {
  EXPECT_EXIT(RunInUlt([] { (void)NullDeref(); }, weft::SpawnOptions{.name = "null"}),
              ::testing::KilledBySignal(SIGSEGV), "");
  std::string err;
  int status = RunInChild([] { RunInUlt([] { (void)NullDeref(); }, weft::SpawnOptions{.name = "null"}); }, &err);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV) << Describe(status) << "\n" << err;
  EXPECT_EQ(err.find("stack overflow"), std::string::npos) << err;
}

// A SIGSEGV on a foreign thread (here main) while a runtime exists kills
// the process with SIGSEGV as usual, without an overflow report.
TEST_F(Overflow, SegvOnForeignThreadIsPlainSegv) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 2});
        (void)rt.block_on([] { weft::this_ult::yield(); });
        (void)NullDeref();
      },
      ::testing::KilledBySignal(SIGSEGV), "");
  std::string err;
  int status = RunInChild(
      [] {
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

// An exception escaping a ULT's function aborts the process with a message
// naming the ULT and the exception.
TEST_F(Overflow, EscapingExceptionNamesTheUlt) {
  EXPECT_EXIT(RunInUlt([] { throw std::runtime_error("oops-42"); }, weft::SpawnOptions{.name = "thrower"}),
              ::testing::KilledBySignal(SIGABRT), "exception escaped ULT .* \"thrower\": oops-42");
}

}  // namespace
