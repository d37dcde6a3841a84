// tests/runtime_core_test.cc — the core contract of weft/runtime.h: ids and
// the join/detach protocol, block_on, yield, errno and exception state
// across migrations, Pin, bound ULTs, UltLocal, sleep_for, SpawnOptions and
// stats.
//
// Every wait is bounded: a Watchdog aborts the process with a message if a
// test hangs, so a lost wake-up fails instead of blocking the suite.
// White-box checks (the descriptor a handle names, its join state) include
// runtime/scheduler.h; everything else goes through the public API.
#include <sched.h>
#include <malloc.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/sanitizers.h"
#include "tests/test_util.h"
#include "tests/watchdog.h"
#include <weft/weft.h>

#include "runtime/scheduler.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;



// errno through opaque calls: `errno` is *__errno_location(), which glibc
// declares const, so the compiler may keep its address across a yield. The
// test must read and write the errno of the KLT it runs on *now*.
__attribute__((noipa)) int GetErrno() { return errno; }
__attribute__((noipa)) void SetErrno(int v) { errno = v; }

void SpinFor(std::chrono::microseconds d) {
  auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}


std::set<int> PoolTids(const weft::Runtime& rt) {
  std::set<int> s;
  for (const auto& w : rt.stats().workers) s.insert(w.tid);
  return s;
}

// Runs `round` (which spawns ULTs, joins them and counts kernel-thread
// changes in *migrations) until at least one migration was seen, at most
// 20 times: migrations depend on timing (a worker must be idle to steal),
// and a property checked across migrations shows nothing without one.
// Returns the number of rounds run.
template <class Round>
int RoundsUntilMigrated(std::atomic<int>* migrations, Round round) {
  int rounds = 0;
  while (rounds < 20 && migrations->load() == 0) {
    round();
    ++rounds;
    if (::testing::Test::HasFatalFailure()) break;
  }
  return rounds;
}

// Whether someone is registered as joining the ULT `id` (white-box: the
// descriptor's join state, read under its join lock).
bool HasJoiner(weft::UltId id) {
  weft::rt::UltDesc* d = weft::rt::ult_table::lookup(id.value());
  if (d == nullptr) return false;
  d->join_lock.lock();
  bool j = d->joiner != nullptr && d->generation.load() == id.generation();
  d->join_lock.unlock();
  return j;
}

// ---------------------------------------------------------------------------
// Ids and the join/detach protocol
// ---------------------------------------------------------------------------

// this_ult::id() names the calling ULT and is invalid outside any ULT; the
// handle's id equals the id seen inside.
TEST(Ids, ValidInsideInvalidOutside) {
  Watchdog wd(30s, "Ids.ValidInsideInvalidOutside");
  EXPECT_FALSE(weft::this_ult::id().valid());
  EXPECT_FALSE(weft::this_ult::in_ult());
  EXPECT_EQ(weft::this_ult::id().ToString(), "none");
  weft::Runtime rt(weft::Options{.workers = 2});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  std::atomic<uint64_t> inside{0};
  std::atomic<bool> in_ult{false};
  weft::Ult u = rt.spawn([&] {
    inside = weft::this_ult::id().value();
    in_ult = weft::this_ult::in_ult();
  });
  ASSERT_TRUE(u.status().ok());
  weft::UltId id = u.id();
  EXPECT_TRUE(id.valid());
  EXPECT_TRUE(u.joinable());
  EXPECT_EQ(id.ToString(), std::to_string(id.index()) + "." + std::to_string(id.generation()));
  ASSERT_TRUE(u.join().ok());
  EXPECT_EQ(inside.load(), id.value());
  EXPECT_TRUE(in_ult.load());
  EXPECT_FALSE(u.joinable());
  EXPECT_FALSE(u.id().valid());
  EXPECT_FALSE(weft::this_ult::id().valid());
}

// Ids of ULTs that are alive at the same time are distinct.
TEST(Ids, DistinctWhileLive) {
  Watchdog wd(60s, "Ids.DistinctWhileLive");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kN = 2000;
  std::vector<std::atomic<uint64_t>> seen(kN);
  std::atomic<int> started{0};
  std::atomic<bool> release{false};
  std::vector<weft::Ult> us;
  for (int i = 0; i < kN; ++i) {
    us.push_back(rt.spawn([&, i] {
      seen[i] = weft::this_ult::id().value();
      started.fetch_add(1);
      while (!release.load()) weft::this_ult::sleep_for(1ms);
    }));
    ASSERT_TRUE(us.back().status().ok());
  }
  ASSERT_TRUE(WaitUntil([&] { return started.load() == kN; }, 30000ms));
  std::set<uint64_t> distinct;
  for (int i = 0; i < kN; ++i) {
    EXPECT_EQ(seen[i].load(), us[i].id().value()) << i;
    distinct.insert(seen[i].load());
  }
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kN));
  release = true;
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
}

// A forged id — an index no descriptor has, generation 0, or the index of a
// live ULT with a wrong generation — is NotFound for join and detach, and
// leaves the live ULT alone.
TEST(Ids, ForgedIdIsNotFound) {
  Watchdog wd(30s, "Ids.ForgedIdIsNotFound");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
  weft::Ult u = rt.spawn([&] {
    while (!release.load()) weft::this_ult::sleep_for(1ms);
    finished = true;
  });
  ASSERT_TRUE(u.status().ok());
  weft::UltId id = u.id();
  const weft::UltId forged[] = {
      weft::UltId::FromValue((uint64_t{1} << 32) | 0xFFFFFFF0u),               // huge index
      weft::UltId::FromValue((uint64_t{7} << 32) | 0x00FFFFFFu),               // last table slot
      weft::UltId::FromValue(uint64_t{id.index()}),                             // generation 0
      weft::UltId::FromValue((uint64_t{id.generation() + 5} << 32) | id.index()),  // wrong generation
      weft::UltId::FromValue((uint64_t{id.generation() - 1 == 0 ? 0xFFFFFFFFu : id.generation() - 1} << 32) |
                             id.index()),
      weft::UltId::FromValue(~uint64_t{0}),
  };
  for (weft::UltId f : forged) {
    absl::Status j = weft::detail::join_id(f);
    EXPECT_TRUE(absl::IsNotFound(j)) << f.ToString() << ": " << j;
    absl::Status d = weft::rt::detach_ult(f);
    EXPECT_TRUE(absl::IsNotFound(d)) << f.ToString() << ": " << d;
    // Also from inside a ULT.
    absl::Status r = rt.block_on([f] { return weft::detail::join_id(f); });
    EXPECT_TRUE(absl::IsNotFound(r)) << f.ToString() << ": " << r;
  }
  EXPECT_FALSE(finished.load());
  release = true;
  EXPECT_TRUE(u.join().ok());
  EXPECT_TRUE(finished.load());
}

// After a join the id is stale: joining or detaching it again is NotFound,
// also once its descriptor was reused by a new ULT (which is not affected);
// the emptied handle's second join is FailedPrecondition.
TEST(Ids, StaleAfterJoin) {
  Watchdog wd(30s, "Ids.StaleAfterJoin");
  weft::Runtime rt(weft::Options{.workers = 2});
  for (int from_ult = 0; from_ult < 2; ++from_ult) {
    auto body = [&] {
      weft::Ult u = rt.spawn([] {});
      ASSERT_TRUE(u.status().ok());
      weft::UltId old = u.id();
      ASSERT_TRUE(u.join().ok());
      EXPECT_TRUE(absl::IsFailedPrecondition(u.join()));
      EXPECT_TRUE(absl::IsFailedPrecondition(u.detach()));
      EXPECT_TRUE(absl::IsNotFound(weft::detail::join_id(old)));
      EXPECT_TRUE(absl::IsNotFound(weft::rt::detach_ult(old)));
      // Reuse the descriptor (recycled LIFO; try a few spawns).
      std::atomic<bool> release{false};
      std::vector<weft::Ult> others;
      bool reused = false;
      for (int i = 0; i < 200 && !reused; ++i) {
        others.push_back(rt.spawn([&] {
          while (!release.load()) weft::this_ult::sleep_for(500us);
        }));
        reused = others.back().id().index() == old.index();
      }
      ASSERT_TRUE(reused) << "descriptor " << old.index() << " was never reused";
      EXPECT_NE(others.back().id(), old);
      EXPECT_TRUE(absl::IsNotFound(weft::detail::join_id(old)));
      EXPECT_TRUE(absl::IsNotFound(weft::rt::detach_ult(old)));
      release = true;
      for (auto& o : others) EXPECT_TRUE(o.join().ok());
    };
    if (from_ult) {
      ASSERT_TRUE(rt.block_on(body).ok());
    } else {
      body();
    }
  }
}

