// tests/runtime_pthread_test.cc — per-thread libc entry points called in
// ULTs: pthread_exit and pthread_cancel (issue 9 #16), uselocale (#17) and
// dlopen of initial-exec TLS through the interposer (#18).
//
// Built twice (tests/meson.build): runtime_pthread_test links the static
// library, runtime_pthread_shared_test the shared one, so weft's
// interposed pthread_exit/pthread_cancel/dlopen are checked in both link
// modes. Each case that could kill the process runs in a child (gtest
// death tests, threadsafe style) that exits 0 when every check held;
// alarm() bounds every child.
#include <dlfcn.h>
#include <locale.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <weft/weft.h>

namespace {

constexpr unsigned kChildTimeoutSec = 60;

[[noreturn]] [[gnu::format(printf, 1, 2)]] void Fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  _exit(1);
}

#define CHECK_OR_FAIL(cond, ...)                      \
  do {                                                \
    if (!(cond)) Fail("check failed: " #cond ": " __VA_ARGS__); \
  } while (0)

std::atomic<int> g_dtors{0};
std::atomic<int> g_cleanups{0};
std::atomic<int> g_rethrown{0};
std::atomic<int> g_after_exit{0};
std::atomic<int> g_local_dtors{0};

struct CountsDestruction {
  ~CountsDestruction() { g_dtors.fetch_add(1); }
};

struct LocalValue {
  int v = 0;
  ~LocalValue() { g_local_dtors.fetch_add(1); }
};
weft::UltLocal<LocalValue> g_local;

void Cleanup(void* arg) { static_cast<std::atomic<int>*>(arg)->fetch_add(1); }

__attribute__((noinline)) void ExitFromDeepInside(void* value, bool yield_first) {
  CountsDestruction inner;
  if (yield_first) {
    for (int i = 0; i < 20; ++i) weft::this_ult::yield();  // may migrate
  }
  try {
    pthread_exit(value);
  } catch (...) {
    g_rethrown.fetch_add(1);  // sees abi::__forced_unwind
    throw;
  }
}

// The body of a ULT that ends with pthread_exit: a destructor in its own
// frame and in a callee's, a cleanup handler, a catch (...) that rethrows,
// a ULT-local value.
void UltThatExits(void* value, bool yield_first) {
  CountsDestruction outer;
  g_local->v = 1;
  pthread_cleanup_push(Cleanup, &g_cleanups);
  ExitFromDeepInside(value, yield_first);
  g_after_exit.fetch_add(1);
  pthread_cleanup_pop(0);
  g_after_exit.fetch_add(1);
}

void ResetCounters() {
  g_dtors = 0;
  g_cleanups = 0;
  g_rethrown = 0;
  g_after_exit = 0;
  g_local_dtors = 0;
}

void CheckOneExit(const weft::SpawnOptions& opts, bool yield_first) {
  ResetCounters();
  weft::Runtime rt(weft::Options{.workers = 2});
  CHECK_OR_FAIL(rt.status().ok(), "runtime did not start");
  void* const value = reinterpret_cast<void*>(0x5eed);
  weft::Ult u = rt.spawn([value, yield_first] { UltThatExits(value, yield_first); }, opts);
  absl::Status s = u.join();
  CHECK_OR_FAIL(s.ok(), "join: %s", std::string(s.message()).c_str());
  CHECK_OR_FAIL(u.exit_value() == value, "exit_value %p", u.exit_value());
  CHECK_OR_FAIL(g_after_exit.load() == 0, "code after pthread_exit ran");
  CHECK_OR_FAIL(g_dtors.load() == 2, "%d of 2 destructors ran", g_dtors.load());
  CHECK_OR_FAIL(g_cleanups.load() == 1, "%d of 1 cleanup handlers ran", g_cleanups.load());
  CHECK_OR_FAIL(g_rethrown.load() == 1, "the catch (...) block ran %d times", g_rethrown.load());
  CHECK_OR_FAIL(g_local_dtors.load() == 1, "%d of 1 UltLocal values destroyed", g_local_dtors.load());
  // The runtime goes on: many more ULTs, some exiting the same way, the
  // others returning normally.
  std::vector<weft::Ult> more;
  for (int i = 0; i < 200; ++i) {
    more.push_back(rt.spawn([i] {
      if (i % 2 == 0) pthread_exit(reinterpret_cast<void*>(static_cast<intptr_t>(i + 1)));
    }));
  }
  for (int i = 0; i < 200; ++i) {
    CHECK_OR_FAIL(more[i].join().ok(), "join %d", i);
    void* want = i % 2 == 0 ? reinterpret_cast<void*>(static_cast<intptr_t>(i + 1)) : nullptr;
    CHECK_OR_FAIL(more[i].exit_value() == want, "ULT %d: exit_value %p", i, more[i].exit_value());
  }
}

class PthreadInUlt : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

// Regression (issue 9 #16): on 15df0bc pthread_exit() in a ULT killed the
// process with a silent SIGSEGV. It must end the ULT as it ends a thread.
TEST_F(PthreadInUlt, PthreadExitEndsTheUltWithItsValueAndRunsCleanups) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        CheckOneExit(weft::SpawnOptions{.name = "exits"}, false);
        CheckOneExit(weft::SpawnOptions{.name = "exits-after-yields"}, true);
        CheckOneExit(weft::SpawnOptions{.name = "exits-bound", .bound = true}, true);
        fprintf(stderr, "pthread_exit ok\n");
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "pthread_exit ok");
}

