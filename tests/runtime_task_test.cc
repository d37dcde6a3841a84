// tests/runtime_task_test.cc — typed join handles, cancellation, task
// groups, timeout(), shutdown with a deadline (issue 14).
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/task_group.h>
#include <weft/weft.h>

namespace {

using namespace std::chrono_literals;

// --- typed handles -------------------------------------------------------------

TEST(JoinHandle, CarriesTheResultType) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::JoinHandle<int> a = rt.spawn([] { return 6 * 7; });
  absl::StatusOr<int> av = a.join();
  ASSERT_TRUE(av.ok()) << av.status();
  EXPECT_EQ(*av, 42);
  EXPECT_FALSE(a.joinable());
  // A move-only result moves out of the ULT's stack.
  auto b = rt.spawn([] { return std::make_unique<std::string>("moved"); });
  absl::StatusOr<std::unique_ptr<std::string>> bv = b.join();
  ASSERT_TRUE(bv.ok());
  EXPECT_EQ(**bv, "moved");
  // Status and StatusOr are not wrapped again.
  weft::JoinHandle<absl::Status> c = rt.spawn([] { return absl::NotFoundError("nope"); });
  absl::Status cs = c.join();
  EXPECT_TRUE(absl::IsNotFound(cs)) << cs;
  auto d = rt.spawn([]() -> absl::StatusOr<int> { return 5; });
  absl::StatusOr<int> dv = d.join();
  ASSERT_TRUE(dv.ok());
  EXPECT_EQ(*dv, 5);
  // A reference comes back as a reference_wrapper to the same object.
  static int target = 0;
  auto e = rt.spawn([]() -> int& { return target; });
  absl::StatusOr<std::reference_wrapper<int>> ev = e.join();
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(&ev->get(), &target);
  // Joining twice is an error, not a crash.
  EXPECT_TRUE(absl::IsFailedPrecondition(a.join().status()));
}

TEST(JoinHandle, BlockOnFlattensStatusAndTakesReferences) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  absl::Status s = rt.block_on([] { return absl::InternalError("mine"); });
  EXPECT_TRUE(absl::IsInternal(s)) << s;
  absl::Status v = rt.block_on([] {});
  EXPECT_TRUE(v.ok());
  absl::StatusOr<int> so = rt.block_on([]() -> absl::StatusOr<int> { return absl::AbortedError("x"); });
  EXPECT_TRUE(absl::IsAborted(so.status()));
  std::string str = "abc";
  absl::StatusOr<std::reference_wrapper<std::string>> r = rt.block_on([&]() -> std::string& { return str; });
  ASSERT_TRUE(r.ok());
  r->get() += "d";
  EXPECT_EQ(str, "abcd");
}

TEST(JoinHandle, ExceptionCrossesJoin) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  auto h = rt.spawn([]() -> int { throw std::out_of_range("index 7"); });
  try {
    (void)h.join();
    ADD_FAILURE() << "join did not rethrow";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 7");
  }
  EXPECT_FALSE(h.joinable());
  // The same through block_on, and for a void ULT.
  EXPECT_THROW((void)rt.block_on([] { throw std::runtime_error("void"); }), std::runtime_error);
}

TEST(JoinHandle, PthreadExitInsteadOfAValueIsAborted) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1});
  static int marker;
  auto h = rt.spawn([]() -> int {
    pthread_exit(&marker);
    return 1;
  });
  absl::StatusOr<int> r = h.join();
  EXPECT_TRUE(absl::IsAborted(r.status())) << r.status();
  EXPECT_EQ(h.exit_value(), &marker);
}

// The destructor of a joinable handle asks the ULT to stop and waits for it
// (std::jthread): a ULT sleeping for an hour ends at once, and a ULT that
// ignores the request is waited for.
TEST(JoinHandle, DestructorStopsAndJoins) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> saw_stop{false};
  auto t0 = std::chrono::steady_clock::now();
  {
    auto h = rt.spawn([&] {
      weft::this_ult::sleep_for(1h);
      saw_stop = weft::this_ult::stop_requested();
    });
  }
  EXPECT_TRUE(saw_stop.load());
  EXPECT_LT(MsSince(t0), 5000);
  std::atomic<bool> finished{false};
  {
    auto h = rt.spawn([&] {
      auto until = std::chrono::steady_clock::now() + 50ms;
      while (std::chrono::steady_clock::now() < until) weft::this_ult::yield();
      finished = true;
    });
  }
  EXPECT_TRUE(finished.load()) << "the destructor returned before the ULT ended";
}

