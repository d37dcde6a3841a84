// tests/test_util.h — small helpers the test programs share.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "weft/runtime.h"

// Milliseconds since t0 on the steady clock.
inline double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// "Suite.Test" of the running test (for watchdog messages).
inline std::string TestName() {
  const testing::TestInfo* ti = testing::UnitTest::GetInstance()->current_test_info();
  return std::string(ti->test_suite_name()) + "." + ti->name();
}

// The calling kernel thread's id.
inline int Tid() { return static_cast<int>(syscall(SYS_gettid)); }

// xorshift64*: a fast, reproducible pseudo-random sequence from seed *s.
inline uint64_t NextRand(uint64_t* s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

// Polls `pred` (sleeping the calling ULT or thread for 100 us between
// looks) until it holds or `limit` passes; returns whether it held.
template <class P>
bool WaitUntil(P pred, std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    if (weft::this_ult::in_ult()) {
      weft::this_ult::sleep_for(std::chrono::microseconds(100));
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

// The process's open descriptors, the workers' own apart from the rest:
// io engines (an io_uring ring, an epoll instance, an eventfd: a worker
// makes them at its first io or idle wait) and a worker's /proc stat file
// (opened when its thread starts: Options::workers), whose number depends
// on which workers ran when and how many the pool has started (handoffs
// start spares).
struct Fds {
  int engine = 0, other = 0;
};
inline Fds OpenFds() {
  Fds f;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return Fds{-1, -1};
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d)) continue;
    char target[256];
    ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
    target[n > 0 ? n : 0] = '\0';
    std::string t = target;
    bool task_stat = t.rfind("/proc/", 0) == 0 && t.find("/task/") != std::string::npos &&
                     t.size() > 5 && t.compare(t.size() - 5, 5, "/stat") == 0;
    if (t == "anon_inode:[io_uring]" || t == "anon_inode:[eventpoll]" || t == "anon_inode:[eventfd]" || task_stat) {
      ++f.engine;
    } else {
      ++f.other;
    }
  }
  closedir(d);
  return f;
}
constexpr int kEngineFdsPerWorker = 3;  // epoll + eventfd (io_uring: 1), and the stat file

// The number a field of /proc/self/status starts with ("VmRSS" in KiB,
// "FDSize", ...), or -1. Plain open/read, no allocation: usable in a fork
// child of a multi-threaded process.
inline long ProcStatusField(const char* name) {
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[8192];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = '\0';
  size_t len = strlen(name);
  for (const char* p = buf; *p != '\0';) {
    if (strncmp(p, name, len) == 0 && p[len] == ':') return strtol(p + len + 1, nullptr, 10);
    const char* nl = strchr(p, '\n');
    if (nl == nullptr) break;
    p = nl + 1;
  }
  return -1;
}

// The slots the process's descriptor table has now, or -1.
inline long FdTableSlots() { return ProcStatusField("FDSize"); }
