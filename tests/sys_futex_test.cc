// Tests for sys/futex.h: wait/wake results, timeouts on both clocks, bitsets,
// shared futexes (also across processes), EINTR, errno never touched, and a
// ping-pong stress that would expose a lost wakeup.
//
// Handshakes are not timing-based: a test that needs a waiter to be asleep
// in the kernel before it wakes it reads /proc/self/task/<tid>/syscall, which
// shows the futex syscall and its address only while the thread is blocked in
// it (a running thread shows "running").
#include "sys/futex.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "sys/raw_syscall.h"

namespace weft::sys {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Calls `call` with errno set to a sentinel and checks that it is unchanged
// afterwards (nothing in weft reports through errno). Evaluates to the result.
#define NO_ERRNO(call)                                   \
  ([&] {                                                 \
    errno = 12345;                                       \
    auto result_ = (call);                               \
    EXPECT_EQ(errno, 12345) << "errno changed by " #call; \
    return result_;                                      \
  }())

timespec Ms(long ms) { return timespec{ms / 1000, (ms % 1000) * 1'000'000}; }

timespec Now(clockid_t clock) {
  timespec t;
  clock_gettime(clock, &t);
  return t;
}

timespec Add(timespec t, long ms) {
  t.tv_sec += ms / 1000;
  t.tv_nsec += (ms % 1000) * 1'000'000;
  if (t.tv_nsec >= 1'000'000'000) {
    t.tv_sec += 1;
    t.tv_nsec -= 1'000'000'000;
  } else if (t.tv_nsec < 0) {
    t.tv_sec -= 1;
    t.tv_nsec += 1'000'000'000;
  }
  return t;
}

bool NotBefore(timespec a, timespec b) {  // a >= b
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec >= b.tv_nsec);
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// True once the thread or process whose /proc "syscall" file is `path` is
// asleep in futex(2) on `word`; false if that does not happen within 10 s.
bool WaitUntilBlockedOn(const std::string& path, const void* word) {
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    FILE* f = fopen(path.c_str(), "r");
    if (f != nullptr) {
      long nr = -1;
      unsigned long a1 = 0;
      int n = fscanf(f, "%ld %lx", &nr, &a1);
      fclose(f);
      if (n == 2 && nr == SYS_futex && a1 == reinterpret_cast<uintptr_t>(word)) return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

// A thread that makes one wait call on `word` and records the result, the
// time it took and errno afterwards. If the call has not returned when the
// Waiter goes out of scope (a failed test), it is woken, so that a bug fails
// the test instead of hanging it.
class Waiter {
 public:
  template <class F>
  Waiter(const std::atomic<uint32_t>* word, F wait) : word_(word) {
    thread_ = std::thread([this, wait] {
      tid_.store(gettid());
      errno = 12345;
      auto t0 = Clock::now();
      int r = wait();
      elapsed_ms_ = MsSince(t0);
      errno_after_ = errno;
      result_.store(r);
      done_.store(true);
    });
  }
  ~Waiter() {
    while (!done_.load()) {
      futex_wake(word_, INT_MAX);
      futex_wake_shared(word_, INT_MAX);
      std::this_thread::sleep_for(milliseconds(1));
    }
    thread_.join();
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // True once the waiter sleeps in futex(2) on its word.
  bool Blocked() {
    while (tid_.load() == 0) std::this_thread::yield();
    return WaitUntilBlockedOn("/proc/self/task/" + std::to_string(tid_.load()) + "/syscall", word_);
  }
  // True once the wait call has returned (false after 10 s).
  bool Returned() {
    auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!done_.load()) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return true;
  }
  bool done() const { return done_.load(); }
  int tid() const { return tid_.load(); }
  int result() const { return result_.load(); }
  int errno_after() const { return errno_after_; }
  double elapsed_ms() const { return elapsed_ms_; }

 private:
  const std::atomic<uint32_t>* word_;
  std::atomic<int> tid_{0};
  std::atomic<bool> done_{false};
  std::atomic<int> result_{INT_MIN};
  int errno_after_ = 0;
  double elapsed_ms_ = 0;
  std::thread thread_;
};

// The outcome of one wait call that is expected to return on its own.
struct Outcome {
  bool returned;  // within 10 s
  int result;
  double ms;
  int errno_after;
};

template <class F>
Outcome Bounded(const std::atomic<uint32_t>* word, F wait) {
  Waiter w(word, wait);
  bool returned = w.Returned();
  return {returned, w.result(), w.elapsed_ms(), w.errno_after()};
}

// Runs a wait call that must return `want` by itself, and checks errno.
#define EXPECT_WAIT_RETURNS(word, call, want)                                 \
  ([&] {                                                                      \
    Outcome o_ = Bounded(word, [&] { return (call); });                       \
    EXPECT_TRUE(o_.returned) << #call " did not return within 10 s";          \
    EXPECT_EQ(o_.result, want) << #call;                                      \
    EXPECT_EQ(o_.errno_after, 12345) << "errno changed by " #call;            \
    return o_;                                                                \
  }())

// ---------------------------------------------------------------------------
// Immediate results.

// Every wait returns -EAGAIN at once when the word does not hold `expected`,
// whatever its timeout.
TEST(FutexWait, ReturnsEagainAtOnceWhenTheWordDiffers) {
  std::atomic<uint32_t> w{5};
  const timespec rel = Ms(1000);
  const timespec mono = Add(Now(CLOCK_MONOTONIC), 1000);
  const timespec real = Add(Now(CLOCK_REALTIME), 1000);
  double ms = 0;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait(&w, 4), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_for(&w, 4, nullptr), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_for(&w, 4, &rel), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 4, nullptr), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 4, &mono, FutexClock::kMonotonic), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 4, &real, FutexClock::kRealtime), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_bitset(&w, 4, &mono, 1), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_bitset(&w, 4, nullptr, kFutexBitsetAll), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_shared(&w, 4, nullptr), -EAGAIN).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_shared(&w, 4, &rel), -EAGAIN).ms;
  EXPECT_LT(ms, 500.0) << "the calls waited";
}

