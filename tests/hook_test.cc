// tests/hook_test.cc — libweft-hook's interposers keep glibc's contract on
// ULTs: results and errno, O_NONBLOCK, SO_RCVTIMEO, EINTR, stop requests,
// poll/select on several descriptors, sockets end to end, files; and on a
// foreign thread they are glibc's calls.
//
// Runs once per io backend (WEFT_IO=uring, epoll). Linked with libweft.so
// and libweft-hook.so (tests/meson.build). The plumbing (socketpair,
// closing, writing from threads) uses raw system calls or runs on threads,
// where the hook forwards to glibc.
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/hook_util.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include "weft/hook.h"
#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/signal.h"

namespace {

using namespace std::chrono_literals;
using hooktest::Raw;
using hooktest::RawClose;

std::atomic<int> g_handled{0};
void Handler(int) { g_handled.fetch_add(1); }

void InstallUsr1(int flags) {
  struct sigaction sa {};
  sa.sa_handler = Handler;
  sa.sa_flags = flags;
  ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
}

void UnblockUsr1() {
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
}

uint64_t Parks(const weft::Runtime& rt) {
  uint64_t n = 0;
  for (const weft::WorkerStats& w : rt.stats().workers) n += w.parks;
  return n;
}

class Hook : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(weft::hook::active()) << "libweft-hook's interposers are not the ones the program calls";
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &m, &saved_), 0);
    g_handled = 0;
  }
  void TearDown() override {
    signal(SIGUSR1, SIG_DFL);
    pthread_sigmask(SIG_SETMASK, &saved_, nullptr);
  }
  sigset_t saved_;
};

TEST_F(Hook, ActiveAndEnabled) {
  EXPECT_TRUE(weft::hook::enabled());
  EXPECT_TRUE(weft::hook::active());
}

// Data ready: read returns it at once, a short count included (a pipe read
// never waits for the rest of the buffer).
TEST_F(Hook, ReadOfReadyDataReturnsWhatIsThere) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  ASSERT_EQ(Raw(SYS_write, p[1], reinterpret_cast<long>("0123456789"), 10), 10);
  EXPECT_TRUE(rt.block_on([&] {
                  char buf[100];
                  EXPECT_EQ(read(p[0], buf, sizeof buf), 10);
                  EXPECT_EQ(memcmp(buf, "0123456789", 10), 0);
                  EXPECT_EQ(write(p[1], "ab", 2), 2);
                  iovec v[2] = {{buf, 1}, {buf + 1, 50}};
                  EXPECT_EQ(readv(p[0], v, 2), 2);
                  EXPECT_EQ(buf[0], 'a');
                  EXPECT_EQ(buf[1], 'b');
                }).ok());
  RawClose(p[0]);
  RawClose(p[1]);
}

// O_NONBLOCK set by the application: EAGAIN at once, for read, recv,
// accept and a full write.
TEST_F(Hook, NonBlockingDescriptorsReturnEagainAtOnce) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  hooktest::Pair s = hooktest::SocketPair();
  ASSERT_GE(s.a, 0);
  ASSERT_EQ(fcntl(s.a, F_SETFL, fcntl(s.a, F_GETFL) | O_NONBLOCK), 0);
  uint16_t port = 0;
  int lfd = hooktest::Listen(&port);
  ASSERT_GE(lfd, 0);
  ASSERT_EQ(fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK), 0);
  EXPECT_TRUE(rt.block_on([&] {
                  char buf[16];
                  auto t0 = std::chrono::steady_clock::now();
                  errno = 0;
                  EXPECT_EQ(read(s.a, buf, sizeof buf), -1);
                  EXPECT_EQ(errno, EAGAIN);
                  errno = 0;
                  EXPECT_EQ(recv(s.a, buf, sizeof buf, 0), -1);
                  EXPECT_EQ(errno, EAGAIN);
                  // A blocking socket with MSG_DONTWAIT: the caller's flag.
                  errno = 0;
                  EXPECT_EQ(recv(s.b, buf, sizeof buf, MSG_DONTWAIT), -1);
                  EXPECT_EQ(errno, EAGAIN);
                  errno = 0;
                  EXPECT_EQ(accept(lfd, nullptr, nullptr), -1);
                  EXPECT_EQ(errno, EAGAIN);
                  // Fill the socket: the last write is short or EAGAIN.
                  std::vector<char> big(1 << 16, 'x');
                  ssize_t w;
                  int writes = 0;
                  do {
                    errno = 0;
                    w = write(s.a, big.data(), big.size());
                    ++writes;
                  } while (w > 0 && writes < 10000);
                  EXPECT_EQ(w, -1);
                  EXPECT_EQ(errno, EAGAIN);
                  EXPECT_LT(MsSince(t0), 1000.0) << "a non-blocking call waited";
                }).ok());
  RawClose(s.a);
  RawClose(s.b);
  RawClose(lfd);
}

