// benchmarks/sync_bench.cc — weft's synchronisation primitives against the
// NPTL way of doing the same work, measured in one run, side by side, with
// ratios, and with the targets of the sync issue next to them.
//
//   1. uncontended lock+unlock: weft::Mutex from a ULT and from a foreign
//      thread (main), ns per lock+unlock by the thread's CPU clock; vs
//      std::mutex on main.
//   2. contended throughput: N ULTs (2, 64, 1000) on a runtime with one
//      worker per CPU loop { lock; short critical section; unlock } on one
//      weft::Mutex for a fixed time; vs N pthreads (2, 8, 64) on one
//      pthread_mutex_t. Mops/s. The critical section is a chain of dependent
//      multiply-adds on a shared array plus a plain (non-atomic) counter
//      increment, calibrated at start to cost about 50 ns alone. Every lock
//      holder also counts its own acquisitions: at the end the shared counter
//      must equal their sum exactly (a lost increment is a broken mutex and
//      fails the run). Mutex::stats() of every weft point is printed. The
//      ceiling of these rows is measured too: one ULT / one thread alone
//      doing lock + critical section + unlock.
//   3. condvar ping-pong: two ULTs hand a turn back and forth under a
//      weft::Mutex with one weft::CondVar, on a 1-worker and on a 2-worker
//      runtime, ns per handoff; vs two pthreads on std::mutex +
//      std::condition_variable.
//   4. channel ping-pong: two ULTs pass an int back and forth over two
//      weft::Channel<int>(1) (the receiver checks it and sends it + 1), on 1
//      and 2 workers, ns per handoff; vs two pthreads over two tiny bounded
//      queues of capacity 1 made of std::mutex + std::condition_variable.
//
// Machines are shared and noisy: every measurement runs for several rounds,
// weft and NPTL interleaved (the order alternates each round), and the
// table shows the median and the best of the rounds. Ratios are ratios of
// medians; "met" compares the weft median with the target. The numbers also
// go to sync_bench.csv, with bar charts, in the output directory
// (benchmarks/report.h).
//
// Usage: sync_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <weft/weft.h>

#include "benchmarks/bench_common.h"

