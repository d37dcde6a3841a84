// benchmarks/runtime_bench.cc — weft's runtime (ULTs on a pool of workers)
// against the NPTL way of doing the same work, measured in one run, side by
// side, with ratios, and with the targets of the runtime issue next to them.
//
//   1. yield: two ULTs on one worker switching with this_ult::yield(), ns
//      per switch; vs two pthreads pinned to one CPU calling sched_yield().
//   2. spawn+join: a ULT spawns a no-op ULT and joins it, 100,000 times in
//      a row, on a 1-worker and on a 2-worker runtime; vs pthread_create +
//      pthread_join of a no-op thread (fewer iterations: it is slow).
//   3. skynet: a 10-ary tree of ULTs, every node spawns its 10 children and
//      joins them, every leaf returns its number, the root checks the sum.
//      1M leaves (1,111,111 ULTs) for weft alone; 10,000 leaves (11,111
//      threads) for both weft and thread-per-node NPTL.
//   4. idle memory: 100,000 parked ULTs (default Options: 64 KiB stacks, each
//      with a guard) sleeping in this_ult::sleep_for, RSS per ULT; vs 2,000
//      pthreads with default stacks blocked on a condition variable.
//
// Machines are shared and noisy: every measurement runs for several rounds,
// weft and NPTL interleaved (the order alternates each round), and the
// table shows the median and the minimum of the rounds. Ratios are ratios of
// medians; "met" compares the weft median with the target. The numbers also
// go to runtime_bench.csv, with bar charts, in the output directory
// (benchmarks/report.h).
//
// Usage: runtime_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <weft/weft.h>

#include "benchmarks/bench_common.h"

namespace {

using namespace bench;  // the helpers of benchmarks/bench_common.h

// ---------------------------------------------------------------------------
// Runtime statistics, memory.

uint64_t total_switches(const weft::RuntimeStats& s) {
  uint64_t n = 0;
  for (const auto& w : s.workers) n += w.switches;
  return n;
}

uint64_t total_parks(const weft::RuntimeStats& s) {
  uint64_t n = 0;
  for (const auto& w : s.workers) n += w.parks;
  return n;
}

// VmRSS of this process, KiB.
long rss_kib() {
  FILE* f = fopen("/proc/self/status", "r");
  if (f == nullptr) die("/proc/self/status", errno);
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f) != nullptr) {
    if (strncmp(line, "VmRSS:", 6) == 0) {
      kib = strtol(line + 6, nullptr, 10);
      break;
    }
  }
  fclose(f);
  if (kib < 0) fail("no VmRSS in /proc/self/status");
  return kib;
}

// ---------------------------------------------------------------------------
// 1. yield.

// Two ULTs on a 1-worker runtime. A times its `n` yields after a warm-up;
// the worker's switch counter over the same window gives the number of
// switches (about 2n: A's yields and B's). B yields longer than A so that A
// never yields alone inside the window.
double weft_yield(weft::Runtime& rt, uint64_t n) {
  constexpr uint64_t kWarm = 10000;
  absl::StatusOr<double> r = rt.block_on([&rt, n]() -> double {
    weft::Ult b = weft::spawn([n] {
      for (uint64_t i = 0; i < 2 * kWarm + n; i++) weft::this_ult::yield();
    });
    if (!b.status().ok()) fail("spawn", b.status());
    for (uint64_t i = 0; i < kWarm; i++) weft::this_ult::yield();
    uint64_t s0 = total_switches(rt.stats());
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < n; i++) weft::this_ult::yield();
    uint64_t t1 = now_ns();
    uint64_t s1 = total_switches(rt.stats());
    if (absl::Status s = b.join(); !s.ok()) fail("join", s);
    uint64_t sw = s1 - s0;
    if (sw < n || sw > 2 * n + n / 10) {
      failf("yield: %" PRIu64 " switches for 2 x %" PRIu64 " yields", sw, n);
    }
    return static_cast<double>(t1 - t0) / static_cast<double>(sw);
  });
  if (!r.ok()) fail("block_on", r.status());
  return *r;
}