// Wakes with no waiters wake nobody and say so.
TEST(FutexWake, WithNoWaitersReturnsZero) {
  std::atomic<uint32_t> w{0};
  EXPECT_EQ(NO_ERRNO(futex_wake(&w, 1)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake(&w, INT_MAX)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, 1, 1)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, INT_MAX, kFutexBitsetAll)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake_shared(&w, 1)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake_shared(&w, INT_MAX)), 0);
}

// Errors come back as values: a bad timeout, a zero bitset and a misaligned
// word give -EINVAL, and errno is untouched.
TEST(FutexWait, InvalidArgumentsReturnEinval) {
  std::atomic<uint32_t> w{0};
  const timespec bad{0, 1'000'000'000};
  EXPECT_WAIT_RETURNS(&w, futex_wait_for(&w, 0, &bad), -EINVAL);
  EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &bad), -EINVAL);
  EXPECT_WAIT_RETURNS(&w, futex_wait_shared(&w, 0, &bad), -EINVAL);
  EXPECT_WAIT_RETURNS(&w, futex_wait_bitset(&w, 0, nullptr, 0), -EINVAL);
  EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, 1, 0)), -EINVAL);
  alignas(8) char buf[8] = {};
  auto* odd = reinterpret_cast<const std::atomic<uint32_t>*>(buf + 1);
  EXPECT_WAIT_RETURNS(odd, futex_wait(odd, 0), -EINVAL);
  EXPECT_EQ(NO_ERRNO(futex_wake(odd, 1)), -EINVAL);
}

// ---------------------------------------------------------------------------
// Waking.

