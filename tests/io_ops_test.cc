// Tests for weft::io operations (weft/io.h): every operation against regular
// files, pipes and sockets, with its results and its error results, run both
// from a ULT (io_uring or epoll, as WEFT_IO says) and from a foreign thread
// (the plain system calls); deadlines (-ETIMEDOUT, and the operation really
// was cancelled); errno is never touched; resolve().
//
// Every test body runs in both contexts (TEST_P over Ctx). Each test is
// bounded by a watchdog that aborts the process with the test's name, so a
// hang is a failure, never a stuck CI job.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/json_mini.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <netdb.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace io = weft::io;


// The backend WEFT_IO asks for, as io::backend() names it.
std::string ExpectedBackend() {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr || *e == '\0') return io::default_backend();
  return std::string(e) == "uring" ? "io_uring" : std::string(e);
}


// errno through calls the compiler cannot merge: glibc declares
// __errno_location() const, so a ULT that reads errno inline after a call
// that parked may read the address it computed before the call, i.e. the
// previous worker's errno (the migration hazard of weft/runtime.h).
__attribute__((noinline)) int ReadErrno() {
  __asm__ volatile("" ::: "memory");
  return errno;
}
__attribute__((noinline)) void WriteErrno(int v) {
  __asm__ volatile("" ::: "memory");
  errno = v;
}

// Evaluates `call` with errno set to a sentinel and checks that errno is
// unchanged afterwards (weft reports errors as values only).
#define NO_ERRNO(call)                                      \
  ([&] {                                                    \
    WriteErrno(4242);                                       \
    auto result_ = (call);                                  \
    int e_ = ReadErrno();                                   \
    EXPECT_EQ(e_, 4242) << "errno changed by " #call;       \
    return result_;                                         \
  }())

enum class Ctx { kUlt, kThread };

std::string CtxName(const testing::TestParamInfo<Ctx>& p) { return p.param == Ctx::kUlt ? "Ult" : "Thread"; }

// A concurrent helper: a ULT when the test runs in a ULT, else a thread.
class Helper {
 public:
  Helper(Ctx ctx, std::function<void()> fn) {
    if (ctx == Ctx::kUlt) {
      ult_ = weft::spawn(std::move(fn));
      EXPECT_TRUE(ult_.status().ok()) << ult_.status();
    } else {
      thread_ = std::thread(std::move(fn));
    }
  }
  ~Helper() { join(); }
  void join() {
    if (ult_.joinable()) {
      EXPECT_TRUE(ult_.join().ok());
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  weft::Ult ult_;
  std::thread thread_;
};

class IoOps : public testing::TestWithParam<Ctx> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(rt_.status().ok()) << rt_.status();
    char tmpl[] = "/tmp/weft_io_ops_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    if (system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot remove " << dir_;
  }

  // Runs fn in the test's context, under a watchdog.
  void Run(std::function<void()> fn) {
    const testing::TestInfo* ti = testing::UnitTest::GetInstance()->current_test_info();
    Watchdog wd(std::string(ti->test_suite_name()) + "." + ti->name(), 60);
    if (GetParam() == Ctx::kUlt) {
      absl::Status s = rt_.block_on([&] {
        ASSERT_TRUE(weft::this_ult::in_ult());
        ASSERT_EQ(std::string(io::backend()), ExpectedBackend()) << "the ULT's worker uses the wrong io backend";
        fn();
      });
      ASSERT_TRUE(s.ok()) << s;
    } else {
      std::thread t([&] {
        ASSERT_FALSE(weft::this_ult::in_ult());
        ASSERT_STREQ(io::backend(), "none");
        fn();
      });
      t.join();
    }
  }

  Ctx ctx() const { return GetParam(); }
  std::string Path(const char* name) const { return dir_ + "/" + name; }

  weft::Runtime rt_{weft::Options{.workers = 2}};
  std::string dir_;
};

INSTANTIATE_TEST_SUITE_P(Both, IoOps, testing::Values(Ctx::kUlt, Ctx::kThread), CtxName);

// A connected pair of TCP sockets on loopback (made with io:: calls).
struct TcpPair {
  int listener = -1, client = -1, server = -1;
};
TcpPair MakeTcpPair() {
  TcpPair p;
  p.listener = io::listen_tcp("127.0.0.1", 0);
  EXPECT_GE(p.listener, 0) << strerror(-p.listener);
  int port = io::local_port(p.listener);
  EXPECT_GT(port, 0);
  p.client = io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port));
  EXPECT_GE(p.client, 0) << strerror(-p.client);
  p.server = io::accept(p.listener);
  EXPECT_GE(p.server, 0) << strerror(-p.server);
  return p;
}
void ClosePair(TcpPair& p) {
  for (int* fd : {&p.listener, &p.client, &p.server}) {
    if (*fd >= 0) {
      EXPECT_EQ(io::close(*fd), 0);
    }
  }
}

// A free TCP port on 127.0.0.1 with nothing listening on it.
int ClosedPort() {
  int fd = io::listen_tcp("127.0.0.1", 0);
  int port = io::local_port(fd);
  io::close(fd);
  return port;
}

// Moves fd to a high descriptor number, closes that with io::close and
// returns the (now closed) number. New descriptors take the lowest free
// number, so nothing reuses it during the test; the low number itself could
// be taken at once by the runtime (its workers set their rings up lazily,
// concurrently with the test), which would turn an EBADF test into a test
// of somebody else's descriptor.
int CloseHigh(int fd) {
  static std::atomic<int> next{0};
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  int base = static_cast<int>(std::min<rlim_t>(rl.rlim_cur, 1 << 20) / 2) + next.fetch_add(1) % 64;
  int hi = fcntl(fd, F_DUPFD_CLOEXEC, base);
  EXPECT_GE(hi, base);
  ::close(fd);
  EXPECT_EQ(NO_ERRNO(io::close(hi)), 0);
  return hi;
}

