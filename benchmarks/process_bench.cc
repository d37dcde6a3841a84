// benchmarks/process_bench.cc — child processes and credential changes:
// weft from a ULT vs NPTL from a thread, side by side in one run.
//
//   fork+_exit+wait     a ULT forks (on its runtime's fork KLT, runtime/
//                       fork.cc) and waits for the child (pidfd through the
//                       io engine) vs a pthread's fork + waitpid; the
//                       process has the same RSS in both (touched up front)
//   posix_spawn+wait    weft::Process::spawn + wait vs posix_spawn +
//                       waitpid on a pthread, of /bin/true
//   setresuid, 64 KLTs  a ULT's setresuid(0,0,0) on a runtime with 64
//                       workers (weft broadcasts it to every KLT) vs
//                       glibc's with 64 other pthreads (SIGSETXID); root only
//
// Rounds alternate which side runs first; the table shows medians and
// minima of the rounds and the ratio of medians (NPTL/weft: > 1 means weft
// is faster). The numbers also go to process_bench.csv, with a bar chart, in
// the output directory (benchmarks/report.h).
//
// Usage: process_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>

#include "bench_common.h"

extern char** environ;

namespace {

using bench::Samples;

constexpr const char* kTrue = "/bin/true";

void usage(FILE* f) {
  fprintf(f,
          "usage: process_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "Measures fork+exit+wait, posix_spawn+wait and setresuid (root only) from a weft ULT\n"
          "and from an NPTL thread in one run; prints medians and minima of interleaved rounds\n"
          "and the ratio of medians (NPTL/weft).\n"
          "  --out=DIR   where process_bench.csv (every number of the table) and the\n"
          "              process_bench-us.svg bar chart go (default: results/ next to this\n"
          "              program)\n");
}

// Touches `mib` MiB so that fork has that much RSS to copy page tables for.
void* touch_rss(size_t mib) {
  size_t n = mib << 20;
  void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) bench::die("mmap", errno);
  memset(p, 1, n);
  return p;
}

// Microseconds per fork+_exit+wait, `n` of them, in the calling context
// (a ULT or a thread): waitpid parks a ULT (weft interposes it there).
double fork_loop(int n) {
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < n; ++i) {
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    if (pid < 0) bench::die("fork", errno);
    int st;
    if (waitpid(pid, &st, 0) != pid) bench::die("waitpid", errno);
  }
  return (bench::now_ns() - t0) / 1e3 / n;
}

double spawn_loop_nptl(int n) {
  char* argv[] = {const_cast<char*>(kTrue), nullptr};
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < n; ++i) {
    pid_t pid;
    if (int r = posix_spawn(&pid, kTrue, nullptr, nullptr, argv, environ); r != 0) bench::die("posix_spawn", r);
    int st;
    if (waitpid(pid, &st, 0) != pid) bench::die("waitpid", errno);
  }
  return (bench::now_ns() - t0) / 1e3 / n;
}

double spawn_loop_weft(int n) {
  weft::ProcessOptions o;
  o.argv = {kTrue};
  o.search_path = false;
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < n; ++i) {
    auto p = weft::Process::spawn(o);
    if (!p.ok()) bench::fail("Process::spawn", p.status());
    auto st = p->wait();
    if (!st.ok()) bench::fail("Process::wait", st.status());
  }
  return (bench::now_ns() - t0) / 1e3 / n;
}

double setresuid_loop(int n) {
  uint64_t t0 = bench::now_ns();
  for (int i = 0; i < n; ++i)
    if (setresuid(0, 0, 0) != 0) bench::die("setresuid", errno);
  return (bench::now_ns() - t0) / 1e3 / n;
}

// Runs fn on a fresh pthread and returns its result.
template <class F>
double on_thread(F fn) {
  struct Ctx {
    F* fn;
    double r;
  } c{&fn, 0};
  pthread_t t = bench::start_thread(
      [](void* a) -> void* {
        auto* c = static_cast<Ctx*>(a);
        c->r = (*c->fn)();
        return nullptr;
      },
      &c);
  pthread_join(t, nullptr);
  return c.r;
}