// A handle destroyed while an exception unwinds its scope still joins
// (debug builds say so, naming the ULT); the ULT's own exception, which
// nobody will see, is printed and dropped rather than terminating.
TEST(JoinHandle, DestroyedDuringUnwinding) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  testing::internal::CaptureStderr();
  std::atomic<bool> ended{false};
  try {
    auto h = rt.spawn([&] {
      weft::this_ult::sleep_for(1h);
      ended = true;
      throw std::runtime_error("lost-on-purpose");
    }, weft::SpawnOptions{.name = "unwound"});
    throw std::logic_error("outer");
  } catch (const std::logic_error&) {
  }
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(ended.load());
  EXPECT_NE(err.find("lost-on-purpose"), std::string::npos) << err;
#if WEFT_DCHECK_ENABLED
  EXPECT_NE(err.find("during stack unwinding joins ULT"), std::string::npos) << err;
  EXPECT_NE(err.find("\"unwound\""), std::string::npos) << err;
#endif
}

// Outside unwinding, an exception nobody will see terminates the process.
TEST(JoinHandleDeathTest, LostExceptionTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::Runtime rt(weft::Options{.workers = 1});
        auto h = rt.spawn([] { throw std::runtime_error("nobody-joins"); });
      },
      "nobody will see it.*nobody-joins");
}

// --- cancellation ----------------------------------------------------------------

TEST(Cancel, WakesASleeperPromptly) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::vector<double> lat;
  for (int i = 0; i < 50; ++i) {
    std::atomic<int64_t> woke_ns{0};
    auto h = rt.spawn([&] {
      weft::this_ult::sleep_for(10s);
      woke_ns = weft::detail::monotonic_now_ns();
    });
    std::this_thread::sleep_for(1ms);  // let it park
    int64_t asked = weft::detail::monotonic_now_ns();
    EXPECT_TRUE(h.request_stop());
    EXPECT_FALSE(h.request_stop()) << "a second request is not the first";
    ASSERT_TRUE(h.join().ok());
    lat.push_back(static_cast<double>(woke_ns.load() - asked) / 1e6);
  }
  std::sort(lat.begin(), lat.end());
  EXPECT_LT(lat[lat.size() / 2], 1.0) << "median ms from request to wake-up";
}

TEST(Cancel, SleepAfterTheRequestReturnsAtOnce) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 1});
  absl::Status s = rt.block_on([] {
    auto h = weft::spawn([] {
      while (!weft::this_ult::stop_requested()) weft::this_ult::yield();
      auto t0 = std::chrono::steady_clock::now();
      weft::this_ult::sleep_for(10s);
      weft::this_ult::sleep_for(std::chrono::nanoseconds::max());  // forever: only the stop ends it
      return MsSince(t0);
    });
    (void)h.request_stop();
    absl::StatusOr<double> ms = h.join();
    EXPECT_TRUE(ms.ok());
    EXPECT_LT(*ms, 1000.0);
  });
  EXPECT_TRUE(s.ok());
}

// A join that a stop request ends returns Cancelled and leaves the handle
// joinable; the ULT it waited for is not disturbed.
TEST(Cancel, JoinIsCancellableAndStaysJoinable) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> release{false};
  std::atomic<int> phase{0};
  auto waiter = rt.spawn([&] {
    auto worker = weft::spawn([&] {
      while (!release.load()) weft::this_ult::sleep_for(1ms);
      return 9;
    });
    phase = 1;
    absl::StatusOr<int> first = worker.join();  // ended by our stop request
    EXPECT_TRUE(absl::IsCancelled(first.status())) << first.status();
    EXPECT_TRUE(worker.joinable());
    phase = 2;
    release = true;
    absl::StatusOr<int> second = worker.join_ignoring_stop();
    EXPECT_TRUE(second.ok());
    return second.ok() ? *second : -1;
  });
  while (phase.load() != 1) std::this_thread::sleep_for(100us);
  std::this_thread::sleep_for(2ms);
  (void)waiter.request_stop();
  absl::StatusOr<int> r = waiter.join();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 9);
}

