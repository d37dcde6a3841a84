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
#include <dirent.h>
#include <dlfcn.h>
#include <langinfo.h>
#include <sched.h>
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

// ---------------------------------------------------------------------------
// Per-thread libc state (issue 9 #17)

namespace {

// The codeset of the calling thread's current locale.
std::string Codeset() { return nl_langinfo(CODESET); }

}  // namespace

// Regression (issue 9 #17): on 15df0bc uselocale() in a ULT changed the
// locale of every ULT that ran on the same kernel thread afterwards, and
// was lost when the ULT migrated. The locale must follow the ULT.
TEST(PerUltState, UselocaleFollowsTheUlt) {
  locale_t utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", nullptr);
  ASSERT_NE(utf8, nullptr) << "C.UTF-8 locale not available";
  const std::string global = Codeset();
  ASSERT_NE(global, "UTF-8") << "the test needs a global locale that is not UTF-8 (run with LANG=C)";
  alarm(kChildTimeoutSec);
  for (int workers : {1, 2}) {
    weft::Runtime rt(weft::Options{.workers = workers});
    std::atomic<int> wrong_a{0}, wrong_b{0}, rounds{0};
    std::atomic<bool> a_set{false};
    weft::Ult a = rt.spawn([&] {
      uselocale(utf8);
      a_set = true;
      for (int i = 0; i < 200; ++i) {
        weft::this_ult::yield();  // B runs on this KLT in between; may migrate
        if (Codeset() != "UTF-8" || uselocale(nullptr) != utf8) wrong_a.fetch_add(1);
        rounds.fetch_add(1);
      }
      uselocale(LC_GLOBAL_LOCALE);
    });
    weft::Ult b = rt.spawn([&] {
      while (!a_set.load()) weft::this_ult::yield();
      for (int i = 0; i < 200; ++i) {
        if (Codeset() != global || uselocale(nullptr) != LC_GLOBAL_LOCALE) wrong_b.fetch_add(1);
        weft::this_ult::yield();
      }
    });
    ASSERT_TRUE(a.join().ok());
    ASSERT_TRUE(b.join().ok());
    EXPECT_EQ(rounds.load(), 200);
    EXPECT_EQ(wrong_a.load(), 0) << workers << " workers: the ULT lost its locale";
    EXPECT_EQ(wrong_b.load(), 0) << workers << " workers: another ULT's locale leaked into this one";
    // A ULT that exits with a locale set leaves none behind on its KLT.
    ASSERT_TRUE(rt.spawn([&] { uselocale(utf8); }).join().ok());
    std::vector<weft::Ult> after;
    std::atomic<int> leaked{0};
    for (int i = 0; i < 8; ++i) after.push_back(rt.spawn([&] {
      if (Codeset() != global) leaked.fetch_add(1);
    }));
    for (auto& u : after) ASSERT_TRUE(u.join().ok());
    EXPECT_EQ(leaked.load(), 0);
  }
  alarm(0);
  freelocale(utf8);
}

namespace {

std::atomic<int> g_tl_dtor_runs{0};
struct ThreadState {
  int value = 0;
  ~ThreadState() {
    if (value == 42) g_tl_dtor_runs.fetch_add(1);
  }
};
thread_local ThreadState t_state;

struct BoundView {
  int tid = 0;
  int tl_value = -1;
  std::string name;
  bool locale_global = false;
  bool sigusr1_blocked = true;
  int cpus = 0;
};

BoundView LookAround() {
  BoundView v;
  v.tid = static_cast<int>(gettid());
  v.tl_value = t_state.value;
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  v.name = name;
  v.locale_global = uselocale(nullptr) == LC_GLOBAL_LOCALE;
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  v.sigusr1_blocked = sigismember(&cur, SIGUSR1) == 1;
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  v.cpus = CPU_COUNT(&set);
  return v;
}

int ThreadCount() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

}  // namespace

// Regression (issue 9 #17 and #13): on 15df0bc a bound ULT ran on a
// recycled kernel thread that kept the previous bound ULT's thread_local
// values, locale, blocked signals, thread name and CPU affinity, and that
// thread's thread_local destructors ran only at shutdown. Each bound ULT
// must get a fresh thread, which ends (running its destructors) with it.
TEST(PerUltState, EachBoundUltGetsAFreshThreadThatEndsWithIt) {
  alarm(kChildTimeoutSec);
  locale_t utf8 = newlocale(LC_ALL_MASK, "C.UTF-8", nullptr);
  ASSERT_NE(utf8, nullptr);
  weft::Runtime rt(weft::Options{.workers = 1});
  g_tl_dtor_runs = 0;
  BoundView first_before, first_after, second;
  weft::Ult u1 = rt.spawn(
      [&] {
        first_before = LookAround();
        t_state.value = 42;
        pthread_setname_np(pthread_self(), "dirty-name");
        uselocale(utf8);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &s, nullptr);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(sched_getcpu(), &one);
        sched_setaffinity(0, sizeof one, &one);
        first_after = LookAround();
      },
      weft::SpawnOptions{.bound = true});
  ASSERT_TRUE(u1.join().ok());
  ASSERT_EQ(first_after.tl_value, 42);
  ASSERT_EQ(first_after.name, "dirty-name");
  ASSERT_EQ(first_after.cpus, 1);
  // The first bound ULT's thread ends: its thread_local destructor runs and
  // the kernel thread disappears.
  const std::string task = "/proc/self/task/" + std::to_string(first_after.tid);
  for (int i = 0; i < 10000 && (g_tl_dtor_runs.load() == 0 || access(task.c_str(), F_OK) == 0); ++i) usleep(1000);
  EXPECT_EQ(g_tl_dtor_runs.load(), 1) << "the bound ULT's thread_local destructor did not run when it ended";
  EXPECT_NE(access(task.c_str(), F_OK), 0) << "the bound ULT's kernel thread did not end";
  weft::Ult u2 = rt.spawn([&] { second = LookAround(); }, weft::SpawnOptions{.bound = true});
  ASSERT_TRUE(u2.join().ok());
  EXPECT_NE(second.tid, first_after.tid);
  EXPECT_EQ(second.tl_value, 0) << "thread_local value inherited from the previous bound ULT";
  EXPECT_NE(second.name, "dirty-name");
  EXPECT_TRUE(second.locale_global) << "locale inherited from the previous bound ULT";
  EXPECT_EQ(second.sigusr1_blocked, first_before.sigusr1_blocked) << "signal mask inherited";
  EXPECT_EQ(second.cpus, first_before.cpus) << "CPU affinity inherited";
  alarm(0);
  freelocale(utf8);
}

