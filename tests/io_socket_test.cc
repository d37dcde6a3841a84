// Tests for the socket calls of weft/io.h beyond accept/connect/recv/send:
// datagrams and messages (sendto, recvfrom, sendmsg, recvmsg), socket
// options, splice and sendfile, listen_tcp's options, the Status-returning
// dial_tcp / listen_tcp_or, and io::Acceptor (a multishot accept on
// io_uring, plain accepts elsewhere).
//
// Every IoSock test body runs in a ULT (io_uring or epoll, as WEFT_IO says)
// and on a foreign thread (the plain system calls), under a watchdog.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/watchdog.h"
#include "weft/io.h"
#include "weft/runtime.h"
#include "weft/signal.h"
#include "weft/sync.h"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
namespace io = weft::io;

std::string ExpectedBackend() {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr || *e == '\0') return io::default_backend();
  return std::string(e) == "uring" ? "io_uring" : std::string(e);
}

__attribute__((noinline)) int ReadErrno() {
  __asm__ volatile("" ::: "memory");
  return errno;
}
__attribute__((noinline)) void WriteErrno(int v) {
  __asm__ volatile("" ::: "memory");
  errno = v;
}
// errno is never touched by a weft call.
#define NO_ERRNO(call)                                \
  ([&] {                                              \
    WriteErrno(4242);                                 \
    auto result_ = (call);                            \
    EXPECT_EQ(ReadErrno(), 4242) << "errno changed by " #call; \
    return result_;                                   \
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

class IoSock : public testing::TestWithParam<Ctx> {
 protected:
  void SetUp() override { ASSERT_TRUE(rt_.status().ok()) << rt_.status(); }

  void Run(std::function<void()> fn) {
    const testing::TestInfo* ti = testing::UnitTest::GetInstance()->current_test_info();
    Watchdog wd(std::string(ti->test_suite_name()) + "." + ti->name(), 60);
    if (GetParam() == Ctx::kUlt) {
      absl::Status s = rt_.block_on([&] {
        ASSERT_TRUE(weft::this_ult::in_ult());
        ASSERT_EQ(std::string(io::backend()), ExpectedBackend());
        fn();
      });
      ASSERT_TRUE(s.ok()) << s;
    } else {
      std::thread t([&] {
        ASSERT_STREQ(io::backend(), "none");
        fn();
      });
      t.join();
    }
  }
  Ctx ctx() const { return GetParam(); }

  weft::Runtime rt_{weft::Options{.workers = 2}};
};

INSTANTIATE_TEST_SUITE_P(Both, IoSock, testing::Values(Ctx::kUlt, Ctx::kThread), CtxName);

// A UDP socket bound to 127.0.0.1 on a free port; its address in *a.
int UdpSocket(io::Address* a) {
  int fd = io::socket(AF_INET, SOCK_DGRAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(io::bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
  a->len = sizeof a->storage;
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a->storage), &a->len), 0);
  return fd;
}

struct TcpPair {
  int listener = -1, client = -1, server = -1;
};
TcpPair MakeTcpPair() {
  TcpPair p;
  p.listener = io::listen_tcp("127.0.0.1", 0);
  EXPECT_GE(p.listener, 0);
  p.client = io::connect_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(p.listener)));
  EXPECT_GE(p.client, 0);
  p.server = io::accept(p.listener);
  EXPECT_GE(p.server, 0);
  return p;
}
void ClosePair(TcpPair& p) {
  for (int fd : {p.listener, p.client, p.server})
    if (fd >= 0) {
      EXPECT_EQ(io::close(fd), 0);
    }
}

// Reads exactly n bytes (or fails the test).
std::string RecvExactly(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    int64_t r = io::recv(fd, out.data() + got, n - got, 0, io::Deadline::in(std::chrono::seconds(20)));
    if (r <= 0) {
      ADD_FAILURE() << "recv: " << r << " after " << got << " of " << n;
      break;
    }
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x);
  }
  return s;
}

int ClosedPort() {
  int fd = io::listen_tcp("127.0.0.1", 0);
  int port = io::local_port(fd);
  io::close(fd);
  return port;
}

bool HaveIpv6() {
  int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 s{};
  s.sin6_family = AF_INET6;
  s.sin6_addr = in6addr_loopback;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&s), sizeof s) == 0;
  ::close(fd);
  return ok;
}

// --- datagrams and messages ------------------------------------------------------------------

TEST_P(IoSock, UdpRoundTripSizesAndSource) {
  Run([&] {
    io::Address aa, ba;
    int a = UdpSocket(&aa), b = UdpSocket(&ba);
    for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{1400}, size_t{9000}, size_t{65000}}) {
      std::string msg = Pattern(n, static_cast<uint32_t>(n));
      EXPECT_EQ(NO_ERRNO(io::sendto(a, msg.data(), n, 0, ba.get(), ba.len)), static_cast<int64_t>(n));
      std::string buf(70000, 'x');
      sockaddr_storage from{};
      socklen_t fromlen = sizeof from;
      int64_t r = NO_ERRNO(io::recvfrom(b, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &fromlen,
                                        io::Deadline::in(std::chrono::seconds(10))));
      ASSERT_EQ(r, static_cast<int64_t>(n));
      EXPECT_EQ(buf.substr(0, n), msg);
      ASSERT_EQ(fromlen, sizeof(sockaddr_in));
      EXPECT_EQ(memcmp(&from, &aa.storage, sizeof(sockaddr_in)), 0) << "source address is not the sender's";
    }
    // The Address overloads, the other way round.
    EXPECT_EQ(io::sendto(b, "pong", 4, aa), 4);
    io::Address src;
    char buf[16];
    EXPECT_EQ(io::recvfrom(a, buf, sizeof buf, &src), 4);
    EXPECT_EQ(std::string(buf, 4), "pong");
    EXPECT_EQ(src.ToString(), ba.ToString());
    // Without a source buffer.
    EXPECT_EQ(io::sendto(b, "x", 1, aa), 1);
    EXPECT_EQ(io::recvfrom(a, buf, sizeof buf, 0, nullptr, nullptr), 1);
    EXPECT_EQ(io::close(a), 0);
    EXPECT_EQ(io::close(b), 0);
  });
}