// Sets O_NONBLOCK (a plain fcntl), so a plain read can tell "no data" (EAGAIN).
void SetNonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  ASSERT_GE(fl, 0);
  ASSERT_EQ(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

// ---------------------------------------------------------------------------------

// The backend in use is the one WEFT_IO asks for (checked in Run for ULTs);
// the process default agrees.
TEST_P(IoOps, BackendMatchesEnvironment) {
  Run([&] {
    if (ctx() == Ctx::kUlt) {
      EXPECT_EQ(std::string(io::default_backend()), ExpectedBackend());
      EXPECT_NE(std::string(io::default_backend_reason()), "");
    } else {
      EXPECT_STREQ(io::backend(), "none");
    }
  });
}

// Regular files: openat/write/pwrite/fsync/statx/pread/readv/writev/read/close,
// with contents checked through plain system calls too.
TEST_P(IoOps, RegularFileOps) {
  Run([&] {
    std::string path = Path("f");
    int fd = NO_ERRNO(io::openat(AT_FDCWD, path.c_str(), O_CREAT | O_RDWR | O_TRUNC, 0600));
    ASSERT_GE(fd, 0) << strerror(-fd);
    EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) << "openat must add O_CLOEXEC";
    EXPECT_EQ(NO_ERRNO(io::write(fd, "hello world", 11)), 11);
    EXPECT_EQ(NO_ERRNO(io::pwrite(fd, "WEFT!", 5, 6)), 5);
    EXPECT_EQ(NO_ERRNO(io::fsync(fd)), 0);

    struct statx st {};
    EXPECT_EQ(NO_ERRNO(io::statx(AT_FDCWD, path.c_str(), 0, STATX_SIZE | STATX_TYPE, &st)), 0);
    EXPECT_EQ(st.stx_size, 11u);
    EXPECT_TRUE(S_ISREG(st.stx_mode));
    struct statx st2 {};
    EXPECT_EQ(NO_ERRNO(io::statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &st2)), 0);
    EXPECT_EQ(st2.stx_size, 11u);

    char buf[64] = {};
    EXPECT_EQ(NO_ERRNO(io::pread(fd, buf, sizeof buf, 0)), 11);
    EXPECT_EQ(std::string(buf, 11), "hello WEFT!");
    EXPECT_EQ(NO_ERRNO(io::pread(fd, buf, 4, 6)), 4);
    EXPECT_EQ(std::string(buf, 4), "WEFT");
    // The file position is 11 (after write; pwrite/pread leave it): read hits EOF.
    EXPECT_EQ(NO_ERRNO(io::read(fd, buf, sizeof buf)), 0);

    iovec wv[2] = {{const_cast<char*>("abc"), 3}, {const_cast<char*>("defg"), 4}};
    EXPECT_EQ(NO_ERRNO(io::writev(fd, wv, 2)), 7);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    char a[6] = {}, b[32] = {};
    iovec rv[2] = {{a, 6}, {b, sizeof b}};
    EXPECT_EQ(NO_ERRNO(io::readv(fd, rv, 2)), 18);
    EXPECT_EQ(std::string(a, 6), "hello ");
    EXPECT_EQ(std::string(b, 12), "WEFT!abcdefg");
    ASSERT_EQ(lseek(fd, 2, SEEK_SET), 2);
    EXPECT_EQ(NO_ERRNO(io::read(fd, buf, 3)), 3);
    EXPECT_EQ(std::string(buf, 3), "llo");
    EXPECT_EQ(NO_ERRNO(io::close(fd)), 0);

    // What the kernel holds, read back plainly.
    int pfd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(pfd, 0);
    char all[64] = {};
    EXPECT_EQ(::read(pfd, all, sizeof all), 18);
    EXPECT_EQ(std::string(all, 18), "hello WEFT!abcdefg");
    ::close(pfd);

    // openat relative to a directory descriptor; O_EXCL on an existing file.
    int dfd = NO_ERRNO(io::openat(AT_FDCWD, dir_.c_str(), O_RDONLY | O_DIRECTORY));
    ASSERT_GE(dfd, 0);
    int fd2 = NO_ERRNO(io::openat(dfd, "f", O_RDONLY));
    ASSERT_GE(fd2, 0);
    EXPECT_EQ(NO_ERRNO(io::read(fd2, buf, 5)), 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    EXPECT_EQ(NO_ERRNO(io::openat(dfd, "f", O_CREAT | O_EXCL | O_WRONLY, 0600)), -EEXIST);
    EXPECT_EQ(NO_ERRNO(io::close(fd2)), 0);
    EXPECT_EQ(NO_ERRNO(io::close(dfd)), 0);
  });
}

