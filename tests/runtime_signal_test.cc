// Signals on ULTs (issue 12): per-ULT masks, ULT-directed and
// process-directed delivery, sigwait that parks the ULT.
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <chrono>
#include <set>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/signal.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;

sigset_t Only(int s) {
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, s);
  return m;
}

bool IsPending(int s) {
  sigset_t p;
  sigpending(&p);
  return sigismember(&p, s) == 1;
}

// ULTs spawned from the main thread inherit its mask (the fixture blocks
// the test signals there): each ULT starts from an empty mask.
void UnblockAll() {
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
}

bool Blocks(int s) {
  sigset_t cur;
  pthread_sigmask(SIG_BLOCK, nullptr, &cur);
  return sigismember(&cur, s) == 1;
}

// The main thread blocks what the tests send to the process, so that only
// ULTs (or the signal KLT for them) take those signals.
class Signals : public ::testing::Test {
 protected:
  void SetUp() override {
    sigset_t m;
    sigemptyset(&m);
    for (int s : {SIGUSR1, SIGUSR2, SIGRTMIN, SIGRTMIN + 1, SIGTERM}) sigaddset(&m, s);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &m, &saved_), 0);
  }
  void TearDown() override { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }
  sigset_t saved_;
};

std::atomic<int> g_handled{0};
std::atomic<uint64_t> g_handler_ult{0};
void CountingHandler(int) {
  g_handled.fetch_add(1);
  g_handler_ult.store(weft::this_ult::id().value());
}

// The calls a ULT makes reach weft's versions, whichever way weft is linked
// (this file is built once against the static library, once against
// libweft.so: runtime_signal_shared): the symbol the program binds is
// weft's, not libc's.
TEST_F(Signals, InterposedCallsAreWefts) {
  Dl_info libc{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&getpid), &libc), 0);
  for (const char* name : {"pthread_sigmask", "sigprocmask", "sigpending", "sigaction", "signal", "raise",
                           "pthread_kill", "sigwait", "sigwaitinfo", "sigtimedwait", "sigsuspend", "pause"}) {
    void* f = dlsym(RTLD_DEFAULT, name);
    ASSERT_NE(f, nullptr) << name;
    Dl_info in{};
    ASSERT_NE(dladdr(f, &in), 0) << name;
    EXPECT_STRNE(in.dli_fname, libc.dli_fname) << name << " binds to libc";
#if WEFT_TEST_SHARED_LIBRARY
    // Under ASan the sanitizer's interceptor binds first and calls the next
    // definition, libweft.so's (the behaviour below shows it is reached).
    bool sanitizer = kUnderAsan && strstr(in.dli_fname, "libasan") != nullptr;
    EXPECT_TRUE(strstr(in.dli_fname, "libweft.so") != nullptr || sanitizer) << name << " binds to " << in.dli_fname;
#endif
  }
  // And a ULT's mask change stays in the ULT (the interposed call is used).
  weft::Runtime rt(weft::Options{.workers = 1});
  auto r = rt.block_on([] {
    UnblockAll();
    sigset_t m = Only(SIGUSR2);
    EXPECT_EQ(pthread_sigmask(SIG_BLOCK, &m, nullptr), 0);
    EXPECT_TRUE(Blocks(SIGUSR2));
    sigset_t kernel;
    EXPECT_EQ(syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &kernel, 8), 0);
    EXPECT_EQ(sigismember(&kernel, SIGUSR1), 1) << "a worker keeps async signals blocked in the kernel";
    EXPECT_EQ(sigismember(&kernel, SIGUSR2), 1);
    UnblockAll();
    EXPECT_FALSE(Blocks(SIGUSR2)) << "the ULT's mask, not the kernel's";
  });
  ASSERT_TRUE(r.ok());
}