TEST_P(IoSock, RecvmsgIovecsAndTruncation) {
  Run([&] {
    io::Address aa, ba;
    int a = UdpSocket(&aa), b = UdpSocket(&ba);
    std::string msg = Pattern(100, 7);
    // sendmsg from three iovecs to an explicit peer: one datagram.
    iovec out[3] = {{msg.data(), 10}, {msg.data() + 10, 50}, {msg.data() + 60, 40}};
    msghdr sm{};
    sm.msg_name = const_cast<sockaddr*>(ba.get());
    sm.msg_namelen = ba.len;
    sm.msg_iov = out;
    sm.msg_iovlen = 3;
    EXPECT_EQ(NO_ERRNO(io::sendmsg(a, &sm)), 100);
    // recvmsg into two iovecs of 30 bytes: 60 bytes, MSG_TRUNC, source set.
    char p1[30], p2[30];
    iovec in[2] = {{p1, sizeof p1}, {p2, sizeof p2}};
    sockaddr_storage from{};
    msghdr rm{};
    rm.msg_name = &from;
    rm.msg_namelen = sizeof from;
    rm.msg_iov = in;
    rm.msg_iovlen = 2;
    EXPECT_EQ(NO_ERRNO(io::recvmsg(b, &rm, 0, io::Deadline::in(std::chrono::seconds(10)))), 60);
    EXPECT_TRUE(rm.msg_flags & MSG_TRUNC) << "msg_flags " << rm.msg_flags;
    EXPECT_EQ(rm.msg_namelen, sizeof(sockaddr_in));
    EXPECT_EQ(memcmp(&from, &aa.storage, sizeof(sockaddr_in)), 0);
    EXPECT_EQ(std::string(p1, 30) + std::string(p2, 30), msg.substr(0, 60));
    // A buffer that fits: no MSG_TRUNC.
    EXPECT_EQ(io::sendto(a, msg.data(), 50, 0, ba.get(), ba.len), 50);
    rm.msg_namelen = sizeof from;
    rm.msg_flags = -1;
    EXPECT_EQ(io::recvmsg(b, &rm), 50);
    EXPECT_EQ(rm.msg_flags & MSG_TRUNC, 0);
    // MSG_TRUNC as a flag: the datagram's real length.
    EXPECT_EQ(io::sendto(a, msg.data(), 100, 0, ba.get(), ba.len), 100);
    char small[8];
    EXPECT_EQ(io::recvfrom(b, small, sizeof small, MSG_TRUNC, nullptr, nullptr), 100);
    // Errors are values.
    EXPECT_EQ(NO_ERRNO(io::sendto(a, "x", 1, 0, nullptr, 0)), -EDESTADDRREQ);
    // A closed number nothing reuses meanwhile (see the sockopt test).
    int dead = fcntl(a, F_DUPFD_CLOEXEC, 920 + static_cast<int>(ctx()));
    ASSERT_GE(dead, 920);
    ::close(dead);
    EXPECT_EQ(NO_ERRNO(io::recvmsg(dead, &rm)), -EBADF);
    EXPECT_EQ(NO_ERRNO(io::sendmsg(dead, &sm)), -EBADF);
    EXPECT_EQ(io::close(a), 0);
    EXPECT_EQ(io::close(b), 0);
  });
}

TEST_P(IoSock, RecvfromDeadlineTimesOutAndReceivesNothing) {
  Run([&] {
    io::Address aa, ba;
    int a = UdpSocket(&aa), b = UdpSocket(&ba);
    char buf[64];
    auto t0 = Clock::now();
    EXPECT_EQ(NO_ERRNO(io::recvfrom(b, buf, sizeof buf, 0, nullptr, nullptr, io::Deadline::in(milliseconds(50)))),
              -ETIMEDOUT);
    EXPECT_GE(Clock::now() - t0, milliseconds(45));
    msghdr m{};
    iovec v{buf, sizeof buf};
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    EXPECT_EQ(io::recvmsg(b, &m, 0, io::Deadline::in(milliseconds(20))), -ETIMEDOUT);
    // The timed-out receives really ended: the next datagram goes to the
    // next call, whole.
    EXPECT_EQ(io::sendto(a, "late", 4, ba), 4);
    EXPECT_EQ(io::recvfrom(b, buf, sizeof buf, 0, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(10))), 4);
    EXPECT_EQ(std::string(buf, 4), "late");
    EXPECT_EQ(io::close(a), 0);
    EXPECT_EQ(io::close(b), 0);
  });
}

TEST_P(IoSock, RecvfromWaitsForALaterDatagram) {
  Run([&] {
    io::Address aa, ba;
    int a = UdpSocket(&aa), b = UdpSocket(&ba);
    Helper h(ctx(), [&] {
      std::this_thread::sleep_for(milliseconds(20));
      EXPECT_EQ(io::sendto(a, "hello", 5, ba), 5);
    });
    char buf[16];
    io::Address from;
    EXPECT_EQ(io::recvfrom(b, buf, sizeof buf, &from, 0, io::Deadline::in(std::chrono::seconds(10))), 5);
    EXPECT_EQ(from.ToString(), aa.ToString());
    h.join();
    EXPECT_EQ(io::close(a), 0);
    EXPECT_EQ(io::close(b), 0);
  });
}