// 64 pthreads that sleep until told to stop (what glibc's setxid signals).
struct IdleThreads {
  std::atomic<bool> stop{false};
  std::vector<pthread_t> ts;
  explicit IdleThreads(int n) {
    for (int i = 0; i < n; ++i)
      ts.push_back(bench::start_thread(
          [](void* a) -> void* {
            auto* s = static_cast<std::atomic<bool>*>(a);
            while (!s->load()) bench::sleep_ms(1);
            return nullptr;
          },
          &stop));
  }
  ~IdleThreads() {
    stop.store(true);
    for (pthread_t t : ts) pthread_join(t, nullptr);
  }
};

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "process_bench";
  bench::Options opt = bench::parse_options(argc, argv, usage);
  bench::init_cpus();
  const int rounds = opt.rounds;
  const int n_fork = opt.quick ? 50 : 200;
  const int n_spawn = opt.quick ? 50 : 200;
  const int n_xid = opt.quick ? 50 : 200;
  const size_t rss_mib = 64;
  void* rss = touch_rss(rss_mib);
  (void)rss;

  weft::Runtime rt(weft::Options{.workers = 2});
  if (!rt.status().ok()) bench::fail("runtime", rt.status());
  bench::print_system_line(rt.stats().workers.size());
  bool root = geteuid() == 0;

  Samples fork_w, fork_n, spawn_w, spawn_n, xid_w, xid_n;
  std::unique_ptr<weft::Runtime> rt64;
  std::unique_ptr<IdleThreads> idle64;
  if (root) {
    rt64 = std::make_unique<weft::Runtime>(weft::Options{.workers = 64, .max_workers = 64});
    if (!rt64->status().ok()) bench::fail("runtime of 64 workers", rt64->status());
  }
  bench::Progress progress("process_bench");
  for (int r = 0; r < rounds; ++r) {
    bool weft_first = r % 2 == 0;
    progress.round(r + 1, rounds, "fork+_exit+wait");
    bench::run_both(
        weft_first, [&] { fork_w.add(*rt.block_on([&] { return fork_loop(n_fork); })); },
        [&] { fork_n.add(on_thread([&] { return fork_loop(n_fork); })); });
    progress.round(r + 1, rounds, "spawn+wait");
    bench::run_both(
        weft_first, [&] { spawn_w.add(*rt.block_on([&] { return spawn_loop_weft(n_spawn); })); },
        [&] { spawn_n.add(on_thread([&] { return spawn_loop_nptl(n_spawn); })); });
    if (root) {
      progress.round(r + 1, rounds, "setresuid, 64 KLTs");
      bench::run_both(
          weft_first, [&] { xid_w.add(*rt64->block_on([&] { return setresuid_loop(n_xid); })); },
          [&] {
            IdleThreads idle(64);
            xid_n.add(setresuid_loop(n_xid));
          });
    }
  }

  progress.clear();
  printf("process_bench: %d rounds%s, weft and NPTL interleaved; RSS %zu MiB; median and min of rounds\n", rounds,
         opt.quick ? " (--quick)" : "", rss_mib);
  printf("%-30s %-6s %9s %9s   %-32s %9s %9s  %s\n", "weft", "unit", "median", "min", "NPTL way", "median", "min",
         "NPTL/weft");
  auto row = [](const char* w, const Samples& a, const char* n, const Samples& b) {
    printf("%-30s %-6s %9s %9s   %-32s %9s %9s  %s\n", w, "us", bench::fmt(a.median()).c_str(),
           bench::fmt(a.min()).c_str(), n, bench::fmt(b.median()).c_str(), bench::fmt(b.min()).c_str(),
           bench::fmt_ratio(b.median() / a.median()).c_str());
  };
  row("fork+_exit+wait, from a ULT", fork_w, "fork+_exit+waitpid, a pthread", fork_n);
  row("Process::spawn+wait /bin/true", spawn_w, "posix_spawn+waitpid, a pthread", spawn_n);
  if (root) {
    row("setresuid, ULT, 64 workers", xid_w, "setresuid, 64 other pthreads", xid_n);
  } else {
    printf("setresuid: skipped (needs root)\n");
  }

  // The same numbers for the CSV file and the figure.
  bench::Report report("process_bench", bench::system_summary());
  report.set_note(bench::rounds_note(rounds, opt.quick) + "; " + std::to_string(rss_mib) + " MiB RSS");
  const std::string w2 = bench::weft_series(2), w64 = bench::weft_series(64);
  report.add("process", w2, "fork+_exit+wait", "us", fork_w);
  report.add("process", "NPTL", "fork+_exit+wait", "us", fork_n);
  report.add("process", w2, "spawn+wait /bin/true", "us", spawn_w);
  report.add("process", "NPTL", "spawn+wait /bin/true", "us", spawn_n);
  report.add("process", w64, "setresuid, 64 KLTs", "us", xid_w);  // empty (not recorded) unless root
  report.add("process", "NPTL", "setresuid, 64 KLTs", "us", xid_n);
  report.add_figure({"us", "child processes and credentials, weft vs NPTL", bench::Figure::kBars, {"process"},
                     {"us"}, "us per operation; lower is better", ""});
  return report.finish(opt.out);
}