// A ULT's mask is its own: it survives migration (many yields on two
// workers), it is not seen by other ULTs on the same workers, a spawned ULT
// inherits it, and the old-mask argument reports it exactly.
TEST_F(Signals, MaskIsPerUltMovesWithItAndIsInherited) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  std::atomic<int> leaks{0};
  std::vector<weft::Ult> others;
  for (int i = 0; i < 4; ++i)
    others.push_back(rt.spawn([&] {
      UnblockAll();
      while (!stop.load()) {
        if (Blocks(SIGUSR2)) leaks.fetch_add(1);
        if (Blocks(SIGUSR2)) leaks.fetch_add(1);
        weft::this_ult::sleep_for(50us);
      }
    }));
  std::set<int> tids;
  bool child_inherited = false;
  auto r = rt.block_on([&] {
    EXPECT_TRUE(Blocks(SIGUSR2)) << "a ULT spawned by the main thread inherits its mask";
    UnblockAll();
    sigset_t m = Only(SIGUSR2), old;
    EXPECT_EQ(pthread_sigmask(SIG_BLOCK, &m, &old), 0);
    EXPECT_FALSE(sigismember(&old, SIGUSR2));
    // Until it has run on both workers (timed wake-ups are stolen by the
    // idle worker), within a bound.
    for (int i = 0; i < 200000 && tids.size() < 2; ++i) {
      if (!Blocks(SIGUSR2)) ADD_FAILURE() << "the mask changed at iteration " << i;
      tids.insert(gettid());
      if (i % 2) weft::this_ult::yield(); else weft::this_ult::sleep_for(20us);
    }
    for (int i = 0; i < 1000; ++i) {
      if (!Blocks(SIGUSR2)) ADD_FAILURE() << "the mask changed after the migration";
      weft::this_ult::yield();
    }
    weft::Ult c = weft::spawn([&] { child_inherited = Blocks(SIGUSR2); });
    EXPECT_TRUE(c.join().ok());
    sigset_t now;
    EXPECT_EQ(sigprocmask(SIG_UNBLOCK, &m, &now), 0);
    EXPECT_TRUE(sigismember(&now, SIGUSR2));
    EXPECT_FALSE(Blocks(SIGUSR2));
    EXPECT_EQ(pthread_sigmask(12345, &m, nullptr), EINVAL);
  });
  stop.store(true);
  for (auto& u : others) EXPECT_TRUE(u.join().ok());
  ASSERT_TRUE(r.ok());
  EXPECT_GE(tids.size(), 2u) << "the ULT never migrated";
  EXPECT_TRUE(child_inherited);
  EXPECT_EQ(leaks.load(), 0) << "other ULTs saw the blocking ULT's mask";
}

// raise in a ULT: the handler runs on that ULT before raise returns; while
// the ULT blocks the signal it stays pending on the ULT, and it runs as
// soon as the ULT unblocks it (before pthread_sigmask returns).
TEST_F(Signals, RaiseInAUltIsForThatUlt) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR1, CountingHandler);
  g_handled = 0;
  auto r = rt.block_on([&] {
    UnblockAll();
    uint64_t me = weft::this_ult::id().value();
    EXPECT_EQ(raise(SIGUSR1), 0);
    EXPECT_EQ(g_handled.load(), 1);
    EXPECT_EQ(g_handler_ult.load(), me);
    sigset_t m = Only(SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
    EXPECT_EQ(pthread_kill(pthread_self(), SIGUSR1), 0);
    weft::this_ult::yield();
    EXPECT_EQ(g_handled.load(), 1);
    sigset_t pend;
    sigpending(&pend);
    EXPECT_TRUE(sigismember(&pend, SIGUSR1));
    pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
    EXPECT_EQ(g_handled.load(), 2);
  });
  ASSERT_TRUE(r.ok());
  signal(SIGUSR1, SIG_DFL);
}