// File errors: ENOENT for a missing path, EBADF for a closed descriptor,
// EBADF writing a read-only descriptor, EISDIR reading a directory.
TEST_P(IoOps, FileErrors) {
  Run([&] {
    std::string missing = Path("missing");
    EXPECT_EQ(NO_ERRNO(io::openat(AT_FDCWD, missing.c_str(), O_RDONLY)), -ENOENT);
    struct statx st {};
    EXPECT_EQ(NO_ERRNO(io::statx(AT_FDCWD, missing.c_str(), 0, STATX_SIZE, &st)), -ENOENT);

    int fd = io::openat(AT_FDCWD, Path("g").c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    fd = CloseHigh(fd);
    char buf[8];
    EXPECT_EQ(NO_ERRNO(io::read(fd, buf, sizeof buf)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::write(fd, "x", 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::pread(fd, buf, sizeof buf, 0)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::pwrite(fd, "x", 1, 0)), -EBADF);
    iovec v{buf, sizeof buf};
    EXPECT_EQ(NO_ERRNO(io::readv(fd, &v, 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::writev(fd, &v, 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::fsync(fd)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::statx(fd, "", AT_EMPTY_PATH, STATX_SIZE, &st)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::close(fd)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::close(-1)), -EBADF);

    int ro = io::openat(AT_FDCWD, Path("g").c_str(), O_RDONLY);
    ASSERT_GE(ro, 0);
    EXPECT_EQ(NO_ERRNO(io::write(ro, "x", 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::pwrite(ro, "x", 1, 0)), -EBADF);
    EXPECT_EQ(io::close(ro), 0);

    int d = io::openat(AT_FDCWD, dir_.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(d, 0);
    EXPECT_EQ(NO_ERRNO(io::read(d, buf, sizeof buf)), -EISDIR);
    EXPECT_EQ(NO_ERRNO(io::pread(d, buf, sizeof buf, 0)), -EISDIR);
    EXPECT_EQ(io::close(d), 0);
  });
}

// Pipes: write/read, writev/readv, poll readiness, EOF after the writer
// closes, EBADF after close.
TEST_P(IoOps, PipeOps) {
  Run([&] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    EXPECT_EQ(NO_ERRNO(io::write(p[1], "ping", 4)), 4);
    char buf[16] = {};
    EXPECT_EQ(NO_ERRNO(io::read(p[0], buf, sizeof buf)), 4);
    EXPECT_EQ(std::string(buf, 4), "ping");

    iovec wv[3] = {{const_cast<char*>("ab"), 2}, {const_cast<char*>("cde"), 3}, {const_cast<char*>("f"), 1}};
    EXPECT_EQ(NO_ERRNO(io::writev(p[1], wv, 3)), 6);
    char x[4] = {}, y[4] = {};
    iovec rv[2] = {{x, 4}, {y, 4}};
    EXPECT_EQ(NO_ERRNO(io::readv(p[0], rv, 2)), 6);
    EXPECT_EQ(std::string(x, 4) + std::string(y, 2), "abcdef");

    // Readiness: the empty read end is not readable, the write end is writable.
    EXPECT_EQ(NO_ERRNO(io::poll(p[0], POLLIN, io::Deadline::in(milliseconds(20)))), -ETIMEDOUT);
    int w = NO_ERRNO(io::poll(p[1], POLLOUT));
    EXPECT_GT(w, 0);
    EXPECT_NE(w & POLLOUT, 0);
    EXPECT_EQ(io::write(p[1], "z", 1), 1);
    int r = NO_ERRNO(io::poll(p[0], POLLIN));
    EXPECT_GT(r, 0);
    EXPECT_NE(r & POLLIN, 0);
    EXPECT_EQ(io::read(p[0], buf, sizeof buf), 1);

    // A reader blocked on the empty pipe gets the bytes written later.
    std::atomic<int64_t> got{-1};
    {
      Helper h(ctx(), [&] {
        char c[8];
        got = io::read(p[0], c, sizeof c);
      });
      weft::this_ult::sleep_for(milliseconds(20));  // parks a ULT, sleeps a thread
      EXPECT_EQ(io::write(p[1], "late", 4), 4);
    }
    EXPECT_EQ(got.load(), 4);

    // EOF once the write end is closed; then EBADF on the closed fds.
    EXPECT_EQ(NO_ERRNO(io::close(p[1])), 0);
    EXPECT_EQ(NO_ERRNO(io::read(p[0], buf, sizeof buf)), 0);
    int hup = NO_ERRNO(io::poll(p[0], POLLIN));
    EXPECT_GT(hup, 0);
    EXPECT_NE(hup & POLLHUP, 0);
    int rd = CloseHigh(p[0]);
    EXPECT_EQ(NO_ERRNO(io::read(rd, buf, sizeof buf)), -EBADF);
    int q[2];
    ASSERT_EQ(pipe2(q, O_CLOEXEC), 0);
    ::close(q[0]);
    int wr = CloseHigh(q[1]);
    EXPECT_EQ(NO_ERRNO(io::write(wr, "x", 1)), -EBADF);
  });
}

// poll() for events other than POLLIN/POLLOUT, each ready only later so
// that a ULT has to wait: POLLPRI (TCP urgent data), POLLRDHUP (the peer
// shut down its writing side), and no event at all (POLLHUP, POLLERR are
// always reported: the peer closed). Fails without the fixes: the epoll
// backend's poll waited for POLLIN/POLLOUT only (POLLPRI and POLLRDHUP ran
// into the deadline, -ETIMEDOUT), and io_uring's poll request for POLLPRI
// alone never completed on urgent data (io/uring_ops.cc).
TEST_P(IoOps, PollForOtherEventsWaitsForThem) {
  Run([&] {
    TcpPair p = MakeTcpPair();
    auto later = [&](std::function<void()> act) { return Helper(ctx(), [act] {
      weft::this_ult::sleep_for(milliseconds(20));  // the poll below waits first
      act();
    }); };
    {
      auto h = later([&] { EXPECT_EQ(::send(p.client, "!", 1, MSG_OOB), 1); });
      int r = NO_ERRNO(io::poll(p.server, POLLPRI, io::Deadline::in(milliseconds(5000))));
      EXPECT_GT(r, 0) << r;
      EXPECT_NE(r & POLLPRI, 0) << r;
    }
    char c;
    EXPECT_EQ(::recv(p.server, &c, 1, MSG_OOB), 1);
    {
      auto h = later([&] { EXPECT_EQ(::shutdown(p.client, SHUT_WR), 0); });
      int r = NO_ERRNO(io::poll(p.server, POLLRDHUP, io::Deadline::in(milliseconds(5000))));
      EXPECT_GT(r, 0) << r;
      EXPECT_NE(r & POLLRDHUP, 0) << r;
    }
    {
      auto h = later([&] {
        EXPECT_EQ(NO_ERRNO(io::close(p.client)), 0);
        p.client = -1;
      });
      // Our side still has unread nothing and room to write: only the
      // peer's close (POLLHUP after our own shutdown, or POLLERR) ends it.
      EXPECT_EQ(::shutdown(p.server, SHUT_WR), 0);
      int r = NO_ERRNO(io::poll(p.server, 0, io::Deadline::in(milliseconds(5000))));
      EXPECT_GT(r, 0) << r;
      EXPECT_NE(r & (POLLHUP | POLLERR), 0) << r;
    }
    ClosePair(p);
  });
}

// poll() on a closed descriptor reports EBADF as a value (the contract: the
// ready events, or -errno), the same in every context and backend.
TEST_P(IoOps, PollClosedFdIsEbadf) {
  Run([&] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    int closed = CloseHigh(p[0]);
    int r = NO_ERRNO(io::poll(closed, POLLIN, io::Deadline::in(milliseconds(100))));
    EXPECT_EQ(r, -EBADF) << "poll of a closed fd returned " << r << (r > 0 && (r & POLLNVAL) ? " (POLLNVAL)" : "");
    io::close(p[1]);
  });
}

// TCP through the convenience calls: listen_tcp/local_port/connect_tcp/accept,
// send/recv both ways, MSG_PEEK, send_all of 1 MiB to a concurrent reader,
// shutdown gives the peer EOF.
TEST_P(IoOps, TcpOps) {
  Run([&] {
    int lfd = NO_ERRNO(io::listen_tcp("127.0.0.1", 0));
    ASSERT_GE(lfd, 0) << strerror(-lfd);
    EXPECT_NE(fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0);
    int port = NO_ERRNO(io::local_port(lfd));
    ASSERT_GT(port, 0);
    int c = NO_ERRNO(io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port)));
    ASSERT_GE(c, 0) << strerror(-c);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    int s = NO_ERRNO(io::accept(lfd, reinterpret_cast<sockaddr*>(&peer), &plen));
    ASSERT_GE(s, 0) << strerror(-s);
    EXPECT_NE(fcntl(s, F_GETFD) & FD_CLOEXEC, 0) << "accept must add SOCK_CLOEXEC";
    EXPECT_EQ(peer.ss_family, AF_INET);
    EXPECT_EQ(plen, sizeof(sockaddr_in));
    // The accepted peer is the client's local address.
    sockaddr_in cl{};
    socklen_t cllen = sizeof cl;
    ASSERT_EQ(getsockname(c, reinterpret_cast<sockaddr*>(&cl), &cllen), 0);
    EXPECT_EQ(reinterpret_cast<sockaddr_in*>(&peer)->sin_port, cl.sin_port);

    EXPECT_EQ(NO_ERRNO(io::send(c, "hello", 5)), 5);
    char buf[64] = {};
    EXPECT_EQ(NO_ERRNO(io::recv(s, buf, 2, MSG_PEEK)), 2);
    EXPECT_EQ(std::string(buf, 2), "he");
    EXPECT_EQ(NO_ERRNO(io::recv(s, buf, sizeof buf, 0)), 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    EXPECT_EQ(NO_ERRNO(io::send(s, "back", 4)), 4);
    EXPECT_EQ(NO_ERRNO(io::recv(c, buf, sizeof buf)), 4);
    EXPECT_EQ(std::string(buf, 4), "back");

    // send_all of 1 MiB while the peer reads concurrently: every byte, in order.
    std::vector<unsigned char> big(1 << 20);
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<unsigned char>(i * 7 + i / 251);
    std::atomic<bool> content_ok{false};
    {
      Helper reader(ctx(), [&] {
        std::vector<unsigned char> in;
        in.reserve(big.size());
        std::vector<unsigned char> tmp(65536);  // off the 64 KiB ULT stack
        while (in.size() < big.size()) {
          int64_t n = io::recv(s, tmp.data(), tmp.size());
          if (n <= 0) break;
          in.insert(in.end(), tmp.begin(), tmp.begin() + n);
        }
        content_ok = in == big;
      });
      EXPECT_EQ(NO_ERRNO(io::send_all(c, big.data(), big.size())), static_cast<int64_t>(big.size()));
    }
    EXPECT_TRUE(content_ok.load()) << "send_all/recv lost, duplicated or reordered bytes";

    EXPECT_EQ(NO_ERRNO(io::shutdown(c, SHUT_WR)), 0);
    EXPECT_EQ(NO_ERRNO(io::recv(s, buf, sizeof buf)), 0) << "shutdown(SHUT_WR) must give the peer EOF";
    EXPECT_EQ(NO_ERRNO(io::send(s, "still", 5)), 5) << "the other direction stays open";
    EXPECT_EQ(NO_ERRNO(io::recv(c, buf, sizeof buf)), 5);

    EXPECT_EQ(io::close(c), 0);
    EXPECT_EQ(io::close(s), 0);
    EXPECT_EQ(io::close(lfd), 0);
  });
}

// The same through the primitive calls: socket/bind/listen/connect/accept
// (no address out-parameters), on IPv4 and on a Unix socket.
TEST_P(IoOps, SocketPrimitives) {
  Run([&] {
    int lfd = NO_ERRNO(io::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_GE(lfd, 0);
    EXPECT_NE(fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0) << "socket must add SOCK_CLOEXEC";
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    EXPECT_EQ(NO_ERRNO(io::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a)), 0);
    EXPECT_EQ(NO_ERRNO(io::listen(lfd, 16)), 0);
    int port = io::local_port(lfd);
    ASSERT_GT(port, 0);
    a.sin_port = htons(static_cast<uint16_t>(port));
    int c = NO_ERRNO(io::socket(AF_INET, SOCK_STREAM, 0));
    ASSERT_GE(c, 0);
    EXPECT_EQ(NO_ERRNO(io::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a)), 0);
    int s = NO_ERRNO(io::accept(lfd));
    ASSERT_GE(s, 0);
    EXPECT_EQ(io::send(s, "x", 1), 1);
    char ch = 0;
    EXPECT_EQ(io::recv(c, &ch, 1), 1);
    EXPECT_EQ(ch, 'x');
    EXPECT_EQ(io::local_port(c) > 0, true);
    io::close(c);
    io::close(s);
    io::close(lfd);

    // A Unix stream socket.
    std::string path = Path("sock");
    sockaddr_un u{};
    u.sun_family = AF_UNIX;
    snprintf(u.sun_path, sizeof u.sun_path, "%s", path.c_str());
    int ul = NO_ERRNO(io::socket(AF_UNIX, SOCK_STREAM, 0));
    ASSERT_GE(ul, 0);
    EXPECT_EQ(NO_ERRNO(io::bind(ul, reinterpret_cast<sockaddr*>(&u), sizeof u)), 0);
    EXPECT_EQ(NO_ERRNO(io::listen(ul, 4)), 0);
    EXPECT_EQ(io::local_port(ul), -EAFNOSUPPORT);
    int uc = io::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(uc, 0);
    EXPECT_EQ(NO_ERRNO(io::connect(uc, reinterpret_cast<sockaddr*>(&u), sizeof u)), 0);
    int us = NO_ERRNO(io::accept(ul));
    ASSERT_GE(us, 0);
    EXPECT_EQ(io::write(uc, "unix", 4), 4);
    char buf[8] = {};
    EXPECT_EQ(io::read(us, buf, sizeof buf), 4);
    EXPECT_EQ(std::string(buf, 4), "unix");
    io::close(uc);
    io::close(us);
    io::close(ul);
  });
}

// Socket errors: ECONNREFUSED (nothing listens), EADDRINUSE, EINVAL (accept
// on a socket that does not listen), ENOTCONN, EBADF on closed sockets,
// EADDRNOTAVAIL for a host that does not resolve.
TEST_P(IoOps, SocketErrors) {
  Run([&] {
    int port = ClosedPort();
    ASSERT_GT(port, 0);
    EXPECT_EQ(NO_ERRNO(io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port))), -ECONNREFUSED);
    int c = io::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(c, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    EXPECT_EQ(NO_ERRNO(io::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a)), -ECONNREFUSED);
    io::close(c);

    int l1 = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(l1, 0);
    int l1port = io::local_port(l1);
    EXPECT_EQ(NO_ERRNO(io::listen_tcp("127.0.0.1", static_cast<uint16_t>(l1port))), -EADDRINUSE);
    EXPECT_EQ(NO_ERRNO(io::listen_tcp("a..b", 0)), -EADDRNOTAVAIL);
    EXPECT_EQ(NO_ERRNO(io::connect_tcp("a..b", 80)), -EHOSTUNREACH);

    int nl = io::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(nl, 0);
    EXPECT_EQ(NO_ERRNO(io::accept(nl, nullptr, nullptr, io::Deadline::in(milliseconds(500)))), -EINVAL);
    char buf[4];
    EXPECT_EQ(NO_ERRNO(io::send(nl, "x", 1)), -EPIPE) << "send on an unconnected TCP socket";
    EXPECT_EQ(NO_ERRNO(io::shutdown(nl, SHUT_RDWR)), -ENOTCONN);
    io::close(nl);

    l1 = CloseHigh(l1);
    EXPECT_EQ(NO_ERRNO(io::accept(l1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::recv(l1, buf, sizeof buf)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::send(l1, "x", 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::send_all(l1, "x", 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::shutdown(l1, SHUT_RDWR)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::local_port(l1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::listen(l1, 1)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::bind(l1, reinterpret_cast<sockaddr*>(&a), sizeof a)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::connect(l1, reinterpret_cast<sockaddr*>(&a), sizeof a)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::socket(AF_INET, 12345, 0)), -EINVAL);
  });
}

// send after the peer closed: -EPIPE or -ECONNRESET, never SIGPIPE (the
// default disposition would kill this process).
TEST_P(IoOps, SendAfterPeerClosedNoSigpipe) {
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(sigaction(SIGPIPE, &dfl, &old), 0);
  Run([&] {
    TcpPair p = MakeTcpPair();
    ASSERT_EQ(io::close(p.server), 0);
    p.server = -1;
    int64_t r = 0;
    for (int i = 0; i < 200 && r >= 0; ++i) {
      r = NO_ERRNO(io::send(p.client, "data", 4));
      if (r >= 0) weft::this_ult::sleep_for(milliseconds(1));
    }
    EXPECT_TRUE(r == -EPIPE || r == -ECONNRESET) << r;
    int64_t r2 = NO_ERRNO(io::send_all(p.client, "more", 4));
    EXPECT_TRUE(r2 == -EPIPE || r2 == -ECONNRESET) << r2;
    // A Unix socketpair whose peer is gone: -EPIPE at once.
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    io::close(sv[1]);
    EXPECT_EQ(NO_ERRNO(io::send(sv[0], "x", 1)), -EPIPE);
    io::close(sv[0]);
    ClosePair(p);
  });
  sigaction(SIGPIPE, &old, nullptr);
}

// Unix socketpairs: send/recv with a concurrent peer that blocks first,
// readv/writev on sockets, poll for POLLIN and for the peer's hang-up.
TEST_P(IoOps, SocketpairOps) {
  Run([&] {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    std::atomic<int64_t> got{-1};
    char rbuf[32] = {};
    {
      Helper h(ctx(), [&] { got = io::recv(sv[1], rbuf, sizeof rbuf); });
      weft::this_ult::sleep_for(milliseconds(20));
      EXPECT_EQ(NO_ERRNO(io::send(sv[0], "wake", 4)), 4);
    }
    EXPECT_EQ(got.load(), 4);
    EXPECT_EQ(std::string(rbuf, 4), "wake");

    iovec wv[2] = {{const_cast<char*>("12"), 2}, {const_cast<char*>("345"), 3}};
    EXPECT_EQ(NO_ERRNO(io::writev(sv[0], wv, 2)), 5);
    int r = NO_ERRNO(io::poll(sv[1], POLLIN));
    EXPECT_NE(r & POLLIN, 0);
    char a[3] = {}, b[8] = {};
    iovec rv[2] = {{a, 3}, {b, 8}};
    EXPECT_EQ(NO_ERRNO(io::readv(sv[1], rv, 2)), 5);
    EXPECT_EQ(std::string(a, 3) + std::string(b, 2), "12345");
    EXPECT_EQ(NO_ERRNO(io::poll(sv[1], POLLIN, io::Deadline::in(milliseconds(10)))), -ETIMEDOUT);

    io::close(sv[0]);
    r = NO_ERRNO(io::poll(sv[1], POLLIN));
    EXPECT_GT(r, 0);
    EXPECT_NE(r & (POLLHUP | POLLIN), 0);
    EXPECT_EQ(NO_ERRNO(io::recv(sv[1], rbuf, sizeof rbuf)), 0);
    io::close(sv[1]);
  });
}

// ---------------------------------------------------------------------------------
// Deadlines. Outside a ULT the header promises "the plain blocking system
// call" but also "a Deadline that passes: -ETIMEDOUT": each deadline test
// runs the operation on a helper and, if it is still blocked long after its
// deadline, unblocks it and fails (instead of hanging).

// Runs op (which should time out after ~50 ms) and returns its result; if it
// has not returned after 5 s, calls unblock() and fails.
int64_t RunTimed(Ctx ctx, const std::function<int64_t()>& op, const std::function<void()>& unblock,
                 double* elapsed_ms) {
  std::atomic<bool> done{false};
  std::atomic<int64_t> result{0};
  Clock::time_point t0 = Clock::now();
  std::atomic<double> took{0};
  {
    Helper h(ctx, [&] {
      Clock::time_point s = Clock::now();
      result = op();
      took = MsSince(s);
      done = true;
    });
    while (!done && MsSince(t0) < 5000) weft::this_ult::sleep_for(milliseconds(2));
    if (!done) {
      ADD_FAILURE() << "an operation with a 50 ms deadline was still blocked after 5 s ("
                    << (ctx == Ctx::kUlt ? "in a ULT" : "on a foreign thread") << "): the deadline was ignored";
      unblock();
    }
  }
  *elapsed_ms = took;
  return result;
}

// read() of an empty pipe with a deadline: -ETIMEDOUT after the deadline,
// and the read was really cancelled: a byte written afterwards is still in
// the pipe for a plain read much later.
TEST_P(IoOps, DeadlineReadEmptyPipeIsCancelled) {
  Run([&] {
    for (int round = 0; round < 5; ++round) {
      int p[2];
      ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
      char c = 0;
      double ms = 0;
      int64_t r = RunTimed(
          ctx(), [&] { return NO_ERRNO(io::read(p[0], &c, 1, io::Deadline::in(milliseconds(50)))); },
          [&] { (void)!::write(p[1], "U", 1); }, &ms);
      ASSERT_EQ(r, -ETIMEDOUT);
      EXPECT_GE(ms, 45) << "timed out before its deadline";
      EXPECT_LT(ms, 5000);
      ASSERT_EQ(::write(p[1], "B", 1), 1);
      weft::this_ult::sleep_for(milliseconds(30));  // a zombie read would take it now
      SetNonblocking(p[0]);
      char back = 0;
      EXPECT_EQ(::read(p[0], &back, 1), 1) << "the byte is gone: the timed-out read consumed it later";
      EXPECT_EQ(back, 'B');
      ::close(p[0]);
      ::close(p[1]);
    }
  });
}

// accept() with no client: -ETIMEDOUT, and a client that connects afterwards
// is still in the backlog for a plain accept.
TEST_P(IoOps, DeadlineAcceptNoClientIsCancelled) {
  Run([&] {
    int lfd = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(lfd, 0);
    int port = io::local_port(lfd);
    double ms = 0;
    int64_t r = RunTimed(
        ctx(), [&] { return static_cast<int64_t>(NO_ERRNO(io::accept(lfd, nullptr, nullptr, io::Deadline::in(milliseconds(50))))); },
        [&] { (void)io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port)); }, &ms);
    ASSERT_EQ(r, -ETIMEDOUT);
    EXPECT_GE(ms, 45);
    int c = io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port));
    ASSERT_GE(c, 0);
    weft::this_ult::sleep_for(milliseconds(30));
    SetNonblocking(lfd);
    int s = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    EXPECT_GE(s, 0) << "the connection is gone: the timed-out accept took it later (" << strerror(errno) << ")";
    if (s >= 0) ::close(s);
    io::close(c);
    io::close(lfd);
  });
}

