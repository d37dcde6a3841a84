// End-to-end test of examples/http_server (weft io under a real protocol):
// the server runs as a child process (--port 0 --workers 2, with the WEFT_IO
// backend meson set for this test); the client side is plain blocking
// sockets on threads, independent of weft. Keep-alive, pipelining, 400 on
// garbage, and 10,000 random/mutated requests on fresh connections after
// which the server still answers and is still alive.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/watchdog.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;




// The http_server child process, shared by the tests of this file.
struct Server {
  pid_t pid = -1;
  int port = 0;
  int out = -1;  // its stdout
  std::string banner;
};
Server g_server;

// A plain blocking TCP connection to the server with 5 s send/receive
// timeouts (so a server that stops answering fails the test, not hangs it).
int Connect() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(g_server.port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// One parsed response.
struct Response {
  int status = 0;
  std::string head, body;
};

// Reads one response from fd (buffering surplus in *buf). False on EOF,
// error or timeout before a whole response.
bool ReadResponse(int fd, std::string* buf, Response* r) {
  for (;;) {
    size_t end = buf->find("\r\n\r\n");
    if (end != std::string::npos) {
      r->head = buf->substr(0, end);
      if (r->head.compare(0, 9, "HTTP/1.1 ") != 0 || r->head.size() < 12) return false;
      r->status = atoi(r->head.c_str() + 9);
      size_t cl = r->head.find("Content-Length: ");
      if (cl == std::string::npos) return false;
      size_t len = strtoul(r->head.c_str() + cl + 16, nullptr, 10);
      if (buf->size() >= end + 4 + len) {
        r->body = buf->substr(end + 4, len);
        buf->erase(0, end + 4 + len);
        return true;
      }
    }
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

// Reads one HEAD response (no body, whatever Content-Length says).
bool ReadHeadResponse(int fd, std::string* buf, Response* r) {
  for (;;) {
    size_t end = buf->find("\r\n\r\n");
    if (end != std::string::npos) {
      r->head = buf->substr(0, end);
      r->status = r->head.compare(0, 9, "HTTP/1.1 ") == 0 ? atoi(r->head.c_str() + 9) : 0;
      buf->erase(0, end + 4);
      return r->status != 0;
    }
    char tmp[4096];
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf->append(tmp, static_cast<size_t>(n));
  }
}

// True if the peer closed the connection (EOF or reset) within 5 s, after
// discarding up to 64 KiB of data.
bool ClosedByPeer(int fd) {
  char tmp[4096];
  for (int i = 0; i < 16; ++i) {
    ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n == 0) return true;
    if (n < 0) return errno == ECONNRESET;
  }
  return false;
}

bool ServerAlive() {
  int st = 0;
  return g_server.pid > 0 && waitpid(g_server.pid, &st, WNOHANG) == 0;
}

const char* kGet = "GET /hello HTTP/1.1\r\nHost: test\r\n\r\n";

class HttpServer : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* root = getenv("WEFT_TEST_BUILD_ROOT");
    ASSERT_NE(root, nullptr) << "WEFT_TEST_BUILD_ROOT is not set (run through meson test)";
    std::string exe = std::string(root) + "/examples/http_server";
    ASSERT_EQ(access(exe.c_str(), X_OK), 0) << exe << " is missing";
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pid_t ppid = getpid();
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
      if (getppid() != ppid) _exit(126);
      dup2(p[1], 1);
      char* argv[] = {exe.data(), const_cast<char*>("--port"), const_cast<char*>("0"),
                      const_cast<char*>("--workers"), const_cast<char*>("2"), nullptr};
      execv(exe.c_str(), argv);
      _exit(127);
    }
    close(p[1]);
    g_server.pid = pid;
    g_server.out = p[0];
    // Its first line: "listening on port P (backend B, N workers)".
    std::string line;
    Clock::time_point t0 = Clock::now();
    while (line.find('\n') == std::string::npos && MsSince(t0) < 10000) {
      pollfd pf{p[0], POLLIN, 0};
      if (poll(&pf, 1, 500) <= 0) continue;
      char buf[256];
      ssize_t n = read(p[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
    g_server.banner = line.substr(0, line.find('\n'));
    int port = 0;
    ASSERT_EQ(sscanf(line.c_str(), "listening on port %d", &port), 1) << "server said: '" << line << "'";
    ASSERT_GT(port, 0);
    g_server.port = port;
  }

  static void TearDownTestSuite() {
    if (g_server.pid > 0) {
      EXPECT_TRUE(ServerAlive()) << "the server died during the tests";
      kill(g_server.pid, SIGKILL);
      int st = 0;
      waitpid(g_server.pid, &st, 0);
      g_server.pid = -1;
    }
    if (g_server.out >= 0) close(g_server.out);
  }

  void SetUp() override {
    ASSERT_GT(g_server.port, 0) << "the server did not start";
    ASSERT_TRUE(ServerAlive());
  }
  void TearDown() override { EXPECT_TRUE(ServerAlive()) << "the server process died"; }
};

// The server runs on the backend this test run asks for (meson sets WEFT_IO
// for the child too).
TEST_F(HttpServer, UsesRequestedBackend) {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr) GTEST_SKIP() << "WEFT_IO not set";
  std::string want = std::string(e) == "uring" ? "io_uring" : e;
  EXPECT_NE(g_server.banner.find("(backend " + want + ","), std::string::npos) << g_server.banner;
  EXPECT_NE(g_server.banner.find("2 workers"), std::string::npos) << g_server.banner;
}

// Several requests, one at a time, on one keep-alive connection.
TEST_F(HttpServer, HelloKeepAlive) {
  Watchdog wd(TestName(), 60);
  int fd = Connect();
  ASSERT_GE(fd, 0);
  std::string buf;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(SendAll(fd, kGet));
    Response r;
    ASSERT_TRUE(ReadResponse(fd, &buf, &r)) << "request " << i;
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "hello\n");
    EXPECT_NE(r.head.find("Connection: keep-alive"), std::string::npos) << r.head;
  }
  // "/" too, and an explicit close at the end: then the server closes.
  ASSERT_TRUE(SendAll(fd, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
  Response r;
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello\n");
  EXPECT_NE(r.head.find("Connection: close"), std::string::npos);
  EXPECT_TRUE(buf.empty());
  EXPECT_TRUE(ClosedByPeer(fd));
  close(fd);
}

// Pipelined requests in one write (and split across writes): the responses
// come back complete and in order.
TEST_F(HttpServer, Pipelined) {
  Watchdog wd(TestName(), 60);
  int fd = Connect();
  ASSERT_GE(fd, 0);
  std::string reqs = std::string(kGet) + "GET /nope HTTP/1.1\r\n\r\n" + "HEAD /hello HTTP/1.1\r\n\r\n" +
                     "POST /hello HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde" + kGet;
  ASSERT_TRUE(SendAll(fd, reqs));
  std::string buf;
  Response r;
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello\n");
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 404);
  ASSERT_TRUE(ReadHeadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.head.find("Content-Length: 6"), std::string::npos);
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 405);
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello\n");
  EXPECT_TRUE(buf.empty());
  // Byte by byte: the server reassembles.
  std::string two = std::string(kGet) + kGet;
  for (char c : two) {
    ASSERT_TRUE(SendAll(fd, std::string(1, c)));
  }
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ReadResponse(fd, &buf, &r));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "hello\n");
  }
  close(fd);
}