// --- socket options ------------------------------------------------------------------------------

TEST_P(IoSock, SockoptNodelayRoundTripAndErrors) {
  Run([&] {
    TcpPair p = MakeTcpPair();
    int v = -1;
    socklen_t len = sizeof v;
    EXPECT_EQ(NO_ERRNO(io::getsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &v, &len)), 0);
    EXPECT_EQ(v, 0);
    EXPECT_EQ(NO_ERRNO(io::set_nodelay(p.client, true)), 0);
    len = sizeof v;
    EXPECT_EQ(io::getsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    EXPECT_EQ(v, 1);
    EXPECT_EQ(len, sizeof v);
    EXPECT_EQ(io::set_nodelay(p.client, false), 0);
    len = sizeof v;
    EXPECT_EQ(io::getsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    EXPECT_EQ(v, 0);
    int one = 1;
    EXPECT_EQ(io::setsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);
    len = sizeof v;
    EXPECT_EQ(io::getsockopt(p.client, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    EXPECT_EQ(v, 1);
    // Errors.
    EXPECT_EQ(NO_ERRNO(io::setsockopt(p.client, SOL_SOCKET, 12345, &one, sizeof one)), -ENOPROTOOPT);
    len = sizeof v;
    EXPECT_EQ(NO_ERRNO(io::getsockopt(p.client, SOL_SOCKET, 12345, &v, &len)), -ENOPROTOOPT);
    io::Address ua;
    int u = UdpSocket(&ua);
    EXPECT_EQ(NO_ERRNO(io::set_nodelay(u, true)), -ENOPROTOOPT);  // not TCP
    EXPECT_EQ(io::close(u), 0);
    // A closed number nothing reuses during the test (new descriptors take
    // the lowest free number; the runtime's workers make theirs lazily).
    int dead = fcntl(p.client, F_DUPFD_CLOEXEC, 900 + static_cast<int>(ctx()));
    ASSERT_GE(dead, 900);
    ::close(dead);
    ClosePair(p);
    EXPECT_EQ(NO_ERRNO(io::set_nodelay(dead, true)), -EBADF);
    len = sizeof v;
    EXPECT_EQ(NO_ERRNO(io::getsockopt(dead, IPPROTO_TCP, TCP_NODELAY, &v, &len)), -EBADF);
    int pf[2];
    ASSERT_EQ(pipe2(pf, O_CLOEXEC), 0);
    EXPECT_EQ(io::set_nodelay(pf[0], true), -ENOTSOCK);
    ::close(pf[0]);
    ::close(pf[1]);
  });
}

// --- sendfile and splice ----------------------------------------------------------------------

// A temp file holding `data`; its fd (read-only, position 0).
int TempFile(const std::string& data) {
  char path[] = "/tmp/weft_io_socket_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  unlink(path);
  EXPECT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  EXPECT_EQ(lseek(fd, 0, SEEK_SET), 0);
  return fd;
}

TEST_P(IoSock, SendfileOneMebibyteIntact) {
  Run([&] {
    const size_t kSize = 1 << 20;
    std::string data = Pattern(kSize, 42);
    int f = TempFile(data);
    TcpPair p = MakeTcpPair();
    std::string got;
    Helper reader(ctx(), [&] { got = RecvExactly(p.server, kSize); });
    // No offset: from (and advancing) the file position.
    size_t sent = 0;
    while (sent < kSize) {
      int64_t r = NO_ERRNO(io::sendfile(p.client, f, nullptr, kSize - sent, io::Deadline::in(std::chrono::seconds(20))));
      ASSERT_GT(r, 0) << "sendfile after " << sent;
      sent += static_cast<size_t>(r);
    }
    reader.join();
    EXPECT_EQ(got.size(), kSize);
    EXPECT_TRUE(got == data) << "the bytes received differ from the file";
    EXPECT_EQ(lseek(f, 0, SEEK_CUR), static_cast<off_t>(kSize)) << "the file position follows what was sent";
    // At end of file: 0.
    EXPECT_EQ(io::sendfile(p.client, f, nullptr, 100), 0);

    // With an offset: the file position does not move, *offset does.
    ASSERT_EQ(lseek(f, 5, SEEK_SET), 5);
    const off_t kStart = 12345;
    off_t off = kStart;
    const size_t want = kSize - static_cast<size_t>(kStart);
    std::string got2;
    Helper reader2(ctx(), [&] { got2 = RecvExactly(p.server, want); });
    sent = 0;
    while (sent < want) {
      int64_t r = io::sendfile(p.client, f, &off, want - sent);
      ASSERT_GT(r, 0);
      sent += static_cast<size_t>(r);
      EXPECT_EQ(off, kStart + static_cast<off_t>(sent));
    }
    reader2.join();
    EXPECT_TRUE(got2 == data.substr(static_cast<size_t>(kStart))) << "sendfile from an offset sent other bytes";
    EXPECT_EQ(lseek(f, 0, SEEK_CUR), 5);
    // Errors.
    EXPECT_EQ(NO_ERRNO(io::sendfile(p.client, -1, nullptr, 10)), -EBADF);
    ClosePair(p);
    ::close(f);
  });
}

TEST_P(IoSock, SendfileDeadlineWhenPeerDoesNotRead) {
  Run([&] {
    std::string data = Pattern(8 << 20, 3);
    int f = TempFile(data);
    TcpPair p = MakeTcpPair();
    int small = 4096;
    io::setsockopt(p.client, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    io::setsockopt(p.server, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    // The peer never reads: the buffers fill, then the deadline ends it.
    off_t off = 0;
    int64_t total = 0;
    int64_t r;
    auto t0 = Clock::now();
    while ((r = io::sendfile(p.client, f, &off, data.size() - static_cast<size_t>(off),
                             io::Deadline::in(milliseconds(100)))) > 0) {
      total += r;
      ASSERT_LT(Clock::now() - t0, std::chrono::seconds(20));
    }
    EXPECT_EQ(r, -ETIMEDOUT);
    EXPECT_GT(total, 0);
    EXPECT_EQ(off, total) << "the offset follows exactly what was sent";
    // What was sent arrives intact, and nothing more.
    std::string got = RecvExactly(p.server, static_cast<size_t>(total));
    EXPECT_TRUE(got == data.substr(0, static_cast<size_t>(total)));
    ClosePair(p);
    ::close(f);
  });
}

TEST_P(IoSock, SplicePipeToSocket) {
  Run([&] {
    TcpPair p = MakeTcpPair();
    int pf[2];
    ASSERT_EQ(pipe2(pf, O_CLOEXEC), 0);
    const size_t kSize = 300 * 1000;  // several pipefuls: the splices wait for the writer
    std::string data = Pattern(kSize, 9);
    Helper writer(ctx(), [&] {
      size_t done = 0;
      while (done < kSize) {
        int64_t r = io::write(pf[1], data.data() + done, kSize - done, io::Deadline::in(std::chrono::seconds(20)));
        ASSERT_GT(r, 0);
        done += static_cast<size_t>(r);
      }
    });
    std::string got;
    Helper reader(ctx(), [&] { got = RecvExactly(p.server, kSize); });
    size_t moved = 0;
    while (moved < kSize) {
      int64_t r = NO_ERRNO(io::splice(pf[0], nullptr, p.client, nullptr, kSize - moved, SPLICE_F_MOVE,
                                      io::Deadline::in(std::chrono::seconds(20))));
      ASSERT_GT(r, 0) << "splice after " << moved;
      moved += static_cast<size_t>(r);
    }
    writer.join();
    reader.join();
    EXPECT_TRUE(got == data) << "the bytes received differ from the bytes written";

    // An empty pipe: SPLICE_F_NONBLOCK says EAGAIN; a deadline passes with
    // -ETIMEDOUT and takes nothing (the next splice moves the next bytes).
    EXPECT_EQ(NO_ERRNO(io::splice(pf[0], nullptr, p.client, nullptr, 100, SPLICE_F_NONBLOCK)), -EAGAIN);
    auto t0 = Clock::now();
    EXPECT_EQ(NO_ERRNO(io::splice(pf[0], nullptr, p.client, nullptr, 100, 0, io::Deadline::in(milliseconds(50)))),
              -ETIMEDOUT);
    EXPECT_GE(Clock::now() - t0, milliseconds(45));
    ASSERT_EQ(::write(pf[1], "abc", 3), 3);
    EXPECT_EQ(io::splice(pf[0], nullptr, p.client, nullptr, 100, 0, io::Deadline::in(std::chrono::seconds(10))), 3);
    EXPECT_EQ(RecvExactly(p.server, 3), "abc");

    // File -> pipe with an offset: the offset advances, the file position does not.
    std::string fdata = Pattern(10000, 5);
    int f = TempFile(fdata);
    off_t off = 1000;
    EXPECT_EQ(io::splice(f, &off, pf[1], nullptr, 500), 500);
    EXPECT_EQ(off, 1500);
    EXPECT_EQ(lseek(f, 0, SEEK_CUR), 0);
    char buf[500];
    EXPECT_EQ(::read(pf[0], buf, sizeof buf), 500);
    EXPECT_EQ(std::string(buf, 500), fdata.substr(1000, 500));
    // Errors: no pipe at either end; an offset on a pipe; a bad fd.
    EXPECT_EQ(NO_ERRNO(io::splice(p.server, nullptr, p.client, nullptr, 10)), -EINVAL);
    off_t poff = 0;
    EXPECT_EQ(NO_ERRNO(io::splice(pf[0], &poff, p.client, nullptr, 10, SPLICE_F_NONBLOCK)), -ESPIPE);
    EXPECT_EQ(NO_ERRNO(io::splice(-1, nullptr, pf[1], nullptr, 10)), -EBADF);
    ::close(f);
    ::close(pf[0]);
    ::close(pf[1]);
    ClosePair(p);
  });
}

// --- listen_tcp options ---------------------------------------------------------------------

TEST_P(IoSock, ListenReusePort) {
  Run([&] {
    int a = NO_ERRNO(io::listen_tcp("127.0.0.1", 0, io::ListenOptions{.reuse_port = true}));
    ASSERT_GE(a, 0);
    uint16_t port = static_cast<uint16_t>(io::local_port(a));
    int b = io::listen_tcp("127.0.0.1", port, io::ListenOptions{.reuse_port = true});
    EXPECT_GE(b, 0) << "a second SO_REUSEPORT listener on the port: " << strerror(-b);
    int v = 0;
    socklen_t len = sizeof v;
    EXPECT_EQ(io::getsockopt(b, SOL_SOCKET, SO_REUSEPORT, &v, &len), 0);
    EXPECT_EQ(v, 1);
    EXPECT_EQ(io::getsockopt(b, SOL_SOCKET, SO_REUSEADDR, &v, &len), 0);
    EXPECT_EQ(v, 1) << "reuse_addr is on by default";
    // One without it is refused, on the old overload and the new.
    EXPECT_EQ(NO_ERRNO(io::listen_tcp("127.0.0.1", port)), -EADDRINUSE);
    EXPECT_EQ(io::listen_tcp("127.0.0.1", port, io::ListenOptions{}), -EADDRINUSE);
    // And the other way round: a plain listener, then one with reuse_port.
    int c = io::listen_tcp("127.0.0.1", 0, io::ListenOptions{.backlog = 8});
    ASSERT_GE(c, 0);
    EXPECT_EQ(io::listen_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(c)), io::ListenOptions{.reuse_port = true}),
              -EADDRINUSE);
    // reuse_addr off is honoured.
    int d = io::listen_tcp("127.0.0.1", 0, io::ListenOptions{.reuse_addr = false});
    ASSERT_GE(d, 0);
    len = sizeof v;
    EXPECT_EQ(io::getsockopt(d, SOL_SOCKET, SO_REUSEADDR, &v, &len), 0);
    EXPECT_EQ(v, 0);
    // Both reuse_port listeners get connections.
    for (int i = 0; i < 2; ++i) {
      int cl = io::connect_tcp("127.0.0.1", port, io::Deadline::in(std::chrono::seconds(10)));
      EXPECT_GE(cl, 0);
      io::close(cl);
    }
    for (int fd : {a, b, c, d}) EXPECT_EQ(io::close(fd), 0);
  });
}

TEST_P(IoSock, ListenV6Only) {
  if (!HaveIpv6()) GTEST_SKIP() << "no IPv6 loopback here";
  Run([&] {
    // v6_only: the port's IPv4 side stays free.
    int a = io::listen_tcp("::", 0, io::ListenOptions{.v6_only = true});
    ASSERT_GE(a, 0) << strerror(-a);
    int v = 0;
    socklen_t len = sizeof v;
    EXPECT_EQ(io::getsockopt(a, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len), 0);
    EXPECT_EQ(v, 1);
    uint16_t port = static_cast<uint16_t>(io::local_port(a));
    int b = io::listen_tcp("0.0.0.0", port, io::ListenOptions{});
    EXPECT_GE(b, 0) << "IPv4 on the port of a v6-only listener: " << strerror(-b);
    // Each family's connection goes to its own listener.
    int c4 = io::connect_tcp("127.0.0.1", port, io::Deadline::in(std::chrono::seconds(10)));
    int c6 = io::connect_tcp("::1", port, io::Deadline::in(std::chrono::seconds(10)));
    EXPECT_GE(c4, 0);
    EXPECT_GE(c6, 0);
    int s6 = io::accept(a, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(10)));
    int s4 = io::accept(b, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(10)));
    EXPECT_GE(s6, 0);
    EXPECT_GE(s4, 0);
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    ASSERT_EQ(getpeername(s6, reinterpret_cast<sockaddr*>(&peer), &plen), 0);
    EXPECT_EQ(peer.ss_family, AF_INET6);
    for (int fd : {c4, c6, s4, s6, b, a}) EXPECT_EQ(io::close(fd), 0);
    // Without it (dual stack, the default): the IPv4 side is taken.
    int d = io::listen_tcp("::", 0, io::ListenOptions{});
    ASSERT_GE(d, 0);
    len = sizeof v;
    EXPECT_EQ(io::getsockopt(d, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len), 0);
    if (v == 0) {
      EXPECT_EQ(io::listen_tcp("0.0.0.0", static_cast<uint16_t>(io::local_port(d)), io::ListenOptions{}), -EADDRINUSE);
    }
    EXPECT_EQ(io::close(d), 0);
  });
}

// --- precise errors ---------------------------------------------------------------------------------

TEST_P(IoSock, StatusErrorsCarryTheReason) {
  Run([&] {
    // An unresolvable name: the resolver's own words, NotFound (or
    // Unavailable where the resolver cannot be reached at all).
    const char* host = "nosuch-weft-test.invalid";
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* res = nullptr;
    int gai = weft::blocking([&] { return getaddrinfo(host, "80", &hints, &res); });
    if (gai == 0) freeaddrinfo(res);
    ASSERT_NE(gai, 0) << "a name under .invalid resolved";
    absl::StatusOr<int> r = NO_ERRNO(io::dial_tcp(host, 80, io::Deadline::in(std::chrono::seconds(20))));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), gai == EAI_AGAIN ? absl::StatusCode::kUnavailable : absl::StatusCode::kNotFound)
        << r.status();
    EXPECT_EQ(std::string(r.status().message()),
              std::string("dial_tcp(nosuch-weft-test.invalid:80): resolve(nosuch-weft-test.invalid): ") +
                  gai_strerror(gai));
    absl::StatusOr<int> l = io::listen_tcp_or(host, 0, io::ListenOptions{});
    ASSERT_FALSE(l.ok());
    EXPECT_NE(std::string(l.status().message()).find(gai_strerror(gai)), std::string::npos) << l.status();
    EXPECT_EQ(std::string(l.status().message()).rfind("listen_tcp_or(nosuch-weft-test.invalid:0): resolve(", 0), 0u)
        << l.status();
    // The old calls keep their errno.
    EXPECT_LT(io::connect_tcp(host, 80, io::Deadline::in(std::chrono::seconds(20))), 0);

    // A refused connect: the step and the address tried.
    int port = ClosedPort();
    absl::StatusOr<int> c = NO_ERRNO(io::dial_tcp("127.0.0.1", static_cast<uint16_t>(port)));
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
    std::string where = "127.0.0.1:" + std::to_string(port);
    EXPECT_EQ(std::string(c.status().message()),
              "dial_tcp(" + where + "): connect to " + where + ": " + strerror(ECONNREFUSED));
    EXPECT_EQ(io::connect_tcp("127.0.0.1", static_cast<uint16_t>(port)), -ECONNREFUSED);

    // A taken port: the bind step.
    absl::StatusOr<int> a = io::listen_tcp_or("127.0.0.1", 0);
    ASSERT_TRUE(a.ok()) << a.status();
    int lport = io::local_port(*a);
    absl::StatusOr<int> b = io::listen_tcp_or("127.0.0.1", static_cast<uint16_t>(lport));
    ASSERT_FALSE(b.ok());
    std::string lwhere = "127.0.0.1:" + std::to_string(lport);
    EXPECT_EQ(std::string(b.status().message()),
              "listen_tcp_or(" + lwhere + "): bind to " + lwhere + ": " + strerror(EADDRINUSE));
    EXPECT_EQ(b.status().code(), absl::StatusCode::kAlreadyExists);
    // Success: a working socket.
    absl::StatusOr<int> ok = io::dial_tcp("127.0.0.1", static_cast<uint16_t>(lport));
    ASSERT_TRUE(ok.ok()) << ok.status();
    int s = io::accept(*a, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(10)));
    EXPECT_GE(s, 0);
    EXPECT_EQ(io::send(*ok, "hi", 2), 2);
    EXPECT_EQ(RecvExactly(s, 2), "hi");
    for (int fd : {s, *ok, *a}) EXPECT_EQ(io::close(fd), 0);
  });
}