namespace {

using namespace bench;  // the helpers of benchmarks/bench_common.h

// ---------------------------------------------------------------------------
// Clocks, threads.

// CPU time of the calling kernel thread: what a single-threaded loop costs
// without the time other processes take from it on a shared machine.
uint64_t thread_cpu_ns() { return bench::clock_ns(CLOCK_THREAD_CPUTIME_ID); }

// Starts a pthread running a lambda (kept alive by the caller until joined).
template <class F>
pthread_t start_fn(F* f) {
  return start_thread([](void* a) -> void* {
    (*static_cast<F*>(a))();
    return nullptr;
  }, f);
}

void join_thread(pthread_t t) {
  if (int r = pthread_join(t, nullptr); r != 0) die("pthread_join", r);
}

void join_ult(weft::Ult& u) {
  if (absl::Status s = u.join(); !s.ok()) fail("join", s);
}

std::string loadavg() {
  char b[128] = {};
  FILE* f = fopen("/proc/loadavg", "r");
  if (f == nullptr) return "?";
  if (fgets(b, sizeof b, f) == nullptr) b[0] = 0;
  fclose(f);
  // "0.52 0.58 0.59 1/123 4567": keep the three averages.
  std::string s(b);
  size_t cut = 0;
  for (int sp = 0; cut < s.size(); cut++) {
    if (s[cut] == ' ' && ++sp == 3) break;
  }
  return s.substr(0, cut);
}

// ---------------------------------------------------------------------------
// 1. Uncontended lock+unlock.

uint64_t g_uncontended_count = 0;  // incremented under the lock being timed

// Timed by the thread's CPU clock (a ULT on a 1-worker runtime stays on its
// worker's kernel thread).
template <class M>
double lock_unlock_loop(M& m, uint64_t n) {
  g_uncontended_count = 0;
  uint64_t t0 = thread_cpu_ns();
  for (uint64_t i = 0; i < n; i++) {
    m.lock();
    g_uncontended_count++;
    m.unlock();
  }
  uint64_t t1 = thread_cpu_ns();
  if (g_uncontended_count != n) fail("uncontended: lost increments");
  return static_cast<double>(t1 - t0) / static_cast<double>(n);
}

double weft_uncontended_ult(weft::Runtime& rt, uint64_t n) {
  absl::StatusOr<double> r = rt.block_on([n] {
    weft::Mutex m;
    return lock_unlock_loop(m, n);
  });
  if (!r.ok()) fail("block_on", r.status());
  return *r;
}

double weft_uncontended_foreign(uint64_t n) {
  weft::Mutex m;
  return lock_unlock_loop(m, n);
}

double std_uncontended(uint64_t n) {
  std::mutex m;
  return lock_unlock_loop(m, n);
}

// ---------------------------------------------------------------------------
// 2. Contended throughput with a short critical section.

// The shared data the critical section works on, on its own cache lines.
struct alignas(64) CsData {
  uint64_t count = 0;   // one plain increment per critical section
  uint64_t a[7] = {1, 2, 3, 4, 5, 6, 7};
};

int g_cs_k = 32;  // dependent multiply-adds per critical section (calibrated)

// Reads the array slot the previous critical section wrote, runs it
// through k dependent multiply-adds (an LCG step each; the empty asm keeps
// the compiler from folding the chain), writes the next slot and bumps the
// counter. Each run depends on the one before, as under a lock, so running
// it in a loop alone measures its latency (out-of-order execution cannot
// overlap two runs).
[[gnu::noinline]] void critical_section(CsData& d, int k) {
  uint64_t c = d.count;
  uint64_t x = d.a[(c + 6) % 7];
  for (int i = 0; i < k; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    asm volatile("" : "+r"(x));
  }
  d.a[c % 7] = x;
  d.count = c + 1;
}

// ns per critical section run alone: the best of 40 short samples (~1 ms
// each), so that a preemption or a noisy neighbour does not move it.
double cs_cost_ns(int k) {
  CsData d;
  constexpr int kN = 20000;
  double best = 1e18;
  for (int r = 0; r < 40; r++) {
    uint64_t t0 = now_ns();
    for (int i = 0; i < kN; i++) critical_section(d, k);
    best = std::min(best, static_cast<double>(now_ns() - t0) / kN);
  }
  return best;
}

// Picks k so that the critical section costs about `target` ns alone
// (the median of three estimates).
int calibrate_cs(double target) {
  int ks[3];
  for (int& k : ks) {
    double c16 = cs_cost_ns(16), c272 = cs_cost_ns(272);
    double per = (c272 - c16) / 256;  // ns per multiply-add
    double base = c16 - 16 * per;
    k = per <= 0 ? 32 : std::clamp(static_cast<int>((target - base) / per + 0.5), 4, 2000);
  }
  std::sort(ks, ks + 3);
  return ks[1];
}

// pthread_mutex_t (default attributes) as a Lockable.
struct PthreadMutex {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  void lock() { pthread_mutex_lock(&m); }
  void unlock() { pthread_mutex_unlock(&m); }
};

// The ceiling of any lock's contended throughput: one thread alone doing
// lock + critical section + unlock, Mops/s by its CPU clock.
template <class M>
double ceiling_loop(uint64_t n) {
  auto m = std::make_unique<M>();
  auto d = std::make_unique<CsData>();
  const int k = g_cs_k;
  uint64_t t0 = thread_cpu_ns();
  for (uint64_t i = 0; i < n; i++) {
    m->lock();
    critical_section(*d, k);
    m->unlock();
  }
  uint64_t t1 = thread_cpu_ns();
  if (d->count != n) fail("ceiling: lost increments");
  return static_cast<double>(n) / static_cast<double>(t1 - t0) * 1e3;
}

double weft_ceiling(weft::Runtime& rt, uint64_t n) {
  absl::StatusOr<double> r = rt.block_on([n] { return ceiling_loop<weft::Mutex>(n); });
  if (!r.ok()) fail("block_on", r.status());
  return *r;
}

double nptl_ceiling(uint64_t n) { return ceiling_loop<PthreadMutex>(n); }

struct ContendedResult {
  double mops = 0;
  uint64_t ops = 0;
  weft::Mutex::Stats stats;           // weft only
  uint64_t per_min = 0, per_med = 0, per_max = 0;  // acquisitions per lock user
};

void per_thread_spread(std::vector<uint64_t> per, ContendedResult* r) {
  std::sort(per.begin(), per.end());
  r->per_min = per.front();
  r->per_med = per[per.size() / 2];
  r->per_max = per.back();
}

void check_exact(const char* who, int n, uint64_t shared, const std::vector<uint64_t>& per) {
  uint64_t sum = 0;
  for (uint64_t x : per) sum += x;
  if (sum != shared) {
    failf("%s with %d lockers: the shared counter is %" PRIu64 " but %" PRIu64
          " critical sections ran: the mutex let two in at once",
          who, n, shared, sum);
  }
}

// A lock user: lock, critical section, unlock, until `stop`; returns how
// often it got the lock. `S` is WeftContended or NptlContended.
template <class S>
uint64_t lock_user_loop(S* s, int k) {
  uint64_t ops = 0;
  while (!s->stop.load(std::memory_order_relaxed)) {
    s->m.lock();
    critical_section(s->d, k);
    s->m.unlock();
    ops++;
  }
  return ops;
}

// Waits until all `n` lock users are ready, lets them go with `go()` and
// stops them `dur_ns` later; returns the window's wall-clock ns.
template <class S, class Go>
uint64_t run_window(S& st, int n, uint64_t dur_ns, Go go) {
  while (st.ready.load(std::memory_order_relaxed) != n) sleep_ms(1);
  sleep_ms(2);  // let the last ones park, waiting for go()
  uint64_t t0 = now_ns();
  go();
  sleep_ns(dur_ns);
  st.stop.store(true, std::memory_order_relaxed);
  uint64_t t1 = now_ns();
  return t1 - t0;
}

// The result of a window, once every lock user has ended: the shared
// counter checked against their own counts (`who` names the lock).
template <class S>
ContendedResult contended_result(const char* who, int n, const S& st,
                                 const std::vector<uint64_t>& per, uint64_t window_ns) {
  check_exact(who, n, st.d.count, per);
  ContendedResult r;
  r.ops = st.d.count;
  r.mops = static_cast<double>(r.ops) / static_cast<double>(window_ns) * 1e3;
  per_thread_spread(per, &r);
  return r;
}

struct WeftContended {
  weft::Mutex m;
  alignas(64) CsData d;
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
};

ContendedResult weft_contended(weft::Runtime& rt, int n, uint64_t dur_ns) {
  auto st = std::make_unique<WeftContended>();
  weft::WaitGroup gate(1);
  std::vector<uint64_t> per(static_cast<size_t>(n), 0);
  std::vector<weft::Ult> ults;
  ults.reserve(static_cast<size_t>(n));
  const int k = g_cs_k;
  for (int i = 0; i < n; i++) {
    ults.push_back(rt.spawn([s = st.get(), &gate, &per, i, k] {
      s->ready.fetch_add(1, std::memory_order_relaxed);
      gate.wait();
      per[static_cast<size_t>(i)] = lock_user_loop(s, k);
    }));
    if (!ults.back().status().ok()) fail("spawn", ults.back().status());
  }
  const uint64_t window_ns = run_window(*st, n, dur_ns, [&gate] { gate.count_down(); });
  for (auto& u : ults) join_ult(u);
  ContendedResult r = contended_result("weft::Mutex", n, *st, per, window_ns);
  r.stats = st->m.stats();
  return r;
}

struct NptlContended {
  PthreadMutex m;
  alignas(64) CsData d;
  alignas(64) std::atomic<bool> stop{false};
  std::atomic<int> go{0};
  std::atomic<int> ready{0};
};

ContendedResult nptl_contended(int n, uint64_t dur_ns) {
  auto st = std::make_unique<NptlContended>();
  std::vector<uint64_t> per(static_cast<size_t>(n), 0);
  const int k = g_cs_k;
  struct Body {
    NptlContended* s;
    uint64_t* out;
    int k;
    void operator()() const {
      s->ready.fetch_add(1, std::memory_order_relaxed);
      s->go.wait(0, std::memory_order_acquire);
      *out = lock_user_loop(s, k);
    }
  };
  std::vector<Body> bodies;
  bodies.reserve(static_cast<size_t>(n));
  std::vector<pthread_t> t;
  for (int i = 0; i < n; i++) {
    bodies.push_back(Body{st.get(), &per[static_cast<size_t>(i)], k});
    t.push_back(start_fn(&bodies.back()));
  }
  const uint64_t window_ns = run_window(*st, n, dur_ns, [&st] {
    st->go.store(1, std::memory_order_release);
    st->go.notify_all();
  });
  for (pthread_t th : t) join_thread(th);
  return contended_result("pthread_mutex", n, *st, per, window_ns);
}

// ---------------------------------------------------------------------------
// 3. Condvar ping-pong.

template <class M, class CV>
struct CvPing {
  M m;
  CV cv;
  int turn = 0;
  uint64_t moves = 0;
  uint64_t t0 = 0, t1 = 0;
};

// Player `me` waits for its turn, takes it, passes it on; `warm + n` times.
// Player 0 times its last n turns: 2n handoffs (its n and the other's n).
// The notify comes after the unlock (the woken side need not wait for the
// lock); the waiter's predicate makes that safe.
template <class M, class CV>
void cv_player(CvPing<M, CV>& p, int me, uint64_t warm, uint64_t n) {
  for (uint64_t i = 0; i < warm + n; i++) {
    if (me == 0 && i == warm) p.t0 = now_ns();
    std::unique_lock<M> lk(p.m);
    while (p.turn != me) p.cv.wait(lk);
    p.moves++;
    p.turn = 1 - me;
    lk.unlock();
    p.cv.notify_one();
  }
  if (me == 0) p.t1 = now_ns();
}

template <class M, class CV>
double cv_result(const CvPing<M, CV>& p, uint64_t warm, uint64_t n) {
  if (p.moves != 2 * (warm + n)) fail("condvar ping-pong: moves lost");
  return static_cast<double>(p.t1 - p.t0) / static_cast<double>(2 * n);
}

constexpr uint64_t kPingWarm = 500;

double weft_cv_pingpong(weft::Runtime& rt, uint64_t n) {
  CvPing<weft::Mutex, weft::CondVar> p;
  absl::Status s = rt.block_on([&p, n] {
    weft::Ult b = weft::spawn([&p, n] { cv_player(p, 1, kPingWarm, n); });
    if (!b.status().ok()) fail("spawn", b.status());
    cv_player(p, 0, kPingWarm, n);
    join_ult(b);
  });
  if (!s.ok()) fail("block_on", s);
  return cv_result(p, kPingWarm, n);
}

double nptl_cv_pingpong(uint64_t n) {
  CvPing<std::mutex, std::condition_variable> p;
  auto a = [&p, n] { cv_player(p, 0, kPingWarm, n); };
  auto b = [&p, n] { cv_player(p, 1, kPingWarm, n); };
  pthread_t ta = start_fn(&a), tb = start_fn(&b);
  join_thread(ta);
  join_thread(tb);
  return cv_result(p, kPingWarm, n);
}

// ---------------------------------------------------------------------------
// 4. Channel ping-pong.

// The NPTL way: a bounded FIFO queue on std::mutex + two condition
// variables, as small as it gets.
template <class T, size_t N>
class BoundedQueue {
 public:
  explicit BoundedQueue(size_t capacity) {
    if (capacity != N) fail("BoundedQueue: capacity is a template argument");
  }
  void send(T v) {
    std::unique_lock<std::mutex> lk(m_);
    while (count_ == N) not_full_.wait(lk);
    buf_[(head_ + count_) % N] = std::move(v);
    count_++;
    lk.unlock();
    not_empty_.notify_one();
  }
  T recv() {
    std::unique_lock<std::mutex> lk(m_);
    while (count_ == 0) not_empty_.wait(lk);
    T v = std::move(buf_[head_]);
    head_ = (head_ + 1) % N;
    count_--;
    lk.unlock();
    not_full_.notify_one();
    return v;
  }