// kill(getpid()) is handled only by ULTs that accept it: one ULT blocks
// SIGUSR1 and migrates, others accept; 10,000 signals sent, each handled
// once, never on the blocking ULT. (Standard signals coalesce: the sender
// waits for each to be handled before the next.)
TEST_F(Signals, ProcessSignalGoesToAUltThatAcceptsIt) {
  Watchdog wd(TestName(), 120);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR1, CountingHandler);
  g_handled = 0;
  std::atomic<uint64_t> blocker{0};
  std::atomic<int> on_blocker{0};
  std::atomic<bool> stop{false};
  std::atomic<int> migrations{0};
  weft::Ult b = rt.spawn([&] {
    sigset_t m = Only(SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
    blocker.store(weft::this_ult::id().value());
    int tid = gettid();
    for (int i = 0; !stop.load(); ++i) {
      if (i % 2) weft::this_ult::yield(); else weft::this_ult::sleep_for(20us);
      if (gettid() != tid) {
        tid = gettid();
        migrations.fetch_add(1);
      }
    }
  });
  std::vector<weft::Ult> acceptors;
  for (int i = 0; i < 2; ++i)
    acceptors.push_back(rt.spawn([&] {
      UnblockAll();
      while (!stop.load()) weft::this_ult::sleep_for(100us);
    }));
  while (blocker.load() == 0) std::this_thread::sleep_for(1ms);
  constexpr int kSends = 10000;
  for (int i = 0; i < kSends; ++i) {
    int before = g_handled.load();
    kill(getpid(), SIGUSR1);
    ASSERT_TRUE(WaitUntil([&] { return g_handled.load() > before; }, std::chrono::milliseconds(5000)))
        << "signal " << i << " was not handled";
    if (g_handler_ult.load() == blocker.load()) on_blocker.fetch_add(1);
  }
  stop.store(true);
  EXPECT_TRUE(b.join().ok());
  for (auto& u : acceptors) EXPECT_TRUE(u.join().ok());
  EXPECT_EQ(g_handled.load(), kSends);
  EXPECT_EQ(on_blocker.load(), 0);
  EXPECT_GT(migrations.load(), 0) << "the blocking ULT never migrated";
  printf("10,000 signals: the blocking ULT migrated %d times\n", migrations.load());
  signal(SIGUSR1, SIG_DFL);
}

// A signal no ULT accepts stays pending and is taken as soon as one
// unblocks it.
TEST_F(Signals, NobodyAcceptsThenOneUnblocks) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR2, CountingHandler);
  g_handled = 0;
  auto r = rt.block_on([&] {
    UnblockAll();
    sigset_t m = Only(SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
    kill(getpid(), SIGUSR2);
    // Pending for the process once weft has it (the kernel hands it to the
    // signal KLT asynchronously): then it must stay unhandled.
    ASSERT_TRUE(WaitUntil([&] { return IsPending(SIGUSR2); })) << "the signal never became pending";
    weft::this_ult::yield();
    EXPECT_EQ(g_handled.load(), 0) << "handled although every ULT blocks it";
    EXPECT_TRUE(IsPending(SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
    EXPECT_EQ(g_handled.load(), 1);
    EXPECT_FALSE(IsPending(SIGUSR2));
  });
  ASSERT_TRUE(r.ok());
  signal(SIGUSR2, SIG_DFL);
}

uint64_t Parks(const weft::Runtime& rt) {
  uint64_t n = 0;
  for (const weft::WorkerStats& w : rt.stats().workers) n += w.parks;
  return n;
}

// The delivery cases of a process-directed signal, each with the only ULT
// that accepts it in a known state (case 4, nobody accepts, is the test
// above):
//  1. running: it spins without yielding and can only stop once the
//     handler has run on it, in the middle of its loop;
//  2. runnable: one worker, held by a ULT that blocks the signal and waits
//     until weft has the signal pending before it yields; the acceptor's
//     handler has run before its own code continues after that yield;
//  3. parked in weft io: the handler runs on it while the read waits, and
//     the read then resumes (SA_RESTART) and returns what is written later.
TEST_F(Signals, DeliveryToARunningARunnableAndAParkedUlt) {
  Watchdog wd(TestName(), 60);
  struct sigaction sa {};
  sa.sa_handler = CountingHandler;
  sa.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGUSR2, &sa, nullptr), 0);
  {  // 1. running
    weft::Runtime rt(weft::Options{.workers = 2});
    g_handled = 0;
    std::atomic<uint64_t> id{0};
    std::atomic<bool> interrupted{false};
    weft::Ult r = rt.spawn([&] {
      UnblockAll();
      id.store(weft::this_ult::id().value());
      auto end = std::chrono::steady_clock::now() + 10s;
      while (std::chrono::steady_clock::now() < end) {
        if (g_handled.load() != 0) {
          interrupted.store(true);
          break;
        }
      }
    });
    ASSERT_TRUE(WaitUntil([&] { return id.load() != 0; }));
    kill(getpid(), SIGUSR2);
    EXPECT_TRUE(r.join().ok());
    EXPECT_TRUE(interrupted.load()) << "case 1: the running ULT was not interrupted within 10 s";
    EXPECT_EQ(g_handled.load(), 1);
    EXPECT_EQ(g_handler_ult.load(), id.load());
  }
  {  // 2. runnable
    weft::Runtime rt(weft::Options{.workers = 1});
    g_handled = 0;
    std::atomic<uint64_t> id{0};
    std::atomic<bool> recorded{false};
    std::atomic<int> seen_after_yield{-1};
    weft::Ult a = rt.spawn([&] {
      UnblockAll();
      id.store(weft::this_ult::id().value());
      while (!recorded.load()) weft::this_ult::yield();
      // First time here since the signal became pending: its handler ran
      // when this ULT was switched in, before this line.
      seen_after_yield.store(g_handled.load());
    });
    weft::Ult b = rt.spawn([&] {  // blocks SIGUSR2 (inherited from the main thread)
      while (id.load() == 0) weft::this_ult::yield();
      kill(getpid(), SIGUSR2);
      auto end = std::chrono::steady_clock::now() + 10s;
      while (!IsPending(SIGUSR2) && std::chrono::steady_clock::now() < end) {
      }
      EXPECT_TRUE(IsPending(SIGUSR2)) << "case 2: the signal never became pending";
      EXPECT_EQ(g_handled.load(), 0) << "case 2: handled while its only acceptor could not run";
      recorded.store(true);
    });
    EXPECT_TRUE(b.join().ok());
    EXPECT_TRUE(a.join().ok());
    EXPECT_EQ(seen_after_yield.load(), 1) << "case 2: the runnable ULT ran on without taking the signal";
    EXPECT_EQ(g_handler_ult.load(), id.load());
  }
  {  // 3. parked in weft::io::read
    weft::Runtime rt(weft::Options{.workers = 2});
    g_handled = 0;
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    std::atomic<uint64_t> id{0};
    std::atomic<int64_t> got{0};
    char c = 0;
    uint64_t parks_before = Parks(rt);  // nothing else runs in this runtime
    weft::Ult p = rt.spawn([&] {
      UnblockAll();
      id.store(weft::this_ult::id().value());
      got.store(weft::io::read(fds[0], &c, 1));
    });
    ASSERT_TRUE(WaitUntil([&] { return Parks(rt) > parks_before; })) << "the reader never parked";
    kill(getpid(), SIGUSR2);
    EXPECT_TRUE(WaitUntil([&] { return g_handled.load() == 1; })) << "case 3: the parked ULT never took the signal";
    EXPECT_EQ(g_handler_ult.load(), id.load());
    EXPECT_EQ(got.load(), 0) << "the read ended on the signal instead of resuming (SA_RESTART)";
    ASSERT_EQ(write(fds[1], "x", 1), 1);
    EXPECT_TRUE(p.join().ok());
    EXPECT_EQ(got.load(), 1);
    EXPECT_EQ(c, 'x');
    close(fds[0]);
    close(fds[1]);
  }
  signal(SIGUSR2, SIG_DFL);
}