// The Status codes io.h promises for errors of a step.
TEST(IoSockStatus, CodesOfFailedSteps) {
  // A listener on a port that is taken: AlreadyExists.
  int a = io::listen_tcp("127.0.0.1", 0);
  ASSERT_GE(a, 0);
  absl::StatusOr<int> b = io::listen_tcp_or("127.0.0.1", static_cast<uint16_t>(io::local_port(a)));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kAlreadyExists) << b.status();
  // Not a local address: FailedPrecondition.
  absl::StatusOr<int> c = io::listen_tcp_or("192.0.2.1", 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition) << c.status();
  EXPECT_NE(std::string(c.status().message()).find("bind to 192.0.2.1:0: "), std::string::npos) << c.status();
  // A connect whose deadline passes: DeadlineExceeded (or Unavailable where
  // the test network refuses at once).
  absl::StatusOr<int> d = io::dial_tcp("192.0.2.1", 9, io::Deadline::in(milliseconds(30)));
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(d.status().code() == absl::StatusCode::kDeadlineExceeded ||
              d.status().code() == absl::StatusCode::kUnavailable)
      << d.status();
  EXPECT_EQ(io::close(a), 0);
}

// --- Acceptor -----------------------------------------------------------------------------------------

// 200 clients (ULTs, or threads on the Thread variant) each send their
// number; 4 servers share one Acceptor, answer each with number * 3 + 1.
TEST_P(IoSock, AcceptorServesManyClients) {
  Run([&] {
    const int kClients = 200;
    const int kServers = 4;
    int lfd = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(lfd, 0);
    // Threads: accept(2) on a blocking listener, where several threads
    // woken by one connection race and the losers would block in accept(2)
    // past their deadlines (io::accept's deadline bounds the wait for
    // readiness only). A non-blocking listener makes the losers wait again.
    if (ctx() == Ctx::kThread) {
      ASSERT_EQ(fcntl(lfd, F_SETFL, O_NONBLOCK), 0);
    }
    uint16_t port = static_cast<uint16_t>(io::local_port(lfd));
    io::Acceptor acc(lfd);
    EXPECT_EQ(acc.fd(), lfd);
    std::atomic<int> served{0};
    std::vector<std::atomic<int>> seen(kClients);
    std::vector<std::unique_ptr<Helper>> servers;
    for (int s = 0; s < kServers; ++s) {
      servers.push_back(std::make_unique<Helper>(ctx(), [&] {
        for (;;) {
          if (served.load() >= kClients) return;
          int c = acc.accept(io::Deadline::in(milliseconds(200)));
          if (c == -ETIMEDOUT) continue;
          ASSERT_GE(c, 0) << "accept: " << strerror(-c);
          served.fetch_add(1);
          uint32_t id = 0;
          std::string b = RecvExactly(c, sizeof id);
          ASSERT_EQ(b.size(), sizeof id);
          memcpy(&id, b.data(), sizeof id);
          ASSERT_LT(id, static_cast<uint32_t>(kClients));
          seen[id].fetch_add(1);
          uint32_t reply = id * 3 + 1;
          EXPECT_EQ(io::send_all(c, &reply, sizeof reply), 4);
          EXPECT_EQ(io::close(c), 0);
        }
      }));
    }
    std::atomic<int> ok{0};
    {
      std::vector<std::unique_ptr<Helper>> clients;
      for (int i = 0; i < kClients; ++i) {
        clients.push_back(std::make_unique<Helper>(ctx(), [&, i] {
          int c = io::connect_tcp("127.0.0.1", port, io::Deadline::in(std::chrono::seconds(20)));
          ASSERT_GE(c, 0) << strerror(-c);
          uint32_t id = static_cast<uint32_t>(i);
          EXPECT_EQ(io::send_all(c, &id, sizeof id), 4);
          std::string b = RecvExactly(c, 4);
          ASSERT_EQ(b.size(), 4u);
          uint32_t reply;
          memcpy(&reply, b.data(), 4);
          if (reply == id * 3 + 1) ok.fetch_add(1);
          EXPECT_EQ(io::close(c), 0);
        }));
      }
    }
    for (auto& s : servers) s->join();
    EXPECT_EQ(ok.load(), kClients);
    EXPECT_EQ(served.load(), kClients);
    for (int i = 0; i < kClients; ++i) EXPECT_EQ(seen[i].load(), 1) << "client " << i;
    servers.clear();
    EXPECT_EQ(io::close(lfd), 0);
  });
}