 private:
  std::mutex m_;
  std::condition_variable not_empty_, not_full_;
  T buf_[N];
  size_t head_ = 0, count_ = 0;
};

void chan_send(weft::Channel<int>& c, int v) {
  if (absl::Status s = c.send(v); !s.ok()) fail("channel send", s);
}
int chan_recv(weft::Channel<int>& c) {
  absl::StatusOr<int> v = c.recv();
  if (!v.ok()) fail("channel recv", v.status());
  return *v;
}
void chan_send(BoundedQueue<int, 1>& c, int v) { c.send(v); }
int chan_recv(BoundedQueue<int, 1>& c) { return c.recv(); }

template <class Ch>
struct ChanPing {
  Ch there{1}, back{1};  // capacity 1
  uint64_t t0 = 0, t1 = 0;
};

// A sends i and expects i + 1 back; B returns what it gets plus one. One
// round trip is two handoffs; A times its last n round trips.
template <class Ch>
void chan_a(ChanPing<Ch>& p, uint64_t warm, uint64_t n) {
  for (uint64_t i = 0; i < warm + n; i++) {
    if (i == warm) p.t0 = now_ns();
    int v = static_cast<int>(i & 0x3fffffff);
    chan_send(p.there, v);
    if (chan_recv(p.back) != v + 1) fail("channel ping-pong: wrong value back");
  }
  p.t1 = now_ns();
}

template <class Ch>
void chan_b(ChanPing<Ch>& p, uint64_t warm, uint64_t n) {
  for (uint64_t i = 0; i < warm + n; i++) {
    int v = chan_recv(p.there);
    if (v != static_cast<int>(i & 0x3fffffff)) fail("channel ping-pong: out of order");
    chan_send(p.back, v + 1);
  }
}

double weft_chan_pingpong(weft::Runtime& rt, uint64_t n) {
  auto p = std::make_unique<ChanPing<weft::Channel<int>>>();
  absl::Status s = rt.block_on([pp = p.get(), n] {
    weft::Ult b = weft::spawn([pp, n] { chan_b(*pp, kPingWarm, n); });
    if (!b.status().ok()) fail("spawn", b.status());
    chan_a(*pp, kPingWarm, n);
    join_ult(b);
  });
  if (!s.ok()) fail("block_on", s);
  return static_cast<double>(p->t1 - p->t0) / static_cast<double>(2 * n);
}

double nptl_chan_pingpong(uint64_t n) {
  auto p = std::make_unique<ChanPing<BoundedQueue<int, 1>>>();
  auto a = [pp = p.get(), n] { chan_a(*pp, kPingWarm, n); };
  auto b = [pp = p.get(), n] { chan_b(*pp, kPingWarm, n); };
  pthread_t ta = start_fn(&a), tb = start_fn(&b);
  join_thread(ta);
  join_thread(tb);
  return static_cast<double>(p->t1 - p->t0) / static_cast<double>(2 * n);
}

// Round trips that take about `target_ns`, from a first estimate of the
// ns per handoff (at least 5000, at most 5M).
uint64_t trips_for(double ns_per_handoff, double target_ns) {
  double n = target_ns / (2 * std::max(ns_per_handoff, 1.0));
  return static_cast<uint64_t>(std::clamp(n, 5000.0, 5e6));
}

// ---------------------------------------------------------------------------
// Output.

std::string fmt_pct(uint64_t part, uint64_t whole) {
  char b[32];
  snprintf(b, sizeof b, "%.1f%%", whole == 0 ? 0.0 : 100.0 * static_cast<double>(part) / static_cast<double>(whole));
  return b;
}

void usage(FILE* f) {
  fprintf(f,
          "usage: sync_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "\n"
          "Benchmarks weft's synchronisation primitives against the NPTL way of doing the\n"
          "same work, in one run, and prints one table: median and best over the rounds\n"
          "(weft and NPTL interleaved, order alternating), the issue's target for the weft\n"
          "figure and whether the median meets it, and the ratio.\n"
          "\n"
          "  uncontended  weft::Mutex lock+unlock from a ULT and from a foreign thread;\n"
          "               vs std::mutex (thread CPU clock)\n"
          "  1 alone      one ULT / pthread doing lock + critical section + unlock: the\n"
          "               ceiling for the contended rows (thread CPU clock)\n"
          "  contended    2, 64 and 1000 ULTs on a runtime with one worker per CPU loop on\n"
          "               one weft::Mutex around a ~50 ns critical section (calibrated at\n"
          "               start) for a fixed time, Mops/s; vs 2, 8 and 64 pthreads on a\n"
          "               pthread_mutex_t; the shared counter is checked exactly, and the\n"
          "               weft Mutex::stats() are printed\n"
          "  condvar      two ULTs hand a turn back and forth (weft::Mutex + weft::CondVar)\n"
          "               on 1 and on 2 workers, ns per handoff; vs two pthreads on\n"
          "               std::mutex + std::condition_variable\n"
          "  channel      two ULTs pass an int back and forth over two Channel<int>(1), on\n"
          "               1 and 2 workers, ns per handoff; vs two pthreads over two\n"
          "               mutex+condvar bounded queues of capacity 1\n"
          "\n"
          "  --quick       about 10 s in all (3 rounds, shorter measurements), for CI smoke\n"
          "  --rounds=N    rounds per measurement (default 7; 3 with --quick)\n"
          "  --out=DIR     where sync_bench.csv (every number of the tables) and the\n"
          "                sync_bench-*.svg bar charts go (default: results/ next to\n"
          "                this program)\n"
          "  --help        this text\n"
          "\n"
          "A default run takes 30-60 s on a 2-core VM.\n");
}

struct StatsSum {
  uint64_t ops = 0, contended = 0, spins = 0, spin_acquired = 0, parks = 0, handoffs = 0;
  uint64_t hold_ns = 0;  // last round's estimate
  ContendedResult last;
  void add(const ContendedResult& r) {
    ops += r.ops;
    contended += r.stats.contended;
    spins += r.stats.spins;
    spin_acquired += r.stats.spin_acquired;
    parks += r.stats.parks;
    handoffs += r.stats.handoffs;
    hold_ns = r.stats.hold_estimate_ns;
    last = r;
  }
};

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "sync_bench";
  const auto [quick, rounds, out] = bench::parse_options(argc, argv, usage);