// recv() with no data: -ETIMEDOUT, and data sent afterwards stays queued.
TEST_P(IoOps, DeadlineRecvNoDataIsCancelled) {
  Run([&] {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char c = 0;
    double ms = 0;
    int64_t r = RunTimed(
        ctx(), [&] { return NO_ERRNO(io::recv(sv[0], &c, 1, 0, io::Deadline::in(milliseconds(50)))); },
        [&] { (void)!::send(sv[1], "U", 1, MSG_NOSIGNAL); }, &ms);
    ASSERT_EQ(r, -ETIMEDOUT);
    EXPECT_GE(ms, 45);
    ASSERT_EQ(::send(sv[1], "R", 1, MSG_NOSIGNAL), 1);
    weft::this_ult::sleep_for(milliseconds(30));
    char back = 0;
    EXPECT_EQ(::recv(sv[0], &back, 1, MSG_DONTWAIT), 1) << "the byte is gone: the timed-out recv took it later";
    EXPECT_EQ(back, 'R');
    ::close(sv[0]);
    ::close(sv[1]);
  });
}

// A send waiting for buffer space on a socket whose peer has shut down its
// writing side (so the socket reports RDHUP) waits quietly until its
// deadline: the epoll backend must not turn the persistent RDHUP into a
// busy loop of wake-ups (measured as the process's CPU time while it waits).
TEST_P(IoOps, SendBlockedAfterPeerHalfCloseDoesNotSpin) {
  Run([&] {
    TcpPair p = MakeTcpPair();
    ASSERT_EQ(::shutdown(p.client, SHUT_WR), 0);
    weft::this_ult::sleep_for(milliseconds(20));  // the FIN arrives
    std::vector<char> chunk(64 * 1024, 'x');
    int64_t filled = 0;
    for (;;) {  // fill both buffers; the client never reads
      ssize_t n = ::send(p.server, chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) break;
      filled += n;
    }
    ASSERT_EQ(errno, EAGAIN);
    ASSERT_GT(filled, 0);
    timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    Clock::time_point t0 = Clock::now();
    int64_t r = io::send(p.server, chunk.data(), chunk.size(), 0, io::Deadline::in(milliseconds(300)));
    double wall_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu_ms = (c1.tv_sec - c0.tv_sec) * 1e3 + (c1.tv_nsec - c0.tv_nsec) / 1e6;
    EXPECT_EQ(r, -ETIMEDOUT);
    EXPECT_GE(wall_ms, 290);
    EXPECT_LT(cpu_ms, 0.3 * wall_ms) << "the process burnt " << cpu_ms << " ms of CPU in a " << wall_ms
                                     << " ms wait";
    ClosePair(p);
  });
}