// Connections made before anybody calls accept(): more than the Acceptor
// takes ahead of its callers (kAcceptorMaxQueued), so the armed accept is
// cancelled and armed again; every one is accepted once.
TEST_P(IoSock, AcceptorBurstBeyondItsQueue) {
  Run([&] {
    const int kConns = static_cast<int>(io::kAcceptorMaxQueued) * 2 + 7;
    int lfd = io::listen_tcp("127.0.0.1", 0, io::ListenOptions{.backlog = 1024});
    ASSERT_GE(lfd, 0);
    uint16_t port = static_cast<uint16_t>(io::local_port(lfd));
    io::Acceptor acc(lfd);
    // Arm it (on io_uring) with a call that times out.
    EXPECT_EQ(acc.accept(io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
    std::vector<int> clients;
    for (int i = 0; i < kConns; ++i) {
      int c = io::connect_tcp("127.0.0.1", port, io::Deadline::in(std::chrono::seconds(10)));
      ASSERT_GE(c, 0);
      uint8_t b = static_cast<uint8_t>(i);
      ASSERT_EQ(io::send(c, &b, 1), 1);
      clients.push_back(c);
    }
    std::vector<int> count(kConns, 0);
    for (int i = 0; i < kConns; ++i) {
      int s = acc.accept(io::Deadline::in(std::chrono::seconds(10)));
      ASSERT_GE(s, 0) << "connection " << i << ": " << strerror(-s);
      uint8_t b;
      ASSERT_EQ(io::recv(s, &b, 1, 0, io::Deadline::in(std::chrono::seconds(10))), 1);
      count[b]++;
      io::close(s);
    }
    for (int i = 0; i < kConns; ++i) EXPECT_EQ(count[i], 1) << i;
    EXPECT_EQ(acc.accept(io::Deadline::in(milliseconds(10))), -ETIMEDOUT);
    for (int c : clients) io::close(c);
    EXPECT_EQ(io::close(lfd), 0);
  });
}

// Destroying an Acceptor whose accept is armed leaves nothing in flight:
// a connection made afterwards waits in the backlog for a plain accept
// (an accept still armed would take it), and io::close is prompt.
TEST_P(IoSock, AcceptorDestroyDisarms) {
  Run([&] {
    int lfd = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(lfd, 0);
    uint16_t port = static_cast<uint16_t>(io::local_port(lfd));
    {
      io::Acceptor acc(lfd);
      EXPECT_EQ(acc.accept(io::Deadline::in(milliseconds(20))), -ETIMEDOUT);
      // Another ULT arms it too (concurrent callers) and leaves.
      Helper h(ctx(), [&] { EXPECT_EQ(acc.accept(io::Deadline::in(milliseconds(20))), -ETIMEDOUT); });
      h.join();
    }
    int c = io::connect_tcp("127.0.0.1", port, io::Deadline::in(std::chrono::seconds(10)));
    ASSERT_GE(c, 0);
    ASSERT_EQ(io::send(c, "z", 1), 1);
    int s = io::accept(lfd, nullptr, nullptr, io::Deadline::in(std::chrono::seconds(5)));
    ASSERT_GE(s, 0) << "the connection was taken by an accept left armed: " << strerror(-s);
    char b;
    EXPECT_EQ(io::recv(s, &b, 1, 0, io::Deadline::in(std::chrono::seconds(5))), 1);
    EXPECT_EQ(b, 'z');
    auto t0 = Clock::now();
    EXPECT_EQ(io::close(lfd), 0);
    EXPECT_LT(Clock::now() - t0, milliseconds(40)) << "io::close waited for an engine";
    io::close(s);
    io::close(c);
    // A connection accepted ahead of the callers and never taken is closed
    // with the Acceptor: the peer sees end of stream.
    int l2 = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(l2, 0);
    int c2 = -1;
    {
      io::Acceptor acc(l2);
      EXPECT_EQ(acc.accept(io::Deadline::in(milliseconds(5))), -ETIMEDOUT);
      c2 = io::connect_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(l2)), io::Deadline::in(std::chrono::seconds(5)));
      ASSERT_GE(c2, 0);
      std::this_thread::sleep_for(milliseconds(20));
    }
    if (ctx() == Ctx::kUlt && ExpectedBackend() == "io_uring") {
      char x;
      EXPECT_EQ(io::recv(c2, &x, 1, 0, io::Deadline::in(std::chrono::seconds(5))), 0)
          << "the queued connection was not closed";
    }
    io::close(c2);
    EXPECT_EQ(io::close(l2), 0);
  });
}