  const uint64_t lock_n = quick ? 1000000 : 5000000;           // uncontended lock+unlock pairs
  const uint64_t ceiling_n = quick ? 500000 : 2000000;         // lock+CS+unlock by one thread alone
  const uint64_t point_ns = (quick ? 200ull : 300ull) * 1000000;  // per contended point
  const double ping_ns = quick ? 60e6 : 150e6;                  // per ping-pong measurement
  const int weft_n[3] = {2, 64, 1000};
  const int nptl_n[3] = {2, 8, 64};

  uint64_t start = now_ns();
  const std::string load0 = loadavg();
  bench::init_cpus();

  g_cs_k = calibrate_cs(50);
  const double cs_ns = cs_cost_ns(g_cs_k);

  bench::Runtimes rts;
  weft::Runtime &rt1 = rts.one, &rt2 = rts.two, &rtd = rts.per_cpu;  // workers: 1, 2, 1/CPU
  const size_t default_workers = rtd.stats().workers.size();

  // Warm-ups, and the ping-pong sizes: each configuration gets a fixed
  // number of round trips, chosen from a first estimate to take ~ping_ns.
  bench::Progress progress("sync_bench");
  progress.show("sync_bench: warm-up");
  weft_uncontended_ult(rt1, 100000);
  weft_uncontended_foreign(100000);
  std_uncontended(100000);
  weft_contended(rtd, 64, 20000000);
  nptl_contended(8, 20000000);
  const uint64_t cv1_n = trips_for(weft_cv_pingpong(rt1, 5000), ping_ns);
  const uint64_t cv2_n = trips_for(weft_cv_pingpong(rt2, 5000), ping_ns);
  const uint64_t cvn_n = trips_for(nptl_cv_pingpong(2000), ping_ns);
  const uint64_t ch1_n = trips_for(weft_chan_pingpong(rt1, 5000), ping_ns);
  const uint64_t ch2_n = trips_for(weft_chan_pingpong(rt2, 5000), ping_ns);
  const uint64_t chn_n = trips_for(nptl_chan_pingpong(2000), ping_ns);

