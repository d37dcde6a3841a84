// tests/hook_curl_test.cc — libcurl's easy API (curl_easy_perform, Debian's
// libcurl, unmodified) from 200 ULTs on 2 workers through libweft-hook,
// against a small HTTP/1.1 server in the same test (weft::io on a runtime
// of its own). Every transfer must succeed with the right body, and a
// ticker ULT beside the clients must keep ticking: curl waits in poll() on
// several descriptors (its connection and its wake-up socketpair), which
// the hook turns into parked ULTs.
//
// Runs once per io backend; suites 'hook', 'timing' (alone).
#include <curl/curl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/hook_util.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include "weft/hook.h"
#include "weft/io.h"
#include "weft/runtime.h"

namespace {

namespace io = weft::io;
using namespace std::chrono_literals;

constexpr int kClients = 200;
constexpr int kRequestsEach = 3;  // on one keep-alive connection
constexpr double kMaxGapMs = 20.0;  // best of kRounds (6 ms on average, measured)
constexpr int kRounds = 3;

std::string Body(const std::string& path) { return "hello from weft " + path + "\n"; }

// A keep-alive HTTP/1.1 server: GET /anything answers Body(path). Its own
// runtime (1 worker), its ULTs use weft::io directly.
class Server {
 public:
  Server() : rt_(weft::Options{.workers = 1}) {}
  bool Start() {
    auto r = rt_.block_on([this] {
      lfd_ = io::listen_tcp("127.0.0.1", 0);
      port_ = lfd_ >= 0 ? io::local_port(lfd_) : -1;
    });
    if (!r.ok() || lfd_ < 0 || port_ <= 0) return false;
    acceptor_ = rt_.spawn([this] {
      for (;;) {
        int c = io::accept(lfd_);
        if (c < 0) return;
        (void)weft::spawn([this, c] { Serve(c); }).detach();
      }
    });
    return true;
  }
  void Stop() {
    (void)acceptor_.request_stop();
    (void)acceptor_.join();
    (void)rt_.block_on([this] { io::close(lfd_); });
  }
  int port() const { return port_; }
  int served() const { return served_.load(); }

 private:
  void Serve(int c) {
    std::string in;
    char buf[4096];
    for (;;) {
      int64_t n = io::recv(c, buf, sizeof buf, 0, io::Deadline::in(30s));
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
      size_t end;
      while ((end = in.find("\r\n\r\n")) != std::string::npos) {
        std::string req = in.substr(0, end);
        in.erase(0, end + 4);
        size_t sp1 = req.find(' '), sp2 = req.find(' ', sp1 + 1);
        std::string path = sp1 != std::string::npos && sp2 != std::string::npos ? req.substr(sp1 + 1, sp2 - sp1 - 1) : "?";
        std::string body = Body(path);
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body;
        if (io::send_all(c, resp.data(), resp.size()) < 0) break;
        served_.fetch_add(1);
      }
    }
    io::close(c);
  }

  weft::Runtime rt_;
  int lfd_ = -1;
  int port_ = -1;
  weft::JoinHandle<void> acceptor_;
  std::atomic<int> served_{0};
};

size_t Append(char* p, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

TEST(HookCurl, EasyPerformFrom200Ults) {
  Watchdog wd(TestName(), 120);
  ASSERT_TRUE(weft::hook::active());
  ASSERT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);  // on the main thread, once
  Server server;
  ASSERT_TRUE(server.Start());
  weft::Options o;
  o.workers = 2;
  o.stack_size = 256 * 1024;  // curl's frames are larger than a small ULT stack
  o.blocking_handoff = std::chrono::microseconds::max();
  weft::Runtime rt(o);
  double best = 1e9;
  int total_ok = 0, rounds = 0;
  std::string first_error;
  // Up to kRounds rounds until one is under the bound (the machine's own
  // hiccups, tens of ms about one run in 50, are not the hook's).
  for (; rounds < kRounds && best >= kMaxGapMs; ++rounds) {
    std::atomic<int> ok{0};
    std::atomic<bool> have_error{false};
    double gap = 0, elapsed = 0;
    ASSERT_TRUE(rt.block_on([&] {
                    hooktest::Ticker ticker;
                    ticker.Start();
                    ticker.WaitRunning();
                    auto t0 = std::chrono::steady_clock::now();
                    std::vector<weft::JoinHandle<void>> us;
                    for (int i = 0; i < kClients; ++i) {
                      us.push_back(weft::spawn([&, i] {
                        CURL* h = curl_easy_init();
                        if (h == nullptr) return;
                        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
                        curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
                        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, Append);
                        for (int k = 0; k < kRequestsEach; ++k) {
                          std::string path = "/c" + std::to_string(i) + "/r" + std::to_string(k);
                          std::string url = "http://127.0.0.1:" + std::to_string(server.port()) + path;
                          std::string body;
                          curl_easy_setopt(h, CURLOPT_URL, url.c_str());
                          curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
                          CURLcode rc = curl_easy_perform(h);
                          long code = 0;
                          curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                          if (rc == CURLE_OK && code == 200 && body == Body(path)) {
                            ok.fetch_add(1);
                          } else if (!have_error.exchange(true)) {
                            first_error = url + ": " + curl_easy_strerror(rc) + ", HTTP " + std::to_string(code) +
                                          ", body '" + body + "'";
                          }
                        }
                        curl_easy_cleanup(h);
                      }));
                    }
                    for (auto& u : us) (void)u.join();
                    elapsed = MsSince(t0);
                    ticker.Stop();
                    gap = ticker.max_gap_ms();
                  }).ok());
    printf("curl: %d/%d transfers right in %.1f ms, ticker max gap %.2f ms\n", ok.load(), kClients * kRequestsEach,
           elapsed, gap);
    EXPECT_EQ(ok.load(), kClients * kRequestsEach) << first_error;
    total_ok += ok.load();
    best = std::min(best, gap);
  }
  server.Stop();
  EXPECT_EQ(server.served(), total_ok);
  EXPECT_LT(best, kMaxGapMs) << "a worker stalled while ULTs waited in curl, in every round";
  curl_global_cleanup();
}

}  // namespace