// Two pthreads pinned to one CPU calling sched_yield(). Whoever returns from
// sched_yield() and finds that the other ran last counts one switch; thread
// 0 times its window and the switches seen inside it.
struct YieldPair {
  std::atomic<int> go{0};
  std::atomic<int> last{-1};
  std::atomic<uint64_t> switches{0};
  uint64_t warm = 0, n = 0;
  uint64_t t0 = 0, t1 = 0, s0 = 0, s1 = 0;
};

struct YieldPlayer {
  YieldPair* p;
  int me;
};

void* yield_player(void* arg) {
  auto* pl = static_cast<YieldPlayer*>(arg);
  YieldPair* p = pl->p;
  const int me = pl->me;
  while (p->go.load(std::memory_order_acquire) == 0) sched_yield();
  auto step = [p, me] {
    sched_yield();
    if (p->last.load(std::memory_order_relaxed) != me) {
      p->last.store(me, std::memory_order_relaxed);
      p->switches.fetch_add(1, std::memory_order_relaxed);
    }
  };
  if (me == 0) {
    for (uint64_t i = 0; i < p->warm; i++) step();
    p->s0 = p->switches.load(std::memory_order_relaxed);
    p->t0 = now_ns();
    for (uint64_t i = 0; i < p->n; i++) step();
    p->t1 = now_ns();
    p->s1 = p->switches.load(std::memory_order_relaxed);
  } else {
    for (uint64_t i = 0; i < 2 * p->warm + p->n; i++) step();
  }
  return nullptr;
}

double nptl_yield(uint64_t n) {
  YieldPair p;
  p.warm = 2000;
  p.n = n;
  YieldPlayer pl[2] = {{&p, 0}, {&p, 1}};
  cpu_set_t mask = one_cpu(g_cpu);
  pthread_t t[2];
  for (int i = 0; i < 2; i++) t[i] = start_thread(yield_player, &pl[i], &mask);
  p.go.store(1, std::memory_order_release);
  for (auto& th : t) pthread_join(th, nullptr);
  uint64_t sw = p.s1 - p.s0;
  if (sw < n / 2) failf("sched_yield: only %" PRIu64 " switches for %" PRIu64 " yields", sw, n);
  return static_cast<double>(p.t1 - p.t0) / static_cast<double>(sw);
}

// ---------------------------------------------------------------------------
// 2. spawn+join.

// ns per spawn+join, from a ULT. The child stores its number; the joiner
// checks it (join orders the store before the load).
double weft_spawn_join(weft::Runtime& rt, int n) {
  absl::StatusOr<double> r = rt.block_on([n]() -> double {
    std::atomic<uint64_t> sink{0};
    auto once = [&sink](uint64_t i) {
      weft::Ult u = weft::spawn([&sink, i] { sink.store(i, std::memory_order_relaxed); });
      if (!u.status().ok()) fail("spawn", u.status());
      if (absl::Status s = u.join(); !s.ok()) fail("join", s);
      if (sink.load(std::memory_order_relaxed) != i) fail("spawn+join: the child did not run");
    };
    for (uint64_t i = 1; i <= 2000; i++) once(i);
    uint64_t t0 = now_ns();
    for (uint64_t i = 1; i <= static_cast<uint64_t>(n); i++) once(i);
    uint64_t t1 = now_ns();
    return static_cast<double>(t1 - t0) / n;
  });
  if (!r.ok()) fail("block_on", r.status());
  return *r;
}

std::atomic<uint64_t> g_bodies{0};

void* noop_thread(void*) {
  g_bodies.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

double nptl_spawn_join(int n) {
  auto once = [] {
    pthread_t t;
    if (int r = pthread_create(&t, nullptr, noop_thread, nullptr); r != 0) die("pthread_create", r);
    pthread_join(t, nullptr);
  };
  for (int i = 0; i < 20; i++) once();
  uint64_t before = g_bodies.load();
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; i++) once();
  uint64_t t1 = now_ns();
  if (g_bodies.load() - before != static_cast<uint64_t>(n)) fail("a pthread body did not run");
  return static_cast<double>(t1 - t0) / n;
}

