// tests/runtime_limits_test.cc — weft at the edges of its inputs: durations
// too large for the clock arithmetic (they mean "practically forever"),
// Options outside their range (reported by Runtime::status(), never thrown).
//
// A wait that must never end cannot be joined: those tests leak their
// runtime (its workers sleep until the process exits) or detach their
// thread. Each proves the waiter is asleep by its state — a ULT parked in
// the scheduler, a thread inside the nanosleep/futex system call — never by
// "nothing happened for a while".
#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "runtime/scheduler.h"
#include "runtime/ult.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

namespace {

using namespace std::chrono_literals;

// The system call the thread `tid` of this process is blocked in, or -1
// (running, or unreadable).
long BlockedSyscall(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string first;
  if (!(f >> first) || first == "running") return -1;
  try {
    return std::stol(first);
  } catch (...) {
    return -1;
  }
}

// Whether the ULT `id` is parked (white-box: its descriptor's state).
bool Parked(weft::UltId id) {
  weft::rt::Ult* u = weft::rt::ult_table::lookup(id.value());
  return u != nullptr && u->generation.load() == id.generation() &&
         (u->state.load() & weft::rt::ult_state::kStateMask) == weft::rt::ult_state::kParked;
}

// ---------------------------------------------------------------------------
// Durations too large for the clock: "practically forever"
// ---------------------------------------------------------------------------

// Regression (issue 9 #6): on 15df0bc now + nanoseconds::max() overflowed
// to a deadline in the past, and hours::max() overflowed in the conversion
// to nanoseconds, so each of these sleeps returned at once.
TEST(HugeDurations, SleepForOnUltSleeps) {
  Watchdog wd(60s, TestName());
  auto* rt = new weft::Runtime(weft::Options{.workers = 2});  // leaked: its ULTs never return
  ASSERT_TRUE(rt->status().ok());
  struct Case {
    const char* what;
    void (*sleep)();
  };
  const Case cases[] = {
      {"nanoseconds::max()", [] { weft::this_ult::sleep_for(std::chrono::nanoseconds::max()); }},
      {"hours::max()", [] { weft::this_ult::sleep_for(std::chrono::hours::max()); }},
      {"seconds(INT64_MAX / 2)",
       [] { weft::this_ult::sleep_for(std::chrono::seconds(std::numeric_limits<int64_t>::max() / 2)); }},
      {"duration<double>(1e300)", [] { weft::this_ult::sleep_for(std::chrono::duration<double>(1e300)); }},
  };
  for (const Case& c : cases) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    weft::Ult u = rt->spawn([done, sleep = c.sleep] {
      sleep();
      done->store(true);
    });
    ASSERT_TRUE(u.status().ok());
    weft::UltId id = u.id();
    ASSERT_TRUE(u.detach().ok());
    ASSERT_TRUE(WaitUntil([&] { return done->load() || Parked(id); })) << c.what;
    EXPECT_FALSE(done->load()) << "sleep_for(" << c.what << ") returned at once";
    EXPECT_TRUE(Parked(id)) << c.what;
  }
}

// On a thread, sleep_for sleeps the thread in nanosleep.
TEST(HugeDurations, SleepForOnThreadSleeps) {
  Watchdog wd(60s, TestName());
  struct Case {
    const char* what;
    void (*sleep)();
  };
  const Case cases[] = {
      {"nanoseconds::max()", [] { weft::this_ult::sleep_for(std::chrono::nanoseconds::max()); }},
      {"hours::max()", [] { weft::this_ult::sleep_for(std::chrono::hours::max()); }},
  };
  for (const Case& c : cases) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    auto tid = std::make_shared<std::atomic<int>>(0);
    std::thread t([done, tid, sleep = c.sleep] {
      tid->store(Tid());
      sleep();
      done->store(true);
    });
    t.detach();  // it never returns
    ASSERT_TRUE(WaitUntil([&] { return done->load() || (tid->load() != 0 && BlockedSyscall(tid->load()) == SYS_nanosleep); }))
        << c.what;
    EXPECT_FALSE(done->load()) << "sleep_for(" << c.what << ") on a thread returned at once";
  }
}

// The other way: hugely negative durations do not wait.
TEST(HugeDurations, NegativeSleepReturns) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1});
  weft::this_ult::sleep_for(std::chrono::nanoseconds::min());
  weft::this_ult::sleep_for(std::chrono::hours::min());
  ASSERT_TRUE(rt.block_on([] {
                  weft::this_ult::sleep_for(std::chrono::nanoseconds::min());
                  weft::this_ult::sleep_for(std::chrono::hours::min());
                  weft::this_ult::sleep_for(std::chrono::duration<double>(-1e300));
                }).ok());
}

// The conversions themselves.
TEST(HugeDurations, SaturatingArithmetic) {
  using weft::detail::deadline_after;
  using weft::detail::kForeverNs;
  using weft::detail::saturating_ns;
  EXPECT_EQ(saturating_ns(std::chrono::hours::max()), std::chrono::nanoseconds::max());
  EXPECT_EQ(saturating_ns(std::chrono::hours::min()), std::chrono::nanoseconds::min());
  EXPECT_EQ(saturating_ns(std::chrono::hours(1)), std::chrono::nanoseconds(3600LL * 1000000000LL));
  EXPECT_EQ(saturating_ns(std::chrono::nanoseconds(-5)), std::chrono::nanoseconds(-5));
  EXPECT_EQ(saturating_ns(std::chrono::duration<double>(1e300)), std::chrono::nanoseconds::max());
  EXPECT_EQ(saturating_ns(std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())),
            std::chrono::nanoseconds::zero());
  EXPECT_EQ(saturating_ns(std::chrono::duration<int64_t, std::pico>(std::numeric_limits<int64_t>::max())),
            std::chrono::nanoseconds(std::numeric_limits<int64_t>::max() / 1000));
  EXPECT_EQ(deadline_after(1000, std::numeric_limits<int64_t>::max()), kForeverNs);
  EXPECT_EQ(deadline_after(1000, kForeverNs - 1000), kForeverNs);
  EXPECT_EQ(deadline_after(1000, kForeverNs - 1001), kForeverNs - 1);
  EXPECT_EQ(deadline_after(1000, -7), 1000);
  int64_t now = weft::detail::monotonic_now_ns();
  EXPECT_EQ(weft::detail::to_deadline(std::chrono::hours::max()), kForeverNs);
  EXPECT_EQ(weft::detail::to_deadline(std::chrono::steady_clock::time_point::max()), kForeverNs);
  // system_clock's max is ~235 years after now: far, and no overflow.
  EXPECT_GT(weft::detail::to_deadline(std::chrono::system_clock::time_point::max()),
            now + int64_t{200} * 365 * 24 * 3600 * 1000000000LL);
  EXPECT_EQ(weft::detail::to_deadline(std::chrono::time_point<std::chrono::steady_clock, std::chrono::hours>::max()),
            kForeverNs);
  // In the past: the deadline is "now" (do not wait).
  int64_t d1 = weft::detail::to_deadline(std::chrono::steady_clock::time_point::min());
  int64_t d2 = weft::detail::to_deadline(std::chrono::hours::min());
  int64_t d3 = weft::detail::to_deadline(std::chrono::system_clock::time_point::min());
  int64_t after = weft::detail::monotonic_now_ns();
  for (int64_t d : {d1, d2, d3}) {
    EXPECT_GE(d, now);
    EXPECT_LE(d, after);
  }
}

}  // namespace