// poll() with a deadline times out; with data it returns at once.
TEST_P(IoOps, DeadlinePoll) {
  Run([&] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    double ms = 0;
    int64_t r = RunTimed(
        ctx(), [&] { return static_cast<int64_t>(NO_ERRNO(io::poll(p[0], POLLIN, io::Deadline::in(milliseconds(50))))); },
        [&] { (void)!::write(p[1], "U", 1); }, &ms);
    EXPECT_EQ(r, -ETIMEDOUT);
    EXPECT_GE(ms, 45);
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    int ready = io::poll(p[0], POLLIN, io::Deadline::in(milliseconds(5000)));
    EXPECT_GT(ready, 0);
    EXPECT_NE(ready & POLLIN, 0);
    ::close(p[0]);
    ::close(p[1]);
  });
}

// A deadline does not get in the way of an operation that can complete:
// data that is there (even with a deadline already passed: "do not wait at
// all") or that arrives before the deadline is returned.
TEST_P(IoOps, DeadlineNotReachedReturnsData) {
  Run([&] {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(::write(p[1], "now", 3), 3);
    char buf[8] = {};
    EXPECT_EQ(NO_ERRNO(io::read(p[0], buf, sizeof buf, io::Deadline::in(milliseconds(0)))), 3);
    EXPECT_EQ(std::string(buf, 3), "now");
    // Nothing there and a zero deadline: -ETIMEDOUT at once.
    Clock::time_point t0 = Clock::now();
    if (ctx() == Ctx::kUlt) {
      EXPECT_EQ(NO_ERRNO(io::read(p[0], buf, sizeof buf, io::Deadline::in(milliseconds(0)))), -ETIMEDOUT);
      EXPECT_EQ(NO_ERRNO(io::read(p[0], buf, sizeof buf, io::Deadline::in(milliseconds(-5)))), -ETIMEDOUT);
      EXPECT_LT(MsSince(t0), 1000);
    }
    // Data arriving before a long deadline.
    std::atomic<int64_t> got{-1};
    {
      Helper h(ctx(), [&] { got = io::read(p[0], buf, sizeof buf, io::Deadline::in(milliseconds(5000))); });
      weft::this_ult::sleep_for(milliseconds(20));
      ASSERT_EQ(::write(p[1], "later", 5), 5);
    }
    EXPECT_EQ(got.load(), 5);
    EXPECT_EQ(std::string(buf, 5), "later");
    // TCP connect within a deadline works.
    int l = io::listen_tcp("127.0.0.1", 0);
    int c = NO_ERRNO(io::connect_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(l)),
                                     io::Deadline::in(milliseconds(5000))));
    EXPECT_GE(c, 0);
    int s = NO_ERRNO(io::accept(l, nullptr, nullptr, io::Deadline::in(milliseconds(5000))));
    EXPECT_GE(s, 0);
    EXPECT_EQ(NO_ERRNO(io::send(c, "d", 1, 0, io::Deadline::in(milliseconds(5000)))), 1);
    EXPECT_EQ(NO_ERRNO(io::recv(s, buf, 1, 0, io::Deadline::in(milliseconds(5000)))), 1);
    io::close(c);
    io::close(s);
    io::close(l);
    ::close(p[0]);
    ::close(p[1]);
  });
}