// this_ult::stop_token() is a std::stop_token: std::stop_callback runs on
// the request, in the requester, also when made before the token existed.
TEST(Cancel, StopTokenAndCallbacks) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> callbacks{0};
  std::atomic<bool> registered{false};
  auto h = rt.spawn([&] {
    std::stop_token t = weft::this_ult::stop_token();
    EXPECT_TRUE(t.stop_possible());
    EXPECT_FALSE(t.stop_requested());
    std::stop_callback cb(t, [&] { callbacks++; });
    registered = true;
    while (!t.stop_requested()) weft::this_ult::sleep_for(10s);
    EXPECT_TRUE(weft::this_ult::stop_requested());
  });
  while (!registered.load()) std::this_thread::sleep_for(100us);
  (void)h.request_stop();
  ASSERT_TRUE(h.join().ok());
  EXPECT_EQ(callbacks.load(), 1);
  // Requested before the ULT asked for its token: the token is stopped.
  absl::Status s = rt.block_on([] {
    auto k = weft::spawn([] {
      while (!weft::this_ult::stop_requested()) weft::this_ult::yield();
      return weft::this_ult::stop_token().stop_requested();
    });
    (void)k.request_stop();
    absl::StatusOr<bool> r = k.join();
    EXPECT_TRUE(r.ok() && *r);
  });
  EXPECT_TRUE(s.ok());
  // Outside a ULT: never stoppable.
  EXPECT_FALSE(weft::this_ult::stop_token().stop_possible());
  EXPECT_FALSE(weft::this_ult::stop_requested());
}

// Mutex, Semaphore and CondVar waits given a stop token end with Cancelled
// (false for CondVar) when it is requested; in ULTs and on a thread.
TEST(Cancel, SyncWaitsWithAStopToken) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex mu;
  weft::Semaphore sem(0);
  weft::CondVar cv;
  bool never = false;
  mu.lock();  // held by this thread throughout
  std::stop_source src;
  std::atomic<int> ended{0};
  auto m = rt.spawn([&] {
    absl::Status s = mu.lock(src.get_token());
    EXPECT_TRUE(absl::IsCancelled(s)) << s;
    ended++;
  });
  auto p = rt.spawn([&] {
    absl::Status s = sem.acquire(src.get_token());
    EXPECT_TRUE(absl::IsCancelled(s)) << s;
    ended++;
  });
  weft::Mutex mu2;
  auto c = rt.spawn([&] {
    std::unique_lock<weft::Mutex> g(mu2);
    EXPECT_FALSE(cv.wait(g, src.get_token(), [&] { return never; }));
    EXPECT_TRUE(g.owns_lock());
    ended++;
  });
  std::thread th([&] {  // a foreign thread notices within a few ms
    std::unique_lock<weft::Mutex> g(mu2);
    EXPECT_FALSE(cv.wait(g, src.get_token(), [&] { return never; }));
    ended++;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(ended.load(), 0) << "a wait ended before the stop request";
  auto t0 = std::chrono::steady_clock::now();
  src.request_stop();
  ASSERT_TRUE(m.join().ok());
  ASSERT_TRUE(p.join().ok());
  ASSERT_TRUE(c.join().ok());
  th.join();
  EXPECT_EQ(ended.load(), 4);
  EXPECT_LT(MsSince(t0), 1000);
  mu.unlock();
  // Not requested: the waits succeed as usual.
  std::stop_source quiet;
  absl::Status s = rt.block_on([&] {
    EXPECT_TRUE(mu.lock(quiet.get_token()).ok());
    mu.unlock();
    sem.release();
    EXPECT_TRUE(sem.acquire(quiet.get_token()).ok());
  });
  EXPECT_TRUE(s.ok());
  // Requested before the call: Cancelled at once, even if free.
  EXPECT_TRUE(absl::IsCancelled(mu.lock(src.get_token())));
}

// --- task groups -------------------------------------------------------------------

TEST(TaskGroup, FirstFailureCancelsSiblings) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> stopped{0};
  absl::Status s = rt.block_on([&] {
    weft::TaskGroup g;
    for (int i = 0; i < 20; ++i) {
      EXPECT_TRUE(g.spawn([&] {
                     weft::this_ult::sleep_for(1h);
                     if (weft::this_ult::stop_requested()) stopped++;
                   }).ok());
    }
    EXPECT_TRUE(g.spawn([]() -> absl::Status {
                   weft::this_ult::sleep_for(2ms);
                   return absl::DataLossError("child 21");
                 }).ok());
    return g.wait();
  });
  EXPECT_TRUE(absl::IsDataLoss(s)) << s;
  EXPECT_EQ(stopped.load(), 20);
}