// A descriptor reused 2^32 times must not give a new ULT a stored id. The
// test hook is white-box: it sets the descriptor's generation to the last
// value before the 32-bit wrap (as if 2^32 - g ULTs had used the slot since
// the stored id's), then spawns on the same worker, whose cache hands the
// same descriptor back (LIFO), until the generation comes round.
// Regression (issue 9 #11): on 15df0bc the generation wrapped to 1 and
// counted up again, so a spawn got exactly the stored id: "a stale id is
// detected" failed, and join/detach of the stored id acted on the new ULT.
TEST(Ids, StaleIdNeverNamesALaterUlt) {
  Watchdog wd(60s, "Ids.StaleIdNeverNamesALaterUlt");
  weft::Runtime rt(weft::Options{.workers = 1});
  uint64_t unmapped0 = rt.stats().stacks_unmapped;
  ASSERT_TRUE(rt.block_on([&] {
                  weft::Ult a = weft::spawn([] {});
                  weft::UltId stored = a.id();
                  ASSERT_TRUE(a.join().ok());
                  weft::rt::UltDesc* d = weft::rt::ult_table::lookup(stored.value());
                  ASSERT_NE(d, nullptr);
                  d->join_lock.lock();
                  d->generation.store(0xFFFFFFFFu);  // the hook: just before the wrap
                  d->join_lock.unlock();
                  int collisions = 0, same_slot = 0;
                  for (uint64_t i = 0; i <= uint64_t{stored.generation()} + 2; ++i) {
                    std::atomic<bool> go{false};
                    weft::Ult c = weft::spawn([&go] {
                      while (!go.load()) weft::this_ult::yield();
                    });
                    ASSERT_TRUE(c.status().ok());
                    if (c.id() == stored) ++collisions;  // the stored id names a live ULT
                    bool same = c.id().index() == stored.index();
                    same_slot += same;
                    go = true;
                    ASSERT_TRUE(c.join().ok());
                    if (!same) break;  // the descriptor was retired
                  }
                  EXPECT_EQ(collisions, 0) << "a new ULT got the stored id " << stored.ToString();
                  EXPECT_EQ(same_slot, 1) << "the descriptor was reused after its generation ran out";
                  EXPECT_EQ(d->generation.load(), 0u) << "not retired";
                  EXPECT_TRUE(absl::IsNotFound(weft::detail::join_id(stored)));
                  // Never handed out again.
                  std::vector<weft::Ult> more;
                  std::atomic<bool> go{false};
                  for (int i = 0; i < 100; ++i) more.push_back(weft::spawn([&go] {
                    while (!go.load()) weft::this_ult::yield();
                  }));
                  for (auto& m : more) EXPECT_NE(m.id().index(), stored.index());
                  go = true;
                  for (auto& m : more) EXPECT_TRUE(m.join().ok());
                }).ok());
  EXPECT_GE(rt.stats().stacks_unmapped, unmapped0 + 1) << "the retired descriptor's stack was not unmapped";
}

// A ULT joining itself gets FailedPrecondition (by this_ult::id() and by
// the id its spawner passed it), and neither join nor detach of its own id
// hangs or breaks it.
TEST(Ids, JoinSelfIsFailedPrecondition) {
  Watchdog wd(30s, "Ids.JoinSelfIsFailedPrecondition");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<uint64_t> my_id{0};
  absl::Status by_this_id, by_handle_id;
  weft::Ult u = rt.spawn([&] {
    by_this_id = weft::detail::join_id(weft::this_ult::id());
    while (my_id.load() == 0) weft::this_ult::yield();
    by_handle_id = weft::detail::join_id(weft::UltId::FromValue(my_id.load()));
  });
  ASSERT_TRUE(u.status().ok());
  my_id = u.id().value();
  ASSERT_TRUE(u.join().ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(by_this_id)) << by_this_id;
  EXPECT_TRUE(absl::IsFailedPrecondition(by_handle_id)) << by_handle_id;
}

// Joining a detached ULT is an error: FailedPrecondition while it runs,
// NotFound once it has exited and been recycled.
TEST(Ids, JoinDetachedIsError) {
  Watchdog wd(30s, "Ids.JoinDetachedIsError");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> release{false};
  std::atomic<bool> finished{false};
  weft::Ult u = rt.spawn([&] {
    while (!release.load()) weft::this_ult::sleep_for(500us);
    finished = true;
  });
  weft::UltId id = u.id();
  ASSERT_TRUE(u.detach().ok());
  EXPECT_FALSE(u.joinable());
  EXPECT_TRUE(absl::IsFailedPrecondition(u.join()));
  absl::Status j = weft::detail::join_id(id);
  EXPECT_TRUE(absl::IsFailedPrecondition(j)) << j;
  absl::Status d = weft::rt::detach_ult(id);
  EXPECT_TRUE(absl::IsFailedPrecondition(d)) << d;
  absl::Status in_ult = rt.block_on([id] { return weft::detail::join_id(id); });
  EXPECT_TRUE(absl::IsFailedPrecondition(in_ult)) << in_ult;
  release = true;
  ASSERT_TRUE(WaitUntil([&] { return absl::IsNotFound(weft::detail::join_id(id)); }));
  EXPECT_TRUE(finished.load());
}

// While one caller joins a ULT, a second join (foreign or from a ULT) and a
// detach get FailedPrecondition; the first join still completes.
TEST(Ids, SecondJoinerIsFailedPrecondition) {
  Watchdog wd(30s, "Ids.SecondJoinerIsFailedPrecondition");
  weft::Runtime rt(weft::Options{.workers = 2});
  for (int first_in_ult = 0; first_in_ult < 2; ++first_in_ult) {
    std::atomic<bool> release{false};
    weft::Ult u = rt.spawn([&] {
      while (!release.load()) weft::this_ult::sleep_for(500us);
    });
    weft::UltId id = u.id();
    absl::Status first = absl::UnknownError("not run");
    std::thread j1;
    weft::Ult j1u;
    if (first_in_ult) {
      j1u = rt.spawn([&] { first = u.join(); });
    } else {
      j1 = std::thread([&] { first = u.join(); });
    }
    ASSERT_TRUE(WaitUntil([&] { return HasJoiner(id); }));
    absl::Status second = weft::detail::join_id(id);
    EXPECT_TRUE(absl::IsFailedPrecondition(second)) << second;
    absl::Status second_ult = rt.block_on([id] { return weft::detail::join_id(id); });
    EXPECT_TRUE(absl::IsFailedPrecondition(second_ult)) << second_ult;
    absl::Status det = weft::rt::detach_ult(id);
    EXPECT_TRUE(absl::IsFailedPrecondition(det)) << det;
    release = true;
    if (first_in_ult) {
      ASSERT_TRUE(j1u.join().ok());
    } else {
      j1.join();
    }
    EXPECT_TRUE(first.ok()) << first;
    EXPECT_TRUE(absl::IsNotFound(weft::detail::join_id(id)));
  }
}

// An empty handle (default, moved-from, already joined or detached) joins
// and detaches with FailedPrecondition.
TEST(Ids, EmptyHandleIsFailedPrecondition) {
  weft::Ult empty;
  EXPECT_FALSE(empty.joinable());
  EXPECT_TRUE(empty.status().ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(empty.join()));
  EXPECT_TRUE(absl::IsFailedPrecondition(empty.detach()));
  weft::Runtime rt(weft::Options{.workers = 1});
  weft::Ult a = rt.spawn([] {});
  weft::Ult b = std::move(a);
  EXPECT_FALSE(a.joinable());  // NOLINT(bugprone-use-after-move): moved-from is empty
  EXPECT_TRUE(a.status().ok()) << "moved-from handle: " << a.status();
  EXPECT_TRUE(absl::IsFailedPrecondition(a.join())) << a.join();
  EXPECT_TRUE(b.join().ok());
  weft::Ult d0 = rt.spawn([] {});
  weft::Ult d1;
  d1 = std::move(d0);
  EXPECT_FALSE(d0.joinable());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(absl::IsFailedPrecondition(d0.join()));
  EXPECT_TRUE(d1.join().ok());
  weft::Ult c = rt.spawn([] {});
  EXPECT_TRUE(c.detach().ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(c.detach()));
  EXPECT_TRUE(absl::IsFailedPrecondition(c.join()));
}

// Spawning on a runtime that was shut down yields a handle carrying the
// error; join and detach return it. weft::spawn outside a ULT fails too.
TEST(Ids, SpawnAfterShutdownCarriesError) {
  weft::Runtime rt(weft::Options{.workers = 1});
  std::atomic<int> ran{0};
  ASSERT_TRUE(rt.shutdown().ok());
  EXPECT_TRUE(rt.shutdown().ok());  // idempotent
  weft::Ult u = rt.spawn([&] { ran++; });
  EXPECT_FALSE(u.status().ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(u.status())) << u.status();
  EXPECT_FALSE(u.joinable());
  EXPECT_EQ(u.join(), u.status());
  EXPECT_EQ(u.detach(), u.status());
  auto r = rt.block_on([] { return 1; });
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(rt.set_concurrency(1)));
  weft::Ult v = weft::spawn([&] { ran++; });
  EXPECT_TRUE(absl::IsFailedPrecondition(v.status())) << v.status();
  EXPECT_EQ(v.join(), v.status());
  EXPECT_EQ(ran.load(), 0);
}

// ---------------------------------------------------------------------------
// shutdown
// ---------------------------------------------------------------------------

// The scheduler of the calling ULT (white-box), to see that shutdown() has
// begun waiting for the last ULTs.
weft::rt::Scheduler* MySched() { return weft::rt::current_ult()->sched; }