// A waiter asleep in another thread is woken by futex_wake, which reports
// exactly one waiter woken; the wait returns 0 and leaves errno alone. Checked
// for every wait variant that a plain wake must reach.
TEST(FutexWake, WakesAWaiterInAnotherThread) {
  struct Case {
    const char* name;
    int (*wait)(std::atomic<uint32_t>*);
  };
  const Case cases[] = {
      {"futex_wait", [](std::atomic<uint32_t>* w) { return futex_wait(w, 0); }},
      {"futex_wait_for 10 s",
       [](std::atomic<uint32_t>* w) {
         timespec t = Ms(10'000);
         return futex_wait_for(w, 0, &t);
       }},
      {"futex_wait_until monotonic",
       [](std::atomic<uint32_t>* w) {
         timespec t = Add(Now(CLOCK_MONOTONIC), 10'000);
         return futex_wait_until(w, 0, &t, FutexClock::kMonotonic);
       }},
      {"futex_wait_until realtime",
       [](std::atomic<uint32_t>* w) {
         timespec t = Add(Now(CLOCK_REALTIME), 10'000);
         return futex_wait_until(w, 0, &t, FutexClock::kRealtime);
       }},
      {"futex_wait_bitset 0x4",
       [](std::atomic<uint32_t>* w) { return futex_wait_bitset(w, 0, nullptr, 0x4); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::atomic<uint32_t> w{0};
    Waiter waiter(&w, [&] { return c.wait(&w); });
    ASSERT_TRUE(waiter.Blocked());
    EXPECT_EQ(NO_ERRNO(futex_wake(&w, 1)), 1);
    ASSERT_TRUE(waiter.Returned());
    EXPECT_EQ(waiter.result(), 0);
    EXPECT_EQ(waiter.errno_after(), 12345);
  }
}

// futex_wake(count) wakes at most `count`: with 3 waiters asleep, wake(2)
// reports 2, exactly two waits return, the third still sleeps, and a second
// wake reports the one that was left.
TEST(FutexWake, WakesAtMostCount) {
  std::atomic<uint32_t> w{0};
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 3; ++i) waiters.push_back(std::make_unique<Waiter>(&w, [&] { return futex_wait(&w, 0); }));
  for (auto& x : waiters) ASSERT_TRUE(x->Blocked());

  EXPECT_EQ(NO_ERRNO(futex_wake(&w, 2)), 2);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  auto returned = [&] {
    int n = 0;
    for (auto& x : waiters) n += x->done();
    return n;
  };
  while (returned() < 2 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::microseconds(100));
  ASSERT_EQ(returned(), 2);
  for (auto& x : waiters) {
    if (x->done()) {
      EXPECT_EQ(x->result(), 0);
    } else {
      EXPECT_TRUE(x->Blocked()) << "the third waiter is no longer asleep";
    }
  }
  EXPECT_EQ(NO_ERRNO(futex_wake(&w, INT_MAX)), 1);
  for (auto& x : waiters) {
    ASSERT_TRUE(x->Returned());
    EXPECT_EQ(x->result(), 0);
    EXPECT_EQ(x->errno_after(), 12345);
  }
}

// A bitset waiter is woken only by a wake whose bitset overlaps its own.
TEST(FutexBitset, WakesOnlyOverlappingBitsets) {
  std::atomic<uint32_t> w{0};
  {
    Waiter waiter(&w, [&] { return futex_wait_bitset(&w, 0, nullptr, 0b01); });
    ASSERT_TRUE(waiter.Blocked());
    EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, INT_MAX, 0b10)), 0);
    EXPECT_TRUE(waiter.Blocked());
    EXPECT_FALSE(waiter.done());
    EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, INT_MAX, 0b01)), 1);
    ASSERT_TRUE(waiter.Returned());
    EXPECT_EQ(waiter.result(), 0);
  }
  {
    // A wake with bitset 0b11 overlaps 0b01 too.
    Waiter waiter(&w, [&] { return futex_wait_bitset(&w, 0, nullptr, 0b01); });
    ASSERT_TRUE(waiter.Blocked());
    EXPECT_EQ(NO_ERRNO(futex_wake_bitset(&w, INT_MAX, 0b11)), 1);
    ASSERT_TRUE(waiter.Returned());
    EXPECT_EQ(waiter.result(), 0);
  }
}

// ---------------------------------------------------------------------------
// Timeouts.