TEST_P(IoSock, AcceptorCloseEndsAWaitingCall) {
  if (GetParam() == Ctx::kThread) GTEST_SKIP() << "closing a descriptor does not wake a thread blocked in accept(2)";
  Run([&] {
    int lfd = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(lfd, 0);
    io::Acceptor acc(lfd);
    std::atomic<bool> waiting{false};
    int r = 1;
    Helper h(ctx(), [&] {
      waiting = true;
      r = acc.accept(io::Deadline::in(std::chrono::seconds(20)));
    });
    while (!waiting) weft::this_ult::yield();
    weft::this_ult::sleep_for(milliseconds(20));
    auto t0 = Clock::now();
    EXPECT_EQ(io::close(lfd), 0);
    h.join();
    EXPECT_EQ(r, -ECANCELED);
    EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  });
}

TEST_P(IoSock, AcceptorDeadlineAndErrors) {
  Run([&] {
    int lfd = io::listen_tcp("127.0.0.1", 0);
    ASSERT_GE(lfd, 0);
    io::Acceptor acc(lfd);
    auto t0 = Clock::now();
    EXPECT_EQ(NO_ERRNO(acc.accept(io::Deadline::in(milliseconds(50)))), -ETIMEDOUT);
    EXPECT_GE(Clock::now() - t0, milliseconds(45));
    EXPECT_EQ(io::close(lfd), 0);
    // A socket that does not listen.
    int s = io::socket(AF_INET, SOCK_STREAM, 0);
    io::Acceptor bad(s);
    EXPECT_EQ(NO_ERRNO(bad.accept(io::Deadline::in(std::chrono::seconds(5)))), -EINVAL);
    EXPECT_EQ(io::close(s), 0);
  });
}

