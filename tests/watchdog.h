// tests/watchdog.h — bounds a test's waits: a hang fails instead of blocking CI.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

// Aborts the process with a message naming `what` unless destroyed within
// `limit` (a lost wake-up, a deadlock or a hang becomes a test failure).
// The constructor returns once the watchdog thread is waiting: a test that
// forks next must not fork while that thread is still starting (under ASan
// its start allocates, and GCC 12's ASan allocator is not fork-safe: the
// child's allocator could stay locked; seen as a hang of
// runtime_credentials_test under ASan).
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock<std::mutex> g(mu_);
      started_ = true;
      started_cv_.notify_one();
      if (!cv_.wait_for(g, limit, [this] { return done_; })) {
        fprintf(stderr, "WATCHDOG: %s did not finish within %lld s (hang, deadlock or lost wake-up): aborting\n",
                what_.c_str(), static_cast<long long>(limit.count()));
        fflush(stderr);
        abort();
      }
    });
    std::unique_lock<std::mutex> g(mu_);
    started_cv_.wait(g, [this] { return started_; });
  }
  Watchdog(std::string what, int seconds) : Watchdog(std::chrono::seconds(seconds), std::move(what)) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> g(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable started_cv_;
  bool started_ = false;
  bool done_ = false;
  std::thread thread_;
};