// sigwait parks the ULT (another ULT keeps running on a one-worker
// runtime) and returns the signal; sigtimedwait times out with EAGAIN; RT
// signals queued with sigqueue arrive in order with their values.
TEST_F(Signals, SigwaitParksTheUltAndRtSignalsKeepOrderAndValues) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  std::atomic<int> ticks{0};
  std::atomic<bool> stop{false};
  weft::Ult ticker = rt.spawn([&] {
    while (!stop.load()) {
      ticks.fetch_add(1);
      weft::this_ult::sleep_for(1ms);
    }
  });
  auto r = rt.block_on([&] {
    sigset_t m = Only(SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
    timespec ts{0, 20 * 1000 * 1000};
    siginfo_t si;
    int t0 = ticks.load();
    EXPECT_EQ(sigtimedwait(&m, &si, &ts), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_GT(ticks.load(), t0) << "sigtimedwait blocked the worker";
    std::thread sender([] {
      std::this_thread::sleep_for(10ms);
      kill(getpid(), SIGUSR1);
    });
    int sig = 0;
    EXPECT_EQ(sigwait(&m, &sig), 0);
    EXPECT_EQ(sig, SIGUSR1);
    sender.join();
    // Real-time: 200 values, in order.
    if (kUnderTsan) {
      // ThreadSanitizer runs a handler that lands outside its interceptors
      // later, from one slot per signal number: further instances queued
      // meanwhile are dropped before weft's handler sees them.
      printf("real-time counts not checked under TSan (it keeps one deferred instance per signal)\n");
      return;
    }
    int rts = SIGRTMIN + 1;
    sigset_t rm = Only(rts);
    pthread_sigmask(SIG_BLOCK, &rm, nullptr);
    for (int i = 0; i < 200; ++i) {
      sigval v;
      v.sival_int = i;
      EXPECT_EQ(sigqueue(getpid(), rts, v), 0);
    }
    for (int i = 0; i < 200; ++i) {
      siginfo_t info;
      EXPECT_EQ(sigwaitinfo(&rm, &info), rts);
      EXPECT_EQ(info.si_code, SI_QUEUE);
      EXPECT_EQ(info.si_value.sival_int, i);
    }
  });
  stop.store(true);
  EXPECT_TRUE(ticker.join().ok());
  ASSERT_TRUE(r.ok());
}

// weft::signal sends to one ULT; reserved signals refuse sigaction.
TEST_F(Signals, DirectedSignalAndReservedSignals) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR2, CountingHandler);
  g_handled = 0;
  weft::Ult target = rt.spawn([&] {
    UnblockAll();
    while (g_handled.load() == 0) weft::this_ult::sleep_for(100us);
  });
  weft::UltId id = target.id();
  EXPECT_TRUE(weft::signal(id, SIGUSR2).ok());
  EXPECT_TRUE(target.join().ok());
  EXPECT_EQ(g_handler_ult.load(), id.value());
  EXPECT_EQ(weft::signal(id, SIGUSR2).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(weft::signal(weft::UltId(), 0).code(), absl::StatusCode::kInvalidArgument);
  struct sigaction a {};
  a.sa_handler = CountingHandler;
  EXPECT_EQ(sigaction(SIGRTMAX, &a, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(sigaction(SIGRTMAX - 1, &a, nullptr), -1);
  struct sigaction old {};
  EXPECT_EQ(sigaction(SIGUSR2, nullptr, &old), 0);
  EXPECT_EQ(old.sa_handler, CountingHandler) << "the old action must be the application's";
  signal(SIGUSR2, SIG_DFL);
}

// SIGSEGV from a store to an inaccessible page in a ULT runs the application's handler
// on that ULT (this_ult::id inside it is the ULT's), and siglongjmp out of
// it works, twice; SIGFPE from a division by zero likewise, on a ULT of a
// two-worker runtime. Bad input to sigaction gets glibc's answers.
sigjmp_buf g_jump;
std::atomic<uint64_t> g_fault_ult{0};
std::atomic<int> g_fault_sig{0};
void JumpingHandler(int s, siginfo_t*, void*) {
  g_fault_sig.store(s);
  g_fault_ult.store(weft::this_ult::id().value());
  siglongjmp(g_jump, 1);
}

// Faults made so that no sanitizer sees undefined behaviour first: a store
// to a PROT_NONE page, an idiv by zero in assembly.
volatile int* ProtNone() {
  static void* p = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return static_cast<volatile int*>(p);
}
void DivideByZero() {
  __asm__ volatile("xorl %%ecx, %%ecx\n\tmovl $1, %%eax\n\tcltd\n\tidivl %%ecx" ::: "eax", "ecx", "edx", "cc");
}

TEST_F(Signals, FaultsRunTheApplicationsHandlerOnTheFaultingUlt) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  struct sigaction a {}, old_segv{}, old_fpe{};
  a.sa_sigaction = JumpingHandler;
  a.sa_flags = SA_SIGINFO;
  ASSERT_EQ(sigaction(SIGSEGV, &a, &old_segv), 0);
  ASSERT_EQ(sigaction(SIGFPE, &a, &old_fpe), 0);
  for (int round = 0; round < 2; ++round) {
    for (int sig : {SIGSEGV, SIGFPE}) {
      weft::UltId who;
      bool jumped = false;
      weft::Ult u = rt.spawn([&] {
        who = weft::this_ult::id();
        weft::this_ult::yield();
        if (sigsetjmp(g_jump, 1) == 0) {
          if (sig == SIGSEGV) {
            *ProtNone() = 1;
          } else {
            DivideByZero();
          }
        } else {
          jumped = true;
        }
      });
      ASSERT_TRUE(u.join().ok());
      EXPECT_TRUE(jumped);
      EXPECT_EQ(g_fault_sig.load(), sig);
      EXPECT_EQ(g_fault_ult.load(), who.value());
    }
  }
  struct sigaction cur {};
  ASSERT_EQ(sigaction(SIGSEGV, &old_segv, &cur), 0);
  EXPECT_EQ(cur.sa_sigaction, JumpingHandler) << "the old action must be the application's";
  ASSERT_EQ(sigaction(SIGFPE, &old_fpe, nullptr), 0);
}

// The interposed calls answer bad input as glibc does, in a ULT and on a
// thread alike.
TEST_F(Signals, BadInputGetsGlibcsAnswers) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  auto check = [](const char* where) {
    struct sigaction a {};
    a.sa_handler = SIG_IGN;
    for (int s : {0, -1, 65, SIGKILL, SIGSTOP}) {
      errno = 0;
      EXPECT_EQ(sigaction(s, &a, nullptr), -1) << where << " signal " << s;
      EXPECT_EQ(errno, EINVAL) << where << " signal " << s;
    }
    EXPECT_EQ(signal(0, SIG_IGN), SIG_ERR) << where;
    sigset_t m;
    sigemptyset(&m);
    errno = 0;
    EXPECT_EQ(sigprocmask(999, &m, nullptr), -1) << where;
    EXPECT_EQ(errno, EINVAL) << where;
    EXPECT_EQ(pthread_sigmask(999, &m, nullptr), EINVAL) << where;
    sigset_t kill_stop, old;
    sigemptyset(&kill_stop);
    sigaddset(&kill_stop, SIGKILL);
    sigaddset(&kill_stop, SIGSTOP);
    EXPECT_EQ(pthread_sigmask(SIG_BLOCK, &kill_stop, &old), 0) << where;
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, nullptr, &now);
    EXPECT_FALSE(sigismember(&now, SIGKILL)) << where;
    EXPECT_FALSE(sigismember(&now, SIGSTOP)) << where;
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    EXPECT_EQ(pthread_sigmask(SIG_BLOCK, nullptr, nullptr), 0) << where;
    EXPECT_EQ(raise(-5), -1) << where;
  };
  ASSERT_TRUE(rt.block_on([&] { check("in a ULT"); }).ok());
  std::thread t([&] { check("on a thread"); });
  t.join();
}

