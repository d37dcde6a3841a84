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
// descriptor wait that parks on the worker's timer; a hog spawned just
// before holds that worker in a raw 30 ms nanosleep after closing the
// second pipe's read end. The monitor fires the timer of the busy worker
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
std::atomic<bool> g_closed{false};

// On the kernel thread the selecting ULT left: close the select's second
// descriptor, then hold the worker in the kernel for 30 ms (the select's
// 10 ms timer is fired by the monitor meanwhile; the other worker resumes
// the ULT). Started anywhere else (the idle worker stole it), it just ends.
void Hog() {
  if (Tid() != g_tid0.load()) return;
  syscall(SYS_close, g_close_fd.load());
  g_closed = true;
  timespec t{0, 30 * 1000 * 1000};
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
  hogs->push_back(weft::spawn(Hog));
  SetErrno(5);
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
    if (s.migrated && s.closed) {
      ++counted;
      if ((s.n != -1 || s.err != EBADF) && wrong++ == 0) first_wrong = s.n < 0 ? s.err : 1000 + s.n;
    }
    for (int k = 0; k < 2; ++k) {
      if (!(k == 1 && s.closed)) syscall(SYS_close, p[k][0]);
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