// Garbage gets a 400 and the connection closed, also after a good request
// on the same connection.
TEST_F(HttpServer, GarbageGets400AndClose) {
  Watchdog wd(TestName(), 60);
  for (std::string garbage : {std::string("garbage\r\n\r\n"), std::string("GET /x\r\n\r\n"),
                              std::string("GET /hello HTTP/1.1\r\nno colon here\r\n\r\n"),
                              std::string("GET hello HTTP/1.1\r\n\r\n")}) {
    int fd = Connect();
    ASSERT_GE(fd, 0);
    std::string buf;
    Response r;
    ASSERT_TRUE(SendAll(fd, kGet));
    ASSERT_TRUE(ReadResponse(fd, &buf, &r));
    EXPECT_EQ(r.status, 200);
    ASSERT_TRUE(SendAll(fd, garbage));
    ASSERT_TRUE(ReadResponse(fd, &buf, &r)) << garbage;
    EXPECT_EQ(r.status, 400) << garbage;
    EXPECT_NE(r.head.find("Connection: close"), std::string::npos);
    EXPECT_TRUE(ClosedByPeer(fd)) << "the connection stays open after a 400";
    close(fd);
  }
}


// A random input: random bytes; random bytes ending in CRLF CRLF (a complete
// but garbage head: must get an error status); a valid request with random
// mutations; or a valid request followed by random bytes.
std::string RandomInput(uint64_t* rng, bool* mutated, bool* must_answer) {
  static const char* kValid[] = {
      "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
      "HEAD / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
      "POST /hello HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
      "GET /static/none HTTP/1.0\r\nUser-Agent: fuzz\r\n\r\n",
  };
  std::string s;
  uint64_t kind = NextRand(rng) % 4;
  *mutated = kind >= 2;
  *must_answer = kind == 1;
  if (kind <= 1) {
    size_t len = NextRand(rng) % 2001;
    s.resize(len);
    for (char& c : s) c = static_cast<char>(NextRand(rng));
    if (kind == 1) {
      for (char& c : s)
        if (c == '\r' || c == '\n') c = 'x';
      s.resize(std::min<size_t>(s.size(), 1996));
      s += "\r\n\r\n";
    }
    return s;
  }
  s = kValid[NextRand(rng) % 4];
  if (kind == 3) {
    size_t len = NextRand(rng) % 1500;
    for (size_t i = 0; i < len; ++i) s.push_back(static_cast<char>(NextRand(rng)));
    return s;
  }
  int muts = 1 + static_cast<int>(NextRand(rng) % 4);
  for (int m = 0; m < muts && !s.empty(); ++m) {
    size_t at = NextRand(rng) % s.size();
    switch (NextRand(rng) % 5) {
      case 0: s[at] = static_cast<char>(NextRand(rng)); break;
      case 1: s.insert(at, 1, static_cast<char>(NextRand(rng))); break;
      case 2: s.erase(at, 1); break;
      case 3: s.insert(at, s.substr(at, NextRand(rng) % 64)); break;
      case 4: s.resize(at); break;
    }
  }
  if (s.size() > 2000) s.resize(2000);
  return s;
}

