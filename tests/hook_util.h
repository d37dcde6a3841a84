// tests/hook_util.h — what the libweft-hook tests share: a ticker ULT that
// measures how long its worker stalls, and small socket helpers that use
// raw system calls (so they never go through the hook themselves).
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>

#include "weft/join_handle.h"
#include "weft/runtime.h"

namespace hooktest {

inline int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A ULT that sleeps 1 ms at a time (weft's own sleep_for, not a hooked
// call) and records the longest gap between two consecutive wake-ups: a
// worker that stalls (blocked in the kernel) shows as a gap as long as the
// stall. It runs at high priority, so it measures whether a worker is
// available, not how long the run queues are (1,000 ULTs spawned at once
// would otherwise put a woken ticker behind hundreds of runnable ones).
// Start() in a ULT of the runtime to watch; Stop() joins it.
class Ticker {
 public:
  void Start() {
    stop_ = false;
    weft::SpawnOptions opts;
    opts.priority = weft::Priority::kHigh;
    opts.name = "ticker";
    h_ = weft::spawn([this] {
      int64_t last = NowNs();
      while (!stop_.load(std::memory_order_relaxed)) {
        weft::this_ult::sleep_for(std::chrono::milliseconds(1));
        int64_t t = NowNs();
        int64_t gap = t - last;
        last = t;
        if (gap > max_gap_ns_.load(std::memory_order_relaxed)) max_gap_ns_.store(gap, std::memory_order_relaxed);
        ticks_.fetch_add(1, std::memory_order_relaxed);
      }
    }, opts);
  }
  // Waits for the first ticks (the ticker runs), then clears the maximum.
  void WaitRunning() {
    while (ticks_.load() < 3) weft::this_ult::sleep_for(std::chrono::milliseconds(1));
    max_gap_ns_ = 0;
  }
  void Stop() {
    stop_ = true;
    (void)h_.join();
  }
  double max_gap_ms() const { return static_cast<double>(max_gap_ns_.load()) / 1e6; }
  int64_t ticks() const { return ticks_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> max_gap_ns_{0};
  std::atomic<int64_t> ticks_{0};
  weft::JoinHandle<void> h_;
};

// Raw system calls (never hooked: the tests' own plumbing).
inline long Raw(long nr, long a = 0, long b = 0, long c = 0, long d = 0, long e = 0, long f = 0) {
  return syscall(nr, a, b, c, d, e, f);
}

// A connected pair of blocking stream sockets (AF_UNIX), or {-1, -1}.
struct Pair {
  int a = -1, b = -1;
};
inline Pair SocketPair(int type = SOCK_STREAM) {
  int sv[2];
  if (Raw(SYS_socketpair, AF_UNIX, type | SOCK_CLOEXEC, 0, reinterpret_cast<long>(sv)) != 0) return {};
  return {sv[0], sv[1]};
}
inline void RawClose(int fd) {
  if (fd >= 0) Raw(SYS_close, fd);
}

// A TCP listener on 127.0.0.1 (blocking), with its port.
inline int Listen(uint16_t* port) {
  int fd = static_cast<int>(Raw(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd < 0) return -1;
  int one = 1;
  Raw(SYS_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<long>(&one), sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (Raw(SYS_bind, fd, reinterpret_cast<long>(&a), sizeof a) != 0 || Raw(SYS_listen, fd, 4096) != 0 ||
      Raw(SYS_getsockname, fd, reinterpret_cast<long>(&a), reinterpret_cast<long>(&len)) != 0) {
    RawClose(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

// A port nothing listens on now (bound, then closed: the next bind of it
// by a child process is not guaranteed, but TIME_WAIT-free for a listener).
inline uint16_t FreePort() {
  uint16_t port = 0;
  int fd = Listen(&port);
  RawClose(fd);
  return port;
}

}  // namespace hooktest