// 1,000 real-time signals queued while every ULT blocks them (more than
// weft's per-signal ring holds: the signal KLT leaves the rest with the
// kernel) arrive in order, each with its value.
TEST_F(Signals, ThousandRealTimeSignalsInOrder) {
  WEFT_SKIP_UNDER_TSAN("TSan runs a handler that lands outside its interceptors later, from one slot per "
                       "signal number, and drops the further queued instances before weft's handler runs");
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int rts = SIGRTMIN;
  std::vector<int> got;
  auto r = rt.block_on([&] {
    sigset_t rm = Only(rts);
    for (int i = 0; i < 1000; ++i) {
      sigval v;
      v.sival_int = i;
      if (sigqueue(getpid(), rts, v) != 0) ADD_FAILURE() << "sigqueue " << i << ": " << strerror(errno);
    }
    for (int i = 0; i < 1000; ++i) {
      siginfo_t info;
      timespec ts{5, 0};
      if (sigtimedwait(&rm, &info, &ts) != rts) {
        ADD_FAILURE() << "signal " << i << " did not arrive";
        break;
      }
      got.push_back(info.si_value.sival_int);
    }
  });
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(got.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(got[i], i) << "out of order at " << i;
}

// SignalSet: its signals become messages. A ULT waiting on it parks (a
// ticker keeps running on the only worker); a handler installed for the
// same signal does not run while the set exists; a signal sent before
// anyone waits is kept; poll and wait_for do not block; after the set is
// gone the handler gets the signal again. Bad input is a status.
TEST_F(Signals, SignalSetTurnsSignalsIntoMessages) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  signal(SIGUSR1, CountingHandler);
  g_handled = 0;
  {
    weft::SignalSet set({SIGUSR1, SIGTERM});
    ASSERT_TRUE(set.status().ok()) << set.status();
    EXPECT_EQ(set.poll(), 0);
    std::atomic<int> ticks{0};
    std::atomic<bool> stop{false};
    weft::Ult ticker = rt.spawn([&] {
      while (!stop.load()) {
        ticks.fetch_add(1);
        weft::this_ult::sleep_for(1ms);
      }
    });
    int got = 0, ticks_during = 0;
    weft::Ult waiter = rt.spawn([&] {
      UnblockAll();  // the set's signals are its own even where unblocked
      int t0 = ticks.load();
      siginfo_t info;
      got = set.wait(&info);
      ticks_during = ticks.load() - t0;
    });
    std::this_thread::sleep_for(20ms);
    kill(getpid(), SIGTERM);  // would end the process without the set
    ASSERT_TRUE(waiter.join().ok());
    EXPECT_EQ(got, SIGTERM);
    EXPECT_GT(ticks_during, 0) << "the waiting ULT blocked its worker";
    kill(getpid(), SIGUSR1);  // nobody waits yet: kept
    EXPECT_TRUE(WaitUntil([&] { return set.poll() == SIGUSR1; }, std::chrono::milliseconds(5000)));
    EXPECT_EQ(set.wait_for(10ms), 0);
    EXPECT_EQ(g_handled.load(), 0) << "a handler ran for a signal the set holds";
    stop.store(true);
    EXPECT_TRUE(ticker.join().ok());
  }
  auto r = rt.block_on([&] {
    UnblockAll();
    kill(getpid(), SIGUSR1);
    EXPECT_TRUE(WaitUntil([&] { return g_handled.load() == 1; }, std::chrono::milliseconds(5000)));
  });
  ASSERT_TRUE(r.ok());
  weft::SignalSet bad({SIGKILL});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.wait(), -1);
  weft::SignalSet reserved({SIGRTMAX});
  EXPECT_FALSE(reserved.status().ok());
  signal(SIGUSR1, SIG_DFL);
}

