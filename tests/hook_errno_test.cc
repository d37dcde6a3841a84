// tests/hook_errno_test.cc — errno after a hooked call that parked and
// resumed on another worker, read by thread-style code compiled at -O2
// with glibc's own errno macro (this file is built with -O2 and
// -DWEFT_NO_ERRNO_OVERRIDE: it stands for a library that knows nothing of
// weft). The hook must store errno on the kernel thread the ULT runs on
// when the call returns; if it stored it on the one where the call began,
// the reader here would see the errno weft restored at the switch (5).
//
// How the migration is made (as tests/runtime_errno_test.cc does): the ULT
// waits in select() on two pipes with a 10 ms timeout, the multi-
// descriptor wait that parks on the worker's timer; hogs spawned just
// before hold that worker in a raw 30 ms nanosleep after closing the
// second pipe's read end (Hog() says how). The monitor fires the timer of the busy worker
// and the idle one resumes the ULT; select's last look at the descriptors
// then fails with EBADF, stored by the hook on the new kernel thread.
// Rounds where the hog ran elsewhere (no migration, nothing closed) do not
// count; the test needs several that do.
#include <poll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

#include "tests/hook_util.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include "weft/hook.h"
#include "weft/runtime.h"

#if !defined(WEFT_NO_ERRNO_OVERRIDE)
#error "built with -DWEFT_NO_ERRNO_OVERRIDE (tests/meson.build): glibc's errno macro, as in code that does not know weft"
#endif

namespace {

using namespace std::chrono_literals;

std::atomic<int> g_tid0{0};
std::atomic<int> g_close_fd{-1};
std::atomic<bool> g_close_claimed{false};
std::atomic<bool> g_closed{false};
std::atomic<bool> g_selecting{false};

// Two of these run beside the selecting ULT, one per worker if the idle
// worker steals one. Each waits until the ULT has entered select() (and 2
// ms more: it has parked), then the first closes the select's second
// descriptor, and each holds its worker in the kernel: 30 ms on the
// kernel thread the ULT left (the select's 10 ms timer is fired by the
// monitor meanwhile), 2 ms elsewhere (that worker is free to resume the
// ULT).
void Hog() {
  auto until = std::chrono::steady_clock::now() + 200ms;
  while (!g_selecting.load() && std::chrono::steady_clock::now() < until) {
  }
  timespec settle{0, 2 * 1000 * 1000};
  syscall(SYS_nanosleep, &settle, nullptr);
  if (!g_close_claimed.exchange(true)) {
    syscall(SYS_close, g_close_fd.load());
    g_closed = true;
  }
  timespec t{0, (Tid() == g_tid0.load() ? 30 : 2) * 1000 * 1000};
  syscall(SYS_nanosleep, &t, nullptr);
}

__attribute__((noinline)) void SetErrno(int v) { errno = v; }

struct Seen {
  bool migrated = false, closed = false;
  int n = 0, err = 0;
};

// Thread-style code: select, then `if (n < 0 && errno == EBADF)`.
__attribute__((noinline)) Seen SelectAcrossMigration(int a, int b, std::vector<weft::JoinHandle<void>>* hogs) {
  Seen s;
  int tid0 = Tid();
  g_tid0 = tid0;
  g_close_fd = b;
  g_closed = false;
  g_close_claimed = false;
  g_selecting = false;
  hogs->push_back(weft::spawn(Hog));
  hogs->push_back(weft::spawn(Hog));
  SetErrno(5);
  g_selecting = true;
  fd_set r;
  FD_ZERO(&r);
  FD_SET(a, &r);
  FD_SET(b, &r);
  timeval tv{0, 10 * 1000};
  int n = select((a > b ? a : b) + 1, &r, nullptr, nullptr, &tv);
  if (n < 0 && errno == EBADF) {
    s.err = EBADF;
  } else if (n < 0) {
    s.err = errno;
  }
  s.n = n;
  s.migrated = Tid() != tid0;
  s.closed = g_closed.load();
  return s;
}

TEST(HookErrno, SetOnTheKernelThreadTheUltResumedOnAtO2) {
  Watchdog wd(TestName(), 120);
  ASSERT_TRUE(weft::hook::active());
  weft::Runtime rt(weft::Options{.workers = 2});
  int counted = 0, wrong = 0, first_wrong = 0, rounds = 0;
  for (; rounds < 200 && counted < 5; ++rounds) {
    int p[2][2];
    ASSERT_EQ(pipe(p[0]), 0);
    ASSERT_EQ(pipe(p[1]), 0);
    Seen s;
    ASSERT_TRUE(rt.block_on([&] {
                    std::vector<weft::JoinHandle<void>> hogs;
                    auto t = weft::spawn([&] { s = SelectAcrossMigration(p[0][0], p[1][0], &hogs); });
                    (void)t.join();
                    for (auto& h : hogs) (void)h.join();
                  }).ok());
    // Counted: the ULT moved and select failed (the close came before its
    // last look). Inconclusive: n == 0 (the close came after it), n > 0
    // (the closed number was reused meanwhile by something readable: a
    // worker's io engine opens its ring or eventfd at its first io).
    if (s.migrated && s.closed && s.n < 0) {
      ++counted;
      if (s.err != EBADF && wrong++ == 0) first_wrong = s.err;
    }
    for (int k = 0; k < 2; ++k) {
      if (!(k == 1 && g_closed.load())) syscall(SYS_close, p[k][0]);  // the hogs are done: final
      syscall(SYS_close, p[k][1]);
    }
  }
  printf("%d rounds, %d with a migration inside select()\n", rounds, counted);
  EXPECT_GE(counted, 5) << "too few migrations to test anything";
  EXPECT_EQ(wrong, 0) << "after the migration errno read " << first_wrong << " instead of EBADF";
}

// SO_RCVTIMEO expiry with many ULTs moving between 2 workers: every
// `n < 0 && errno == EAGAIN` holds (errno written after the park).
TEST(HookErrno, EagainAfterTimeoutUnderChurn) {
  Watchdog wd(TestName(), 120);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> ok{0}, bad{0};
  ASSERT_TRUE(rt.block_on([&] {
                  std::vector<weft::JoinHandle<void>> us;
                  for (int i = 0; i < 64; ++i) {
                    us.push_back(weft::spawn([&] {
                      hooktest::Pair s = hooktest::SocketPair();
                      timeval tv{0, 2000};
                      setsockopt(s.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                      char c;
                      for (int k = 0; k < 10; ++k) {
                        SetErrno(5);
                        ssize_t n = read(s.a, &c, 1);
                        if (n < 0 && errno == EAGAIN) {
                          ok.fetch_add(1);
                        } else {
                          bad.fetch_add(1);
                        }
                        weft::this_ult::yield();
                      }
                      hooktest::RawClose(s.a);
                      hooktest::RawClose(s.b);
                    }));
                  }
                  for (auto& u : us) (void)u.join();
                }).ok());
  EXPECT_EQ(ok.load(), 640);
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