// pthread_exit inside weft::blocking(): the region is left (its guard's
// destructor runs during the unwinding) and the ULT ends.
TEST_F(PthreadInUlt, PthreadExitInsideABlockingRegion) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 2});
        weft::Ult u = rt.spawn([] {
          CountsDestruction d;
          weft::blocking([] { pthread_exit(reinterpret_cast<void*>(7)); });
        });
        g_dtors = 0;
        CHECK_OR_FAIL(u.join().ok(), "join");
        CHECK_OR_FAIL(u.exit_value() == reinterpret_cast<void*>(7), "exit_value %p", u.exit_value());
        CHECK_OR_FAIL(rt.block_on([] { return 5; }).value() == 5, "runtime unusable afterwards");
        fprintf(stderr, "blocking ok\n");
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "blocking ok");
}

// pthread_exit inside block_on's function: block_on reports it (its
// catch (...) lets the forced unwinding through).
TEST_F(PthreadInUlt, PthreadExitInsideBlockOn) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 1});
        absl::Status s = rt.block_on([] { pthread_exit(nullptr); });
        CHECK_OR_FAIL(s.ok(), "block_on(void): %s", std::string(s.message()).c_str());
        absl::StatusOr<int> r = rt.block_on([]() -> int { pthread_exit(nullptr); });
        CHECK_OR_FAIL(absl::IsAborted(r.status()), "block_on(int): %s", std::string(r.status().message()).c_str());
        fprintf(stderr, "block_on ok\n");
        _exit(0);
      },
      ::testing::ExitedWithCode(0), "block_on ok");
}

// A catch (...) that swallows the forced unwinding cannot be honoured: the
// process aborts with a message naming the ULT.
TEST_F(PthreadInUlt, SwallowedForcedUnwindAbortsNamingTheUlt) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 1});
        weft::Ult u = rt.spawn(
            [] {
              try {
                pthread_exit(nullptr);
              } catch (...) {
              }
            },
            weft::SpawnOptions{.name = "swallower"});
        (void)u.join();
        _exit(0);
      },
      ::testing::KilledBySignal(SIGABRT), "ULT .* \"swallower\" called pthread_exit.*did not rethrow");
}

// Regression (issue 9 #16): on 15df0bc pthread_cancel(pthread_self()) in a
// ULT killed the process with a silent SIGSEGV. It is refused with ENOTSUP
// and a message naming the ULT; cancelling a worker from a foreign thread
// is refused likewise; cancelling an ordinary pthread from a ULT works.
TEST_F(PthreadInUlt, PthreadCancelOfAWeftThreadIsRefusedOthersWork) {
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        weft::Runtime rt(weft::Options{.workers = 2});
        pthread_t worker{};
        int self_cancel = rt.block_on([&worker] {
                            worker = pthread_self();
                            return pthread_cancel(pthread_self());
                          }).value();
        CHECK_OR_FAIL(self_cancel == ENOTSUP, "pthread_cancel(self) in a ULT returned %d", self_cancel);
        CHECK_OR_FAIL(pthread_cancel(worker) == ENOTSUP, "pthread_cancel(worker) from main");
        // An ordinary pthread blocked in a cancellation point, cancelled from a ULT.
        pthread_t t;
        CHECK_OR_FAIL(pthread_create(&t, nullptr, [](void*) -> void* {
                        for (;;) pause();
                      }, nullptr) == 0, "pthread_create");
        int r = rt.block_on([t] { return pthread_cancel(t); }).value();
        CHECK_OR_FAIL(r == 0, "pthread_cancel of a pthread from a ULT returned %d", r);
        void* res = nullptr;
        CHECK_OR_FAIL(pthread_join(t, &res) == 0 && res == PTHREAD_CANCELED, "the pthread was not cancelled");
        // pthread_exit on an ordinary pthread is glibc's.
        CHECK_OR_FAIL(pthread_create(&t, nullptr, [](void*) -> void* {
                        pthread_exit(reinterpret_cast<void*>(42));
                      }, nullptr) == 0, "pthread_create");
        CHECK_OR_FAIL(pthread_join(t, &res) == 0 && res == reinterpret_cast<void*>(42), "pthread_exit on a pthread");
        fprintf(stderr, "cancel ok\n");
        _exit(0);
      },
      ::testing::ExitedWithCode(0),
      "pthread_cancel\\(\\) called by ULT .* on weft kernel thread [0-9]+ refused(.|\n)*cancel ok");
}

}  // namespace