// A ULT that shutdown() is waiting for calls set_concurrency(): it returns
// promptly (here it still works: ULTs are running), and so does a foreign
// thread's set_concurrency() meanwhile; then shutdown() completes.
// Regression (issue 9 #3): on 15df0bc shutdown held concurrency_lock while
// waiting, so the ULT's set_concurrency blocked forever and shutdown waited
// forever for the ULT (the watchdog fired).
TEST(Shutdown, SetConcurrencyWhileShutdownWaits) {
  Watchdog wd(30s, "Shutdown.SetConcurrencyWhileShutdownWaits");
  weft::Runtime rt(weft::Options{.workers = 2, .max_workers = 4});
  std::atomic<bool> waiting{false}, foreign_done{false};
  absl::Status from_ult = absl::UnknownError("not run"), from_ult2 = absl::UnknownError("not run");
  absl::Status from_thread = absl::UnknownError("not run");
  weft::Ult u = rt.spawn([&] {
    weft::rt::Scheduler* s = MySched();
    ASSERT_TRUE(WaitUntil([&] { return s->shutting_down.load(); })) << "shutdown() never began";
    waiting = true;
    from_ult = rt.set_concurrency(1);
    from_ult2 = rt.set_concurrency(3);
    // A foreign thread's set_concurrency returns while we keep shutdown waiting.
    EXPECT_TRUE(WaitUntil([&] { return foreign_done.load(); })) << "set_concurrency on a foreign thread hung";
  });
  ASSERT_TRUE(u.detach().ok());
  std::thread foreign([&] {
    while (!waiting.load()) std::this_thread::sleep_for(100us);
    from_thread = rt.set_concurrency(2);
    foreign_done = true;
  });
  EXPECT_TRUE(rt.shutdown().ok());
  foreign.join();
  EXPECT_TRUE(from_ult.ok()) << from_ult;
  EXPECT_TRUE(from_ult2.ok()) << from_ult2;
  EXPECT_TRUE(from_thread.ok()) << from_thread;
  EXPECT_TRUE(absl::IsFailedPrecondition(rt.set_concurrency(1)));  // stopped now
}

// shutdown() from a ULT of the runtime fails at once, also from inside a
// weft::blocking() region of that ULT (where current_ult() is null) and
// from a bound ULT. Regression (issue 9 #3): on 15df0bc the call inside a
// region waited for its own ULT forever (the watchdog fired).
TEST(Shutdown, FromOwnUltFailsAlsoInBlockingRegion) {
  Watchdog wd(30s, "Shutdown.FromOwnUltFailsAlsoInBlockingRegion");
  weft::Runtime rt(weft::Options{.workers = 2});
  absl::Status direct, in_region, bound, bound_region;
  ASSERT_TRUE(rt.block_on([&] {
                  direct = rt.shutdown();
                  in_region = weft::blocking([&] { return rt.shutdown(); });
                }).ok());
  ASSERT_TRUE(rt.spawn(
                    [&] {
                      bound = rt.shutdown();
                      bound_region = weft::blocking([&] { return rt.shutdown(); });
                    },
                    weft::SpawnOptions{.bound = true})
                  .join()
                  .ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(direct)) << direct;
  EXPECT_TRUE(absl::IsFailedPrecondition(in_region)) << in_region;
  EXPECT_TRUE(absl::IsFailedPrecondition(bound)) << bound;
  EXPECT_TRUE(absl::IsFailedPrecondition(bound_region)) << bound_region;
  // The runtime still works, and shuts down from a foreign thread.
  EXPECT_EQ(*rt.block_on([] { return 5; }), 5);
  EXPECT_TRUE(rt.shutdown().ok());
}

// Two foreign threads shut down at once: both return OK, after the last ULT.
TEST(Shutdown, ConcurrentCallers) {
  Watchdog wd(30s, "Shutdown.ConcurrentCallers");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> release{false}, exited{false};
  weft::Ult u = rt.spawn([&] {
    while (!release.load()) weft::this_ult::sleep_for(100us);
    exited = true;
  });
  ASSERT_TRUE(u.detach().ok());
  absl::Status a, b;
  std::atomic<bool> exited_before_a{false}, exited_before_b{false};
  std::thread ta([&] {
    a = rt.shutdown();
    exited_before_a = exited.load();
  });
  std::thread tb([&] {
    b = rt.shutdown();
    exited_before_b = exited.load();
  });
  std::this_thread::sleep_for(5ms);
  release = true;
  ta.join();
  tb.join();
  EXPECT_TRUE(a.ok()) << a;
  EXPECT_TRUE(b.ok()) << b;
  EXPECT_TRUE(exited_before_a.load());
  EXPECT_TRUE(exited_before_b.load());
}

// ---------------------------------------------------------------------------
// block_on
// ---------------------------------------------------------------------------

// block_on returns fn's value (also move-only ones) and OK for void.
TEST(BlockOn, ReturnsValue) {
  Watchdog wd(30s, "BlockOn.ReturnsValue");
  weft::Runtime rt(weft::Options{.workers = 2});
  auto i = rt.block_on([] { return 42; });
  ASSERT_TRUE(i.ok());
  EXPECT_EQ(*i, 42);
  auto s = rt.block_on([] {
    weft::this_ult::yield();
    return std::string(1000, 'x');
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, std::string(1000, 'x'));
  auto p = rt.block_on([] { return std::make_unique<int>(7); });
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(**p, 7);
  int side = 0;
  absl::Status v = rt.block_on([&] { side = 5; });
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(side, 5);
  // Nested: block_on from inside a ULT parks that ULT.
  auto nested = rt.block_on([&] {
    auto inner = rt.block_on([] { return 3; });
    return inner.ok() ? *inner * 2 : -1;
  });
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(*nested, 6);
}

// An exception thrown by fn is rethrown by block_on (value and void forms).
TEST(BlockOn, RethrowsException) {
  Watchdog wd(30s, "BlockOn.RethrowsException");
  weft::Runtime rt(weft::Options{.workers = 2});
  try {
    (void)rt.block_on([]() -> int { throw std::runtime_error("boom-int"); });
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "boom-int");
  }
  try {
    (void)rt.block_on([] {
      weft::this_ult::yield();
      throw std::logic_error("boom-void");
    });
    ADD_FAILURE() << "no exception";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "boom-void");
  }
  try {
    (void)rt.block_on([]() -> int { throw 17; });
    ADD_FAILURE() << "no exception";
  } catch (int v) {
    EXPECT_EQ(v, 17);
  }
  // The runtime is still fine afterwards.
  auto ok = rt.block_on([] { return 1; });
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 1);
}

// block_on from a foreign thread while three other foreign threads spawn and
// join ULTs: every result is right.
TEST(BlockOn, ConcurrentForeignThreads) {
  Watchdog wd(60s, "BlockOn.ConcurrentForeignThreads");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kIters = 2000;
  std::atomic<int> errors{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        int out = -1;
        weft::Ult u = rt.spawn([&out, t, i] {
          if (i % 7 == 0) weft::this_ult::yield();
          out = t * 1000000 + i;
        });
        if (!u.join().ok() || out != t * 1000000 + i) errors++;
      }
    });
  }
  for (int i = 0; i < kIters; ++i) {
    auto r = rt.block_on([i] {
      if (i % 5 == 0) weft::this_ult::yield();
      return i * 3;
    });
    if (!r.ok() || *r != i * 3) errors++;
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors.load(), 0);
}

// A ULT of one runtime can spawn on, block_on and join ULTs of another
// runtime (the joiner is woken across runtimes), both ways at once.
TEST(BlockOn, AcrossRuntimes) {
  Watchdog wd(60s, "BlockOn.AcrossRuntimes");
  weft::Runtime a(weft::Options{.workers = 2});
  weft::Runtime b(weft::Options{.workers = 1});
  auto cross = [](weft::Runtime& from, weft::Runtime& to, int base) {
    return from.block_on([&to, base] {
      int sum = 0;
      for (int i = 0; i < 500; ++i) {
        auto r = to.block_on([i, base] {
          if (i % 3 == 0) weft::this_ult::yield();
          return base + i;
        });
        if (!r.ok()) return -1;
        sum += *r - base;
        int v = 0;
        weft::Ult u = to.spawn([&v, i] { v = i; });
        if (!u.join().ok() || v != i) return -1;
      }
      return sum;
    });
  };
  std::atomic<int> other{0};
  std::thread t([&] {
    auto r = cross(b, a, 1000);
    other = r.ok() ? *r : -2;
  });
  auto r = cross(a, b, 2000);
  t.join();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 499 * 500 / 2);
  EXPECT_EQ(other.load(), 499 * 500 / 2);
}

// ---------------------------------------------------------------------------
// yield
// ---------------------------------------------------------------------------