// SO_RCVTIMEO: the read waits about the timeout, then fails with EAGAIN.
TEST_F(Hook, RcvTimeoExpiryReturnsEagain) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  hooktest::Pair s = hooktest::SocketPair();
  ASSERT_GE(s.a, 0);
  timeval tv{0, 100 * 1000};
  ASSERT_EQ(setsockopt(s.a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
  EXPECT_TRUE(rt.block_on([&] {
                  char buf[16];
                  for (int i = 0; i < 2; ++i) {
                    auto t0 = std::chrono::steady_clock::now();
                    errno = 0;
                    ssize_t n = i == 0 ? read(s.a, buf, sizeof buf) : recv(s.a, buf, sizeof buf, 0);
                    double ms = MsSince(t0);
                    EXPECT_EQ(n, -1);
                    EXPECT_EQ(errno, EAGAIN) << (i == 0 ? "read" : "recv");
                    EXPECT_GE(ms, 90.0);
                    EXPECT_LT(ms, 1000.0);
                  }
                }).ok());
  RawClose(s.a);
  RawClose(s.b);
}

// A handler without SA_RESTART ends a hooked read with EINTR; with
// SA_RESTART the read goes on and returns the byte written later.
TEST_F(Hook, SignalInterruptsReadWithEintr) {
  Watchdog wd(TestName(), 60);
  for (int restart = 0; restart < 2; ++restart) {
    weft::Runtime rt(weft::Options{.workers = 2});
    InstallUsr1(restart ? SA_RESTART : 0);
    g_handled = 0;
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    std::atomic<uint64_t> id{0};
    std::atomic<long> got{1000};
    std::atomic<int> err{0};
    uint64_t parks = Parks(rt);
    auto r = rt.spawn([&] {
      UnblockUsr1();
      id = weft::this_ult::id().value();
      char c;
      ssize_t n = read(p[0], &c, 1);
      err = errno;
      got = n;
    });
    ASSERT_TRUE(WaitUntil([&] { return id.load() != 0 && Parks(rt) > parks; }));
    std::this_thread::sleep_for(20ms);  // parked in the read by now (the park count moved)
    ASSERT_TRUE(weft::signal(weft::UltId::FromValue(id.load()), SIGUSR1).ok());
    ASSERT_TRUE(WaitUntil([&] { return g_handled.load() == 1; }));
    if (restart) {
      std::this_thread::sleep_for(20ms);
      EXPECT_EQ(got.load(), 1000) << "SA_RESTART: the read must go on waiting";
      ASSERT_EQ(Raw(SYS_write, p[1], reinterpret_cast<long>("x"), 1), 1);
      ASSERT_TRUE(WaitUntil([&] { return got.load() != 1000; }));
      EXPECT_EQ(got.load(), 1);
    } else {
      if (!WaitUntil([&] { return got.load() != 1000; }, 2000ms)) {
        Raw(SYS_write, p[1], reinterpret_cast<long>("y"), 1);
      }
      EXPECT_EQ(got.load(), -1);
      EXPECT_EQ(err.load(), EINTR);
    }
    EXPECT_TRUE(r.join().ok());
    RawClose(p[0]);
    RawClose(p[1]);
  }
}

// nanosleep interrupted by a handler: EINTR and the time left in *rem.
TEST_F(Hook, NanosleepInterruptedWritesRemaining) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  InstallUsr1(SA_RESTART);  // nanosleep is never restarted
  std::atomic<uint64_t> id{0};
  std::atomic<int> res{1000}, err{0};
  timespec rem{};
  auto r = rt.spawn([&] {
    UnblockUsr1();
    id = weft::this_ult::id().value();
    timespec req{2, 0};
    int n = nanosleep(&req, &rem);
    err = errno;
    res = n;
  });
  ASSERT_TRUE(WaitUntil([&] { return id.load() != 0; }));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(weft::signal(weft::UltId::FromValue(id.load()), SIGUSR1).ok());
  ASSERT_TRUE(WaitUntil([&] { return res.load() != 1000; }, 5000ms));
  EXPECT_TRUE(r.join().ok());
  EXPECT_EQ(res.load(), -1);
  EXPECT_EQ(err.load(), EINTR);
  double left = rem.tv_sec + rem.tv_nsec / 1e9;
  EXPECT_GT(left, 1.0);
  EXPECT_LT(left, 1.95);
}