  Samples un_ult, un_for, un_std, ceil_w, ceil_n;
  Samples cw[3], cn[3];
  StatsSum sums[3];
  Samples cv1, cv2, cvn, ch1, ch2, chn;
  for (int r = 0; r < rounds; r++) {
    const bool weft_first = r % 2 == 0;
    progress.round(r + 1, rounds, "uncontended lock+unlock");
    run_both(weft_first, [&] {
      un_ult.add(weft_uncontended_ult(rt1, lock_n));
      un_for.add(weft_uncontended_foreign(lock_n));
    }, [&] { un_std.add(std_uncontended(lock_n)); });
    progress.round(r + 1, rounds, "lock + critical section, 1 alone");
    run_both(weft_first, [&] { ceil_w.add(weft_ceiling(rt1, ceiling_n)); },
             [&] { ceil_n.add(nptl_ceiling(ceiling_n)); });
    for (int i = 0; i < 3; i++) {
      progress.round(r + 1, rounds, "contended, %d ULTs / %d threads", weft_n[i], nptl_n[i]);
      run_both(weft_first, [&] {
        ContendedResult c = weft_contended(rtd, weft_n[i], point_ns);
        cw[i].add(c.mops);
        sums[i].add(c);
      }, [&] { cn[i].add(nptl_contended(nptl_n[i], point_ns).mops); });
    }
    progress.round(r + 1, rounds, "CondVar ping-pong");
    run_both(weft_first, [&] {
      cv1.add(weft_cv_pingpong(rt1, cv1_n));
      cv2.add(weft_cv_pingpong(rt2, cv2_n));
    }, [&] { cvn.add(nptl_cv_pingpong(cvn_n)); });
    progress.round(r + 1, rounds, "Channel ping-pong");
    run_both(weft_first, [&] {
      ch1.add(weft_chan_pingpong(rt1, ch1_n));
      ch2.add(weft_chan_pingpong(rt2, ch2_n));
    }, [&] { chn.add(nptl_chan_pingpong(chn_n)); });
  }
  double secs = static_cast<double>(now_ns() - start) / 1e9;
  const std::string load1 = loadavg();
  progress.clear();