// A signal no ULT accepts but a thread of the application does (here a
// pthread that unblocks it; the main thread and the ULTs block it) runs
// that thread's handler, as without weft.
// A thread of the application's own that leaves signal s open (the
// fixture blocks it on the main thread, which the thread starts from) and
// idles until destroyed.
class AcceptingThread {
 public:
  explicit AcceptingThread(int s) {
    t_ = std::thread([this, s] {
      sigset_t m = Only(s);
      pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
      ready_.store(true);
      while (!stop_.load()) std::this_thread::sleep_for(100us);
    });
    while (!ready_.load()) std::this_thread::sleep_for(1ms);
  }
  ~AcceptingThread() {
    stop_.store(true);
    t_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> ready_{false};
  std::thread t_;
};

TEST_F(Signals, ThreadThatAcceptsGetsWhatNoUltTakes) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR1, CountingHandler);
  g_handled = 0;
  std::atomic<bool> stop{false};
  std::optional<AcceptingThread> t(std::in_place, SIGUSR1);
  weft::Ult blocker = rt.spawn([&] {  // inherits main's mask: blocks SIGUSR1
    while (!stop.load()) weft::this_ult::sleep_for(200us);
  });
  for (int i = 0; i < 20; ++i) {
    int before = g_handled.load();
    kill(getpid(), SIGUSR1);
    ASSERT_TRUE(WaitUntil([&] { return g_handled.load() > before; }, std::chrono::milliseconds(5000)))
        << "signal " << i << " was not handled";
  }
  stop.store(true);
  t.reset();
  EXPECT_TRUE(blocker.join().ok());
  EXPECT_EQ(g_handled.load(), 20);
  EXPECT_EQ(g_handler_ult.load(), 0u) << "a ULT ran the handler";
  signal(SIGUSR1, SIG_DFL);
}