// On one worker, 8 ULTs that increment their own counter and yield take
// turns round-robin: after 20,000 turns each, the counters differ by little,
// and a ULT that yields never runs again before the others had a turn (a
// yield is never a no-op while others are runnable).
TEST(Yield, RoundRobinOnOneWorker) {
  Watchdog wd(60s, "Yield.RoundRobinOnOneWorker");
  // No hog rescue (its threshold is blocking_handoff): a kernel thread
  // descheduled for 200 us while the driver spawns (a loaded machine, TSan)
  // had the monitor move the queued ULTs to the global queue, which the
  // worker serves at its scheduler passes, not in the yielders' order —
  // one ULT then lagged 30 turns behind (clean-clone run of 7f1e1b2).
  weft::Runtime rt(weft::Options{.workers = 1, .blocking_handoff = std::chrono::seconds(10)});
  constexpr int kUlts = 8;
  constexpr uint64_t kTurns = 20000;
  std::atomic<uint64_t> counters[kUlts] = {};
  std::atomic<bool> stop{false};
  // The order in which turns were taken (one worker: no concurrency here).
  std::vector<uint8_t> order;
  order.reserve(kUlts * kTurns + 64);
  // Spawned by one ULT, so that all eight sit in the worker's own queue
  // before the first runs (the spawner then parks in join).
  weft::Ult driver = rt.spawn([&] {
    std::vector<weft::Ult> us;
    for (int i = 0; i < kUlts; ++i) {
      us.push_back(weft::spawn([&, i] {
        while (!stop.load()) {
          order.push_back(static_cast<uint8_t>(i));
          if (counters[i].fetch_add(1) + 1 == kTurns) stop = true;
          weft::this_ult::yield();
        }
      }));
    }
    for (auto& u : us) (void)u.join();
  });
  ASSERT_TRUE(driver.join().ok());
  uint64_t lo = UINT64_MAX, hi = 0;
  for (auto& c : counters) {
    lo = std::min(lo, c.load());
    hi = std::max(hi, c.load());
  }
  EXPECT_EQ(hi, kTurns);
  EXPECT_LE(hi - lo, 8u) << "turns per ULT range over [" << lo << ", " << hi << "]";
  // A ULT that yields goes behind the others: no ULT takes two turns in a
  // row while the others are runnable.
  size_t twice = 0, first = 0;
  for (size_t k = 1; k < order.size(); ++k) {
    if (order[k] == order[k - 1] && twice++ == 0) first = k;
  }
  EXPECT_EQ(twice, 0u) << "of " << order.size() << " turns, " << twice
                       << " were taken by the ULT that had just yielded (first at turn " << first << ")";
}

// The same round-robin holds when the worker's scheduler loop has work of
// its own in between (a ninth ULT sleeping 200 us over and over keeps a
// timer pending, so yields regularly pass through the loop): a ULT that
// yields is never the next of the eight to run.
TEST(Yield, RoundRobinWithSleeperOnWorker) {
  Watchdog wd(60s, "Yield.RoundRobinWithSleeperOnWorker");
  weft::Runtime rt(weft::Options{.workers = 1});
  constexpr int kUlts = 8;
  constexpr uint64_t kTurns = 20000;
  std::atomic<uint64_t> counters[kUlts] = {};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false}, stop{false};
  std::vector<uint8_t> order;
  order.reserve(kUlts * kTurns + 64);
  std::atomic<int> naps{0};
  weft::Ult sleeper = rt.spawn([&] {
    while (!stop.load()) {
      weft::this_ult::sleep_for(200us);
      naps++;
    }
  });
  std::vector<weft::Ult> us;
  for (int i = 0; i < kUlts; ++i) {
    us.push_back(rt.spawn([&, i] {
      ready++;
      while (!go.load()) weft::this_ult::yield();
      while (!stop.load()) {
        order.push_back(static_cast<uint8_t>(i));
        if (counters[i].fetch_add(1) + 1 == kTurns) stop = true;
        weft::this_ult::yield();
      }
    }));
  }
  ASSERT_TRUE(WaitUntil([&] { return ready.load() == kUlts; }));
  go = true;
  for (auto& u : us) ASSERT_TRUE(u.join().ok());
  ASSERT_TRUE(sleeper.join().ok());
  EXPECT_GT(naps.load(), 0) << "the sleeper never woke: the test shows nothing";
  size_t twice = 0;
  for (size_t k = 1; k < order.size(); ++k) twice += order[k] == order[k - 1];
  EXPECT_EQ(twice, 0u) << "of " << order.size() << " turns, " << twice
                       << " were taken by the ULT that had just yielded (the sleeper woke " << naps.load()
                       << " times)";
}

// On one worker, ULTs that do nothing but yield do not starve a ULT spawned
// later from a foreign thread (it lands in the injection queue).
TEST(Yield, DoesNotStarveForeignSpawn) {
  Watchdog wd(60s, "Yield.DoesNotStarveForeignSpawn");
  weft::Runtime rt(weft::Options{.workers = 1});
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> yields{0};
  std::vector<weft::Ult> us;
  auto deadline = Clock::now() + 5s;
  for (int i = 0; i < 3; ++i) {
    us.push_back(rt.spawn([&] {
      while (!stop.load() && Clock::now() < deadline) {
        yields++;
        weft::this_ult::yield();
      }
    }));
  }
  // Let them take many turns first (past the scheduler loop's period).
  ASSERT_TRUE(WaitUntil([&] { return yields.load() > 10000; }));
  for (int round = 0; round < 5; ++round) {
    std::atomic<bool> ran{false};
    auto t0 = Clock::now();
    weft::Ult late = rt.spawn([&] { ran = true; });
    bool ok = WaitUntil([&] { return ran.load(); }, 2000ms);
    EXPECT_TRUE(ok) << "round " << round << ": a foreign-spawned ULT did not run within 2 s while "
                    << "3 ULTs yielded on the only worker";
    if (!ok) break;
    EXPECT_LT(Clock::now() - t0, 500ms);
    EXPECT_TRUE(late.join().ok());
  }
  stop = true;
  for (auto& u : us) EXPECT_TRUE(u.join().ok());
}

// On one worker, ULTs that only yield do not starve a ULT spawned by one of
// them, nor a ULT sleeping on the same worker (its timer must fire).
TEST(Yield, DoesNotStarveChildOrSleeper) {
  Watchdog wd(60s, "Yield.DoesNotStarveChildOrSleeper");
  weft::Runtime rt(weft::Options{.workers = 1});
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> yields{0};
  std::atomic<bool> child_ran{false};
  std::atomic<int> sleeper_woke{0};
  Clock::duration child_took{}, sleeper_took{};
  auto deadline = Clock::now() + 5s;
  weft::Ult driver = rt.spawn([&] {
    std::vector<weft::Ult> ys;
    for (int i = 0; i < 3; ++i) {
      ys.push_back(weft::spawn([&] {
        while (!stop.load() && Clock::now() < deadline) {
          yields++;
          weft::this_ult::yield();
        }
      }));
    }
    while (yields.load() < 10000 && Clock::now() < deadline) weft::this_ult::yield();
    auto t0 = Clock::now();
    weft::Ult child = weft::spawn([&] { child_ran = true; });
    while (!child_ran.load() && Clock::now() < deadline) weft::this_ult::yield();
    child_took = Clock::now() - t0;
    (void)child.join();
    // A sleeper: its timer is on this worker, which the yielders keep busy.
    t0 = Clock::now();
    weft::Ult sleeper = weft::spawn([&] {
      for (int i = 0; i < 5; ++i) {
        weft::this_ult::sleep_for(2ms);
        sleeper_woke++;
      }
    });
    while (sleeper_woke.load() < 5 && Clock::now() < deadline) weft::this_ult::yield();
    sleeper_took = Clock::now() - t0;
    stop = true;
    (void)sleeper.join();
    for (auto& y : ys) (void)y.join();
  });
  ASSERT_TRUE(driver.join().ok());
  auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  EXPECT_TRUE(child_ran.load());
  EXPECT_LT(child_took, 500ms) << "a child spawned by a yielding ULT waited " << ms(child_took) << " ms";
  EXPECT_LT(sleeper_took, 1000ms) << "five 2 ms sleeps took " << ms(sleeper_took)
                                  << " ms while 4 ULTs yielded on the sleeper's worker";
}

// ---------------------------------------------------------------------------
// errno and exception state across migrations
// ---------------------------------------------------------------------------

// Each ULT's errno survives yields and sleeps that move it between workers.
TEST(Migration, ErrnoPreserved) {
  Watchdog wd(90s, "Migration.ErrnoPreserved");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kUlts = 64;
  constexpr int kIters = 500;
  std::atomic<int> bad{0}, migrations{0};
  std::atomic<int> first_bad_expected{0}, first_bad_seen{0};
  RoundsUntilMigrated(&migrations, [&] {
    std::vector<weft::Ult> us;
    for (int i = 0; i < kUlts; ++i) {
      us.push_back(rt.spawn([&, i] {
        int tid = Tid();
        for (int k = 0; k < kIters; ++k) {
          int mine = 1000 + i * kIters + k;
          SetErrno(mine);
          if (k % 4 == 3) {
            weft::this_ult::sleep_for(20us);
          } else {
            SpinFor(std::chrono::microseconds(k % 3));
            weft::this_ult::yield();
          }
          int now = GetErrno();
          if (now != mine && bad.fetch_add(1) == 0) {
            first_bad_expected = mine;
            first_bad_seen = now;
          }
          int t = Tid();
          if (t != tid) migrations++;
          tid = t;
        }
      }));
    }
    for (auto& u : us) ASSERT_TRUE(u.join().ok());
  });
  EXPECT_EQ(bad.load(), 0) << "e.g. expected errno " << first_bad_expected.load() << ", saw "
                           << first_bad_seen.load();
  EXPECT_GT(migrations.load(), 0) << "no ULT ever changed kernel thread: the test shows nothing";
}

