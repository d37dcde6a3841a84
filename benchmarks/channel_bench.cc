// benchmarks/channel_bench.cc — weft::Channel and weft::select (issue 14)
// against the NPTL way of passing a value between two threads, in one run,
// side by side, with ratios.
//
//   1. ping-pong: two ULTs pass an int back and forth over two channels
//      (A sends i on `there`, B answers i + 1 on `back`), unbuffered and
//      buffered(1), on a 1-worker and a 2-worker runtime; ns per handoff
//      (one send + the matching recv). NPTL: two pthreads doing the same
//      over two one-slot queues of std::mutex + std::condition_variable
//      (NPTL has no rendezvous channel; the slot is the cheapest
//      equivalent). The target: <= 60 ns per handoff. Go 1.19's
//      unbuffered ping-pong, ~150 ns per handoff on this machine, is quoted
//      as a reference only (Go is not installed here; not measured).
//   2. select over 4 channels:
//      - ready: one ULT selects over 4 buffered channels of which one holds
//        a value, then refills a random one (try_send); ns per select+send;
//      - ping-pong: B selects over 4 unbuffered channels, A sends to them
//        in turn and waits for the answer on a plain channel; ns per
//        handoff.
//
// Machines are shared and noisy: every measurement runs several rounds,
// weft and NPTL interleaved (the order alternates), and the table shows the
// median and best of the rounds; ratios are ratios of medians. The numbers
// also go to channel_bench.csv, with a bar chart, in the output directory
// (benchmarks/report.h).
//
// Usage: channel_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <pthread.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <weft/weft.h>

#include "benchmarks/bench_common.h"

namespace {

using namespace bench;

constexpr uint64_t kWarm = 1000;

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

// The NPTL way: a one-slot queue on std::mutex + two condition variables.
class Slot {
 public:
  void send(int v) {
    std::unique_lock<std::mutex> lk(m_);
    while (full_) not_full_.wait(lk);
    v_ = v;
    full_ = true;
    lk.unlock();
    not_empty_.notify_one();
  }
  int recv() {
    std::unique_lock<std::mutex> lk(m_);
    while (!full_) not_empty_.wait(lk);
    int v = v_;
    full_ = false;
    lk.unlock();
    not_full_.notify_one();
    return v;
  }