// Defect (CI, ASan run of dee0522: ThreadThatAcceptsGetsWhatNoUltTakes
// lost its second signal): a signal sent while the only thread that takes
// it runs its handler (every signal blocked there) reached the signal KLT,
// found nobody to forward it to, and stayed pending for good: the thread's
// mask reopened at sigreturn, which weft does not see. Failed without the
// signal KLT's second look (signal_klt_main, unclaimed_wait_ms). The
// handler is held open until weft has the second signal pending.
std::atomic<bool> g_hold{false};
void HoldingHandler(int) {
  g_handled.fetch_add(1);
  g_handler_ult.store(weft::this_ult::id().value());
  while (g_hold.load()) {
    timespec t{0, 100 * 1000};
    nanosleep(&t, nullptr);
  }
}

TEST_F(Signals, SignalSentWhileTheTakerRunsItsHandlerIsNotLost) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  signal(SIGUSR1, HoldingHandler);
  g_handled = 0;
  g_handler_ult = 0;
  std::optional<AcceptingThread> t(std::in_place, SIGUSR1);
  g_hold = true;
  kill(getpid(), SIGUSR1);
  ASSERT_TRUE(WaitUntil([&] { return g_handled.load() == 1; }, std::chrono::milliseconds(5000)));
  kill(getpid(), SIGUSR1);  // the thread is inside its handler: the signal KLT gets this one
  // A ULT (which blocks SIGUSR1, as main does) sees it pending in weft's table.
  auto seen = rt.block_on([] { return WaitUntil([] { return IsPending(SIGUSR1); }, std::chrono::milliseconds(5000)); });
  g_hold = false;
  ASSERT_TRUE(seen.ok());
  EXPECT_TRUE(*seen) << "the second signal never reached weft's table";
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return g_handled.load() == 2; }, std::chrono::milliseconds(5000)))
      << "the second signal was lost";
  printf("second signal handled %.1f ms after the handler returned\n",
         std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  t.reset();
  EXPECT_EQ(g_handler_ult.load(), 0u) << "a ULT ran the handler";
  signal(SIGUSR1, SIG_DFL);
}