// --- signals: the new waits end with -EINTR as recv/accept do ---------------------------------

std::atomic<int> g_handled{0};
void Handler(int) { g_handled.fetch_add(1); }

uint64_t Parks(const weft::Runtime& rt) {
  uint64_t n = 0;
  for (const weft::WorkerStats& w : rt.stats().workers) n += w.parks;
  return n;
}

bool WaitFor(const std::function<bool()>& pred, milliseconds limit) {
  auto end = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return true;
}

// The main thread blocks SIGUSR1; the ULT under test unblocks it.
class IoSockSignal : public testing::Test {
 protected:
  void SetUp() override {
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
  void Install(int flags) {
    struct sigaction sa {};
    sa.sa_handler = Handler;
    sa.sa_flags = flags;
    ASSERT_EQ(sigaction(SIGUSR1, &sa, nullptr), 0);
  }
  // Runs op() in a ULT that takes SIGUSR1 and signals it once it parked.
  // op's result, or 1000 if it still waits 3 s after the handler ran (then
  // release() must let it go; the ULT is detached).
  int64_t Interrupted(weft::Runtime& rt, std::function<int64_t()> op, std::function<void()> after_handler = {}) {
    std::atomic<uint64_t> id{0};
    auto got = std::make_shared<std::atomic<int64_t>>(1000);
    uint64_t parks = Parks(rt);
    weft::Ult u = rt.spawn([&, got, op] {
      sigset_t m;
      sigemptyset(&m);
      sigaddset(&m, SIGUSR1);
      pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
      id.store(weft::this_ult::id().value());
      got->store(op());
    });
    EXPECT_TRUE(WaitFor([&] { return id.load() != 0 && Parks(rt) > parks; }, milliseconds(10000)));
    std::this_thread::sleep_for(milliseconds(5));
    EXPECT_TRUE(weft::signal(weft::UltId::FromValue(id.load()), SIGUSR1).ok());
    EXPECT_TRUE(WaitFor([&] { return g_handled.load() == 1; }, milliseconds(10000))) << "the handler never ran";
    if (after_handler) after_handler();
    if (!WaitFor([&] { return got->load() != 1000; }, milliseconds(3000))) {
      EXPECT_TRUE(u.detach().ok());
      return 1000;
    }
    EXPECT_TRUE(u.join().ok());
    return got->load();
  }
  sigset_t saved_;
};

TEST_F(IoSockSignal, RecvfromAndAcceptorEndWithEintrWithoutSaRestart) {
  Watchdog wd(std::string("IoSockSignal.RecvfromAndAcceptor"), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  Install(0);
  io::Address aa, ba;
  int a = -1, b = -1, lfd = -1;
  ASSERT_TRUE(rt.block_on([&] {
    a = UdpSocket(&aa);
    b = UdpSocket(&ba);
    lfd = io::listen_tcp("127.0.0.1", 0);
  }).ok());
  char buf[16];
  int64_t r = Interrupted(rt, [&] { return io::recvfrom(b, buf, sizeof buf, nullptr); });
  EXPECT_EQ(r, -EINTR) << "1000: recvfrom went on waiting after the handler";
  // Nothing was taken: the next datagram goes to the next call.
  ASSERT_TRUE(rt.block_on([&] {
    EXPECT_EQ(io::sendto(a, "d1", 2, ba), 2);
    EXPECT_EQ(io::recvfrom(b, buf, sizeof buf, nullptr, 0, io::Deadline::in(std::chrono::seconds(10))), 2);
  }).ok());

  auto acc = std::make_unique<io::Acceptor>(lfd);
  g_handled = 0;
  r = Interrupted(rt, [&] { return static_cast<int64_t>(acc->accept()); });
  EXPECT_EQ(r, -EINTR) << "1000: Acceptor::accept went on waiting after the handler";
  if (r == 1000) {
    ASSERT_TRUE(rt.block_on([&] { io::connect_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(lfd))); }).ok());
    std::this_thread::sleep_for(milliseconds(100));
  }
  // The Acceptor still works.
  ASSERT_TRUE(rt.block_on([&] {
    int c = io::connect_tcp("127.0.0.1", static_cast<uint16_t>(io::local_port(lfd)));
    EXPECT_GE(c, 0);
    int s2 = acc->accept(io::Deadline::in(std::chrono::seconds(10)));
    EXPECT_GE(s2, 0);
    io::close(s2);
    io::close(c);
    acc.reset();
    io::close(a);
    io::close(b);
    io::close(lfd);
  }).ok());
}

TEST_F(IoSockSignal, RecvmsgGoesOnWithSaRestart) {
  Watchdog wd(std::string("IoSockSignal.RecvmsgGoesOn"), 60);
  weft::Runtime rt(weft::Options{.workers = 2});
  Install(SA_RESTART);
  io::Address aa, ba;
  int a = -1, b = -1;
  ASSERT_TRUE(rt.block_on([&] {
    a = UdpSocket(&aa);
    b = UdpSocket(&ba);
  }).ok());
  char buf[16];
  int64_t r = Interrupted(
      rt,
      [&] {
        iovec v{buf, sizeof buf};
        msghdr m{};
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        return io::recvmsg(b, &m);
      },
      [&] {
        std::this_thread::sleep_for(milliseconds(5));
        EXPECT_EQ(::sendto(a, "go", 2, 0, ba.get(), ba.len), 2);
      });
  EXPECT_EQ(r, 2) << "a handler with SA_RESTART ended recvmsg";
  ::close(a);
  ::close(b);
}

}  // namespace