// Inside a catch block a ULT may yield and sleep (and migrate):
// std::current_exception() stays the same, `throw;` rethrows it, and
// std::uncaught_exceptions() is kept during unwinding.
TEST(Migration, ExceptionStatePreserved) {
  Watchdog wd(90s, "Migration.ExceptionStatePreserved");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kUlts = 64;
  std::atomic<int> bad{0}, rethrown{0}, migrations{0}, unwinding_ok{0};
  struct YieldInDestructor {
    std::atomic<int>* ok;
    ~YieldInDestructor() {
      int before = std::uncaught_exceptions();
      for (int k = 0; k < 20; ++k) weft::this_ult::yield();
      weft::this_ult::sleep_for(50us);
      if (before == 1 && std::uncaught_exceptions() == 1) (*ok)++;
    }
  };
  int rounds = RoundsUntilMigrated(&migrations, [&] {
    std::vector<weft::Ult> us;
    for (int i = 0; i < kUlts; ++i) {
      us.push_back(rt.spawn([&, i] {
        std::string msg = "ult-" + std::to_string(i);
        int tid = Tid();
        try {
          throw std::runtime_error(msg);
        } catch (...) {
          std::exception_ptr p = std::current_exception();
          for (int k = 0; k < 300; ++k) {
            if (k % 4 == 3) {
              weft::this_ult::sleep_for(20us);
            } else {
              SpinFor(std::chrono::microseconds(k % 3));
              weft::this_ult::yield();
            }
            if (std::current_exception() != p) bad++;
            if (std::uncaught_exceptions() != 0) bad++;
            int t = Tid();
            if (t != tid) migrations++;
            tid = t;
          }
          try {
            throw;
          } catch (const std::runtime_error& e) {
            if (msg == e.what()) rethrown++;
            weft::this_ult::yield();
          }
          if (std::current_exception() != p) bad++;
        }
        if (std::current_exception() != nullptr) bad++;
        try {
          YieldInDestructor y{&unwinding_ok};
          throw 1;
        } catch (int) {
        }
      }));
    }
    for (auto& u : us) ASSERT_TRUE(u.join().ok());
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(rethrown.load(), kUlts * rounds);
  EXPECT_EQ(unwinding_ok.load(), kUlts * rounds);
  EXPECT_GT(migrations.load(), 0) << "no ULT ever changed kernel thread: the test shows nothing";
}

// No weft call reports through errno: spawn, join, detach, block_on, yield,
// sleep_for, stats and set_concurrency leave the caller's errno as it was,
// on a foreign thread and in a ULT; a new ULT starts with errno 0.
TEST(Migration, WeftCallsLeaveErrnoAlone) {
  Watchdog wd(30s, "Migration.WeftCallsLeaveErrnoAlone");
  weft::Runtime rt(weft::Options{.workers = 2, .max_workers = 4});
  SetErrno(4242);
  weft::Ult a = rt.spawn([] {});
  (void)a.join();
  (void)a.join();  // an error (empty handle), still not through errno
  (void)weft::detail::join_id(weft::UltId::FromValue((uint64_t{1} << 32) | 0xFFFFFFu));
  weft::Ult b = rt.spawn([] { weft::this_ult::sleep_for(100us); });
  (void)b.detach();
  (void)rt.block_on([] { return 1; });
  weft::this_ult::yield();
  weft::this_ult::sleep_for(100us);
  (void)rt.stats();
  // (Invalid levels and the current one: retiring a worker here would mix
  // in the lost wake-up that Concurrency.LoweringWhileSpawningLosesNoWakeup
  // in runtime_sched_test checks.)
  (void)rt.set_concurrency(0);
  (void)rt.set_concurrency(5);
  (void)rt.set_concurrency(2);
  EXPECT_EQ(GetErrno(), 4242);
  std::atomic<int> bad{0}, fresh{0};
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(rt.spawn([&, i] {
                    if (GetErrno() == 0) fresh++;
                    SetErrno(9000 + i);  // left behind for the next ULT on this worker
                  }).join().ok());
  }
  EXPECT_EQ(fresh.load(), 50);
  auto r = rt.block_on([&] {
    SetErrno(777);
    weft::Ult c = weft::spawn([] { SetErrno(1); });
    if (GetErrno() != 777) bad++;
    (void)c.join();
    if (GetErrno() != 777) bad++;
    (void)weft::detail::join_id(weft::UltId::FromValue((uint64_t{1} << 32) | 0xFFFFFFu));
    weft::this_ult::yield();
    weft::this_ult::sleep_for(50us);
    if (GetErrno() != 777) bad++;
    (void)rt.stats();
    return GetErrno();
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 777);
  EXPECT_EQ(bad.load(), 0);
}

// ---------------------------------------------------------------------------
// Pin and bound ULTs
// ---------------------------------------------------------------------------

// Under a Pin, a ULT keeps its kernel thread over 1,000 yields and sleeps on
// a busy 2-worker runtime (48 ULTs yielding and sleeping), while ULTs doing
// the same without a Pin migrate (so the test can tell the difference).
TEST(Pin, KeepsKernelThread) {
  Watchdog wd(90s, "Pin.KeepsKernelThread");
  weft::Runtime rt(weft::Options{.workers = 2});
  constexpr int kPinned = 16, kFree = 32, kIters = 1000;
  std::atomic<int> pinned_moves{0}, free_moves{0}, pinned_done{0}, nested_ok{0};
  auto body = [&](bool pin) {
    std::optional<weft::Pin> p;
    if (pin) p.emplace();
    int tid = Tid();
    for (int k = 0; k < kIters; ++k) {
      if (k % 4 == 3) {
        weft::this_ult::sleep_for(20us);
      } else {
        SpinFor(std::chrono::microseconds(k % 3));
        if (k % 100 == 1) {
          weft::Pin nested;  // nestable: the outer Pin still holds after it ends
          weft::this_ult::yield();
          if (pin && Tid() == tid) nested_ok++;
        }
        weft::this_ult::yield();
      }
      int t = Tid();
      if (t != tid) (pin ? pinned_moves : free_moves)++;
      tid = t;
    }
    if (pin) pinned_done++;
  };
  int rounds = RoundsUntilMigrated(&free_moves, [&] {
    std::vector<weft::Ult> us;
    for (int i = 0; i < kPinned + kFree; ++i) {
      bool pin = i % 3 == 0;
      us.push_back(rt.spawn([&body, pin] { body(pin); }));
    }
    for (auto& u : us) ASSERT_TRUE(u.join().ok());
  });
  EXPECT_EQ(pinned_done.load(), kPinned * rounds);
  EXPECT_EQ(pinned_moves.load(), 0);
  EXPECT_EQ(nested_ok.load(), kPinned * rounds * (kIters / 100));
  EXPECT_GT(free_moves.load(), 0) << "unpinned ULTs never migrated: the test shows nothing";
  // Outside a ULT a Pin does nothing (and does not crash).
  weft::Pin outside;
}

// A bound ULT keeps one kernel thread — not a pool worker's — over 1,000
// yields, sleeps and joins, and stats().bound_threads counts it while it
// runs.
TEST(Bound, OwnKernelThreadForLife) {
  Watchdog wd(60s, "Bound.OwnKernelThreadForLife");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::atomic<bool> stop{false};
  weft::Ult busy = rt.spawn([&] {
    while (!stop.load()) {
      SpinFor(20us);
      weft::this_ult::yield();
    }
  });
  std::atomic<int> tid0{0}, moves{0}, children_ok{0};
  std::atomic<bool> checked{false}, go_on{false};
  weft::Ult b = rt.spawn(
      [&] {
        tid0 = Tid();
        checked = true;
        while (!go_on.load()) weft::this_ult::sleep_for(100us);
        for (int k = 0; k < 1000; ++k) {
          switch (k % 3) {
            case 0:
              weft::this_ult::yield();
              break;
            case 1:
              weft::this_ult::sleep_for(5us);
              break;
            case 2: {
              int v = 0;
              weft::Ult c = weft::spawn([&v, k] {
                weft::this_ult::yield();
                v = k;
              });
              if (c.join().ok() && v == k) children_ok++;
              break;
            }
          }
          if (Tid() != tid0.load()) moves++;
        }
      },
      weft::SpawnOptions{.name = "bound", .bound = true});
  ASSERT_TRUE(b.status().ok()) << b.status();
  ASSERT_TRUE(WaitUntil([&] { return checked.load(); }));
  weft::RuntimeStats st = rt.stats();
  EXPECT_EQ(st.bound_threads, 1);
  EXPECT_EQ(st.workers.size(), 2u) << "bound threads must not be listed as pool workers";
  std::set<int> pool = PoolTids(rt);
  EXPECT_EQ(pool.count(tid0.load()), 0u) << "bound ULT runs on pool worker tid " << tid0.load();
  EXPECT_NE(tid0.load(), Tid());
  go_on = true;
  ASSERT_TRUE(b.join().ok());
  stop = true;
  ASSERT_TRUE(busy.join().ok());
  EXPECT_EQ(moves.load(), 0);
  EXPECT_EQ(children_ok.load(), 333);
  EXPECT_TRUE(WaitUntil([&] { return rt.stats().bound_threads == 0; }))
      << "bound_threads still " << rt.stats().bound_threads << " after the bound ULT exited";
}

// ---------------------------------------------------------------------------
// UltLocal
// ---------------------------------------------------------------------------

struct Counted {
  static std::atomic<int> made, destroyed;
  int value = 0;
  Counted() { made++; }
  ~Counted() { destroyed++; }
};
std::atomic<int> Counted::made{0};
std::atomic<int> Counted::destroyed{0};

weft::UltLocal<Counted> g_local;
weft::UltLocal<int> g_local_int;

// Every ULT sees its own UltLocal value across migrations; the value is
// value-initialised, and destroyed when the ULT returns (before join
// returns). A foreign thread gets its own value, destroyed at thread exit.
TEST(UltLocal, PerUltAcrossMigrations) {
  Watchdog wd(90s, "UltLocal.PerUltAcrossMigrations");
  weft::Runtime rt(weft::Options{.workers = 2});
  int made0 = Counted::made.load(), destroyed0 = Counted::destroyed.load();
  constexpr int kUlts = 64;
  std::atomic<int> bad{0}, migrations{0}, zero_init{0};
  int rounds = RoundsUntilMigrated(&migrations, [&] {
    int round_made0 = Counted::made.load(), round_destroyed0 = Counted::destroyed.load();
    std::vector<weft::Ult> us;
    for (int i = 0; i < kUlts; ++i) {
      us.push_back(rt.spawn([&, i] {
        if (g_local->value == 0 && *g_local_int == 0) zero_init++;
        g_local->value = i + 1;
        *g_local_int = -(i + 1);
        int tid = Tid();
        for (int k = 0; k < 300; ++k) {
          if (k % 4 == 3) {
            weft::this_ult::sleep_for(20us);
          } else {
            SpinFor(std::chrono::microseconds(k % 3));
            weft::this_ult::yield();
          }
          if (g_local->value != i + 1 || g_local.get().value != i + 1 || *g_local_int != -(i + 1)) bad++;
          int t = Tid();
          if (t != tid) migrations++;
          tid = t;
        }
      }));
    }
    for (auto& u : us) ASSERT_TRUE(u.join().ok());
    // Destroyed when each ULT returned, before its join returned.
    EXPECT_EQ(Counted::made.load() - round_made0, kUlts);
    EXPECT_EQ(Counted::destroyed.load() - round_destroyed0, kUlts);
  });
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(zero_init.load(), kUlts * rounds);
  EXPECT_GT(migrations.load(), 0) << "no ULT ever changed kernel thread: the test shows nothing";
  EXPECT_EQ(Counted::made.load() - made0, kUlts * rounds);
  EXPECT_EQ(Counted::destroyed.load() - destroyed0, kUlts * rounds) << "UltLocal values not destroyed at ULT exit";

  // A ULT that never touches the UltLocal creates no value.
  ASSERT_TRUE(rt.block_on([] { weft::this_ult::yield(); }).ok());
  EXPECT_EQ(Counted::made.load() - made0, kUlts * rounds);

  // Foreign threads.
  int made1 = Counted::made.load(), destroyed1 = Counted::destroyed.load();
  std::atomic<int> fbad{0};
  std::thread t([&] {
    if (g_local->value != 0) fbad++;
    g_local->value = 99;
    std::this_thread::yield();
    if (g_local.get().value != 99) fbad++;
    if (Counted::destroyed.load() != destroyed1) fbad++;
  });
  t.join();
  EXPECT_EQ(fbad.load(), 0);
  EXPECT_EQ(Counted::made.load() - made1, 1);
  EXPECT_EQ(Counted::destroyed.load() - destroyed1, 1) << "foreign thread's value not destroyed at exit";
}

// realloc() with a quarantine, for the test below: while armed, a realloc
// always moves the block, fills the old one with 0xAB and keeps it (not
// freed) so that a later write into it by the runtime is seen for certain.
// Everything else goes straight to glibc's allocator (to the sanitizer's
// under ASan and TSan, whose blocks glibc's functions must not see).
#if WEFT_TEST_ASAN || WEFT_TEST_TSAN
extern "C" void* __interceptor_realloc(void* p, size_t n);
extern "C" void* __interceptor_malloc(size_t n);
extern "C" void __interceptor_free(void* p);
#define __libc_realloc __interceptor_realloc
#define __libc_malloc __interceptor_malloc
#define __libc_free __interceptor_free
#else
extern "C" void* __libc_realloc(void* p, size_t n);
extern "C" void* __libc_malloc(size_t n);
extern "C" void __libc_free(void* p);
#endif
std::atomic<bool> g_quarantine_armed{false};
struct Quarantined {
  unsigned char* block = nullptr;
  size_t size = 0;
};
Quarantined g_quarantined;

}  // namespace

// Not instrumented by TSan: realloc is also called where TSan has no state
// for the thread yet (glibc internals), and an instrumented entry into this
// replacement crashed TSan there (SEGV in __tsan_func_entry).
extern "C" __attribute__((no_sanitize("thread"))) void* realloc(void* p, size_t n) {
  if (p == nullptr || n == 0 || !g_quarantine_armed.load(std::memory_order_relaxed) ||
      g_quarantined.block != nullptr)
    return __libc_realloc(p, n);
  size_t old = malloc_usable_size(p);
  void* q = __libc_malloc(n);
  if (q == nullptr) return nullptr;
  memcpy(q, p, std::min(old, n));
  memset(p, 0xAB, old);
  g_quarantined.block = static_cast<unsigned char*>(p);
  g_quarantined.size = old;
  return q;
}

namespace {

// A ULT-local value's destructor may itself use UltLocals (as a
// thread_local's destructor may use another thread_local): a value created
// during the ULT's exit is destroyed too, and the runtime does not write
// into memory it has freed. Here the first value's destructor makes a fifth
// UltLocal value, which grows the ULT's slot array (capacity 4, realloc'd)
// while the exit path still holds a reference into the old array; the old
// array is quarantined (see realloc above) and must stay untouched.
weft::UltLocal<Counted> g_late;
struct UsesLateLocal {
  static std::atomic<int> destroyed;
  ~UsesLateLocal() {
    g_late->value = 5;  // a new value for this ULT (or thread), created during exit
    destroyed++;
  }
};
std::atomic<int> UsesLateLocal::destroyed{0};
weft::UltLocal<UsesLateLocal> g_uses_late;
weft::UltLocal<int> g_fill1, g_fill2, g_fill3;

TEST(UltLocal, DestructorMayUseAnotherUltLocalInUlt) {
  Watchdog wd(30s, "UltLocal.DestructorMayUseAnotherUltLocalInUlt");
  weft::Runtime rt(weft::Options{.workers = 1});
  int made0 = Counted::made.load(), destroyed0 = Counted::destroyed.load();
  int uses0 = UsesLateLocal::destroyed.load();
  g_quarantined = Quarantined{};
  g_quarantine_armed = true;
  absl::Status joined = rt.spawn([] {
                            (void)g_uses_late.get();  // slot 0: its destructor runs first at exit
                            *g_fill1 = 1;
                            *g_fill2 = 2;
                            *g_fill3 = 3;  // four slots: the array is full
                          }).join();
  g_quarantine_armed = false;
  ASSERT_TRUE(joined.ok());
  EXPECT_EQ(UsesLateLocal::destroyed.load() - uses0, 1);
  EXPECT_EQ(Counted::made.load() - made0, 1);
  EXPECT_EQ(Counted::destroyed.load() - destroyed0, 1) << "a value created during ULT exit was not destroyed";
  ASSERT_NE(g_quarantined.block, nullptr) << "the slot array was never reallocated: the test shows nothing";
  size_t clobbered = 0;
  for (size_t i = 0; i < g_quarantined.size; ++i) clobbered += g_quarantined.block[i] != 0xAB;
  EXPECT_EQ(clobbered, 0u) << "the exit path wrote " << clobbered
                           << " bytes into the ULT-local slot array after it was reallocated (use after free)";
  __libc_free(g_quarantined.block);
  g_quarantined = Quarantined{};
}

// The same on a foreign thread: a value made by another value's destructor
// at thread exit is destroyed as well.
TEST(UltLocal, DestructorMayUseAnotherUltLocalOnForeignThread) {
  int made0 = Counted::made.load(), destroyed0 = Counted::destroyed.load();
  int uses0 = UsesLateLocal::destroyed.load();
  std::thread t([] { (void)g_uses_late.get(); });
  t.join();
  EXPECT_EQ(UsesLateLocal::destroyed.load() - uses0, 1);
  EXPECT_EQ(Counted::made.load() - made0, 1);
  EXPECT_EQ(Counted::destroyed.load() - destroyed0, 1)
      << "on a foreign thread, a value created during thread exit was not destroyed";
}

// First use of an UltLocal whose T's constructor itself makes the first
// use of another UltLocal (nested first use). The outer get() found room
// for one more slot, then the inner get() took it, and the outer value was
// stored one past the array.
// Regression (issue 9 #1): on 15df0bc the ULT's slot array held 5 values
// in room for 4 (a heap overflow: "double free or corruption" later).
struct NestedInner {
  static std::atomic<int> destroyed;
  int value = 7;
  ~NestedInner() { destroyed++; }
};
std::atomic<int> NestedInner::destroyed{0};
weft::UltLocal<NestedInner> g_nested_inner;
struct NestedOuter {
  static std::atomic<int> destroyed;
  int inner_seen;
  NestedOuter() : inner_seen(g_nested_inner->value) {}  // the inner UltLocal's first use
  ~NestedOuter() { destroyed++; }
};
std::atomic<int> NestedOuter::destroyed{0};
weft::UltLocal<NestedOuter> g_nested_outer;
weft::UltLocal<int> g_nest_fill1, g_nest_fill2, g_nest_fill3;

TEST(UltLocal, NestedFirstUseInConstructor) {
  Watchdog wd(30s, "UltLocal.NestedFirstUseInConstructor");
  weft::Runtime rt(weft::Options{.workers = 1});
  int inner0 = NestedInner::destroyed.load(), outer0 = NestedOuter::destroyed.load();
  for (int fill = 0; fill <= 8; ++fill) {  // every position of the array's growth
    struct Seen {
      uint32_t count = 0, capacity = 0;
      int outer = 0, inner = 0, fills = 0;
    };
    absl::StatusOr<Seen> r = rt.block_on([fill] {
      weft::UltLocal<int>* fills[] = {&g_nest_fill1, &g_nest_fill2, &g_nest_fill3};
      std::vector<std::unique_ptr<weft::UltLocal<int>>> extra;
      for (int i = 0; i < fill; ++i) {
        weft::UltLocal<int>* l = i < 3 ? fills[i] : extra.emplace_back(std::make_unique<weft::UltLocal<int>>()).get();
        **l = 100 + i;
      }
      Seen s;
      s.outer = g_nested_outer->inner_seen;
      s.inner = g_nested_inner->value;
      for (int i = 0; i < fill; ++i) {
        weft::UltLocal<int>* l = i < 3 ? fills[i] : extra[static_cast<size_t>(i - 3)].get();
        s.fills += **l == 100 + i;
      }
      weft::rt::UltDesc* self = weft::rt::current_ult();
      s.count = self->locals_count;
      s.capacity = self->locals_capacity;
      return s;
    });
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(r->count, r->capacity) << "with " << fill << " slots in use: " << r->count
                                     << " ULT-local values stored in room for " << r->capacity;
    EXPECT_EQ(r->count, static_cast<uint32_t>(fill + 2));
    EXPECT_EQ(r->outer, 7);
    EXPECT_EQ(r->inner, 7);
    EXPECT_EQ(r->fills, fill);
  }
  EXPECT_EQ(NestedInner::destroyed.load() - inner0, 9);
  EXPECT_EQ(NestedOuter::destroyed.load() - outer0, 9);

  // A foreign thread: the same nesting on its per-thread slots.
  std::thread t([] {
    *g_nest_fill1 = 1;
    EXPECT_EQ(g_nested_outer->inner_seen, 7);
    EXPECT_EQ(g_nested_inner->value, 7);
    EXPECT_EQ(*g_nest_fill1, 1);
  });
  t.join();
  EXPECT_EQ(NestedInner::destroyed.load() - inner0, 10);
  EXPECT_EQ(NestedOuter::destroyed.load() - outer0, 10);
}

// ---------------------------------------------------------------------------
// sleep_for
// ---------------------------------------------------------------------------

// sleep_for sleeps at least the duration, and not much longer (the best of
// several tries is within 15 ms of it; none is absurd); outside a ULT it
// sleeps the thread.
TEST(SleepFor, Duration) {
  Watchdog wd(60s, "SleepFor.Duration");
  weft::Runtime rt(weft::Options{.workers = 2});
  for (auto d : {1ms, 20ms}) {
    auto r = rt.block_on([d] {
      std::vector<Clock::duration> took;
      for (int i = 0; i < 5; ++i) {
        auto t0 = Clock::now();
        weft::this_ult::sleep_for(d);
        took.push_back(Clock::now() - t0);
      }
      return took;
    });
    ASSERT_TRUE(r.ok());
    Clock::duration best = *std::min_element(r->begin(), r->end());
    for (auto t : *r) {
      EXPECT_GE(t, d);
      EXPECT_LT(t, d + 1000ms);
    }
    EXPECT_LT(best, d + 15ms) << "best of 5 sleeps of " << d.count() << " ms took "
                              << std::chrono::duration<double, std::milli>(best).count() << " ms";
  }
  auto t0 = Clock::now();
  weft::this_ult::sleep_for(5ms);  // foreign thread
  EXPECT_GE(Clock::now() - t0, 5ms);
  // Zero and negative durations return (as a yield).
  ASSERT_TRUE(rt.block_on([] {
                weft::this_ult::sleep_for(0ns);
                weft::this_ult::sleep_for(-5ms);
              }).ok());
}

// 2,000 ULTs sleeping 1..50 ms at once on one worker all wake, each after
// at least its own duration.
TEST(SleepFor, ManyOnOneWorker) {
  Watchdog wd(60s, "SleepFor.ManyOnOneWorker");
  weft::Runtime rt(weft::Options{.workers = 1});
  constexpr int kN = 2000;
  std::atomic<int> woke{0}, early{0};
  auto t0 = Clock::now();
  std::vector<weft::Ult> us;
  for (int i = 0; i < kN; ++i) {
    us.push_back(rt.spawn([&, i] {
      auto d = std::chrono::milliseconds(1 + (i * 7919) % 50);
      auto s = Clock::now();
      weft::this_ult::sleep_for(d);
      if (Clock::now() - s < d) early++;
      woke++;
    }));
  }
  for (auto& u : us) ASSERT_TRUE(u.join().ok());
  EXPECT_EQ(woke.load(), kN);
  EXPECT_EQ(early.load(), 0);
  EXPECT_LT(Clock::now() - t0, 10s);
}

// ---------------------------------------------------------------------------
// SpawnOptions and stats
// ---------------------------------------------------------------------------

// SpawnOptions::name is recorded (truncated to 31 bytes); stack_size gives a
// stack of that size (a 256 KiB stack holds a 200 KiB array); the default
// is Options::stack_size, 64 KiB.
TEST(SpawnOptions, NameAndStackSize) {
  Watchdog wd(30s, "SpawnOptions.NameAndStackSize");
  weft::Runtime rt(weft::Options{.workers = 2});
  std::string name, long_name;
  size_t default_size = 0, big_size = 0;
  bool local_in_stack = false;
  long sum = 0;
  weft::Ult a = rt.spawn(
      [&] {
        weft::rt::UltDesc* self = weft::rt::current_ult();
        name = self->name;
        default_size = self->stack.size();
        // The frame, not a local's address: under ASan's
        // detect_stack_use_after_return locals live on a heap "fake stack".
        local_in_stack = self->stack.contains(__builtin_frame_address(0));
      },
      weft::SpawnOptions{.name = "worker-a"});
  ASSERT_TRUE(a.join().ok());
  EXPECT_EQ(name, "worker-a");
  EXPECT_EQ(default_size, 64u * 1024);
  EXPECT_TRUE(local_in_stack);
  std::string long_in(40, 'n');
  weft::Ult b = rt.spawn([&] { long_name = weft::rt::current_ult()->name; },
                         weft::SpawnOptions{.name = long_in});
  ASSERT_TRUE(b.join().ok());
  EXPECT_EQ(long_name, std::string(31, 'n'));
  weft::Ult c = rt.spawn(
      [&] {
        big_size = weft::rt::current_ult()->stack.size();
        volatile char big[200 * 1024];
        for (size_t i = 0; i < sizeof big; i += 512) big[i] = static_cast<char>(i >> 9);
        weft::this_ult::yield();
        for (size_t i = 0; i < sizeof big; i += 512) sum += big[i];
      },
      weft::SpawnOptions{.name = "big", .stack_size = 256 * 1024});
  ASSERT_TRUE(c.join().ok());
  EXPECT_EQ(big_size, 256u * 1024);
  long expect = 0;
  for (size_t i = 0; i < 200 * 1024; i += 512) expect += static_cast<char>(i >> 9);
  EXPECT_EQ(sum, expect);
  // The runtime's default follows Options::stack_size.
  weft::Runtime rt2(weft::Options{.workers = 1, .stack_size = 128 * 1024});
  auto sz = rt2.block_on([] { return weft::rt::current_ult()->stack.size(); });
  ASSERT_TRUE(sz.ok());
  EXPECT_EQ(*sz, 128u * 1024);
}

// A callable that does not fit on the ULT's stack is refused with
// InvalidArgument (nothing runs); with a larger stack_size it fits.
TEST(SpawnOptions, CallableTooLargeForStack) {
  Watchdog wd(30s, "SpawnOptions.CallableTooLargeForStack");
  weft::Runtime rt(weft::Options{.workers = 1});
  auto big = std::make_unique<std::array<char, 70 * 1024>>();
  (*big)[0] = 7;
  std::atomic<int> ran{0};
  weft::Ult u = rt.spawn([&ran, arr = *big] { ran += arr[0]; });
  EXPECT_TRUE(absl::IsInvalidArgument(u.status())) << u.status();
  EXPECT_EQ(u.join(), u.status());
  weft::Ult v = rt.spawn([&ran, arr = *big] { ran += arr[0]; }, weft::SpawnOptions{.stack_size = 128 * 1024});
  ASSERT_TRUE(v.status().ok()) << v.status();
  EXPECT_TRUE(v.join().ok());
  EXPECT_EQ(ran.load(), 7);
}

// Options{} defaults: one worker per CPU this process may run on, and
// set_concurrency accepts up to 4 x CPUs.
TEST(Options, Defaults) {
  Watchdog wd(30s, "Options.Defaults");
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  int cpus = CPU_COUNT(&set);
  weft::Runtime rt;
  ASSERT_TRUE(rt.status().ok());
  EXPECT_EQ(rt.concurrency(), cpus);
  EXPECT_EQ(rt.stats().workers.size(), static_cast<size_t>(cpus));
  EXPECT_TRUE(absl::IsInvalidArgument(rt.set_concurrency(4 * cpus + 1)));
  EXPECT_TRUE(rt.set_concurrency(4 * cpus).ok());
  auto r = rt.block_on([] { return 3; });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 3);
  EXPECT_TRUE(rt.set_concurrency(1).ok());
  EXPECT_EQ(rt.concurrency(), 1);
}

// After a known workload the counters add up: spawned = exited = all ULTs
// run (from foreign threads and from ULTs), live = 0, and each of the two
// workers made context switches.
TEST(Stats, AddUp) {
  Watchdog wd(60s, "Stats.AddUp");
  weft::Runtime rt(weft::Options{.workers = 2});
  weft::RuntimeStats s0 = rt.stats();
  EXPECT_EQ(s0.spawned, 0u);
  EXPECT_EQ(s0.live, 0u);
  ASSERT_EQ(s0.workers.size(), 2u);
  // Two ULTs that wait for each other while spinning: both workers must run one.
  std::atomic<int> arrived{0};
  std::atomic<bool> timeout{false};
  std::vector<weft::Ult> pair;
  for (int i = 0; i < 2; ++i) {
    pair.push_back(rt.spawn([&] {
      arrived++;
      auto end = Clock::now() + 10s;
      while (arrived.load() < 2) {
        if (Clock::now() > end) {
          timeout = true;
          break;
        }
      }
    }));
  }
  for (auto& u : pair) ASSERT_TRUE(u.join().ok());
  EXPECT_FALSE(timeout.load()) << "the second worker never picked up work";
  constexpr int kForeign = 500, kChildren = 500;
  std::vector<weft::Ult> us;
  for (int i = 0; i < kForeign; ++i) us.push_back(rt.spawn([] { weft::this_ult::yield(); }));
  std::atomic<uint64_t> live_inside{0};
  weft::Ult parent = rt.spawn([&] {
    std::vector<weft::Ult> cs;
    for (int i = 0; i < kChildren; ++i) cs.push_back(weft::spawn([] { weft::this_ult::yield(); }));
    for (int i = 0; i < 10; ++i) weft::spawn([] {}).detach().IgnoreError();
    live_inside = rt.stats().live;
    for (auto& c : cs) (void)c.join();
  });
  for (auto& u : us) ASSERT_TRUE(u.join().ok());
  ASSERT_TRUE(parent.join().ok());
  EXPECT_GE(live_inside.load(), 1u);
  const uint64_t total = 2 + kForeign + 1 + kChildren + 10;
  // Detached ULTs may still be finishing.
  ASSERT_TRUE(WaitUntil([&] { return rt.stats().live == 0; }));
  weft::RuntimeStats s = rt.stats();
  EXPECT_EQ(s.spawned, total);
  EXPECT_EQ(s.exited, total);
  EXPECT_EQ(s.live, 0u);
  EXPECT_EQ(s.bound_threads, 0);
  uint64_t switches = 0, spawned_on_workers = 0;
  for (const auto& w : s.workers) {
    EXPECT_GT(w.switches, 0u) << "worker " << w.index;
    EXPECT_NE(w.tid, 0);
    EXPECT_TRUE(w.active);
    switches += w.switches;
    spawned_on_workers += w.spawned;
  }
  EXPECT_GE(switches, total);
  EXPECT_EQ(spawned_on_workers, kChildren + 10u);
  EXPECT_GE(s.stacks_mapped, s.stacks_unmapped);
  EXPECT_EQ(rt.concurrency(), 2);
}

// ULTs by state, queue lengths and where a worker's time went, after a
// workload whose answer is known: one worker held by a spinner (time
// slices off), ULTs parked on a channel, ULTs spawned behind the spinner,
// one exited and not joined.
TEST(Stats, StatesQueuesAndTimes) {
  Watchdog wd(60s, "Stats.StatesQueuesAndTimes");
  weft::Runtime rt(weft::Options{.workers = 1, .max_workers = 1, .time_slice = 0us});
  ASSERT_TRUE(rt.status().ok()) << rt.status();
  constexpr int kParked = 5, kQueued = 7;
  weft::Channel<int> ch(0);
  std::vector<weft::Ult> parked;
  for (int i = 0; i < kParked; ++i) parked.push_back(rt.spawn([&] { (void)ch.recv(); }));
  weft::Ult done = rt.spawn([] {});
  ASSERT_TRUE(WaitUntil([&] {
    weft::RuntimeStats s = rt.stats();
    return s.ults_parked == kParked && s.ults_exited_unjoined == 1;
  }));
  weft::RuntimeStats s = rt.stats();
  EXPECT_EQ(s.ults_running, 0u);
  EXPECT_EQ(s.ults_runnable, 0u);
  EXPECT_EQ(s.live, static_cast<uint64_t>(kParked));
  // The worker's time: idle now, and 50 ms in a blocking region, then 50 ms
  // of a ULT that spins.
  ASSERT_TRUE(rt.block_on([] { weft::blocking([] { std::this_thread::sleep_for(50ms); }); }).ok());
  ASSERT_TRUE(rt.block_on([] {
    auto end = Clock::now() + 50ms;
    while (Clock::now() < end) {
    }
  }).ok());
  // A spinner holds the only worker; ULTs spawned meanwhile wait in queues.
  std::atomic<bool> spinning{false}, stop{false};
  weft::Ult spinner = rt.spawn([&] {
    spinning = true;
    while (!stop.load()) {
    }
  });
  ASSERT_TRUE(WaitUntil([&] { return spinning.load(); }));
  std::vector<weft::Ult> queued;
  for (int i = 0; i < kQueued; ++i) queued.push_back(rt.spawn([] {}));
  s = rt.stats();
  ASSERT_EQ(s.workers.size(), 1u);
  const weft::WorkerStats& w = s.workers[0];
  EXPECT_EQ(s.ults_running, 1u);
  EXPECT_EQ(s.ults_runnable, static_cast<uint64_t>(kQueued));
  EXPECT_EQ(s.ults_parked, static_cast<uint64_t>(kParked));
  EXPECT_EQ(s.ults_exited_unjoined, 1u);
  EXPECT_EQ(w.queued + s.global_queued, static_cast<uint64_t>(kQueued));
  EXPECT_GE(w.blocking_ns, 50'000'000);
  EXPECT_GE(w.busy_ns, 50'000'000);
  EXPECT_GT(w.idle_ns, 0);
  std::string text = weft::prometheus_text(s);
  stop = true;
  ASSERT_TRUE(spinner.join().ok());
  for (auto& u : queued) ASSERT_TRUE(u.join().ok());
  ch.close();
  for (auto& u : parked) ASSERT_TRUE(u.join().ok());
  ASSERT_TRUE(done.join().ok());
  s = rt.stats();
  EXPECT_EQ(s.ults_running + s.ults_runnable + s.ults_parked + s.ults_exited_unjoined, 0u);
  EXPECT_EQ(s.workers[0].queued + s.global_queued, 0u);

  // The exporter: every line a HELP, a TYPE or a sample of a family
  // announced before it; the figures above appear as samples.
  std::set<std::string> families;
  size_t samples = 0;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    ASSERT_NE(nl, std::string::npos) << "the text must end with a newline";
    std::string line = text.substr(at, nl - at);
    at = nl + 1;
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      std::string name = rest.substr(0, rest.find(' '));
      std::string type = rest.substr(rest.find(' ') + 1);
      EXPECT_TRUE(type == "counter" || type == "gauge" || type == "histogram") << line;
      EXPECT_EQ(name.rfind("weft_", 0), 0u) << line;
      if (type == "counter") {
        EXPECT_EQ(name.substr(name.size() - 6), "_total") << line;
      }
      families.insert(name);
      continue;
    }
    ++samples;
    size_t sp = line.rfind(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    std::string name = line.substr(0, std::min(line.find('{'), sp));
    std::string base = name;
    for (const char* suffix : {"_bucket", "_count"})
      if (!families.count(base) && base.size() > strlen(suffix) &&
          base.compare(base.size() - strlen(suffix), std::string::npos, suffix) == 0)
        base = base.substr(0, base.size() - strlen(suffix));
    EXPECT_TRUE(families.count(base)) << "sample of a family with no TYPE line: " << line;
    char* end = nullptr;
    std::string value = line.substr(sp + 1);
    (void)strtod(value.c_str(), &end);
    EXPECT_TRUE(end != nullptr && *end == '\0' && !value.empty()) << "not a number: " << line;
  }
  EXPECT_GT(samples, 30u);
  EXPECT_NE(text.find("weft_ults{state=\"parked\"} 5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("weft_ults{state=\"runnable\"} 7\n"), std::string::npos) << text;
  EXPECT_NE(text.find("weft_ults{state=\"running\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("weft_worker_switches_total{worker=\"0\"} "), std::string::npos) << text;
  // Another prefix; a prefix that is not a metric name falls back to "weft".
  EXPECT_NE(weft::prometheus_text(s, "app_rt").find("# TYPE app_rt_ults gauge\n"), std::string::npos);
  std::string bad = weft::prometheus_text(s, "9 bad{");
  EXPECT_EQ(bad.find("9 bad"), std::string::npos);
  EXPECT_NE(bad.find("# TYPE weft_ults gauge\n"), std::string::npos);
}

}  // namespace