  printf("weft sync_bench: %d rounds%s, weft and NPTL interleaved; median and best of rounds\n", rounds,
         quick ? " (--quick)" : "");
  bench::print_system_line(default_workers);
  printf("load average: %s at start, %s at end\n", load0.c_str(), load1.c_str());
  printf("critical section (contended rows): %d dependent multiply-adds on a shared array + a\n"
         "  counter increment, %.1f ns alone\n\n",
         g_cs_k, cs_ns);

  printf("%-28s %-8s %8s %8s  %-10s %-4s  %-28s %8s %8s  %s\n", "weft", "unit", "median", "best", "target", "met",
         "NPTL way", "median", "best", "ratio");
  printf("%s\n", std::string(28 + 1 + 8 + 2 * 9 + 2 + 10 + 1 + 4 + 2 + 28 + 2 * 9 + 2 + 7, '-').c_str());
  // Rows in ns (lower is better: best = min) or Mops/s (best = max).
  auto row = [](const std::string& w, const char* unit, const Samples& a, const char* target, int met,
                const std::string& other, const Samples& b, double ratio) {
    bool tput = strcmp(unit, "Mops/s") == 0;
    printf("%-28s %-8s %8s %8s  %-10s %-4s  %-28s %8s %8s  %s\n", w.c_str(), unit, fmt(a.median()).c_str(),
           fmt(tput ? a.max() : a.min()).c_str(), target, met < 0 ? "" : (met ? "yes" : "NO"), other.c_str(),
           fmt(b.median()).c_str(), fmt(tput ? b.max() : b.min()).c_str(), fmt_ratio(ratio).c_str());
  };
  {
    double s = un_std.median();
    row("Mutex lock+unlock, in a ULT", "ns", un_ult, "<= 1.2x", un_ult.median() <= 1.2 * s, "std::mutex lock+unlock",
        un_std, s / un_ult.median());
    row("Mutex lock+unlock, thread", "ns", un_for, "<= 1.2x", un_for.median() <= 1.2 * s, "std::mutex lock+unlock",
        un_std, s / un_for.median());
  }
  row("Mutex+CS, 1 ULT alone", "Mops/s", ceil_w, "-", -1, "pthread_mutex+CS, 1 thread", ceil_n,
      ceil_w.median() / ceil_n.median());
  double nptl_best = 0;
  int nptl_best_i = 0;
  for (int i = 0; i < 3; i++) {
    if (cn[i].median() > nptl_best) {
      nptl_best = cn[i].median();
      nptl_best_i = i;
    }
  }
  for (int i = 0; i < 3; i++) {
    char w[64], o[64];
    snprintf(w, sizeof w, "Mutex, %d ULTs, %zu wkrs", weft_n[i], default_workers);
    snprintf(o, sizeof o, "pthread_mutex, %d threads", nptl_n[i]);
    double ratio = cw[i].median() / nptl_best;
    bool has_target = weft_n[i] == 64;
    row(w, "Mops/s", cw[i], has_target ? ">= 3x best" : "-", has_target ? ratio >= 3 : -1, o, cn[i], ratio);
  }
  printf("%-28s %-8s %8s %8s  %-10s %-4s  %-28s %8s\n", "", "", "", "", "", "", "NPTL best (max of medians)",
         fmt(nptl_best).c_str());
  {
    double n = cvn.median();
    row("CondVar ping-pong, 1 wkr", "ns/hand", cv1, ">= 20x", n / cv1.median() >= 20, "std::condvar, 2 threads", cvn,
        n / cv1.median());
    row("CondVar ping-pong, 2 wkrs", "ns/hand", cv2, ">= 20x", n / cv2.median() >= 20, "std::condvar, 2 threads", cvn,
        n / cv2.median());
    n = chn.median();
    row("Channel(1) ping-pong, 1 wkr", "ns/hand", ch1, "-", -1, "mutex+cv queue(1), 2 thr", chn, n / ch1.median());
    row("Channel(1) ping-pong, 2 wkrs", "ns/hand", ch2, "-", -1, "mutex+cv queue(1), 2 thr", chn, n / ch2.median());
  }
  printf("\n");

