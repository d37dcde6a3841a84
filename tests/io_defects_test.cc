// Regression tests for the io defects of issue 9 (#4 close in a blocking
// region and close against a busy worker, #5 lengths of 4 GiB, #6 deadline
// arithmetic, #9 the epoll backend's O_NONBLOCK and regular files, #10
// name-resolution deadlines and limits, #19 sub-millisecond epoll timers).
// Each test says what it saw on 15df0bc, the commit the review ran against.
//
// The binary runs once per backend (WEFT_IO=uring, WEFT_IO=epoll); every
// test is bounded by a watchdog, so a hang fails instead of blocking CI.
//
// getaddrinfo is interposed below for names ending in ".weft.test", so that
// a lookup can be held for as long as a test needs (a "slow DNS server"
// that is deterministic); every other name goes to glibc's.
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netdb.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/watchdog.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/engine.h"
#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/sync.h"

// --- the interposed getaddrinfo ------------------------------------------------------
namespace gate {
std::mutex mu;
std::condition_variable cv;
bool open = true;         // guarded by mu
int inside = 0;           // lookups of gated names held now (guarded by mu)
std::atomic<int> finished{0};  // gated lookups that returned
}  // namespace gate

extern "C" int getaddrinfo(const char* node, const char* service, const struct addrinfo* hints,
                           struct addrinfo** res) {
  using Fn = int (*)(const char*, const char*, const struct addrinfo*, struct addrinfo**);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "getaddrinfo"));
  size_t len = node != nullptr ? strlen(node) : 0;
  const char kSuffix[] = ".weft.test";
  if (len < sizeof kSuffix - 1 || strcmp(node + len - (sizeof kSuffix - 1), kSuffix) != 0)
    return real(node, service, hints, res);
  {
    std::unique_lock<std::mutex> g(gate::mu);
    ++gate::inside;
    gate::cv.notify_all();
    gate::cv.wait(g, [] { return gate::open; });
    --gate::inside;
  }
  gate::finished.fetch_add(1);
  return EAI_NONAME;
}

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;
using std::chrono::milliseconds;
namespace io = weft::io;

std::string ExpectedBackend() {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr || *e == '\0') return io::default_backend();
  return std::string(e) == "uring" ? "io_uring" : std::string(e);
}

// Closes the gate for the life of the object (and opens it again after).
struct GateClosed {
  GateClosed() {
    std::lock_guard<std::mutex> g(gate::mu);
    gate::open = false;
  }
  void Open() {
    std::lock_guard<std::mutex> g(gate::mu);
    gate::open = true;
    gate::cv.notify_all();
  }
  ~GateClosed() { Open(); }
};
int GateInside() {
  std::lock_guard<std::mutex> g(gate::mu);
  return gate::inside;
}

int Flags(int fd) { return fcntl(fd, F_GETFL); }

// Runs fn in a ULT of a fresh runtime with `workers` workers, checking the
// backend first.
void InUlt(int workers, std::function<void()> fn) {
  weft::Runtime rt(weft::Options{.workers = workers});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  absl::Status s = rt.block_on([&] {
    ASSERT_EQ(std::string(io::backend()), ExpectedBackend());
    fn();
  });
  ASSERT_TRUE(s.ok()) << s;
}

// =====================================================================================
// #4: io::close inside weft::blocking() while the calling worker's own engine
// has an operation on the fd in flight.
//
// Regression (issue 9 #4): on 15df0bc this hung on both backends (close
// posted the cancel to its own worker's engine, which only that worker's
// KLT serves, and waited for it on that KLT): the watchdog fired.
TEST(IoDefects, CloseInsideBlockingRegionCancelsOwnWorkersOps) {
  Watchdog wd(TestName(), 30);
  InUlt(1, [] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    std::atomic<int64_t> result{1};
    // One worker: the reader parks on this worker's engine.
    weft::Ult reader = weft::spawn([&] {
      char b[8];
      result = io::read(p[0], b, sizeof b);
    });
    ASSERT_TRUE(WaitUntil([&] { return weft::io_internal::fd_maybe_busy(p[0]); }));
    int r = weft::blocking([&] { return io::close(p[0]); });
    EXPECT_EQ(r, 0);
    ASSERT_TRUE(reader.join().ok());
    EXPECT_EQ(result.load(), -ECANCELED);
    EXPECT_EQ(fcntl(p[0], F_GETFD), -1) << "io::close returned but the fd is still open";
    close(p[1]);
  });
}