 private:
  std::mutex m_;
  std::condition_variable not_empty_, not_full_;
  int v_ = 0;
  bool full_ = false;
};

void send_to(weft::Channel<int>& c, int v) {
  if (absl::Status s = c.send(v); !s.ok()) fail("channel send", s);
}
int recv_from(weft::Channel<int>& c) {
  absl::StatusOr<int> v = c.recv();
  if (!v.ok()) fail("channel recv", v.status());
  return *v;
}
void send_to(Slot& c, int v) { c.send(v); }
int recv_from(Slot& c) { return c.recv(); }

template <class Ch>
struct Ping {
  explicit Ping(size_t cap) : there(cap), back(cap) {}
  Ch there, back;
  uint64_t t0 = 0, t1 = 0;
};
template <>
struct Ping<Slot> {
  explicit Ping(size_t) {}
  Slot there, back;
  uint64_t t0 = 0, t1 = 0;
};

template <class Ch>
void ping_a(Ping<Ch>& p, uint64_t n) {
  for (uint64_t i = 0; i < kWarm + n; i++) {
    if (i == kWarm) p.t0 = now_ns();
    int v = static_cast<int>(i & 0x3fffffff);
    send_to(p.there, v);
    if (recv_from(p.back) != v + 1) fail("ping-pong: wrong value back");
  }
  p.t1 = now_ns();
}

template <class Ch>
void ping_b(Ping<Ch>& p, uint64_t n) {
  for (uint64_t i = 0; i < kWarm + n; i++) {
    int v = recv_from(p.there);
    if (v != static_cast<int>(i & 0x3fffffff)) fail("ping-pong: out of order");
    send_to(p.back, v + 1);
  }
}

double weft_pingpong(weft::Runtime& rt, size_t cap, uint64_t n) {
  auto p = std::make_unique<Ping<weft::Channel<int>>>(cap);
  absl::Status s = rt.block_on([pp = p.get(), n] {
    weft::Ult b = weft::spawn([pp, n] { ping_b(*pp, n); });
    if (!b.status().ok()) fail("spawn", b.status());
    ping_a(*pp, n);
    if (absl::Status j = b.join(); !j.ok()) fail("join", j);
  });
  if (!s.ok()) fail("block_on", s);
  return static_cast<double>(p->t1 - p->t0) / static_cast<double>(2 * n);
}

double nptl_pingpong(uint64_t n) {
  auto p = std::make_unique<Ping<Slot>>(1);
  auto a = [pp = p.get(), n] { ping_a(*pp, n); };
  auto b = [pp = p.get(), n] { ping_b(*pp, n); };
  pthread_t ta = start_fn(&a), tb = start_fn(&b);
  join_thread(ta);
  join_thread(tb);
  return static_cast<double>(p->t1 - p->t0) / static_cast<double>(2 * n);
}

// One ULT: select over 4 buffered channels, one of which holds a value;
// after each select a value goes to a pseudo-random channel. ns per
// select + try_send.
double weft_select_ready(weft::Runtime& rt, uint64_t n) {
  absl::StatusOr<double> r = rt.block_on([n] {
    std::array<std::unique_ptr<weft::Channel<int>>, 4> ch;
    for (auto& c : ch) c = std::make_unique<weft::Channel<int>>(1);
    if (!ch[0]->try_send(0).ok()) fail("select: prime");
    std::optional<int> v0, v1, v2, v3;
    uint64_t x = 88172645463325252ull, t0 = 0, sum = 0;
    for (uint64_t i = 0; i < kWarm + n; i++) {
      if (i == kWarm) t0 = now_ns();
      int k = weft::select(weft::recv_case(*ch[0], &v0), weft::recv_case(*ch[1], &v1), weft::recv_case(*ch[2], &v2),
                           weft::recv_case(*ch[3], &v3));
      sum += static_cast<uint64_t>(k);
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      if (!ch[x & 3]->try_send(static_cast<int>(i)).ok()) fail("select: refill");
    }
    if (sum == 0 && n > 1000) fail("select: always case 0");
    return static_cast<double>(now_ns() - t0) / static_cast<double>(n);
  });
  if (!r.ok()) fail("block_on", r.status());
  return *r;
}

// B selects over 4 unbuffered channels; A sends to them in turn and waits
// for B's answer on a plain unbuffered channel. ns per handoff.
double weft_select_pingpong(weft::Runtime& rt, uint64_t n) {
  struct S {
    weft::Channel<int> in0{0}, in1{0}, in2{0}, in3{0}, back{0};
  };
  auto s = std::make_unique<S>();
  uint64_t t0 = 0, t1 = 0;
  absl::Status st = rt.block_on([sp = s.get(), n, &t0, &t1] {
    weft::Ult b = weft::spawn([sp, n] {
      std::optional<int> v;
      for (uint64_t i = 0; i < kWarm + n; i++) {
        int k = weft::select(weft::recv_case(sp->in0, &v), weft::recv_case(sp->in1, &v), weft::recv_case(sp->in2, &v),
                             weft::recv_case(sp->in3, &v));
        if (k != static_cast<int>(i & 3) || !v) fail("select ping-pong: wrong case");
        send_to(sp->back, *v + 1);
      }
    });
    weft::Channel<int>* in[4] = {&sp->in0, &sp->in1, &sp->in2, &sp->in3};
    for (uint64_t i = 0; i < kWarm + n; i++) {
      if (i == kWarm) t0 = now_ns();
      int v = static_cast<int>(i & 0x3fffffff);
      send_to(*in[i & 3], v);
      if (recv_from(sp->back) != v + 1) fail("select ping-pong: wrong value back");
    }
    t1 = now_ns();
    if (absl::Status j = b.join(); !j.ok()) fail("join", j);
  });
  if (!st.ok()) fail("block_on", st);
  return static_cast<double>(t1 - t0) / static_cast<double>(2 * n);
}

uint64_t trips_for(double ns_per_op, double target_ns) {
  return static_cast<uint64_t>(std::clamp(target_ns / std::max(ns_per_op, 1.0), 5000.0, 5e6));
}

void usage(FILE* f) {
  fprintf(f,
          "usage: channel_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "\n"
          "weft::Channel ping-pong (unbuffered and buffered(1), 1 and 2 workers) against two\n"
          "pthreads over mutex+condvar one-slot queues, and weft::select over 4 channels;\n"
          "median and best over the rounds (weft and NPTL interleaved), ratio of medians.\n"
          "\n"
          "  --quick       3 rounds, shorter measurements\n"
          "  --rounds=N    rounds per measurement (default 7; 3 with --quick)\n"
          "  --out=DIR     where channel_bench.csv (every number of the table) and the\n"
          "                channel_bench-ns.svg bar chart go (default: results/ next to\n"
          "                this program)\n"
          "  --help        this text\n");
}

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "channel_bench";
  const auto [quick, rounds, out] = bench::parse_options(argc, argv, usage);
  const double meas_ns = quick ? 40e6 : 120e6;  // per measurement
  bench::init_cpus();
  bench::Runtimes rts;
  weft::Runtime &rt1 = rts.one, &rt2 = rts.two;