// ---------------------------------------------------------------------------
// 3. skynet.

constexpr uint64_t kFanout = 10;

uint64_t expected_sum(uint64_t leaves) { return leaves * (leaves - 1) / 2; }

// A node covering leaves [num, num + size): spawns its 10 children as ULTs
// and joins them. A leaf (size 1) is a ULT that returns its number.
uint64_t weft_skynet_node(uint64_t num, uint64_t size) {
  if (size == 1) return num;
  const uint64_t sub = size / kFanout;
  uint64_t sums[kFanout];
  weft::Ult kids[kFanout];
  for (uint64_t i = 0; i < kFanout; i++) {
    kids[i] = weft::spawn([&sums, i, num, sub] { sums[i] = weft_skynet_node(num + i * sub, sub); });
    if (!kids[i].status().ok()) fail("skynet spawn", kids[i].status());
  }
  uint64_t sum = 0;
  for (uint64_t i = 0; i < kFanout; i++) {
    if (absl::Status s = kids[i].join(); !s.ok()) fail("skynet join", s);
    sum += sums[i];
  }
  return sum;
}

// ms for the whole tree, the root being a ULT spawned from main().
double weft_skynet(weft::Runtime& rt, uint64_t leaves) {
  uint64_t t0 = now_ns();
  absl::StatusOr<uint64_t> r = rt.block_on([leaves] { return weft_skynet_node(0, leaves); });
  uint64_t t1 = now_ns();
  if (!r.ok()) fail("block_on", r.status());
  if (*r != expected_sum(leaves)) {
    failf("weft skynet(%" PRIu64 ") = %" PRIu64 ", expected %" PRIu64, leaves, *r,
          expected_sum(leaves));
  }
  return static_cast<double>(t1 - t0) / 1e6;
}

struct NptlNode {
  uint64_t num, size, sum;
};

void* nptl_skynet_node(void* arg) {
  auto* nd = static_cast<NptlNode*>(arg);
  if (nd->size == 1) {
    nd->sum = nd->num;
    return nullptr;
  }
  const uint64_t sub = nd->size / kFanout;
  NptlNode kids[kFanout];
  pthread_t t[kFanout];
  for (uint64_t i = 0; i < kFanout; i++) {
    kids[i] = {nd->num + i * sub, sub, 0};
    if (int r = pthread_create(&t[i], nullptr, nptl_skynet_node, &kids[i]); r != 0) die("skynet pthread_create", r);
  }
  nd->sum = 0;
  for (uint64_t i = 0; i < kFanout; i++) {
    pthread_join(t[i], nullptr);
    nd->sum += kids[i].sum;
  }
  return nullptr;
}

// ms for the whole tree, thread per node (default attributes), the root
// being a thread created by main().
double nptl_skynet(uint64_t leaves) {
  NptlNode root{0, leaves, 0};
  uint64_t t0 = now_ns();
  pthread_t t = start_thread(nptl_skynet_node, &root, nullptr);
  pthread_join(t, nullptr);
  uint64_t t1 = now_ns();
  if (root.sum != expected_sum(leaves)) {
    failf("NPTL skynet(%" PRIu64 ") = %" PRIu64 ", expected %" PRIu64, leaves, root.sum,
          expected_sum(leaves));
  }
  return static_cast<double>(t1 - t0) / 1e6;
}

// ---------------------------------------------------------------------------
// 4. idle memory.
//
// Parked ULTs wait for `release` with periodic sleep_for. All of them sleep
// until the same instants, the ticks of a grid (kTickNs apart), so between
// two ticks none runs; the RSS is read between ticks, once every ULT is in
// sleep_for and the workers have finished parking every one of them (their
// park counters have caught up with the sleeps begun). After `release` they
// return at the next tick.
constexpr int64_t kTickNs = 500 * 1000 * 1000;
constexpr int64_t kTickMarginNs = 120 * 1000 * 1000;

