// End-to-end test of examples/http_server (weft io under a real protocol):
// the server runs as a child process (--port 0 --workers 2, with the WEFT_IO
// backend meson set for this test); the client side is plain blocking
// sockets on threads, independent of weft. Keep-alive, pipelining, 400 on
// garbage, many concurrent clients. Hostile input (random requests,
// slowloris, symlinks, FIFOs, the connection cap) is in
// tests/http_badinput_test.cc.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/http_client.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"

namespace {

using namespace httptest;

ServerProcess g_server;

class HttpServer : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string error = g_server.Start({});
    ASSERT_EQ(error, "");
  }
  static void TearDownTestSuite() {
    EXPECT_TRUE(g_server.Alive()) << "the server died during the tests";
    g_server.Stop();
  }

  void SetUp() override {
    ASSERT_GT(g_server.port(), 0) << "the server did not start";
    ASSERT_TRUE(g_server.Alive());
  }
  void TearDown() override { EXPECT_TRUE(g_server.Alive()) << "the server process died"; }

  static int Connect() { return httptest::Connect(g_server.port()); }
};

// The server runs on the backend this test run asks for (meson sets WEFT_IO
// for the child too).
TEST_F(HttpServer, UsesRequestedBackend) {
  const char* e = getenv("WEFT_IO");
  if (e == nullptr) GTEST_SKIP() << "WEFT_IO not set";
  std::string want = std::string(e) == "uring" ? "io_uring" : e;
  EXPECT_NE(g_server.banner().find("(backend " + want + ","), std::string::npos) << g_server.banner();
  EXPECT_NE(g_server.banner().find("2 workers"), std::string::npos) << g_server.banner();
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
