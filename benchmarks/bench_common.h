// benchmarks/bench_common.h — what the benchmark programs (sys_bench,
// runtime_bench, sync_bench, echo_bench) share: clocks, error exits, CPU
// affinity, the options of the round-based benchmarks, the runtimes they
// measure weft on, and the statistics and number formats of their tables;
// with benchmarks/report.h (included here), the CSV and SVG files they
// write and their progress line. Header-only; every program sets g_prog
// first thing in main() so that the error messages name it.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <weft/weft.h>

#include "benchmarks/report.h"

namespace bench {

// The program's name, the prefix of every error message.
inline const char* g_prog = "bench";

// ---------------------------------------------------------------------------
// Clocks.

// The time of `clock` in ns.
inline uint64_t clock_ns(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// CLOCK_MONOTONIC in ns: the wall clock the measurements are timed by.
inline uint64_t now_ns() { return clock_ns(CLOCK_MONOTONIC); }

// Sleeps `ns` in all, going back to sleep after a signal.
inline void sleep_ns(uint64_t ns) {
  timespec d{static_cast<time_t>(ns / 1000000000u), static_cast<long>(ns % 1000000000u)};
  while (nanosleep(&d, &d) != 0 && errno == EINTR) {
  }
}

// Sleeps `ms` (>= 0) milliseconds.
inline void sleep_ms(int ms) { sleep_ns(static_cast<uint64_t>(ms) * 1000000u); }

// ---------------------------------------------------------------------------
// Error exits: a message on stderr, exit status 1. Each erases the progress
// line first (report.h), so that the message starts a line of its own.

// "<prog>: <what>: <strerror>"; `err` is an errno value or its negation
// (what the sys/ layer returns).
[[noreturn]] inline void die(const char* what, int err) {
  erase_progress();
  fprintf(stderr, "%s: %s: %s\n", g_prog, what, strerror(err < 0 ? -err : err));
  exit(1);
}

// "<prog>: <what>: <status>".
[[noreturn]] inline void fail(const char* what, const absl::Status& s) {
  erase_progress();
  fprintf(stderr, "%s: %s: %s\n", g_prog, what, s.ToString().c_str());
  exit(1);
}

// "<prog>: <what>".
[[noreturn]] inline void fail(const char* what) {
  erase_progress();
  fprintf(stderr, "%s: %s\n", g_prog, what);
  exit(1);
}

// "<prog>: " and a printf-formatted message.
[[noreturn]] inline void failf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void failf(const char* fmt, ...) {
  erase_progress();
  fprintf(stderr, "%s: ", g_prog);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  exit(1);
}

// ---------------------------------------------------------------------------
// CPU affinity and threads.

inline cpu_set_t g_all_cpus;  // the process's mask at start
inline int g_cpu = 0;         // the CPU pinned measurements run on

// Sets g_all_cpus and g_cpu: the CPU main() runs on now (so that pinning
// does not move it), or CPU 0 if that one is not in the mask.
inline void init_cpus() {
  if (sched_getaffinity(0, sizeof g_all_cpus, &g_all_cpus) != 0) die("sched_getaffinity", errno);
  g_cpu = sched_getcpu();
  if (g_cpu < 0 || !CPU_ISSET(g_cpu, &g_all_cpus)) g_cpu = 0;
}

// The mask of `cpu` alone.
inline cpu_set_t one_cpu(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return s;
}

// A pthread running fn(arg), on the CPUs of *mask if there is one; exits
// if it cannot be created.
inline pthread_t start_thread(void* (*fn)(void*), void* arg, const cpu_set_t* mask = nullptr) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  if (mask != nullptr) pthread_attr_setaffinity_np(&attr, sizeof *mask, mask);
  pthread_t t;
  if (int r = pthread_create(&t, &attr, fn, arg); r != 0) die("pthread_create", r);
  pthread_attr_destroy(&attr);
  return t;
}

// ---------------------------------------------------------------------------
// The options of the round-based benchmarks (sys_bench, runtime_bench,
// sync_bench, ...): [--quick] [--rounds=N] [--out=DIR] [--help].

struct Options {
  bool quick = false;
  int rounds = 0;   // --rounds=N, else 7 (3 with --quick)
  std::string out;  // --out=DIR: where the CSV and SVG files go; empty: default_out_dir()
};

// Parses them; `usage` prints the program's help text. --help or -h: the
// text on stdout, exit 0; a bad argument: a message and the text on stderr,
// exit 2.
inline Options parse_options(int argc, char** argv, void (*usage)(FILE*)) {
  Options o;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      o.quick = true;
    } else if (strncmp(argv[i], "--rounds=", 9) == 0) {
      o.rounds = atoi(argv[i] + 9);
      if (o.rounds < 1) {
        fprintf(stderr, "%s: --rounds needs a positive number\n", g_prog);
        exit(2);
      }
    } else if (strncmp(argv[i], "--out=", 6) == 0) {
      o.out = argv[i] + 6;
      if (o.out.empty()) {
        fprintf(stderr, "%s: --out needs a directory\n", g_prog);
        exit(2);
      }
    } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      exit(0);
    } else {
      fprintf(stderr, "%s: unknown argument '%s'\n", g_prog, argv[i]);
      usage(stderr);
      exit(2);
    }
  }
  if (o.rounds == 0) o.rounds = o.quick ? 3 : 7;
  return o;
}