struct ParkState {
  int64_t epoch = 0;
  std::atomic<bool> release{false};
  std::atomic<int64_t> started{0};
  std::atomic<int64_t> sleeping{0};     // inside sleep_for now
  std::atomic<uint64_t> sleep_calls{0}; // sleep_for calls begun
  std::atomic<int64_t> finished{0};
};

int64_t next_tick(int64_t epoch, int64_t now) { return epoch + ((now - epoch) / kTickNs + 1) * kTickNs; }

struct MemResult {
  double kib_per;         // RSS KiB per ULT / thread
  uint64_t stacks_mapped; // weft: stacks mmap'd while spawning (the rest were cached)
};

MemResult weft_idle_memory(weft::Runtime& rt, int n) {
  static ParkState st;  // static: not on main's stack, its page is resident before
  st.epoch = static_cast<int64_t>(now_ns());
  st.release.store(false);
  st.started.store(0);
  st.sleeping.store(0);
  st.sleep_calls.store(0);
  st.finished.store(0);
  weft::RuntimeStats before = rt.stats();
  const uint64_t parks0 = total_parks(before);
  const long rss0 = rss_kib();

  absl::Status s = rt.block_on([n] {
    for (int i = 0; i < n; i++) {
      weft::Ult u = weft::spawn([] {
        st.started.fetch_add(1, std::memory_order_relaxed);
        while (!st.release.load(std::memory_order_acquire)) {
          int64_t now = static_cast<int64_t>(now_ns());
          st.sleep_calls.fetch_add(1, std::memory_order_relaxed);
          st.sleeping.fetch_add(1, std::memory_order_relaxed);
          weft::this_ult::sleep_for(std::chrono::nanoseconds(next_tick(st.epoch, now) - now));
          st.sleeping.fetch_sub(1, std::memory_order_relaxed);
        }
        st.finished.fetch_add(1, std::memory_order_relaxed);
      });
      if (!u.status().ok()) fail("spawn (idle memory)", u.status());
      if (absl::Status d = u.detach(); !d.ok()) fail("detach", d);
    }
  });
  if (!s.ok()) fail("block_on", s);

  long rss1 = -1;
  const uint64_t give_up = now_ns() + 60ull * 1000000000;
  while (rss1 < 0) {
    if (now_ns() > give_up) fail("idle memory: the ULTs never all parked");
    int64_t now = static_cast<int64_t>(now_ns());
    int64_t tick = next_tick(st.epoch, now);
    if (tick - now < kTickMarginNs) {  // too close to a wake-up burst: let it pass
      sleep_ms(static_cast<int>((tick - now) / 1000000) + 20);
      continue;
    }
    uint64_t calls = st.sleep_calls.load();
    uint64_t parks = total_parks(rt.stats()) - parks0;
    if (st.started.load() != n || st.sleeping.load() != n || parks < calls) {
      sleep_ms(2);
      continue;
    }
    long r = rss_kib();
    // Still no wake-up since the check?
    if (static_cast<int64_t>(now_ns()) < tick && st.sleeping.load() == n && st.sleep_calls.load() == calls) rss1 = r;
  }
  weft::RuntimeStats during = rt.stats();

  st.release.store(true, std::memory_order_release);
  while (st.finished.load() != n || rt.stats().live != 0) {
    if (now_ns() > give_up) fail("idle memory: the ULTs did not finish");
    sleep_ms(5);
  }
  return {static_cast<double>(rss1 - rss0) / n, during.stacks_mapped - before.stacks_mapped};
}

struct CondState {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;       // the threads wait here
  pthread_cond_t all_in = PTHREAD_COND_INITIALIZER;   // main waits here
  int waiting = 0;
  int n = 0;
  bool release = false;
};

void* cond_waiter(void* arg) {
  auto* c = static_cast<CondState*>(arg);
  pthread_mutex_lock(&c->m);
  if (++c->waiting == c->n) pthread_cond_signal(&c->all_in);
  while (!c->release) pthread_cond_wait(&c->cv, &c->m);
  pthread_mutex_unlock(&c->m);
  return nullptr;
}