// #4: io::close of an fd that a busy worker (a ULT that never yields) has an
// operation on. close must return within its bound (50 ms; 2 s asserted for
// a loaded machine), the fd number must stay taken until that worker has
// cancelled the operation (so nothing can act on a new file that got the
// number), and the operation must end with -ECANCELED, not with another
// file's data; then the worker closes the fd.
//
// Regression (issue 9 #4): on 15df0bc close waited for as long as the
// worker was busy (here: not returned after 3 s, reported as a failure).
TEST(IoDefects, CloseIsBoundedWhileTheOwningWorkerIsBusy) {
  Watchdog wd(TestName(), 60);
  // No time slices: the worker must stay busy (a slice's end would let it
  // serve the close).
  weft::Runtime rt(weft::Options{.workers = 1, .time_slice = std::chrono::microseconds(0)});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const int fd = p[0];
  std::atomic<int64_t> result{1};
  std::atomic<bool> hogging{false}, stop{false};
  char got[8] = {};
  weft::Ult reader = rt.spawn([&] { result = io::read(fd, got, sizeof got); });
  weft::Ult hog = rt.spawn([&] {
    // Let the reader submit (or at least prepare) its read, then keep the
    // only worker busy without a single switch.
    while (!weft::io_internal::fd_maybe_busy(fd)) weft::this_ult::yield();
    hogging = true;
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return hogging.load(); }));

  std::atomic<bool> closed{false};
  std::atomic<int> rc{1};
  Clock::time_point t0 = Clock::now();
  std::thread closer([&] {
    rc = io::close(fd);
    closed = true;
  });
  bool returned = WaitUntil([&] { return closed.load(); }, milliseconds(3000));
  double ms = MsSince(t0);
  EXPECT_TRUE(returned) << "io::close still waits for the busy worker after 3 s";
  if (returned) {
    EXPECT_EQ(rc.load(), 0);
    EXPECT_LT(ms, 2000) << "io::close took " << ms << " ms";
    // The close was handed to the busy worker: the number is still taken...
    EXPECT_NE(fcntl(fd, F_GETFD), -1) << "fd freed while an operation on it may still be submitted";
    // ...so a new file cannot get it, and the pending read cannot see it.
    int q[2];
    ASSERT_EQ(pipe2(q, O_CLOEXEC), 0);
    EXPECT_NE(q[0], fd);
    EXPECT_NE(q[1], fd);
    ASSERT_EQ(write(q[1], "NEW!", 4), 4);
    stop = true;
    ASSERT_TRUE(reader.join().ok());
    ASSERT_TRUE(hog.join().ok());
    EXPECT_EQ(result.load(), -ECANCELED) << "read got '" << std::string(got, 4) << "'";
    // The worker closed the fd once its read was cancelled.
    EXPECT_TRUE(WaitUntil([&] { return fcntl(fd, F_GETFD) == -1 && errno == EBADF; }, milliseconds(5000)));
    char b[8] = {};
    ASSERT_EQ(fcntl(q[0], F_SETFL, O_NONBLOCK), 0);
    EXPECT_EQ(read(q[0], b, sizeof b), 4) << "the new file's data was taken";
    close(q[0]);
    close(q[1]);
  }
  stop = true;
  closer.join();
  if (reader.joinable()) (void)reader.join();
  if (hog.joinable()) (void)hog.join();
  close(p[1]);
  if (!returned) close(fd);
}

// =====================================================================================
// #5: lengths of 4 GiB and more, in a ULT (both backends) and on a thread.

constexpr size_t k4G = size_t{1} << 32;
constexpr int64_t kMaxRw = 0x7ffff000;  // MAX_RW_COUNT