  printf("weft Mutex::stats() of the contended rows, summed over the %d rounds (%% of lock() calls):\n", rounds);
  printf("  %-10s %9s %16s %16s %16s %16s %10s %9s  %s\n", "ULTs", "lock()s", "contended", "spins", "spin_acquired",
         "parks", "handoffs", "hold est", "per-ULT acquisitions, last round: min/median/max");
  for (int i = 0; i < 3; i++) {
    const StatsSum& s = sums[i];
    auto cell = [&s](uint64_t x) { return fmt_count(x) + " (" + fmt_pct(x, s.ops) + ")"; };
    printf("  %-10d %9s %16s %16s %16s %16s %10s %6" PRIu64 " ns  %s / %s / %s\n", weft_n[i], fmt_count(s.ops).c_str(),
           cell(s.contended).c_str(), cell(s.spins).c_str(), cell(s.spin_acquired).c_str(), cell(s.parks).c_str(),
           fmt_count(s.handoffs).c_str(), s.hold_ns, fmt_count(s.last.per_min).c_str(),
           fmt_count(s.last.per_med).c_str(), fmt_count(s.last.per_max).c_str());
  }
  printf("\n");
  printf("ratio: how many times faster weft is: NPTL median / weft median for ns rows, weft\n"
         "  median / NPTL median for the 1-thread row, and weft median / NPTL best for the\n"
         "  contended rows (NPTL best: the best pthread point, %d threads here).\n"
         "  best: min of rounds for ns rows, max for Mops/s rows.\n",
         nptl_n[nptl_best_i]);
  printf("uncontended: %s lock+unlock pairs in a row per round, a plain counter bumped inside,\n"
         "  timed by the thread's CPU clock (other processes' share of the CPU is not counted);\n"
         "  weft from a ULT on a 1-worker runtime and from main (a foreign thread).\n",
         fmt_count(lock_n).c_str());
  printf("1 thread alone: %s x (lock + critical section + unlock) by one ULT / thread, CPU clock:\n"
         "  the ceiling of any lock's throughput on this critical section. The 64-ULT target\n"
         "  (3 x NPTL best) asks for %.1f Mops/s, %.1fx that ceiling.\n",
         fmt_count(ceiling_n).c_str(), 3 * nptl_best, 3 * nptl_best / ceil_w.median());
  printf("contended: %.0f ms per point, wall clock; weft on Options{} (%zu workers), ULTs spawned\n"
         "  from main and released together by a weft::WaitGroup; NPTL: default pthread_mutex_t,\n"
         "  threads unpinned. Every round's shared counter equalled the lock holders' own counts.\n",
         static_cast<double>(point_ns) / 1e6, default_workers);
  printf("ping-pong: ns per handoff = time / (2 x round trips) seen by one side; round trips per\n"
         "  measurement (sized to ~%.0f ms each): condvar %s / %s / NPTL %s, channel %s / %s /\n"
         "  NPTL %s (1 wkr / 2 wkrs / NPTL); notify after unlock on both sides; values checked.\n",
         ping_ns / 1e6, fmt_count(cv1_n).c_str(), fmt_count(cv2_n).c_str(), fmt_count(cvn_n).c_str(),
         fmt_count(ch1_n).c_str(), fmt_count(ch2_n).c_str(), fmt_count(chn_n).c_str());
  printf("total run time %.1f s\n", secs);