// A stop request ends a hooked read (and a sleep) with ECANCELED.
TEST_F(Hook, StopRequestGivesEcanceled) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::atomic<long> got{1000}, slept{1000};
  std::atomic<int> err{0}, serr{0};
  std::atomic<bool> started{false};
  auto r = rt.spawn([&] {
    started = true;
    char c;
    ssize_t n = read(p[0], &c, 1);
    err = errno;
    got = n;
    n = usleep(1000000);
    serr = errno;
    slept = n;
  });
  ASSERT_TRUE(WaitUntil([&] { return started.load(); }));
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(r.request_stop());
  ASSERT_TRUE(WaitUntil([&] { return slept.load() != 1000; }, 3000ms));
  EXPECT_TRUE(r.join().ok());
  EXPECT_EQ(got.load(), -1);
  EXPECT_EQ(err.load(), ECANCELED);
  EXPECT_EQ(slept.load(), -1);
  EXPECT_EQ(serr.load(), ECANCELED);
  RawClose(p[0]);
  RawClose(p[1]);
}

// poll on three pipes: the one written after 50 ms is reported, alone; with
// nothing written the timeout ends it with 0.
TEST_F(Hook, PollSeveralDescriptorsAndTimeout) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[3][2];
  for (auto& q : p) ASSERT_EQ(pipe(q), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    write(p[1][1], "x", 1);
  });
  EXPECT_TRUE(rt.block_on([&] {
                  pollfd fds[3];
                  for (int i = 0; i < 3; ++i) fds[i] = pollfd{p[i][0], POLLIN, 0};
                  auto t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(poll(fds, 3, 5000), 1);
                  EXPECT_GE(MsSince(t0), 40.0);
                  EXPECT_EQ(fds[0].revents, 0);
                  EXPECT_EQ(fds[1].revents, POLLIN);
                  EXPECT_EQ(fds[2].revents, 0);
                  // Ready now: at once, without waiting.
                  EXPECT_EQ(poll(fds, 3, 5000), 1);
                  char c;
                  EXPECT_EQ(read(p[1][0], &c, 1), 1);
                  // Nothing: 0 after the timeout.
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(poll(fds, 3, 100), 0);
                  double ms = MsSince(t0);
                  EXPECT_GE(ms, 99.0);
                  EXPECT_LT(ms, 1000.0);
                  // One descriptor, and a negative fd that is skipped.
                  fds[0].fd = -1;
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(poll(fds, 2, 60), 0);
                  EXPECT_GE(MsSince(t0), 59.0);
                  // POLLNVAL for a closed descriptor, at once.
                  pollfd bad{1000, POLLIN, 0};
                  EXPECT_EQ(poll(&bad, 1, 5000), 1);
                  EXPECT_EQ(bad.revents, POLLNVAL);
                }).ok());
  writer.join();
  for (auto& q : p) {
    RawClose(q[0]);
    RawClose(q[1]);
  }
}