TEST(TaskGroup, ExceptionIsRethrownByWait) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  EXPECT_THROW((void)rt.block_on([] {
                 weft::TaskGroup g;
                 (void)g.spawn([] { throw std::logic_error("child"); });
                 (void)g.spawn([] { weft::this_ult::sleep_for(1h); });
                 return g.wait();
               }),
               std::logic_error);
}

TEST(TaskGroup, WithoutCancelOnFailureSiblingsFinish) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> done{0};
  absl::Status s = rt.block_on([&] {
    weft::TaskGroup g(weft::TaskGroupOptions{.cancel_on_failure = false});
    (void)g.spawn([] { return absl::UnknownError("first"); });
    for (int i = 0; i < 10; ++i) {
      (void)g.spawn([&] {
        weft::this_ult::sleep_for(5ms);
        if (!weft::this_ult::stop_requested()) done++;
      });
    }
    return g.wait();
  });
  EXPECT_TRUE(absl::IsUnknown(s)) << s;
  EXPECT_EQ(done.load(), 10);
}

// A stop request of the group's owner reaches the children; children that
// ended are gone from the group at once (a server's group does not keep
// finished connections).
TEST(TaskGroup, OwnerStopPropagatesAndEndedChildrenLeave) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<int> stopped{0};
  std::atomic<size_t> size_after_quick{999};
  std::atomic<bool> ready{false};
  auto owner = rt.spawn([&] {
    weft::TaskGroup g;
    for (int i = 0; i < 100; ++i) (void)g.spawn([] {});
    for (int i = 0; i < 100 && g.size() != 0; ++i) weft::this_ult::sleep_for(1ms);
    size_after_quick = g.size();
    for (int i = 0; i < 5; ++i) {
      (void)g.spawn([&] {
        weft::this_ult::sleep_for(1h);
        if (weft::this_ult::stop_requested()) stopped++;
      });
    }
    ready = true;
    return g.wait();
  });
  while (!ready.load()) std::this_thread::sleep_for(100us);
  std::this_thread::sleep_for(2ms);
  (void)owner.request_stop();
  absl::Status s = owner.join();
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(stopped.load(), 5);
  EXPECT_EQ(size_after_quick.load(), 0u);
}

// --- timeout -------------------------------------------------------------------------

TEST(Timeout, StopsTheFunctionAtTheDeadline) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  absl::Status s = rt.block_on([] {
    auto t0 = std::chrono::steady_clock::now();
    absl::StatusOr<int> r = weft::timeout(20ms, [] {
      weft::this_ult::sleep_for(1h);
      return 1;
    });
    double ms = MsSince(t0);
    EXPECT_TRUE(absl::IsDeadlineExceeded(r.status())) << r.status();
    EXPECT_GE(ms, 19.0);
    EXPECT_LT(ms, 2000.0);
    absl::StatusOr<int> quick = weft::timeout(10s, [] { return 7; });
    EXPECT_TRUE(quick.ok());
    EXPECT_EQ(quick.value_or(0), 7);
  });
  EXPECT_TRUE(s.ok()) << s;
}

