// benchmarks/signal_bench.cc — weft's signals against NPTL's, one run, side
// by side, with ratios and the targets of the signals issue (12).
//
//   1. pthread_sigmask(SIG_BLOCK) + pthread_sigmask(SIG_UNBLOCK) of SIGUSR1:
//      in a ULT (a store to the ULT's mask, no system call) vs on a pthread
//      (two rt_sigprocmask system calls). ns per pair. Target: >= 20x.
//   2. kill(getpid(), SIGUSR1) -> the handler has run, on a ULT that spins
//      (yields) with the signal unblocked while every other thread blocks
//      it: weft's path is the signal KLT, then a doorbell to the ULT's
//      worker; NPTL's is the kernel's delivery to the one thread that
//      accepts. Median latency in us over 2,000 signals per round.
//   3. kill -> sigwait returns, in a parked ULT vs a thread in sigwait.
//
// Rounds interleave weft and NPTL (the order alternates); the table shows
// medians over rounds and the best round. The machine is shared: look at
// the ratio more than at the absolute numbers. The numbers also go to
// signal_bench.csv, with bar charts, in the output directory
// (benchmarks/report.h).
//
// Usage: signal_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <vector>

#include <weft/signal.h>
#include <weft/weft.h>

#include "benchmarks/bench_common.h"

namespace {

using namespace bench;

void usage(FILE* f) {
  fprintf(f,
          "usage: signal_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "  pthread_sigmask block+unblock, kill->handler and kill->sigwait latency:\n"
          "  weft ULTs vs NPTL threads, medians of interleaved rounds.\n"
          "  --out=DIR   where signal_bench.csv (every number of the table) and the\n"
          "              signal_bench-*.svg bar charts go (default: results/ next to this\n"
          "              program)\n");
}

sigset_t only(int s) {
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, s);
  return m;
}

// 1. ns per block+unblock pair on the calling thread or ULT.
double mask_pairs(int n) {
  sigset_t m = only(SIGUSR1);
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; ++i) {
    pthread_sigmask(SIG_BLOCK, &m, nullptr);
    pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
  }
  return static_cast<double>(now_ns() - t0) / n;
}

std::atomic<uint64_t> g_sent{0};
std::atomic<uint64_t> g_seen{0};  // handler: the latency of the last signal, ns
std::atomic<int> g_count{0};
void on_usr1(int) {
  g_seen.store(now_ns() - g_sent.load());
  g_count.fetch_add(1);
}

// Sends n signals one at a time, each once the last was handled; the
// median latency in us. 
double kill_latency(int n) {
  std::vector<double> lat;
  for (int i = 0; i < n; ++i) {
    int before = g_count.load();
    g_sent.store(now_ns());
    kill(getpid(), SIGUSR1);
    uint64_t t0 = now_ns();
    while (g_count.load() == before) {
      if (now_ns() - t0 > 5000000000ull) fail("a signal was not handled within 5 s");
    }
    lat.push_back(g_seen.load() / 1000.0);
  }
  std::sort(lat.begin(), lat.end());
  return lat[lat.size() / 2];
}

void* nptl_spinner(void* stop) {
  sigset_t m = only(SIGUSR1);
  pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
  while (!static_cast<std::atomic<bool>*>(stop)->load()) {
  }
  return nullptr;
}

// 3. kill -> sigwait latency, us (median of n).
std::atomic<uint64_t> g_woke{0};
double sigwait_latency(int n, std::atomic<int>* got) {
  std::vector<double> lat;
  for (int i = 0; i < n; ++i) {
    int before = got->load();
    sleep_ns(50000);  // the waiter is back in sigwait
    g_sent.store(now_ns());
    kill(getpid(), SIGUSR2);
    uint64_t t0 = now_ns();
    while (got->load() == before)
      if (now_ns() - t0 > 5000000000ull) fail("sigwait did not return within 5 s");
    lat.push_back((g_woke.load() - g_sent.load()) / 1000.0);
  }
  std::sort(lat.begin(), lat.end());
  return lat[lat.size() / 2];
}