// poll ends with EINTR when a handler runs on the ULT (even SA_RESTART).
TEST_F(Hook, PollInterruptedBySignal) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  InstallUsr1(SA_RESTART);
  int p[2][2];
  for (auto& q : p) ASSERT_EQ(pipe(q), 0);
  std::atomic<uint64_t> id{0};
  std::atomic<int> res{1000}, err{0};
  auto r = rt.spawn([&] {
    UnblockUsr1();
    id = weft::this_ult::id().value();
    pollfd fds[2] = {{p[0][0], POLLIN, 0}, {p[1][0], POLLIN, 0}};
    int n = poll(fds, 2, 10000);
    err = errno;
    res = n;
  });
  ASSERT_TRUE(WaitUntil([&] { return id.load() != 0; }));
  std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(weft::signal(weft::UltId::FromValue(id.load()), SIGUSR1).ok());
  ASSERT_TRUE(WaitUntil([&] { return res.load() != 1000; }, 5000ms));
  EXPECT_TRUE(r.join().ok());
  EXPECT_EQ(res.load(), -1);
  EXPECT_EQ(err.load(), EINTR);
  for (auto& q : p) {
    RawClose(q[0]);
    RawClose(q[1]);
  }
}

// select: the set written to is reported; the timeout ends it with 0, the
// sets cleared and *timeout holding the time not slept (0).
TEST_F(Hook, Select) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[2][2];
  for (auto& q : p) ASSERT_EQ(pipe(q), 0);
  hooktest::Pair s = hooktest::SocketPair();
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    write(p[0][1], "x", 1);
  });
  EXPECT_TRUE(rt.block_on([&] {
                  fd_set r, w;
                  FD_ZERO(&r);
                  FD_ZERO(&w);
                  FD_SET(p[0][0], &r);
                  FD_SET(p[1][0], &r);
                  int nfds = std::max(p[0][0], p[1][0]) + 1;
                  timeval tv{5, 0};
                  EXPECT_EQ(select(nfds, &r, nullptr, nullptr, &tv), 1);
                  EXPECT_TRUE(FD_ISSET(p[0][0], &r));
                  EXPECT_FALSE(FD_ISSET(p[1][0], &r));
                  EXPECT_GT(tv.tv_sec + tv.tv_usec / 1e6, 4.0);
                  EXPECT_LT(tv.tv_sec + tv.tv_usec / 1e6, 5.0);
                  // Writable socket and an empty pipe: 1 at once.
                  FD_ZERO(&r);
                  FD_SET(p[1][0], &r);
                  FD_SET(s.a, &w);
                  nfds = std::max(p[1][0], s.a) + 1;
                  tv = {5, 0};
                  EXPECT_EQ(select(nfds, &r, &w, nullptr, &tv), 1);
                  EXPECT_TRUE(FD_ISSET(s.a, &w));
                  EXPECT_FALSE(FD_ISSET(p[1][0], &r));
                  // Timeout.
                  FD_ZERO(&r);
                  FD_SET(p[1][0], &r);
                  tv = {0, 80 * 1000};
                  auto t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(select(p[1][0] + 1, &r, nullptr, nullptr, &tv), 0);
                  EXPECT_GE(MsSince(t0), 79.0);
                  EXPECT_FALSE(FD_ISSET(p[1][0], &r));
                  EXPECT_EQ(tv.tv_sec, 0);
                  EXPECT_EQ(tv.tv_usec, 0);
                  // pselect with no descriptors: a sleep.
                  timespec ts{0, 30 * 1000 * 1000};
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(pselect(0, nullptr, nullptr, nullptr, &ts, nullptr), 0);
                  EXPECT_GE(MsSince(t0), 29.0);
                  // A closed descriptor (inside the descriptor table: the
                  // kernel ignores numbers beyond it): EBADF.
                  int q[2];
                  ASSERT_EQ(pipe(q), 0);
                  RawClose(q[1]);
                  RawClose(q[0]);
                  FD_ZERO(&r);
                  FD_SET(q[0], &r);
                  errno = 0;
                  tv = {1, 0};
                  EXPECT_EQ(select(q[0] + 1, &r, nullptr, nullptr, &tv), -1);
                  EXPECT_EQ(errno, EBADF);
                }).ok());
  writer.join();
  for (auto& q : p) {
    RawClose(q[0]);
    RawClose(q[1]);
  }
  RawClose(s.a);
  RawClose(s.b);
}