// Defect found beside the one above: a signal pending in weft's table
// (every ULT blocks it) stayed there when a foreign thread unblocked it
// with pthread_sigmask; the kernel delivers a pending signal before the
// unblocking call returns. Failed without take_opened (runtime/signal.cc).
TEST_F(Signals, ThreadThatUnblocksTakesWhatIsPending) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  signal(SIGUSR1, CountingHandler);
  g_handled = 0;
  g_handler_ult = 0;
  kill(getpid(), SIGUSR1);
  auto seen = rt.block_on([] { return WaitUntil([] { return IsPending(SIGUSR1); }, std::chrono::milliseconds(5000)); });
  ASSERT_TRUE(seen.ok());
  ASSERT_TRUE(*seen) << "the signal never reached weft's table";
  int at_return = -1;
  std::thread t([&] {
    sigset_t m = Only(SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
    at_return = g_handled.load();
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
  });
  t.join();
  EXPECT_EQ(at_return, 1) << "pthread_sigmask returned before the pending signal's handler ran";
  EXPECT_EQ(g_handler_ult.load(), 0u) << "a ULT ran the handler";
  signal(SIGUSR1, SIG_DFL);
}

// sigwait in a ULT while 10,000 other ULTs run (yield and short sleeps on
// two workers): woken within 1 ms of the kill, median of 100.
TEST_F(Signals, SigwaitWakesPromptlyAmongTenThousandUlts) {
  WEFT_SKIP_UNDER_TSAN("TSan counts each ULT's fiber as a thread and dies past 8,128 of them; the bound is "
                       "a timing claim besides");
  Watchdog wd(TestName(), 120);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  std::vector<weft::Ult> crowd;
  for (int i = 0; i < 10000; ++i)
    crowd.push_back(rt.spawn([&] {
      while (!stop.load()) {
        weft::this_ult::yield();
        weft::this_ult::sleep_for(1ms);
      }
    }));
  std::atomic<int64_t> sent_ns{0};
  std::vector<int64_t> lat;
  std::atomic<bool> ready{false};
  weft::Ult waiter = rt.spawn([&] {
    sigset_t m = Only(SIGUSR2);  // inherited blocked from main; sigwait takes it
    for (int i = 0; i < 100; ++i) {
      ready.store(true);
      int sig = 0;
      if (sigwait(&m, &sig) != 0 || sig != SIGUSR2) ADD_FAILURE() << "sigwait";
      lat.push_back(std::chrono::steady_clock::now().time_since_epoch().count() - sent_ns.load());
    }
  });
  for (int i = 0; i < 100; ++i) {
    size_t before = lat.size();
    while (!ready.exchange(false)) std::this_thread::sleep_for(100us);
    std::this_thread::sleep_for(200us);  // the waiter parks
    sent_ns.store(std::chrono::steady_clock::now().time_since_epoch().count());
    kill(getpid(), SIGUSR2);
    ASSERT_TRUE(WaitUntil([&] { return lat.size() > before; }, std::chrono::milliseconds(5000))) << "kill " << i;
  }
  EXPECT_TRUE(waiter.join().ok());
  stop.store(true);
  for (auto& u : crowd) EXPECT_TRUE(u.join().ok());
  std::sort(lat.begin(), lat.end());
  double median_us = lat[lat.size() / 2] / 1000.0;
  printf("sigwait among 10,000 ULTs: median %.1f us, p90 %.1f us\n", median_us, lat[lat.size() * 9 / 10] / 1000.0);
  EXPECT_LT(median_us, 1000.0);
}

}  // namespace