double nptl_idle_memory(int n) {
  static CondState c;
  c.waiting = 0;
  c.n = n;
  c.release = false;
  std::vector<pthread_t> t(static_cast<size_t>(n));
  const long rss0 = rss_kib();
  for (auto& th : t) {
    if (int r = pthread_create(&th, nullptr, cond_waiter, &c); r != 0) die("pthread_create (idle memory)", r);
  }
  // A thread counted itself under the mutex and pthread_cond_wait releases
  // it atomically: once main holds the mutex and sees n, all n are waiting.
  pthread_mutex_lock(&c.m);
  while (c.waiting != n) pthread_cond_wait(&c.all_in, &c.m);
  const long rss1 = rss_kib();
  c.release = true;
  pthread_cond_broadcast(&c.cv);
  pthread_mutex_unlock(&c.m);
  for (auto& th : t) pthread_join(th, nullptr);
  return static_cast<double>(rss1 - rss0) / n;
}

// ---------------------------------------------------------------------------
// Output.

double null_syscall_ns() {
  constexpr int kN = 200000;
  Samples s;
  for (int r = 0; r < 5; r++) {
    uint64_t t0 = now_ns();
    for (int i = 0; i < kN; i++) syscall(SYS_getppid);
    s.add(static_cast<double>(now_ns() - t0) / kN);
  }
  return s.median();
}