// epoll_wait in a ULT: parks until the epoll instance has an event.
TEST_F(Hook, EpollWait) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 42;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev), 0);
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    write(p[1], "x", 1);
  });
  EXPECT_TRUE(rt.block_on([&] {
                  epoll_event out[4];
                  auto t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(epoll_wait(ep, out, 4, 5000), 1);
                  EXPECT_GE(MsSince(t0), 40.0);
                  EXPECT_EQ(out[0].data.u64, 42u);
                  char c;
                  EXPECT_EQ(read(p[0], &c, 1), 1);
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(epoll_wait(ep, out, 4, 50), 0);
                  EXPECT_GE(MsSince(t0), 49.0);
                }).ok());
  writer.join();
  RawClose(ep);
  RawClose(p[0]);
  RawClose(p[1]);
}

// accept, connect, send, recv between ULTs over TCP, blocking sockets, 4 MiB
// each way (full socket buffers: blocking sends park and go on until all is
// sent), 8 connections at once.
TEST_F(Hook, TcpRoundTripBetweenUlts) {
  Watchdog wd(TestName(), 120);
  weft::Runtime rt(weft::Options{.workers = 2});
  static constexpr int kConns = 8;
  static constexpr size_t kBytes = 4 << 20;
  EXPECT_TRUE(rt.block_on([&] {
                  int lfd = socket(AF_INET, SOCK_STREAM, 0);
                  ASSERT_GE(lfd, 0);
                  sockaddr_in a{};
                  a.sin_family = AF_INET;
                  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
                  ASSERT_EQ(listen(lfd, 64), 0);
                  socklen_t alen = sizeof a;
                  ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen), 0);
                  std::atomic<int> ok{0};
                  auto server = weft::spawn([&] {
                    std::vector<weft::JoinHandle<void>> conns;
                    for (int i = 0; i < kConns; ++i) {
                      sockaddr_in peer{};
                      socklen_t plen = sizeof peer;
                      int c = accept(lfd, reinterpret_cast<sockaddr*>(&peer), &plen);
                      ASSERT_GE(c, 0) << strerror(errno);
                      EXPECT_EQ(plen, sizeof peer);
                      EXPECT_FALSE(fcntl(c, F_GETFL) & O_NONBLOCK) << "accept must give a blocking socket";
                      EXPECT_FALSE(fcntl(c, F_GETFD) & FD_CLOEXEC) << "accept without SOCK_CLOEXEC";
                      conns.push_back(weft::spawn([c] {
                        std::vector<char> buf(64 << 10);
                        size_t total = 0;
                        while (total < kBytes) {
                          ssize_t n = recv(c, buf.data(), buf.size(), 0);
                          if (n <= 0) break;
                          // Echo what came, all of it (a blocking send).
                          EXPECT_EQ(send(c, buf.data(), static_cast<size_t>(n), 0), n);
                          total += static_cast<size_t>(n);
                        }
                        EXPECT_EQ(total, kBytes);
                        close(c);
                      }));
                    }
                    for (auto& h : conns) (void)h.join();
                  });
                  std::vector<weft::JoinHandle<void>> clients;
                  for (int i = 0; i < kConns; ++i) {
                    clients.push_back(weft::spawn([&, i] {
                      int fd = socket(AF_INET, SOCK_STREAM, 0);
                      ASSERT_GE(fd, 0);
                      ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << strerror(errno);
                      std::vector<char> out(kBytes);
                      for (size_t k = 0; k < kBytes; ++k) out[k] = static_cast<char>(k * 7 + i);
                      // The writer in its own ULT: both directions flow.
                      auto w = weft::spawn([&] { EXPECT_EQ(write(fd, out.data(), kBytes), static_cast<ssize_t>(kBytes)); });
                      std::vector<char> in(kBytes);
                      size_t got = 0;
                      while (got < kBytes) {
                        ssize_t n = read(fd, in.data() + got, kBytes - got);
                        if (n <= 0) break;
                        got += static_cast<size_t>(n);
                      }
                      (void)w.join();
                      EXPECT_EQ(got, kBytes);
                      if (got == kBytes && memcmp(in.data(), out.data(), kBytes) == 0) ok.fetch_add(1);
                      close(fd);
                    }));
                  }
                  for (auto& h : clients) (void)h.join();
                  (void)server.join();
                  close(lfd);
                  EXPECT_EQ(ok.load(), kConns);
                }).ok());
}