// 10,000 random inputs, each on a fresh connection (4 client threads): the
// server answers with a well-formed response (4xx/5xx for random bytes) or
// closes, never hangs (5 s socket timeouts) and never dies; afterwards a
// valid GET still works.
TEST_F(HttpServer, RandomInputsNeverCrash) {
  Watchdog wd(TestName(), 110);
  constexpr int kInputs = 10000;
  constexpr int kThreads = 4;
  std::atomic<int> next{0}, answered{0}, closed{0}, failures{0};
  std::mutex fail_mu;
  std::string first_failure;
  auto fail = [&](const std::string& why) {
    ++failures;
    std::lock_guard<std::mutex> g(fail_mu);
    if (first_failure.empty()) first_failure = why;
  };
  Clock::time_point t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&] {
      for (int i; (i = next.fetch_add(1)) < kInputs;) {
        if (failures.load() > 20) return;
        uint64_t rng = 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(i + 1);
        bool mutated = false, must_answer = false;
        std::string in = RandomInput(&rng, &mutated, &must_answer);
        int fd = Connect();
        if (fd < 0) {
          fail("connect failed at input " + std::to_string(i) + ": " + strerror(errno));
          continue;
        }
        SendAll(fd, in);  // the server may answer and close before it has it all
        shutdown(fd, SHUT_WR);
        std::string out;
        char tmp[4096];
        bool timed_out = false;
        for (;;) {
          ssize_t n = recv(fd, tmp, sizeof tmp, 0);
          if (n > 0) {
            out.append(tmp, static_cast<size_t>(n));
            continue;
          }
          if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) timed_out = true;
          break;  // EOF, reset, or timeout
        }
        close(fd);
        if (timed_out) {
          fail("no answer and no close within 5 s for input " + std::to_string(i));
          continue;
        }
        if (out.empty() && must_answer) {
          fail("no answer to a complete garbage head, input " + std::to_string(i));
          continue;
        }
        if (out.empty()) {
          ++closed;
          continue;
        }
        int status = out.compare(0, 9, "HTTP/1.1 ") == 0 && out.size() >= 12 ? atoi(out.c_str() + 9) : 0;
        if (status < 200 || status > 599 || (!mutated && status < 400)) {
          fail("input " + std::to_string(i) + " got '" + out.substr(0, 40) + "'");
          continue;
        }
        ++answered;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0) << first_failure;
  EXPECT_EQ(answered.load() + closed.load(), kInputs);
  EXPECT_GT(answered.load(), kInputs / 4) << "the server should answer most inputs (with 400 at least)";
  ASSERT_TRUE(ServerAlive()) << "the server died on random input";
  // Still serving.
  int fd = Connect();
  ASSERT_GE(fd, 0);
  std::string buf;
  Response r;
  ASSERT_TRUE(SendAll(fd, kGet));
  ASSERT_TRUE(ReadResponse(fd, &buf, &r));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello\n");
  close(fd);
  printf("[   INFO   ] %d inputs in %.0f ms: %d answered, %d closed without answer\n", kInputs, MsSince(t0),
         answered.load(), closed.load());
}

// Many concurrent keep-alive clients at once: all answered.
TEST_F(HttpServer, ConcurrentKeepAliveClients) {
  Watchdog wd(TestName(), 60);
  constexpr int kClients = 64, kRequests = 50;
  std::atomic<int> ok{0};
  std::vector<std::thread> ts;
  for (int c = 0; c < kClients; ++c) {
    ts.emplace_back([&] {
      int fd = Connect();
      if (fd < 0) return;
      std::string buf;
      for (int i = 0; i < kRequests; ++i) {
        Response r;
        if (!SendAll(fd, kGet) || !ReadResponse(fd, &buf, &r)) break;
        if (r.status == 200 && r.body == "hello\n") ++ok;
      }
      close(fd);
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), kClients * kRequests);
}

}  // namespace