void usage(FILE* f) {
  fprintf(f,
          "usage: runtime_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "\n"
          "Benchmarks weft's runtime (ULTs on a pool of workers) against the NPTL way of\n"
          "doing the same work, in one run, and prints one table: median and min over the\n"
          "rounds (weft and NPTL interleaved, order alternating), the issue's target for\n"
          "the weft figure and whether the median meets it, and the ratio of medians.\n"
          "\n"
          "  yield        two ULTs on a 1-worker runtime calling this_ult::yield(), ns per\n"
          "               switch; vs two pthreads pinned to one CPU calling sched_yield()\n"
          "  spawn+join   a ULT spawns a no-op ULT and joins it, 100,000 times, on a 1-worker\n"
          "               and a 2-worker runtime; vs pthread_create+pthread_join\n"
          "  skynet       10-ary tree, every node spawns and joins its 10 children, leaves\n"
          "               return their number, the sum is checked; 1M leaves (weft only)\n"
          "               and 10,000 leaves (weft vs thread-per-node NPTL), all workers\n"
          "  idle memory  100,000 ULTs parked in sleep_for (default Options: 64 KiB stacks\n"
          "               with guards), RSS per ULT; vs 2,000 default pthreads blocked on a\n"
          "               condition variable\n"
          "\n"
          "  --quick       about 5-10 s in all (3 rounds, fewer iterations, 50,000 parked\n"
          "                ULTs), for CI smoke and the README demo\n"
          "  --rounds=N    rounds per measurement (default 7; 3 with --quick)\n"
          "  --out=DIR     where runtime_bench.csv (every number of the table) and the\n"
          "                runtime_bench-*.svg bar charts go (default: results/ next to\n"
          "                this program)\n"
          "  --help        this text\n"
          "\n"
          "A default run takes 20-40 s on a 2-core VM.\n");
}

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "runtime_bench";
  const auto [quick, rounds, out] = bench::parse_options(argc, argv, usage);

  const uint64_t yield_n = quick ? 500000 : 2000000;     // yields by the timing ULT
  const uint64_t sched_yield_n = quick ? 20000 : 100000;  // sched_yield calls by the timing thread
  const int spawn_n = 100000;
  const int pthread_n = quick ? 1000 : 2000;
  const uint64_t skynet_big = 1000000;
  const uint64_t skynet_small = 10000;
  const int park_n = quick ? 50000 : 100000;
  const int park_threads = quick ? 1000 : 2000;

  uint64_t start = now_ns();
  bench::init_cpus();
  const double syscall_ns = null_syscall_ns();

  bench::Runtimes rts;
  weft::Runtime &rt1 = rts.one, &rt2 = rts.two, &rtd = rts.per_cpu;  // workers: 1, 2, 1/CPU
  const size_t default_workers = rtd.stats().workers.size();

  bench::Progress progress("runtime_bench");
  // Warm-ups: worker stacks, descriptor caches, glibc's thread stack cache.
  progress.show("runtime_bench: warm-up");
  weft_yield(rt1, 10000);
  weft_spawn_join(rt1, 1000);
  weft_spawn_join(rt2, 1000);
  weft_skynet(rtd, skynet_small);
  nptl_spawn_join(100);

  Samples y_w, y_n, sj1, sj2, sj_n, sky_big, sky_small_w, sky_small_n, mem_w, mem_n;
  Samples mem_w_first, mem_n_first;  // round 1 only: weft's descriptor table grows then
  uint64_t mem_first_mapped = 0, mem_last_mapped = 0;
  weft::RuntimeStats sky0, sky1;
  double sky_last_ms = 0;
  for (int r = 0; r < rounds; r++) {
    const bool weft_first = r % 2 == 0;

    progress.round(r + 1, rounds, "yield");
    run_both(weft_first, [&] { y_w.add(weft_yield(rt1, yield_n)); },
             [&] { y_n.add(nptl_yield(sched_yield_n)); });

    progress.round(r + 1, rounds, "spawn+join");
    run_both(weft_first, [&] {
      sj1.add(weft_spawn_join(rt1, spawn_n));
      sj2.add(weft_spawn_join(rt2, spawn_n));
    }, [&] { sj_n.add(nptl_spawn_join(pthread_n)); });

    progress.round(r + 1, rounds, "skynet");
    run_both(weft_first, [&] {
      sky_small_w.add(weft_skynet(rtd, skynet_small));
      weft::RuntimeStats a = rtd.stats();
      double ms = weft_skynet(rtd, skynet_big);
      weft::RuntimeStats b = rtd.stats();
      sky_big.add(ms);
      sky0 = a;
      sky1 = b;
      sky_last_ms = ms;
    }, [&] { sky_small_n.add(nptl_skynet(skynet_small)); });

    progress.round(r + 1, rounds, "idle memory, %dk parked ULTs", park_n / 1000);
    run_both(weft_first, [&] {
      MemResult m = weft_idle_memory(rtd, park_n);
      mem_w.add(m.kib_per);
      if (r == 0) {
        mem_w_first.add(m.kib_per);
        mem_first_mapped = m.stacks_mapped;
      }
      mem_last_mapped = m.stacks_mapped;
    }, [&] {
      double kib = nptl_idle_memory(park_threads);
      mem_n.add(kib);
      if (r == 0) mem_n_first.add(kib);
    });
  }
  double secs = static_cast<double>(now_ns() - start) / 1e9;
  progress.clear();

  printf("weft runtime_bench: %d rounds%s, weft and NPTL interleaved; median and min of rounds\n", rounds,
         quick ? " (--quick)" : "");
  bench::print_system_line(default_workers);
  printf("null syscall (getppid): %.0f ns here\n\n", syscall_ns);

  printf("%-28s %-8s %9s %9s  %-9s %-4s  %-28s %9s %9s  %s\n", "weft", "unit", "median", "min", "target", "met",
         "NPTL way", "median", "min", "NPTL/weft");
  printf("%s\n", std::string(28 + 1 + 8 + 2 * 10 + 2 + 9 + 1 + 4 + 2 + 28 + 2 * 10 + 2 + 9, '-').c_str());
  auto row = [](const char* w, const char* unit, const Samples& a, const char* target, bool met, const char* other,
                const Samples* b, int prec = -1) {
    std::string bm = b ? fmt(b->median(), prec) : "", bn = b ? fmt(b->min(), prec) : "";
    std::string ratio = b ? fmt_ratio(b->median() / a.median()) : "-";
    printf("%-28s %-8s %9s %9s  %-9s %-4s  %-28s %9s %9s  %s\n", w, unit, fmt(a.median(), prec).c_str(),
           fmt(a.min(), prec).c_str(), target, target[0] == '-' ? "" : (met ? "yes" : "NO"), other, bm.c_str(), bn.c_str(),
           ratio.c_str());
  };
  char lbl_sj_n[64], lbl_mem_w[64], lbl_mem_n[64], lbl_mem_w1[64];
  snprintf(lbl_sj_n, sizeof lbl_sj_n, "pthread_create+join (%d)", pthread_n);
  snprintf(lbl_mem_w, sizeof lbl_mem_w, "idle memory, %dk parked", park_n / 1000);
  snprintf(lbl_mem_w1, sizeof lbl_mem_w1, " same, round 1 only (cold)");
  snprintf(lbl_mem_n, sizeof lbl_mem_n, "%d pthreads on a condvar", park_threads);
  row("yield, 1 worker", "ns/sw", y_w, "<= 25", y_w.median() <= 25, "sched_yield, 2 thr, 1 CPU", &y_n);
  row("spawn+join, 1 worker", "ns/ULT", sj1, "<= 150", sj1.median() <= 150, lbl_sj_n, &sj_n);
  row("spawn+join, 2 workers", "ns/ULT", sj2, "<= 150", sj2.median() <= 150, lbl_sj_n, &sj_n);
  row("skynet 10k leaves, all wkrs", "ms", sky_small_w, "-", false, "thread per node (11,111)", &sky_small_n);
  row("skynet 1M leaves, all wkrs", "ms", sky_big, "< 150", sky_big.median() < 150, "n/a (1.1M threads)", nullptr);
  row(lbl_mem_w, "KiB/ULT", mem_w, "<= 4", mem_w.median() <= 4, lbl_mem_n, &mem_n, 3);
  row(lbl_mem_w1, "KiB/ULT", mem_w_first, "<= 4", mem_w_first.median() <= 4, lbl_mem_n, &mem_n_first, 3);
  printf("\n");

  uint64_t sw = 0, st = 0, pk = 0, sl = 0;  // skynet 1M, last round: all workers
  {
    std::string per_sw, per_st;
    for (size_t i = 0; i < sky1.workers.size(); i++) {
      const auto& b = sky1.workers[i];
      const auto& a = i < sky0.workers.size() ? sky0.workers[i] : weft::WorkerStats{};
      sw += b.switches - a.switches;
      st += b.steals - a.steals;
      pk += b.parks - a.parks;
      sl += b.sleeps - a.sleeps;
      if (i != 0) {
        per_sw += '/';
        per_st += '/';
      }
      per_sw += fmt_count(b.switches - a.switches);
      per_st += fmt_count(b.steals - a.steals);
    }
    printf("skynet 1M stats (last round, %.0f ms): spawned %s, switches %s (%s), steals %s (%s), parks %s, "
           "worker sleeps %s, stacks mapped %s\n",
           sky_last_ms, fmt_count(sky1.spawned - sky0.spawned).c_str(), fmt_count(sw).c_str(), per_sw.c_str(),
           fmt_count(st).c_str(), per_st.c_str(), fmt_count(pk).c_str(), fmt_count(sl).c_str(),
           fmt_count(sky1.stacks_mapped - sky0.stacks_mapped).c_str());
  }
  printf("\n");
  printf("yield: ns per switch = window time / switches counted by the worker (weft; its KLT is\n"
         "  not pinned) or seen by the threads (NPTL, both pinned to CPU %d: a return from\n"
         "  sched_yield() after the other thread ran); %" PRIu64 " / %" PRIu64 " yields by the timing\n"
         "  side per round.\n",
         g_cpu, yield_n, sched_yield_n);
  printf("spawn+join: %d in a row per round from a ULT, the child stores a value the joiner\n"
         "  checks; NPTL: %d pthread_create+pthread_join in a row from main, default attributes.\n",
         spawn_n, pthread_n);
  printf("skynet: sums checked (%" PRIu64 " and %" PRIu64 "); %zu workers (Options{}); root spawned from\n"
         "  main by block_on; NPTL: one thread per node, default attributes (8 MiB stacks).\n"
         "  Go's goroutines are the rival at 1M (not run here).\n",
         expected_sum(skynet_big), expected_sum(skynet_small), default_workers);
  printf("idle memory: (VmRSS with all parked - VmRSS before) / count, read once every ULT is in\n"
         "  sleep_for and parked (Options{}: 64 KiB stacks, 4 KiB guards; a sleeping ULT also\n"
         "  holds a timer entry). weft's descriptor table is never freed: round 1 grows it (the\n"
         "  \"cold\" row, what a fresh process pays), later rounds reuse it. Stacks newly mapped:\n"
         "  %s in round 1, %s in the last (the rest came from the death-row cache).\n"
         "  Go's goroutines: about 2.6 KiB. NPTL: threads blocked in pthread_cond_wait, default\n"
         "  8 MiB stacks.\n",
         fmt_count(mem_first_mapped).c_str(), fmt_count(mem_last_mapped).c_str());
  printf("total run time %.1f s\n", secs);

  // The same numbers for the CSV file and the figures.
  Report report("runtime_bench", system_summary());
  report.set_note(rounds_note(rounds, quick));
  const std::string w1 = weft_series(1), w2 = weft_series(2), wd = weft_series(default_workers);
  report.add("system", "kernel", "getppid", "ns", syscall_ns, syscall_ns, syscall_ns, 5);
  report.add("runtime", w1, "yield", "ns/switch", y_w);
  report.add("runtime", "NPTL", "yield", "ns/switch", y_n);
  report.add("runtime", w1, "spawn+join", "ns/spawn+join", sj1);
  report.add("runtime", w2, "spawn+join", "ns/spawn+join", sj2);
  report.add("runtime", "NPTL", "spawn+join", "ns/spawn+join", sj_n);
  report.add("runtime", wd, "skynet 10k leaves", "ms", sky_small_w);
  report.add("runtime", "NPTL", "skynet 10k leaves", "ms", sky_small_n);
  report.add("runtime", wd, "skynet 1M leaves", "ms", sky_big);
  report.add("runtime", wd, "idle memory", "KiB/thread", mem_w);
  report.add("runtime", "NPTL", "idle memory", "KiB/thread", mem_n);
  report.add("runtime", wd, "idle memory, round 1 (cold)", "KiB/thread", mem_w_first);
  report.add("runtime", "NPTL", "idle memory, round 1 (cold)", "KiB/thread", mem_n_first);
  {
    const char* t = "skynet 1M stats (last round)";
    report.add_value(t, wd, "run", "ms", sky_last_ms, 1);
    report.add_value(t, wd, "spawned", "count", static_cast<double>(sky1.spawned - sky0.spawned), 1);
    report.add_value(t, wd, "switches", "count", static_cast<double>(sw), 1);
    report.add_value(t, wd, "steals", "count", static_cast<double>(st), 1);
    report.add_value(t, wd, "parks", "count", static_cast<double>(pk), 1);
    report.add_value(t, wd, "worker sleeps", "count", static_cast<double>(sl), 1);
    report.add_value(t, wd, "stacks mapped", "count",
                     static_cast<double>(sky1.stacks_mapped - sky0.stacks_mapped), 1);
  }
  report.add_figure({"ns", "yield and spawn+join, weft vs NPTL", Figure::kBars, {"runtime"},
                     {"ns/switch", "ns/spawn+join"}, "ns per switch or per spawn+join; lower is better", ""});
  report.add_figure({"skynet", "skynet, a 10-ary tree of spawns and joins", Figure::kBars, {"runtime"},
                     {"ms"}, "ms for the whole tree; lower is better", ""});
  report.add_figure({"memory", "memory of an idle ULT vs an idle pthread", Figure::kBars, {"runtime"},
                     {"KiB/thread"}, "RSS KiB per parked ULT or blocked thread; lower is better", ""});
  return report.finish(out);
}