// A UDP round trip (sendto, recvfrom, sendmsg, recvmsg) between ULTs.
TEST_F(Hook, DatagramsBetweenUlts) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  EXPECT_TRUE(rt.block_on([&] {
                  int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
                  sockaddr_in sa{};
                  sa.sin_family = AF_INET;
                  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                  ASSERT_EQ(bind(a, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
                  socklen_t len = sizeof sa;
                  ASSERT_EQ(getsockname(a, reinterpret_cast<sockaddr*>(&sa), &len), 0);
                  auto rx = weft::spawn([&] {
                    char buf[64];
                    sockaddr_in from{};
                    socklen_t flen = sizeof from;
                    EXPECT_EQ(recvfrom(a, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen), 5);
                    EXPECT_EQ(memcmp(buf, "hello", 5), 0);
                    iovec v{buf, sizeof buf};
                    msghdr m{};
                    m.msg_iov = &v;
                    m.msg_iovlen = 1;
                    EXPECT_EQ(recvmsg(a, &m, 0), 3);
                    EXPECT_EQ(memcmp(buf, "bye", 3), 0);
                  });
                  weft::this_ult::sleep_for(20ms);  // the receiver parks first
                  EXPECT_EQ(sendto(b, "hello", 5, 0, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 5);
                  iovec v{const_cast<char*>("bye"), 3};
                  msghdr m{};
                  m.msg_name = &sa;
                  m.msg_namelen = sizeof sa;
                  m.msg_iov = &v;
                  m.msg_iovlen = 1;
                  EXPECT_EQ(sendmsg(b, &m, 0), 3);
                  (void)rx.join();
                  close(a);
                  close(b);
                }).ok());
}

// A pipe bigger than its buffer: a blocking write of 1 MiB parks until the
// reader ULT has taken everything, and returns the full count.
TEST_F(Hook, BlockingWriteLargerThanPipeWritesEverything) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_TRUE(rt.block_on([&] {
                  constexpr size_t kN = 1 << 20;
                  std::vector<char> out(kN, 'z');
                  size_t got = 0;
                  auto rd = weft::spawn([&] {
                    std::vector<char> buf(4096);
                    while (got < kN) {
                      ssize_t n = read(p[0], buf.data(), buf.size());
                      if (n <= 0) break;
                      got += static_cast<size_t>(n);
                    }
                  });
                  EXPECT_EQ(write(p[1], out.data(), kN), static_cast<ssize_t>(kN));
                  (void)rd.join();
                  EXPECT_EQ(got, kN);
                }).ok());
  RawClose(p[0]);
  RawClose(p[1]);
}

std::atomic<int> g_sigpipes{0};
std::atomic<uint64_t> g_sigpipe_ult{0};
void PipeHandler(int) {
  g_sigpipes.fetch_add(1);
  g_sigpipe_ult.store(weft::this_ult::id().value());
}

// write(2) to a pipe or socket whose reading end is gone: -1/EPIPE, and
// SIGPIPE to the thread that wrote, once. On a ULT, the writing ULT: at
// once (the reader closed before the call) and after a wait (it was full,
// the reader closed while the write was parked), with other ULTs running
// and parked beside it. Fails without the fix (hook/rw.cc,
// write_wait_ready) on io_uring, after a wait: the write ran in the
// ring's task work on the worker's KLT, and SIGPIPE went to whichever ULT
// ran there (a bystander, in 43 of 50 runs).
TEST_F(Hook, WriteWithoutReaderRaisesSigpipeOnTheWriter) {
  Watchdog wd(TestName(), 60);
  struct sigaction sa {}, old {};
  sa.sa_handler = PipeHandler;
  ASSERT_EQ(sigaction(SIGPIPE, &sa, &old), 0);
  weft::Runtime rt(weft::Options{.workers = 2});
  for (int kind = 0; kind < 2; ++kind) {  // a pipe, an AF_UNIX stream socket
    for (int wait = 0; wait < 2; ++wait) {
      SCOPED_TRACE(std::string(kind ? "socket" : "pipe") + (wait ? ", after a wait" : ", at once"));
      int fds[2];
      if (kind == 0) {
        ASSERT_EQ(Raw(SYS_pipe2, reinterpret_cast<long>(fds), O_CLOEXEC), 0);
      } else {
        hooktest::Pair pr = hooktest::SocketPair();
        ASSERT_GE(pr.a, 0);
        fds[0] = pr.a;
        fds[1] = pr.b;
      }
      int rd = fds[0], wr = fds[1];
      if (wait) {
        // Fill it without blocking: then the hooked write must wait.
        long fl = Raw(SYS_fcntl, wr, F_GETFL);
        Raw(SYS_fcntl, wr, F_SETFL, fl | O_NONBLOCK);
        static char junk[65536];
        while (Raw(SYS_write, wr, reinterpret_cast<long>(junk), sizeof junk) > 0) {
        }
        Raw(SYS_fcntl, wr, F_SETFL, fl);
      } else {
        RawClose(rd);
      }
      g_sigpipes = 0;
      g_sigpipe_ult = 0;
      std::atomic<uint64_t> writer{0};
      std::atomic<long> got{1000};
      std::atomic<int> err{0};
      // Bystanders: ULTs that would take the signal were it sent to the
      // process rather than to the writer (one running, one parked).
      std::atomic<bool> done{false};
      auto busy = rt.spawn([&] {
        while (!done.load()) weft::this_ult::yield();
      });
      auto idle = rt.spawn([&] {
        while (!done.load()) weft::this_ult::sleep_for(1ms);
      });
      uint64_t parks = Parks(rt);
      auto w = rt.spawn([&] {
        writer = weft::this_ult::id().value();
        ssize_t n = write(wr, "x", 1);
        err = errno;
        got = n;
      });
      if (wait) {
        ASSERT_TRUE(WaitUntil([&] { return writer.load() != 0 && Parks(rt) > parks; }));
        EXPECT_EQ(got.load(), 1000) << "the write to a full pipe returned before the reader left";
        RawClose(rd);
      }
      EXPECT_TRUE(w.join().ok());
      done = true;
      EXPECT_TRUE(busy.join().ok());
      EXPECT_TRUE(idle.join().ok());
      EXPECT_EQ(got.load(), -1);
      EXPECT_EQ(err.load(), EPIPE);
      EXPECT_EQ(g_sigpipes.load(), 1) << "SIGPIPE, once";
      EXPECT_EQ(g_sigpipe_ult.load(), writer.load()) << "SIGPIPE ran on the writing ULT";
      RawClose(wr);
    }
  }
  sigaction(SIGPIPE, &old, nullptr);
}

// Files: open (O_CLOEXEC as asked), write, pwrite, fsync, fdatasync, pread,
// read to end of file, close; errors as glibc's.
TEST_F(Hook, RegularFiles) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::string path = testing::TempDir() + "/weft_hook_file_" + std::to_string(getpid());
  EXPECT_TRUE(rt.block_on([&] {
                  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
                  ASSERT_GE(fd, 0) << strerror(errno);
                  EXPECT_FALSE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
                  std::string data(300000, 'a');
                  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + i % 26);
                  EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
                  EXPECT_EQ(pwrite(fd, "XY", 2, 10), 2);
                  data[10] = 'X';
                  data[11] = 'Y';
                  EXPECT_EQ(fsync(fd), 0);
                  EXPECT_EQ(fdatasync(fd), 0);
                  char b[4];
                  EXPECT_EQ(pread(fd, b, 4, 9), 4);
                  EXPECT_EQ(memcmp(b, data.data() + 9, 4), 0);
                  EXPECT_EQ(lseek(fd, 0, SEEK_SET), 0);
                  std::string back(data.size() + 100, '\0');
                  EXPECT_EQ(read(fd, back.data(), back.size()), static_cast<ssize_t>(data.size()));
                  back.resize(data.size());
                  EXPECT_EQ(back, data);
                  EXPECT_EQ(read(fd, b, 4), 0);  // end of file
                  EXPECT_EQ(close(fd), 0);
                  int fd2 = openat(AT_FDCWD, path.c_str(), O_RDONLY | O_CLOEXEC);
                  ASSERT_GE(fd2, 0);
                  EXPECT_TRUE(fcntl(fd2, F_GETFD) & FD_CLOEXEC);
                  errno = 0;
                  EXPECT_EQ(write(fd2, "x", 1), -1);
                  EXPECT_EQ(errno, EBADF);
                  EXPECT_EQ(close(fd2), 0);
                  errno = 0;
                  EXPECT_EQ(close(fd2), -1);
                  EXPECT_EQ(errno, EBADF);
                  errno = 0;
                  EXPECT_EQ(open("/nonexistent/weft", O_RDONLY), -1);
                  EXPECT_EQ(errno, ENOENT);
                  errno = 0;
                  EXPECT_EQ(read(-1, b, 1), -1);
                  EXPECT_EQ(errno, EBADF);
                  EXPECT_EQ(unlink(path.c_str()), 0);
                }).ok());
}