// A relative timeout of 20 ms: -ETIMEDOUT after at least 20 ms (and well
// before 200 ms); errno untouched.
TEST(FutexTimeout, WaitForRelativeTimeout) {
  std::atomic<uint32_t> w{0};
  const timespec rel = Ms(20);
  Outcome o = EXPECT_WAIT_RETURNS(&w, futex_wait_for(&w, 0, &rel), -ETIMEDOUT);
  EXPECT_GE(o.ms, 20.0);
  EXPECT_LT(o.ms, 200.0);
  o = EXPECT_WAIT_RETURNS(&w, futex_wait_shared(&w, 0, &rel), -ETIMEDOUT);
  EXPECT_GE(o.ms, 20.0);
  EXPECT_LT(o.ms, 200.0);
}

// Absolute deadlines 20 ms ahead on CLOCK_MONOTONIC and on CLOCK_REALTIME:
// -ETIMEDOUT once that clock has passed the deadline, well before 200 ms.
TEST(FutexTimeout, WaitUntilAbsoluteDeadlineOnEitherClock) {
  std::atomic<uint32_t> w{0};
  struct Case {
    FutexClock clock;
    clockid_t id;
    const char* name;
  };
  for (Case c : {Case{FutexClock::kMonotonic, CLOCK_MONOTONIC, "monotonic"},
                 Case{FutexClock::kRealtime, CLOCK_REALTIME, "realtime"}}) {
    SCOPED_TRACE(c.name);
    timespec deadline = Add(Now(c.id), 20);
    Outcome o = EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &deadline, c.clock), -ETIMEDOUT);
    EXPECT_TRUE(NotBefore(Now(c.id), deadline)) << "returned before the deadline";
    EXPECT_LT(o.ms, 200.0);
    deadline = Add(Now(c.id), 20);
    o = EXPECT_WAIT_RETURNS(&w, futex_wait_bitset(&w, 0, &deadline, 0b1, c.clock), -ETIMEDOUT);
    EXPECT_TRUE(NotBefore(Now(c.id), deadline)) << "returned before the deadline";
    EXPECT_LT(o.ms, 200.0);
  }
}

// A deadline already in the past (or a zero relative timeout) times out at
// once.
TEST(FutexTimeout, PastDeadlineTimesOutAtOnce) {
  std::atomic<uint32_t> w{0};
  const timespec zero{0, 0};
  const timespec mono_past = Add(Now(CLOCK_MONOTONIC), -1000);
  const timespec real_past = Add(Now(CLOCK_REALTIME), -1000);
  double ms = 0;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_for(&w, 0, &zero), -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_shared(&w, 0, &zero), -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &mono_past, FutexClock::kMonotonic),
                            -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &real_past, FutexClock::kRealtime),
                            -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &zero, FutexClock::kMonotonic),
                            -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_until(&w, 0, &zero, FutexClock::kRealtime),
                            -ETIMEDOUT).ms;
  ms += EXPECT_WAIT_RETURNS(&w, futex_wait_bitset(&w, 0, &mono_past, 1), -ETIMEDOUT).ms;
  EXPECT_LT(ms, 100.0) << "past deadlines waited";
}

// ---------------------------------------------------------------------------
// Shared futexes.

// futex_wait_shared is woken by futex_wake_shared. It really is a shared
// futex: a private wake on the same word does not reach it (which is why a
// word the kernel wakes with a shared wake needs the shared wait).
TEST(FutexShared, WaitAndWakeBetweenThreads) {
  std::atomic<uint32_t> w{0};
  Waiter waiter(&w, [&] { return futex_wait_shared(&w, 0, nullptr); });
  ASSERT_TRUE(waiter.Blocked());
  EXPECT_EQ(NO_ERRNO(futex_wake(&w, INT_MAX)), 0);
  EXPECT_FALSE(waiter.done());
  EXPECT_EQ(NO_ERRNO(futex_wake_shared(&w, INT_MAX)), 1);
  ASSERT_TRUE(waiter.Returned());
  EXPECT_EQ(waiter.result(), 0);
  EXPECT_EQ(waiter.errno_after(), 12345);

  // And the other way round: a shared wake does not reach a private waiter.
  Waiter priv(&w, [&] { return futex_wait(&w, 0); });
  ASSERT_TRUE(priv.Blocked());
  EXPECT_EQ(NO_ERRNO(futex_wake_shared(&w, INT_MAX)), 0);
  EXPECT_EQ(NO_ERRNO(futex_wake(&w, INT_MAX)), 1);
  ASSERT_TRUE(priv.Returned());
}