// ---------------------------------------------------------------------------------

// "localhost" if this system resolves it (it needs an /etc/hosts entry: a
// minimal chroot may have none), else the numeric loopback address, so the
// name tests do not depend on how the machine was set up.
const char* LocalName() {
  static const char* name = [] {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo("localhost", "80", &hints, &res) == 0) {
      freeaddrinfo(res);
      return "localhost";
    }
    printf("[ note ] this system does not resolve \"localhost\" (no /etc/hosts entry): using 127.0.0.1\n");
    return "127.0.0.1";
  }();
  return name;
}

// resolve(): localhost works; a malformed name is NotFound (neither needs DNS).
TEST_P(IoOps, Resolve) {
  Run([&] {
    absl::StatusOr<std::vector<io::Address>> r = NO_ERRNO(io::resolve(LocalName(), 80));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_FALSE(r->empty());
    bool loopback = false;
    for (const io::Address& a : *r) {
      if (a.ToString() == "127.0.0.1:80" || a.ToString() == "[::1]:80") loopback = true;
    }
    EXPECT_TRUE(loopback) << (*r)[0].ToString();
    absl::StatusOr<std::vector<io::Address>> bad = NO_ERRNO(io::resolve("a..b", 80));
    EXPECT_TRUE(absl::IsNotFound(bad.status())) << bad.status();
    // A name through listen_tcp/connect_tcp.
    int l = io::listen_tcp(LocalName(), 0);
    ASSERT_GE(l, 0) << strerror(-l);
    int c = io::connect_tcp(LocalName(), static_cast<uint16_t>(io::local_port(l)));
    EXPECT_GE(c, 0) << strerror(-c);
    io::close(c);
    io::close(l);
  });
}