// Sleeps: relative, absolute, zero; getaddrinfo of a numeric host.
TEST_F(Hook, SleepsAndGetaddrinfo) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  EXPECT_TRUE(rt.block_on([&] {
                  auto t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(usleep(20000), 0);
                  EXPECT_GE(MsSince(t0), 19.0);
                  timespec req{0, 20 * 1000 * 1000}, rem{};
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(nanosleep(&req, &rem), 0);
                  EXPECT_GE(MsSince(t0), 19.0);
                  timespec now{};
                  clock_gettime(CLOCK_MONOTONIC, &now);
                  timespec until = now;
                  until.tv_nsec += 30 * 1000 * 1000;
                  if (until.tv_nsec >= 1000000000) {
                    until.tv_nsec -= 1000000000;
                    ++until.tv_sec;
                  }
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nullptr), 0);
                  EXPECT_GE(MsSince(t0), 25.0);
                  clock_gettime(CLOCK_REALTIME, &now);
                  now.tv_nsec += 20 * 1000 * 1000;
                  if (now.tv_nsec >= 1000000000) {
                    now.tv_nsec -= 1000000000;
                    ++now.tv_sec;
                  }
                  t0 = std::chrono::steady_clock::now();
                  EXPECT_EQ(clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &now, nullptr), 0);
                  EXPECT_GE(MsSince(t0), 15.0);
                  EXPECT_EQ(usleep(0), 0);
                  EXPECT_EQ(sleep(0), 0u);
                  req = {0, 1000000000};
                  errno = 0;
                  EXPECT_EQ(nanosleep(&req, nullptr), -1);
                  EXPECT_EQ(errno, EINVAL);
                  EXPECT_EQ(clock_nanosleep(CLOCK_MONOTONIC, 0, &req, nullptr), EINVAL);
                  addrinfo hints{};
                  hints.ai_socktype = SOCK_STREAM;
                  addrinfo* res = nullptr;
                  EXPECT_EQ(getaddrinfo("127.0.0.1", "6379", &hints, &res), 0);
                  ASSERT_NE(res, nullptr);
                  EXPECT_EQ(res->ai_family, AF_INET);
                  freeaddrinfo(res);
                }).ok());
}