// A shared futex in MAP_SHARED memory wakes a waiter in another process.
TEST(FutexShared, WakesAWaiterInAnotherProcess) {
  void* mem = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* w = new (mem) std::atomic<uint32_t>(0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    timespec t = Ms(10'000);
    int r = futex_wait_shared(w, 0, &t);
    _exit(r == 0 && w->load() == 1 ? 0 : 10 + (r == -ETIMEDOUT));
  }
  EXPECT_TRUE(WaitUntilBlockedOn("/proc/" + std::to_string(pid) + "/syscall", w));
  w->store(1);
  EXPECT_EQ(NO_ERRNO(futex_wake_shared(w, INT_MAX)), 1);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  munmap(mem, 4096);
}

// ---------------------------------------------------------------------------
// Signals.

void Nothing(int) {}

// A wait interrupted by a signal whose handler ran (no SA_RESTART) returns
// -EINTR, with and without a timeout; errno untouched.
TEST(FutexSignal, InterruptedWaitReturnsEintr) {
  struct sigaction sa {}, old {};
  sa.sa_handler = &Nothing;
  sa.sa_flags = 0;  // no SA_RESTART
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGUSR1, &sa, &old), 0);
  std::atomic<uint32_t> w{0};
  for (bool timed : {false, true}) {
    SCOPED_TRACE(timed ? "futex_wait_for 10 s" : "futex_wait");
    Waiter waiter(&w, [&] {
      timespec t = Ms(10'000);
      return timed ? futex_wait_for(&w, 0, &t) : futex_wait(&w, 0);
    });
    ASSERT_TRUE(waiter.Blocked());
    ASSERT_EQ(tgkill(getpid(), waiter.tid(), SIGUSR1), 0);
    ASSERT_TRUE(waiter.Returned());
    EXPECT_EQ(waiter.result(), -EINTR);
    EXPECT_EQ(waiter.errno_after(), 12345);
  }
  sigaction(SIGUSR1, &old, nullptr);
}

// ---------------------------------------------------------------------------
// Stress.

// Two threads hand a turn back and forth through one futex word 100,000
// times. Every wait has a 1 s timeout, so a lost wakeup shows up as a
// timeout (and the test ends) instead of a hang; there must be none.
TEST(FutexStress, PingPongHasNoLostWakeups) {
  constexpr int kRounds = 100'000;
  std::atomic<uint32_t> turn{0};
  std::atomic<int> timeouts{0}, unexpected{0}, sleeps{0};
  auto play = [&](uint32_t me, uint32_t other) {
    for (int i = 0; i < kRounds; ++i) {
      while (turn.load(std::memory_order_acquire) != me) {
        timespec t = Ms(1000);
        int r = futex_wait_for(&turn, other, &t);
        if (r == 0) {
          sleeps.fetch_add(1, std::memory_order_relaxed);
        } else if (r == -ETIMEDOUT) {
          if (timeouts.fetch_add(1) >= 3) return;  // give up: already a failure
        } else if (r != -EAGAIN) {
          unexpected.fetch_add(1);
        }
      }
      turn.store(other, std::memory_order_release);
      futex_wake(&turn, 1);
    }
  };
  auto t0 = Clock::now();
  std::thread a(play, 0, 1), b(play, 1, 0);
  a.join();
  b.join();
  printf("  %d round trips in %.0f ms, %d waits slept in the kernel\n", kRounds, MsSince(t0),
         sleeps.load());
  EXPECT_EQ(timeouts.load(), 0) << "lost wakeups";
  EXPECT_EQ(unexpected.load(), 0);
}

}  // namespace
}  // namespace weft::sys