  // Sizes from a first estimate (also the warm-up).
  Progress progress("channel_bench");
  progress.show("channel_bench: warm-up");
  const uint64_t u1_n = trips_for(2 * weft_pingpong(rt1, 0, 5000), meas_ns);
  const uint64_t u2_n = trips_for(2 * weft_pingpong(rt2, 0, 5000), meas_ns);
  const uint64_t b1_n = trips_for(2 * weft_pingpong(rt1, 1, 5000), meas_ns);
  const uint64_t b2_n = trips_for(2 * weft_pingpong(rt2, 1, 5000), meas_ns);
  const uint64_t nn = trips_for(2 * nptl_pingpong(2000), meas_ns);
  const uint64_t sr_n = trips_for(weft_select_ready(rt1, 5000), meas_ns);
  const uint64_t sp1_n = trips_for(2 * weft_select_pingpong(rt1, 5000), meas_ns);
  const uint64_t sp2_n = trips_for(2 * weft_select_pingpong(rt2, 5000), meas_ns);

  Samples u1, u2, b1, b2, np, sr, sp1, sp2;
  for (int r = 0; r < rounds; r++) {
    progress.round(r + 1, rounds, "ping-pong and select");
    run_both(r % 2 == 0, [&] {
      u1.add(weft_pingpong(rt1, 0, u1_n));
      u2.add(weft_pingpong(rt2, 0, u2_n));
      b1.add(weft_pingpong(rt1, 1, b1_n));
      b2.add(weft_pingpong(rt2, 1, b2_n));
      sr.add(weft_select_ready(rt1, sr_n));
      sp1.add(weft_select_pingpong(rt1, sp1_n));
      sp2.add(weft_select_pingpong(rt2, sp2_n));
    }, [&] { np.add(nptl_pingpong(nn)); });
  }
  progress.clear();

  printf("weft channel_bench: %d rounds%s, weft and NPTL interleaved; median and best of rounds\n", rounds,
         quick ? " (--quick)" : "");
  bench::print_system_line(rts.per_cpu.stats().workers.size());
  printf("\n%-34s %-8s %8s %8s  %-7s %-4s  %-26s %8s %8s  %s\n", "weft", "unit", "median", "best", "target", "met",
         "NPTL way", "median", "best", "ratio");
  printf("%s\n", std::string(130, '-').c_str());
  auto row = [&](const char* w, const Samples& a, bool target) {
    printf("%-34s %-8s %8s %8s  %-7s %-4s  %-26s %8s %8s  %s\n", w, "ns/hand", fmt(a.median()).c_str(),
           fmt(a.min()).c_str(), target ? "<= 60" : "-", target ? (a.median() <= 60 ? "yes" : "NO") : "",
           "mutex+cv slot, 2 threads", fmt(np.median()).c_str(), fmt(np.min()).c_str(),
           fmt_ratio(np.median() / a.median()).c_str());
  };
  row("Channel(0) ping-pong, 1 wkr", u1, true);
  row("Channel(0) ping-pong, 2 wkrs", u2, true);
  row("Channel(1) ping-pong, 1 wkr", b1, true);
  row("Channel(1) ping-pong, 2 wkrs", b2, true);
  row("select(4 x Channel(0)) ping, 1 wkr", sp1, false);
  row("select(4 x Channel(0)) ping, 2 wkrs", sp2, false);
  printf("%-34s %-8s %8s %8s  %-7s %-4s  %s\n", "select over 4, 1 ready (+refill)", "ns/sel", fmt(sr.median()).c_str(),
         fmt(sr.min()).c_str(), "-", "", "(no NPTL equivalent)");
  printf("%-34s %-8s %8s %8s  %s\n", "Go 1.19 unbuffered ping-pong", "ns/hand", "~150", "-",
         "quoted reference from the issue, not measured (Go is not installed here)");
  printf("\nratio: NPTL median / weft median (how many times faster weft is).\n"
         "A handoff is one send and the receive that takes it; a round trip is two.\n");

  // The same numbers for the CSV file and the figure.
  Report report("channel_bench", system_summary());
  report.set_note(rounds_note(rounds, quick));
  const std::string w1 = weft_series(1), w2 = weft_series(2);
  report.add("channel", w1, "Channel(0) ping-pong", "ns/handoff", u1);
  report.add("channel", w2, "Channel(0) ping-pong", "ns/handoff", u2);
  report.add("channel", w1, "Channel(1) ping-pong", "ns/handoff", b1);
  report.add("channel", w2, "Channel(1) ping-pong", "ns/handoff", b2);
  report.add("channel", w1, "select(4 x Channel(0)) ping-pong", "ns/handoff", sp1);
  report.add("channel", w2, "select(4 x Channel(0)) ping-pong", "ns/handoff", sp2);
  report.add("channel", "NPTL", "mutex+cv slot ping-pong", "ns/handoff", np);
  report.add("channel", w1, "select over 4, 1 ready (+refill)", "ns/select", sr);
  report.add_figure({"ns", "Channel and select, weft vs an NPTL mutex+condvar slot", Figure::kBars,
                     {"channel"}, {"ns/handoff", "ns/select"},
                     "ns per handoff or per select; lower is better", ""});
  return report.finish(out);
}
