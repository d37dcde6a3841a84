// tests/runtime_memory_test.cc — what a parked ULT costs in memory.
//
// DESIGN.md promises that "a ULT costs kilobytes instead of megabytes":
// stacks are mapped with MAP_NORESERVE and committed lazily, so a parked ULT
// costs the pages its few frames touched plus its descriptor.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/sanitizers.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

#include "sys/stack.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;


// A field of /proc/self/status in KiB (VmRSS, VmHWM, ...); -1 if missing.
long StatusKiB(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// 200,000 ULTs alive at once, each parked (ULT k joins ULT k-1; ULT 0
// sleeps until released), each on a default 64 KiB stack with a guard page:
// the process's resident memory grows by less than 16 KiB per ULT. Then
// they are released and all finish.
TEST(Memory, TwoHundredThousandParkedUlts) {
  WEFT_SKIP_UNDER_ASAN("measures RSS per parked ULT, which ASan's shadow memory and quarantine distort, and "
                       "each parked ULT would hold a fake stack of its own (detect_stack_use_after_return): "
                       "200,000 of them exhaust the address space");
  Watchdog wd(90s, "Memory.TwoHundredThousandParkedUlts");
  constexpr int kUlts = 200000;
  // Every stack gets a guard; on this kernel without a mapping per stack
  // (MADV_GUARD_INSTALL), else 200,000 mprotect guards would not fit.
  weft::sys::GuardKind guard = weft::sys::stack_guard_mechanism();
  EXPECT_NE(guard, weft::sys::GuardKind::kNone);
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  // Warm up: start the workers' own allocations, and make the first ULTs.
  ASSERT_TRUE(rt.block_on([] { weft::this_ult::yield(); }).ok());
  long rss0 = StatusKiB("VmRSS");
  ASSERT_GT(rss0, 0);

  std::atomic<bool> release{false};
  std::atomic<int> parked{0}, finished{0};
  auto t0 = Clock::now();
  weft::Ult prev = rt.spawn([&] {
    parked.fetch_add(1, std::memory_order_relaxed);
    while (!release.load(std::memory_order_acquire)) weft::this_ult::sleep_for(20ms);
    finished.fetch_add(1, std::memory_order_relaxed);
  });
  ASSERT_TRUE(prev.status().ok());
  for (int k = 1; k < kUlts; ++k) {
    weft::Ult next = rt.spawn([&, p = std::move(prev)]() mutable {
      parked.fetch_add(1, std::memory_order_relaxed);
      if (p.join().ok()) finished.fetch_add(1, std::memory_order_relaxed);
    });
    ASSERT_TRUE(next.status().ok()) << "spawn " << k << ": " << next.status();
    prev = std::move(next);
  }
  // Wait until every ULT has run up to its park.
  auto limit = Clock::now() + 60s;
  while (parked.load() < kUlts && Clock::now() < limit) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(parked.load(), kUlts);
  auto spawned_in = Clock::now() - t0;
  std::this_thread::sleep_for(50ms);  // the last few finish switching away
  long rss1 = StatusKiB("VmRSS");
  weft::RuntimeStats s = rt.stats();
  EXPECT_EQ(s.live, static_cast<uint64_t>(kUlts));
  EXPECT_EQ(finished.load(), 0);
  double per_ult = static_cast<double>(rss1 - rss0) / kUlts;
  printf("%d parked ULTs: VmRSS %ld -> %ld KiB, %.2f KiB per ULT; spawned and parked in %.0f ms\n", kUlts, rss0,
         rss1, per_ult, Ms(spawned_in));
  RecordProperty("kib_per_ult", std::to_string(per_ult));
  EXPECT_LT(per_ult, 16.0) << "a parked ULT costs " << per_ult << " KiB of resident memory";
  EXPECT_GT(per_ult, 0.25) << "implausibly small: did the ULTs really exist?";

  auto t1 = Clock::now();
  release.store(true, std::memory_order_release);
  ASSERT_TRUE(prev.join().ok());
  EXPECT_EQ(finished.load(), kUlts);
  printf("released and joined in %.0f ms\n", Ms(Clock::now() - t1));
  EXPECT_EQ(rt.stats().live, 0u);
}

}  // namespace