// Bound kernel threads are reclaimed: 40 bound ULTs alive at once take 40
// threads; once they have ended the process is back to its pool.
TEST(PerUltState, BoundThreadsAreReclaimed) {
  alarm(kChildTimeoutSec);
  weft::Runtime rt(weft::Options{.workers = 2});
  const int base = ThreadCount();
  std::atomic<int> started{0};
  std::atomic<bool> release{false};
  std::vector<weft::Ult> us;
  for (int i = 0; i < 40; ++i) {
    us.push_back(rt.spawn(
        [&] {
          started.fetch_add(1);
          while (!release.load()) weft::this_ult::sleep_for(std::chrono::milliseconds(1));
        },
        weft::SpawnOptions{.bound = true}));
  }
  for (int i = 0; i < 20000 && started.load() < 40; ++i) usleep(500);
  ASSERT_EQ(started.load(), 40);
  EXPECT_GE(ThreadCount(), base + 40);
  EXPECT_EQ(rt.stats().bound_threads, 40);
  release = true;
  for (auto& u : us) ASSERT_TRUE(u.join().ok());
  int now = ThreadCount();
  for (int i = 0; i < 10000 && now > base; ++i) {
    usleep(1000);
    now = ThreadCount();
  }
  EXPECT_LE(now, base) << "bound ULTs' kernel threads were not reclaimed";
  EXPECT_EQ(rt.stats().bound_threads, 0);
  // And the runtime still makes bound ULTs, with exact live accounting.
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(rt.spawn([] {}, weft::SpawnOptions{.bound = true}).join().ok());
  EXPECT_EQ(rt.stats().live, 0u);
  EXPECT_EQ(rt.stats().exited, rt.stats().spawned);
  alarm(0);
}

// ---------------------------------------------------------------------------
// dlopen after start (issue 9 #18), through the interposer in this link mode

// Regression (issue 9 #18): on 15df0bc a library with initial-exec TLS
// dlopened after the runtime started read 0 on weft's workers. With the
// shared library the library is opened by its bare name, found through
// this executable's RUNPATH: weft's dlopen must search its caller's RUNPATH
// (glibc's would search libweft.so's).
void CheckIeDlopenAfterStart() {
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.block_on([] { return 1; }).ok());  // the workers exist and ran
#if WEFT_TEST_SHARED_LIBRARY
  const char* name = "libweft_test_tls_ie.so";
#else
  const char* name = getenv("WEFT_TEST_TLS_IE_LIB");
  ASSERT_NE(name, nullptr) << "WEFT_TEST_TLS_IE_LIB (meson test sets it)";
#endif
  void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << dlerror();
  auto read = reinterpret_cast<int (*)()>(dlsym(h, "weft_test_ie_read"));
  ASSERT_NE(read, nullptr);
  std::atomic<int> wrong{0}, runs{0};
  std::vector<weft::Ult> us;
  for (int i = 0; i < 64; ++i) {
    us.push_back(rt.spawn([&] {
      for (int j = 0; j < 10; ++j) {
        if (read() != 4242) wrong.fetch_add(1);
        runs.fetch_add(1);
        weft::this_ult::yield();
      }
    }));
  }
  for (auto& u : us) ASSERT_TRUE(u.join().ok());
  EXPECT_EQ(runs.load(), 640);
  EXPECT_EQ(wrong.load(), 0) << "a worker read its initial-exec TLS uninitialised";
  EXPECT_EQ(read(), 4242);  // main, which glibc initialised itself
}

// In a fresh process each time (the library can be loaded once per process).
TEST(DlopenAfterStartDeathTest, InitialExecTlsIsInitialisedOnEveryWorker) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(kChildTimeoutSec);
        CheckIeDlopenAfterStart();
        fprintf(stderr, "ie-dlopen %s\n", testing::Test::HasFailure() ? "failed" : "ok");
        _exit(testing::Test::HasFailure() ? 1 : 0);
      },
      ::testing::ExitedWithCode(0), "ie-dlopen ok");
}