// On a foreign thread every interposer is glibc's call: blocking reads
// block the thread, O_NONBLOCK gives EAGAIN, nanosleep and poll time out.
TEST_F(Hook, ForeignThreadForwardsToGlibc) {
  Watchdog wd(TestName(), 60);
  weft::Runtime rt(weft::Options{.workers = 1});  // a runtime exists; the thread is not its
  std::thread t([] {
    EXPECT_FALSE(weft::this_ult::in_ult());
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    std::thread w([&] {
      std::this_thread::sleep_for(50ms);
      EXPECT_EQ(write(p[1], "abc", 3), 3);
    });
    char buf[8];
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(read(p[0], buf, sizeof buf), 3);  // blocks this thread until the write
    EXPECT_GE(MsSince(t0), 40.0);
    w.join();
    ASSERT_EQ(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    errno = 0;
    EXPECT_EQ(read(p[0], buf, sizeof buf), -1);
    EXPECT_EQ(errno, EAGAIN);
    pollfd pf{p[0], POLLIN, 0};
    t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(poll(&pf, 1, 30), 0);
    EXPECT_GE(MsSince(t0), 29.0);
    timespec req{0, 20 * 1000 * 1000};
    t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(nanosleep(&req, nullptr), 0);
    EXPECT_GE(MsSince(t0), 19.0);
    errno = 0;
    EXPECT_EQ(close(1000), -1);
    EXPECT_EQ(errno, EBADF);
    EXPECT_EQ(close(p[0]), 0);
    EXPECT_EQ(close(p[1]), 0);
  });
  t.join();
}

}  // namespace