// --- shutdown with a deadline ----------------------------------------------------------

// ULTs in cancellable waits end; ULTs in a plain Mutex::lock survive and are
// named; the runtime keeps working, and a later shutdown() completes.
TEST(ShutdownDeadline, StopsWhatItCanAndNamesTheRest) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::Mutex held;
  held.lock();
  std::atomic<int> sleepers_done{0};
  for (int i = 0; i < 1000; ++i) {
    (void)rt.spawn([&] {
                weft::this_ult::sleep_for(1h);
                sleepers_done++;
              }, weft::SpawnOptions{.name = "sleeper"})
        .detach();
  }
  for (int i = 0; i < 3; ++i) {
    (void)rt.spawn([&] {
                held.lock();
                held.unlock();
              }, weft::SpawnOptions{.name = "stuck-on-lock"})
        .detach();
  }
  std::this_thread::sleep_for(20ms);
  auto t0 = std::chrono::steady_clock::now();
  absl::Status s = rt.shutdown(100ms);
  double ms = MsSince(t0);
  EXPECT_TRUE(absl::IsDeadlineExceeded(s)) << s;
  EXPECT_GE(ms, 99.0);
  EXPECT_LT(ms, 1000.0);
  // The sleepers all end (on a loaded machine, or under TSan, some may
  // still be finishing at the deadline, and are then named too); the
  // survivors are exactly the three in Mutex::lock().
  std::vector<weft::UltInfo> alive;
  for (int i = 0; i < 1000; ++i) {
    alive = rt.live_ults();
    if (alive.size() <= 3) break;
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(alive.size(), 3u);
  for (const auto& u : alive) EXPECT_EQ(u.name, "stuck-on-lock");
  EXPECT_EQ(sleepers_done.load(), 1000);
  if (std::string(s.message()).rfind("3 ULTs", 0) == 0) {  // the usual case: only they were left
    EXPECT_NE(std::string(s.message()).find("stuck-on-lock"), std::string::npos) << s;
    EXPECT_EQ(std::string(s.message()).find("sleeper"), std::string::npos) << s;
  }
  held.unlock();
  EXPECT_TRUE(rt.shutdown(5s).ok());
  EXPECT_TRUE(rt.live_ults().empty());
}

// --- RwLock timed and Deadline::at ------------------------------------------------------

TEST(RwLockTimed, SharedTimedLockable) {
  Watchdog wd(60s, TestName());
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::RwLock l;
  absl::Status s = rt.block_on([&] {
    std::shared_lock<weft::RwLock> reader(l, 1s);  // compiles: SharedTimedLockable
    EXPECT_TRUE(reader.owns_lock());
    // A writer cannot get in while a reader holds it: it times out.
    auto w = weft::spawn([&] {
      auto t0 = std::chrono::steady_clock::now();
      bool got = l.try_lock_for(10ms);
      if (got) l.unlock();
      return std::make_pair(got, MsSince(t0));
    });
    auto wr = w.join();
    EXPECT_TRUE(wr.ok());
    EXPECT_FALSE(wr->first);
    EXPECT_GE(wr->second, 9.0);
    // A writer queued behind our read hold blocks new readers; when it
    // gives up, a reader queued behind it gets in.
    std::atomic<bool> writer_queued{false};
    auto w2 = weft::spawn([&] {
      writer_queued = true;
      bool got = l.try_lock_until(std::chrono::steady_clock::now() + 30ms);
      if (got) l.unlock();
      return got;
    });
    while (!writer_queued.load()) weft::this_ult::yield();
    weft::this_ult::sleep_for(2ms);
    auto r2 = weft::spawn([&] {
      bool got = l.try_lock_shared_for(5s);
      if (got) l.unlock_shared();
      return got;
    });
    absl::StatusOr<bool> r2v = r2.join();
    EXPECT_TRUE(r2v.ok() && *r2v) << "the reader behind a timed-out writer never got in";
    absl::StatusOr<bool> w2v = w2.join();
    EXPECT_TRUE(w2v.ok() && !*w2v);
  });
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_TRUE(l.try_lock());
  l.unlock();
}

}  // namespace