  // The same numbers for the CSV file and the figures.
  Report report("sync_bench", system_summary());
  report.set_note(rounds_note(rounds, quick));
  const std::string w1 = weft_series(1), w2 = weft_series(2), wd = weft_series(default_workers);
  report.add_value("system", "critical section", "alone", "ns", cs_ns, 1);
  report.add("sync", w1, "uncontended lock+unlock", "ns/lock+unlock", un_ult);
  report.add("sync", "weft, foreign thread", "uncontended lock+unlock", "ns/lock+unlock", un_for);
  report.add("sync", "NPTL", "uncontended lock+unlock", "ns/lock+unlock", un_std);
  report.add("sync", w1, "lock+CS+unlock, 1 alone", "Mops/s", ceil_w);
  report.add("sync", "NPTL", "lock+CS+unlock, 1 alone", "Mops/s", ceil_n);
  for (int i = 0; i < 3; i++) {
    const std::string x = std::to_string(weft_n[i]) + " ULTs vs " + std::to_string(nptl_n[i]) + " threads";
    report.add("sync", wd, x, "Mops/s", cw[i]);
    report.add("sync", "NPTL", x, "Mops/s", cn[i]);
  }
  report.add("sync", w1, "CondVar ping-pong", "ns/handoff", cv1);
  report.add("sync", w2, "CondVar ping-pong", "ns/handoff", cv2);
  report.add("sync", "NPTL", "CondVar ping-pong", "ns/handoff", cvn);
  report.add("sync", w1, "Channel(1) ping-pong", "ns/handoff", ch1);
  report.add("sync", w2, "Channel(1) ping-pong", "ns/handoff", ch2);
  report.add("sync", "NPTL", "Channel(1) ping-pong", "ns/handoff", chn);
  for (int i = 0; i < 3; i++) {
    const StatsSum& st = sums[i];
    const std::string x = std::to_string(weft_n[i]) + " ULTs";
    const char* t = "Mutex::stats(), sum of rounds";
    report.add_value(t, wd, x, "lock() calls", static_cast<double>(st.ops), rounds);
    report.add_value(t, wd, x, "contended", static_cast<double>(st.contended), rounds);
    report.add_value(t, wd, x, "spins", static_cast<double>(st.spins), rounds);
    report.add_value(t, wd, x, "spin_acquired", static_cast<double>(st.spin_acquired), rounds);
    report.add_value(t, wd, x, "parks", static_cast<double>(st.parks), rounds);
    report.add_value(t, wd, x, "handoffs", static_cast<double>(st.handoffs), rounds);
    report.add_value(t, wd, x, "hold estimate ns, last round", static_cast<double>(st.hold_ns), 1);
    report.add(t, wd, x, "per-ULT acquisitions, last round", static_cast<double>(st.last.per_med),
               static_cast<double>(st.last.per_min), static_cast<double>(st.last.per_max), 1);
  }
  report.add_figure({"ns", "Mutex, CondVar and Channel, weft vs NPTL", Figure::kBars, {"sync"},
                     {"ns/lock+unlock", "ns/handoff"}, "ns per lock+unlock or per handoff; lower is better",
                     ""});
  report.add_figure({"contended", "Mutex throughput, contended, weft vs NPTL", Figure::kBars, {"sync"},
                     {"Mops/s"}, "million lock+CS+unlock per second; higher is better", ""});
  fflush(stdout);
  return report.finish(out);
}