struct WaiterArgs {
  int n;
  std::atomic<int>* got;
};
void waiter_loop(int n, std::atomic<int>* got) {
  sigset_t m = only(SIGUSR2);
  for (int i = 0; i < n; ++i) {
    int sig = 0;
    if (sigwait(&m, &sig) != 0) fail("sigwait failed");
    g_woke.store(now_ns());
    got->fetch_add(1);
  }
}
void* nptl_waiter(void* p) {
  auto* a = static_cast<WaiterArgs*>(p);
  waiter_loop(a->n, a->got);
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  g_prog = "signal_bench";
  Options o = parse_options(argc, argv, usage);
  init_cpus();
  // Every thread blocks the signals; only the measured ULT or thread takes them.
  sigset_t both = only(SIGUSR1);
  sigaddset(&both, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &both, nullptr);
  weft::Runtime rt(weft::Options{.workers = 2});
  if (!rt.status().ok()) fail("runtime", rt.status());
  signal(SIGUSR1, on_usr1);
  print_system_line(2);
  const int kMask = o.quick ? 200000 : 1000000, kKill = o.quick ? 500 : 2000, kWait = o.quick ? 200 : 1000;
  Samples mask_w, mask_n, kill_w, kill_n, wait_w, wait_n;
  Progress progress("signal_bench");
  for (int r = 0; r < o.rounds; ++r) {
    bool weft_first = r % 2 == 0;
    progress.round(r + 1, o.rounds, "pthread_sigmask");
    run_both(
        weft_first, [&] { mask_w.add(*rt.block_on([&] { return mask_pairs(kMask); })); },
        [&] { mask_n.add(mask_pairs(kMask)); });
    progress.round(r + 1, o.rounds, "kill -> handler");
    run_both(
        weft_first,
        [&] {
          std::atomic<bool> stop{false};
          weft::Ult spinner = rt.spawn([&] {
            sigset_t m = only(SIGUSR1);
            pthread_sigmask(SIG_UNBLOCK, &m, nullptr);
            while (!stop.load()) weft::this_ult::yield();
          });
          sleep_ns(1000000);
          kill_w.add(kill_latency(kKill));
          stop.store(true);
          (void)spinner.join();
        },
        [&] {
          std::atomic<bool> stop{false};
          pthread_t t = start_thread(nptl_spinner, &stop);
          sleep_ns(1000000);
          kill_n.add(kill_latency(kKill));
          stop.store(true);
          pthread_join(t, nullptr);
        });
    progress.round(r + 1, o.rounds, "kill -> sigwait");
    run_both(
        weft_first,
        [&] {
          std::atomic<int> got{0};
          weft::Ult w = rt.spawn([&] { waiter_loop(kWait, &got); });
          wait_w.add(sigwait_latency(kWait, &got));
          (void)w.join();
        },
        [&] {
          std::atomic<int> got{0};
          WaiterArgs a{kWait, &got};
          pthread_t t = start_thread(nptl_waiter, &a);
          wait_n.add(sigwait_latency(kWait, &got));
          pthread_join(t, nullptr);
        });
  }
  progress.clear();
  printf("\n%-44s %10s %10s %10s %8s %s\n", "measurement (median of rounds; best)", "weft", "NPTL", "ratio", "target", "");
  auto row = [](const char* what, const Samples& w, const Samples& n, bool lower_better, const char* target, bool met) {
    double ratio = lower_better ? n.median() / w.median() : w.median() / n.median();
    printf("%-44s %10s %10s %9sx %8s %s\n", what, (fmt(w.median()) + " (" + fmt(w.min()) + ")").c_str(),
           (fmt(n.median()) + " (" + fmt(n.min()) + ")").c_str(), fmt(ratio).c_str(), target, met ? "met" : "");
  };
  row("sigmask block+unblock, ns (NPTL/weft)", mask_w, mask_n, true, ">=20x", mask_n.median() / mask_w.median() >= 20);
  row("kill -> handler on a running ULT, us", kill_w, kill_n, true, "-", false);
  row("kill -> sigwait returns, us", wait_w, wait_n, true, "-", false);
  printf("(ratio: NPTL's median over weft's; above 1 means weft is faster)\n");
  signal(SIGUSR1, SIG_DFL);

  // The same numbers for the CSV file and the figures.
  Report report("signal_bench", system_summary());
  report.set_note(rounds_note(o.rounds, o.quick));
  const std::string w2 = weft_series(2);
  report.add("signal", w2, "sigmask block+unblock", "ns/pair", mask_w);
  report.add("signal", "NPTL", "sigmask block+unblock", "ns/pair", mask_n);
  report.add("signal", w2, "kill -> handler on a running ULT", "us", kill_w);
  report.add("signal", "NPTL", "kill -> handler on a running ULT", "us", kill_n);
  report.add("signal", w2, "kill -> sigwait returns", "us", wait_w);
  report.add("signal", "NPTL", "kill -> sigwait returns", "us", wait_n);
  report.add_figure({"mask", "pthread_sigmask block+unblock, weft vs NPTL", Figure::kBars, {"signal"},
                     {"ns/pair"}, "ns per block+unblock pair; lower is better", ""});
  report.add_figure({"latency", "signal delivery latency, weft vs NPTL", Figure::kBars, {"signal"}, {"us"},
                     "us from kill() (median of a round's signals); lower is better", ""});
  return report.finish(o.out);
}