// Many resolves at once from ULTs: the bounded helper pool serves them all.
TEST(IoResolve, ManyConcurrentFromUlts) {
  Watchdog wd("IoResolve.ManyConcurrentFromUlts", 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> ok{0};
  absl::Status s = rt.block_on([&] {
    std::vector<weft::Ult> us;
    for (int i = 0; i < 64; ++i) {
      us.push_back(weft::spawn([&, i] {
        auto r = io::resolve(i % 2 ? LocalName() : "127.0.0.1", static_cast<uint16_t>(1000 + i));
        if (r.ok() && !r->empty() && (*r)[0].ToString() == "127.0.0.1:" + std::to_string(1000 + i)) ++ok;
      }));
    }
    for (auto& u : us) EXPECT_TRUE(u.join().ok());
  });
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(ok.load(), 64);
}

// Address::ToString formats IPv4 and IPv6.
TEST(IoAddress, ToString) {
  io::Address a;
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  v6->sin6_family = AF_INET6;
  v6->sin6_addr = in6addr_loopback;
  v6->sin6_port = htons(8080);
  a.len = sizeof *v6;
  EXPECT_EQ(a.ToString(), "[::1]:8080");
  io::Address b;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&b.storage);
  v4->sin_family = AF_INET;
  v4->sin_addr.s_addr = htonl(0x01020304);
  v4->sin_port = htons(80);
  b.len = sizeof *v4;
  EXPECT_EQ(b.ToString(), "1.2.3.4:80");
}