struct BigBuffer {
  BigBuffer() {
    // Address space only: the kernel never touches more than it transfers.
    p = static_cast<char*>(mmap(nullptr, k4G + 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    EXPECT_NE(p, MAP_FAILED);
  }
  ~BigBuffer() { munmap(p, k4G + 4096); }
  char* p;
};

void HugeLengthsAreClamped() {
  BigBuffer big;
  // read / recv of 4 GiB with 5 bytes available: 5, not 0 (EOF).
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(write(p[1], "hello", 5), 5);
  EXPECT_EQ(io::read(p[0], big.p, k4G), 5);
  ASSERT_EQ(write(p[1], "hello", 5), 5);
  EXPECT_EQ(io::read(p[0], big.p, k4G + 1), 5);
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(write(sv[1], "world", 5), 5);
  EXPECT_EQ(io::recv(sv[0], big.p, k4G), 5);
  // pread of a sparse file 10 bytes before its end.
  char path[] = "/tmp/weft_io_defects_XXXXXX";
  int f = mkstemp(path);
  ASSERT_GE(f, 0);
  unlink(path);
  constexpr off_t kSize = off_t{8} << 30;
  ASSERT_EQ(ftruncate(f, kSize), 0);
  EXPECT_EQ(io::pread(f, big.p, k4G, kSize - 10), 10);
  EXPECT_EQ(io::pread(f, big.p, k4G + 1, kSize - 10), 10);
  // write / send of 4 GiB that cannot wait: the bytes that fit, not 0.
  ASSERT_EQ(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);  // our own pipe
  int64_t w = io::write(p[1], big.p, k4G);
  EXPECT_GT(w, 0);
  EXPECT_LE(w, kMaxRw);
  int64_t s = io::send(sv[1], big.p, k4G, MSG_DONTWAIT);
  EXPECT_GT(s, 0);
  EXPECT_LE(s, kMaxRw);
  close(f);
  for (int fd : {p[0], p[1], sv[0], sv[1]}) close(fd);
}

// Regression (issue 9 #5): on 15df0bc, with io_uring, every call above
// returned 0 (the length was truncated to 32 bits).
TEST(IoDefects, HugeLengthsAreClampedInUlt) {
  Watchdog wd(TestName(), 60);
  InUlt(2, HugeLengthsAreClamped);
}

TEST(IoDefects, HugeLengthsAreClampedOnThread) {
  Watchdog wd(TestName(), 60);
  HugeLengthsAreClamped();
}

// send_all of exactly 4 GiB arrives whole (a reader thread drains it).
// Regression (issue 9 #5): on 15df0bc, with io_uring, send_all looped
// forever (every send returned 0): the watchdog fired.
TEST(IoDefects, SendAllOf4GiBCompletes) {
  Watchdog wd(TestName(), 120);
  BigBuffer big;
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::atomic<uint64_t> drained{0};
  std::thread reader([&] {
    std::vector<char> buf(1 << 20);
    for (;;) {
      ssize_t n = read(sv[1], buf.data(), buf.size());
      if (n <= 0) break;
      drained += static_cast<uint64_t>(n);
    }
  });
  Clock::time_point t0 = Clock::now();
  int64_t r = -1;
  InUlt(2, [&] { r = io::send_all(sv[0], big.p, k4G); });
  EXPECT_EQ(r, static_cast<int64_t>(k4G));
  shutdown(sv[0], SHUT_WR);
  reader.join();
  EXPECT_EQ(drained.load(), k4G);
  printf("[   INFO   ] 4 GiB through send_all in %.0f ms\n", MsSince(t0));
  close(sv[0]);
  close(sv[1]);
}

// =====================================================================================
// #6: Deadline arithmetic saturates; "none" is a flag.

// Regression (issue 9 #6): on 15df0bc in(-100 years) was none() (it made a
// negative time, which meant "none"), and in(hours::max()) overflowed.
TEST(IoDefects, DeadlineSaturates) {
  using namespace std::chrono;
  const int64_t now = duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  const auto years100 = hours(24 * 365 * 100);

  io::Deadline past = io::Deadline::in(-years100);
  EXPECT_FALSE(past.is_none());
  EXPECT_GE(past.ns(), 0);
  EXPECT_LE(past.ns(), now + 1000000000LL);

  for (io::Deadline far : {io::Deadline::in(hours::max()), io::Deadline::in(seconds::max()),
                           io::Deadline::in(nanoseconds::max()), io::Deadline::in(years100 * 100),
                           io::Deadline::in(duration<double>(1e300))}) {
    EXPECT_FALSE(far.is_none());
    EXPECT_GT(far.ns(), now + 1000000000LL * 3600 * 24 * 365);
  }
  EXPECT_EQ(io::Deadline::in(hours::max()).ns(), INT64_MAX);
  for (io::Deadline expired : {io::Deadline::in(hours::min()), io::Deadline::in(nanoseconds::min()),
                               io::Deadline::in(duration<double>(-1e300)),
                               io::Deadline::in(duration<double>(std::nan(""))), io::Deadline::in(seconds(0))}) {
    EXPECT_FALSE(expired.is_none());
    EXPECT_GE(expired.ns(), 0);
    EXPECT_LE(expired.ns(), now + 1000000000LL);
  }
  EXPECT_EQ(io::Deadline::at(steady_clock::time_point::min()).ns(), 0);
  EXPECT_FALSE(io::Deadline::at(steady_clock::time_point::min()).is_none());
  EXPECT_EQ(io::Deadline::at(steady_clock::time_point::max()).ns(), INT64_MAX);
  EXPECT_TRUE(io::Deadline().is_none());
  EXPECT_TRUE(io::Deadline::none().is_none());
  EXPECT_EQ(io::Deadline::none().ns(), -1);
}

// A passed deadline (however far in the past) does not wait; a deadline
// too far to represent waits for the data. In a ULT and on a thread.
// Regression (issue 9 #6): on 15df0bc the read with in(-100 years) waited
// for the data written 500 ms later (it meant "no deadline") and returned 1.
void DeadlineExtremesBehave() {
  using namespace std::chrono;
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(500));
    (void)!write(p[1], "xy", 2);  // one byte for each read, whatever the first one does
  });
  char b[4];
  Clock::time_point t0 = Clock::now();
  EXPECT_EQ(io::read(p[0], b, 1, io::Deadline::in(-hours(24 * 365 * 100))), -ETIMEDOUT);
  EXPECT_LT(MsSince(t0), 450);
  EXPECT_EQ(io::read(p[0], b, 1, io::Deadline::in(hours::max())), 1);
  late.join();
  close(p[0]);
  close(p[1]);
}