// Runs a() and b(), a() first if `a_first`. The rounds alternate the order
// of weft and its comparison so that neither always runs on a machine the
// other has just warmed up (or slowed down).
template <class A, class B>
void run_both(bool a_first, A&& a, B&& b) {
  if (a_first) {
    a();
    b();
  } else {
    b();
    a();
  }
}

// ---------------------------------------------------------------------------
// weft runtimes.

// The runtimes runtime_bench and sync_bench measure weft on, for the whole
// run: 1 worker, 2 workers, and the default Options (one worker per CPU).
// Idle workers sleep on a futex, so the runtimes not in use cost a
// measurement nothing. Exits if one of them does not start.
struct Runtimes {
  weft::Runtime one{weft::Options{.workers = 1}};
  weft::Runtime two{weft::Options{.workers = 2}};
  weft::Runtime per_cpu;  // default Options
  Runtimes() {
    for (weft::Runtime* rt : {&one, &two, &per_cpu}) {
      if (absl::Status s = rt->status(); !s.ok()) fail("the runtime did not start", s);
    }
  }
};

// The name of a weft series in the CSV and the figures: "weft 1 worker",
// "weft 2 workers".
inline std::string weft_series(size_t workers) {
  return "weft " + std::to_string(workers) + (workers == 1 ? " worker" : " workers");
}

// The figures' note on the run: "1 round", "3 rounds (--quick)".
inline std::string rounds_note(int rounds, bool quick) {
  return std::to_string(rounds) + (rounds == 1 ? " round" : " rounds") + (quick ? " (--quick)" : "");
}

// The line of the report that says what ran: weft's version and KLT
// backend, the CPUs (g_all_cpus, and online), the workers of a default
// runtime and the kernel.
inline void print_system_line(size_t default_workers) {
  struct utsname un;
  uname(&un);
  printf("weft %s   klt backend: %s   CPUs: %d (online %ld)   default workers: %zu   kernel %s\n",
         weft::version(), weft::klt_backend(), CPU_COUNT(&g_all_cpus), sysconf(_SC_NPROCESSORS_ONLN),
         default_workers, un.release);
}

// What ran the benchmark, on one line for the figures' titles: weft's
// version and KLT backend, the CPUs (this process's mask, and online), the
// CPU model and the kernel.
inline std::string system_summary() {
  struct utsname un;
  uname(&un);
  cpu_set_t mask;
  int cpus = sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 0;
  std::string model;
  if (FILE* f = fopen("/proc/cpuinfo", "r")) {
    char line[256];
    while (fgets(line, sizeof line, f) != nullptr) {
      if (strncmp(line, "model name", 10) != 0) continue;
      const char* p = strchr(line, ':');
      if (p == nullptr) break;
      model = p + 1;
      model.erase(0, model.find_first_not_of(" \t"));
      model.erase(model.find_last_not_of(" \t\n") + 1);
      break;
    }
    fclose(f);
  }
  char b[512];
  snprintf(b, sizeof b, "weft %s, klt backend %s; %d CPUs (online %ld)%s%s; kernel %s", weft::version(),
           weft::klt_backend(), cpus, sysconf(_SC_NPROCESSORS_ONLN), model.empty() ? "" : ", ", model.c_str(),
           un.release);
  return b;
}

// ---------------------------------------------------------------------------
// Statistics and output.

// One measurement over the rounds; the tables show its median and its
// min or max. An empty one (a measurement that was not run) reads 0.
struct Samples {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  bool empty() const { return v.empty(); }
  // The middle value, or the mean of the middle two for an even count.
  double median() const {
    if (v.empty()) return 0;
    std::vector<double> s = v;
    std::sort(s.begin(), s.end());
    size_t n = s.size();
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
  }
  double min() const { return v.empty() ? 0 : *std::min_element(v.begin(), v.end()); }
  double max() const { return v.empty() ? 0 : *std::max_element(v.begin(), v.end()); }
};

// A table cell: `prec` decimals if given, else 0, 1 or 2 decimals by size
// (about 3 significant digits, no more than the noise allows).
inline std::string fmt(double x, int prec = -1) {
  char b[32];
  if (prec >= 0) snprintf(b, sizeof b, "%.*f", prec, x);
  else if (x >= 1000) snprintf(b, sizeof b, "%.0f", x);
  else if (x >= 100) snprintf(b, sizeof b, "%.1f", x);
  else snprintf(b, sizeof b, "%.2f", x);
  return b;
}

// A ratio of medians: "1.23x", or "123x" from 100 up.
inline std::string fmt_ratio(double r) {
  char b[48];
  if (r >= 100) snprintf(b, sizeof b, "%.0fx", r);
  else snprintf(b, sizeof b, "%.2fx", r);
  return b;
}

// A count, short: 1234567 -> "1.23M", 12345 -> "12.3k".
inline std::string fmt_count(uint64_t n) {
  char b[32];
  if (n >= 10000000) snprintf(b, sizeof b, "%.1fM", n / 1e6);
  else if (n >= 1000000) snprintf(b, sizeof b, "%.2fM", n / 1e6);
  else if (n >= 10000) snprintf(b, sizeof b, "%.1fk", n / 1e3);
  else snprintf(b, sizeof b, "%" PRIu64, n);
  return b;
}

}  // namespace bench