// WorkerStats' io counters follow io that has to wait: a ping-pong over a
// socketpair between two ULTs on the one worker, so that each recv waits
// for the other's send (an SQE and its CQE on io_uring; a readiness wait
// armed and its event on epoll).
TEST(IoStats, EngineCountersFollowIo) {
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  constexpr uint64_t kRounds = 100;
  ASSERT_TRUE(rt.block_on([] {}).ok());  // the worker's engine is set up at its first wait
  weft::WorkerStats before = rt.stats().workers.at(0);
  absl::Status st = rt.block_on([&] {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    weft::Ult peer = weft::spawn([&] {
      char b;
      for (uint64_t i = 0; i < kRounds; ++i) {
        ASSERT_EQ(io::recv(sv[1], &b, 1), 1);
        ASSERT_EQ(io::send(sv[1], &b, 1), 1);
      }
    });
    char b = 'x';
    for (uint64_t i = 0; i < kRounds; ++i) {
      ASSERT_EQ(io::send(sv[0], &b, 1), 1);
      ASSERT_EQ(io::recv(sv[0], &b, 1), 1);
    }
    EXPECT_TRUE(peer.join().ok());
    io::close(sv[0]);
    io::close(sv[1]);
  });
  ASSERT_TRUE(st.ok()) << st;
  weft::WorkerStats after = rt.stats().workers.at(0);
  printf("%s: %llu rounds: %llu submitted, %llu completed, %llu enters\n", io::default_backend(),
         static_cast<unsigned long long>(kRounds),
         static_cast<unsigned long long>(after.io_submitted - before.io_submitted),
         static_cast<unsigned long long>(after.io_completed - before.io_completed),
         static_cast<unsigned long long>(after.io_enters - before.io_enters));
  EXPECT_GE(after.io_submitted - before.io_submitted, kRounds);
  EXPECT_GE(after.io_completed - before.io_completed, kRounds);
  EXPECT_GE(after.io_enters - before.io_enters, 1u);
}

}  // namespace

namespace {

// The event trace (Options::trace_file) records a read that waits: its
// submission and its completion, with the descriptor and the result
// (io_uring: the read's CQE, 4 bytes; epoll: the readiness wait, 0).
TEST(IoTrace, WaitingReadIsSubmittedAndDone) {
  std::string path = testing::TempDir() + "/weft_io_trace_" + std::to_string(getpid()) + ".json";
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  weft::UltId reader_id;
  {
    weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .trace_file = path});
    ASSERT_TRUE(rt.status().ok()) << rt.status();
    absl::Status st = rt.block_on([&] {
      std::atomic<bool> started{false};
      auto reader = weft::spawn([&] {
        char b[16];
        started.store(true);
        EXPECT_EQ(io::read(p[0], b, sizeof b), 4);
      });
      reader_id = reader.id();
      while (!started.load()) weft::this_ult::yield();
      weft::this_ult::yield();  // one worker: the reader runs until it parks in read
      EXPECT_EQ(io::write(p[1], "abcd", 4), 4);
      EXPECT_TRUE(reader.join().ok());
    });
    ASSERT_TRUE(st.ok()) << st;
  }
  close(p[0]);
  close(p[1]);
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  weft_test::Json trace;
  std::string err;
  ASSERT_TRUE(weft_test::parse_json(ss.str(), &trace, &err)) << err;
  unlink(path.c_str());
  bool uring = strcmp(io::default_backend(), "io_uring") == 0;
  std::string id = std::to_string(reader_id.index()) + "." + std::to_string(reader_id.generation());
  std::string op = uring ? "read" : "wait readable";
  bool submitted = false, done = false;
  for (const weft_test::Json& e : trace.get("traceEvents")->array) {
    const weft_test::Json* a = e.get("args");
    if (a == nullptr || a->str("ult") != id || a->num("fd") != p[0]) continue;
    if (e.str("name") == "io submit " + op) submitted = true;
    if (e.str("name") == "io done " + op) {
      done = true;
      EXPECT_EQ(a->num("result"), uring ? 4 : 0);
    }
  }
  EXPECT_TRUE(submitted) << "no 'io submit " << op << "' of ULT " << id << " on fd " << p[0];
  EXPECT_TRUE(done) << "no 'io done " << op << "'";
}

}  // namespace