TEST(IoDefects, DeadlineExtremesBehaveInUlt) {
  Watchdog wd(TestName(), 60);
  InUlt(2, DeadlineExtremesBehave);
}

TEST(IoDefects, DeadlineExtremesBehaveOnThread) {
  Watchdog wd(TestName(), 60);
  DeadlineExtremesBehave();
}

// =====================================================================================
// #9: weft never sets O_NONBLOCK on a descriptor it did not create.
//
// Regression (issue 9 #9): on 15df0bc, with epoll, the first io::read,
// write, readv, writev, accept or connect set O_NONBLOCK on the caller's
// pipe, socket or listener (shared with other processes and dups).
TEST(IoDefects, EpollNeverSetsNonblockOnCallersFds) {
  Watchdog wd(TestName(), 60);
  InUlt(2, [] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char b[16] = {};
    // Data there at once, and data that comes later (the ULT waits).
    EXPECT_EQ(io::write(p[1], "ab", 2), 2);
    EXPECT_EQ(io::read(p[0], b, sizeof b), 2);
    weft::Ult later = weft::spawn([&] {
      weft::this_ult::sleep_for(milliseconds(20));
      EXPECT_EQ(io::write(p[1], "cd", 2), 2);
      iovec v{const_cast<char*>("ef"), 2};
      EXPECT_EQ(io::writev(sv[1], &v, 1), 2);
    });
    EXPECT_EQ(io::read(p[0], b, sizeof b), 2);
    iovec rv{b, sizeof b};
    EXPECT_EQ(io::readv(sv[0], &rv, 1), 2);
    EXPECT_EQ(std::string(b, 2), "ef");
    ASSERT_TRUE(later.join().ok());
    // Reads with a deadline that passes.
    EXPECT_EQ(io::read(p[0], b, sizeof b, io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
    EXPECT_EQ(io::readv(sv[0], &rv, 1, io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
    for (int fd : {p[0], p[1], sv[0], sv[1]}) EXPECT_EQ(Flags(fd) & O_NONBLOCK, 0) << "fd " << fd;

    // A listener and a client socket made with plain socket(): blocking.
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_EQ(listen(lfd, 8), 0);
    socklen_t alen = sizeof a;
    ASSERT_EQ(getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen), 0);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int afd = -1;
    weft::Ult acceptor = weft::spawn([&] { afd = io::accept(lfd); });
    EXPECT_EQ(io::connect(cfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    ASSERT_TRUE(acceptor.join().ok());
    ASSERT_GE(afd, 0);
    EXPECT_EQ(io::send(cfd, "gh", 2), 2);
    EXPECT_EQ(io::recv(afd, b, sizeof b), 2);
    EXPECT_EQ(io::accept(lfd, nullptr, nullptr, io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
    EXPECT_EQ(Flags(lfd) & O_NONBLOCK, 0);
    EXPECT_EQ(Flags(cfd) & O_NONBLOCK, 0);
    for (int fd : {p[0], p[1], sv[0], sv[1], lfd, cfd, afd}) close(fd);
  });
}

// A pty refuses RWF_NOWAIT (EOPNOTSUPP): the epoll backend waits for
// readiness and then reads, without touching the pty's flags.
// Regression (issue 9 #9): on 15df0bc the master got O_NONBLOCK.
TEST(IoDefects, PtyReadWithoutNonblock) {
  Watchdog wd(TestName(), 60);
  int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) GTEST_SKIP() << "no ptys here: " << strerror(errno);
  ASSERT_EQ(grantpt(m), 0);
  ASSERT_EQ(unlockpt(m), 0);
  int s = open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC);
  ASSERT_GE(s, 0);
  InUlt(2, [&] {
    weft::Ult writer = weft::spawn([&] {
      weft::this_ult::sleep_for(milliseconds(20));
      EXPECT_EQ(io::write(s, "pty\n", 4), 4);
    });
    char b[16] = {};
    int64_t n = io::read(m, b, sizeof b);
    EXPECT_GE(n, 3) << strerror(static_cast<int>(-n));
    EXPECT_EQ(std::string(b, 3), "pty");
    ASSERT_TRUE(writer.join().ok());
    EXPECT_EQ(Flags(m) & O_NONBLOCK, 0);
    EXPECT_EQ(Flags(s) & O_NONBLOCK, 0);
  });
  close(s);
  close(m);
}

// #9: a regular-file read runs as a blocking region, so a read that blocks
// in the kernel (here: copying into a page that a userfaultfd holds back)
// does not stall the other ULTs of its worker.
//
// Regression (issue 9 #9): on 15df0bc, with epoll, the read ran on the
// worker outside a region: the other ULT of the only worker never ran
// until the page was supplied (the test supplies it after 3 s and fails).
TEST(IoDefects, EpollRegularFileReadIsABlockingRegion) {
  if (ExpectedBackend() != "epoll") {
    GTEST_SKIP() << "io_uring reads regular files asynchronously; the blocking region is the epoll backend's";
  }
  Watchdog wd(TestName(), 60);
  long uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
  if (uffd < 0) GTEST_SKIP() << "no userfaultfd here: " << strerror(errno);
  uffdio_api api{};
  api.api = UFFD_API;
  ASSERT_EQ(ioctl(static_cast<int>(uffd), UFFDIO_API, &api), 0);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  char* buf = static_cast<char*>(mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(buf, MAP_FAILED);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(buf);
  reg.range.len = page;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  ASSERT_EQ(ioctl(static_cast<int>(uffd), UFFDIO_REGISTER, &reg), 0);
  char path[] = "/tmp/weft_io_defects_XXXXXX";
  int f = mkstemp(path);
  ASSERT_GE(f, 0);
  unlink(path);
  ASSERT_EQ(write(f, "file-data", 9), 9);

  std::atomic<bool> other_ran{false}, read_started{false};
  std::atomic<int64_t> result{1};
  weft::Runtime rt(weft::Options{.workers = 1});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  ASSERT_EQ(lseek(f, 0, SEEK_SET), 0);
  weft::Ult reader = rt.spawn([&] {
    read_started = true;
    result = io::read(f, buf, 9);  // read(): pread always ran as a region
  });
  ASSERT_TRUE(WaitUntil([&] { return read_started.load(); }));
  weft::Ult other = rt.spawn([&] { other_ran = true; });
  // Supply the page after 3 s at the latest; the other ULT must run before.
  bool ran = WaitUntil([&] { return other_ran.load(); }, milliseconds(3000));
  EXPECT_TRUE(ran) << "a regular-file read blocked its worker outside a blocking region";
  pollfd pf{static_cast<int>(uffd), POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 10000), 1) << "the read never faulted on the held-back page";
  uffd_msg msg{};
  ASSERT_EQ(read(static_cast<int>(uffd), &msg, sizeof msg), static_cast<ssize_t>(sizeof msg));
  uffdio_zeropage zp{};
  zp.range.start = reinterpret_cast<uint64_t>(buf);
  zp.range.len = page;
  ASSERT_EQ(ioctl(static_cast<int>(uffd), UFFDIO_ZEROPAGE, &zp), 0);
  ASSERT_TRUE(reader.join().ok());
  ASSERT_TRUE(other.join().ok());
  EXPECT_EQ(result.load(), 9);
  EXPECT_EQ(std::string(buf, 9), "file-data");
  munmap(buf, page);
  close(f);
  close(static_cast<int>(uffd));
}

// =====================================================================================
// #10: name resolution within a deadline, a bounded queue.

// connect_tcp's deadline covers the name lookup, in a ULT and on a thread;
// a lookup given up at its deadline finishes later without harm.
// Regression (issue 9 #10): on 15df0bc connect_tcp waited for the lookup
// (here: until the gate opened after 3 s) and returned -EHOSTUNREACH.
void ConnectTcpDeadlineCoversLookup() {
  GateClosed closed;
  int finished_before = gate::finished.load();
  std::atomic<bool> returned{false};
  std::thread opener([&] {
    // Opens the gate once connect_tcp returned, or after 3 s (so that a
    // connect_tcp that waits for the lookup fails instead of hanging).
    WaitUntil([&] { return returned.load(); }, milliseconds(3000));
    closed.Open();
  });
  Clock::time_point t0 = Clock::now();
  int r = io::connect_tcp("slow.weft.test", 80, io::Deadline::in(milliseconds(100)));
  double ms = MsSince(t0);
  returned = true;
  EXPECT_EQ(r, -ETIMEDOUT) << strerror(-r);
  EXPECT_LT(ms, 2000) << "connect_tcp overran its deadline during the lookup";
  opener.join();
  // The abandoned lookup completes and its result is dropped (its Job is
  // shared, not on the caller's stack).
  EXPECT_TRUE(WaitUntil([&] { return gate::finished.load() > finished_before; }));
}

TEST(IoDefects, ConnectTcpDeadlineCoversLookupInUlt) {
  Watchdog wd(TestName(), 60);
  InUlt(2, ConnectTcpDeadlineCoversLookup);
}

TEST(IoDefects, ConnectTcpDeadlineCoversLookupOnThread) {
  Watchdog wd(TestName(), 60);
  ConnectTcpDeadlineCoversLookup();
}

// resolve() with a deadline: DeadlineExceeded at the deadline, and the
// stack of a ULT that gave up is reused at once without harm.
TEST(IoDefects, ResolveDeadline) {
  Watchdog wd(TestName(), 60);
  InUlt(2, [] {
    GateClosed closed;
    int finished_before = gate::finished.load();
    Clock::time_point t0 = Clock::now();
    absl::StatusOr<std::vector<io::Address>> r = io::resolve("deadline.weft.test", 80, io::Deadline::in(milliseconds(50)));
    EXPECT_TRUE(absl::IsDeadlineExceeded(r.status())) << r.status();
    EXPECT_LT(MsSince(t0), 2000);
    // Scribble over the stack the lookup's waiter used, then let it finish.
    volatile char scribble[16384];
    for (size_t i = 0; i < sizeof scribble; ++i) scribble[i] = static_cast<char>(0xa5);
    ASSERT_TRUE(WaitUntil([] { return GateInside() >= 1; }));
    closed.Open();
    EXPECT_TRUE(WaitUntil([&] { return gate::finished.load() > finished_before; }));
    for (size_t i = 0; i < sizeof scribble; ++i) ASSERT_EQ(scribble[i], static_cast<char>(0xa5));
    // Numeric and /etc/hosts names still resolve, with a deadline too.
    absl::StatusOr<std::vector<io::Address>> ok = io::resolve("localhost", 80, io::Deadline::in(std::chrono::seconds(10)));
    EXPECT_TRUE(ok.ok()) << ok.status();
  });
}

// At most kResolveMaxHelpers lookups run and kResolveMaxQueued wait; one
// more is refused at once with ResourceExhausted; after the jam clears,
// every lookup that was not refused gets its own answer.
// Regression (issue 9 #10): on 15df0bc the queue had no bound (no lookup
// was ever refused: "never refused" after 10 s).
TEST(IoDefects, ResolveQueueIsBounded) {
  Watchdog wd(TestName(), 120);
  constexpr int kHelpers = 4, kQueued = 256;  // io::kResolveMaxHelpers, io::kResolveMaxQueued
  EXPECT_EQ(io::kResolveMaxHelpers, static_cast<size_t>(kHelpers));
  EXPECT_EQ(io::kResolveMaxQueued, static_cast<size_t>(kQueued));
  InUlt(2, [] {
    GateClosed closed;
    std::vector<weft::Ult> us;
    std::atomic<int> not_found{0}, refused{0}, other{0};
    auto lookup = [&] {
      absl::StatusOr<std::vector<io::Address>> r = io::resolve("jam.weft.test", 80);
      if (absl::IsNotFound(r.status())) {
        not_found.fetch_add(1);
      } else if (absl::IsResourceExhausted(r.status())) {
        refused.fetch_add(1);
      } else {
        other.fetch_add(1);
      }
    };
    for (int i = 0; i < kHelpers + kQueued; ++i) us.push_back(weft::spawn(lookup));
    ASSERT_TRUE(WaitUntil([] { return GateInside() == kHelpers; }));
    // Probe with one more lookup at a time until one is refused (the jam's
    // ULTs may still be queueing theirs); a probe that was queued instead
    // waits for the gate like the others.
    Clock::time_point t0 = Clock::now();
    while (refused.load() == 0 && MsSince(t0) < 10000) {
      us.push_back(weft::spawn(lookup));
      WaitUntil([&] { return refused.load() != 0; }, milliseconds(20));
    }
    EXPECT_GE(refused.load(), 1) << "never refused";
    closed.Open();
    for (auto& u : us) ASSERT_TRUE(u.join().ok());
    EXPECT_EQ(not_found.load() + refused.load(), static_cast<int>(us.size()));
    EXPECT_EQ(other.load(), 0);
  });
}

// =====================================================================================
// #19: sub-millisecond sleeps on the epoll backend.
//
// Regression (issue 9 #19): on 15df0bc, with epoll, a 200 us sleep of a ULT
// on an idle worker took at least 1 ms (epoll_wait's timeout is in ms):
// the shortest of 41 was over 1000 us. The check is on the shortest
// sleep, not the median, so that a loaded machine (which delays wake-ups,
// never advances them) cannot fail it.
TEST(IoDefects, SubMillisecondSleepsAreNotRoundedUp) {
  Watchdog wd(TestName(), 60);
  std::vector<double> us;
  InUlt(1, [&] {
    for (int i = 0; i < 101; ++i) {
      Clock::time_point t0 = Clock::now();
      weft::this_ult::sleep_for(microseconds(200));
      us.push_back(MsSince(t0) * 1000);
    }
  });
  std::sort(us.begin(), us.end());
  double median = us[us.size() / 2];
  printf("[   INFO   ] 200 us sleeps: min %.0f us, median %.0f us, max %.0f us\n", us.front(), median, us.back());
  EXPECT_GE(us.front(), 200);
  EXPECT_LT(us.front(), 900) << "sub-millisecond sleeps are rounded up to 1 ms";
}

}  // namespace
