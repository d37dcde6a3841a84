// benchmarks/sys_bench.cc — the sys/ layer against the NPTL way of doing the
// same work, measured in one run, side by side, with ratios.
//
//   1. Context switch: one weft context_switch (native context <-> a context
//      on a guarded stack, one thread, pinned to one CPU), in ns and in TSC
//      cycles; against
//        - a minimal asm switch defined here (rbx, rbp, r12-r15 and rsp only,
//          no MXCSR / x87 control word): the hardware floor;
//        - a futex handoff between two pthreads (A wakes B and waits, B wakes
//          A and waits), both pinned to one CPU and unpinned.
//   2. KLT create+join: sys::klt_create/klt_join against
//      pthread_create/pthread_join, trivial body, sequential.
//   3. Stacks: sys::stack_allocate+stack_release of a 64 KiB guarded stack
//      against mmap+munmap of 64 KiB without guard.
//
// Machines are shared and noisy: every measurement runs for several rounds,
// weft and the comparison interleaved (the order alternates each round), and
// the table shows the median and the minimum of the rounds. Ratios are
// ratios of medians. The numbers also go to sys_bench.csv, with bar charts,
// in the output directory (benchmarks/report.h).
//
// Usage: sys_bench [--quick] [--rounds=N] [--out=DIR] [--help]
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <linux/futex.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "benchmarks/bench_common.h"
#include "sys/context.h"
#include "sys/futex.h"
#include "sys/klt.h"
#include "sys/stack.h"

namespace sys = weft::sys;

// ---------------------------------------------------------------------------
// The floor: the least a user-level switch can do on x86_64 (System V). Same
// calling convention and frame discipline as weft_context_switch, minus the
// MXCSR / x87 control word save and restore. Two variants that differ only in
// how they resume the other context:
//   bench_floor_switch      `ret`, as weft_context_switch does. The return
//                           stack buffer predicts a return to this context's
//                           call site, so every such ret mispredicts.
//   bench_floor_switch_jmp  `pop %r8; jmp *%r8` (what Boost.Context does):
//                           an indirect jump the branch target buffer predicts.
// Both share the frame layout and first-entry trampoline.
extern "C" {
void* bench_floor_switch(void** save_sp, void* load_sp, void* transfer);
void* bench_floor_switch_jmp(void** save_sp, void* load_sp, void* transfer);
void bench_floor_trampoline();
}

// The save, stack swap and restore both switches share (the frame layout
// floor_init builds), as an assembler macro so that they cannot drift apart.
__asm__(R"(
        .macro  bench_floor_save_swap_restore
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        .endm

        .text
        .globl  bench_floor_switch
        .hidden bench_floor_switch
        .type   bench_floor_switch,@function
        .p2align 4
bench_floor_switch:
        bench_floor_save_swap_restore
        movq    %rdx, %rax
        ret
        .size   bench_floor_switch, .-bench_floor_switch

        .globl  bench_floor_switch_jmp
        .hidden bench_floor_switch_jmp
        .type   bench_floor_switch_jmp,@function
        .p2align 4
bench_floor_switch_jmp:
        bench_floor_save_swap_restore
        popq    %r8
        movq    %rdx, %rax
        jmpq    *%r8
        .size   bench_floor_switch_jmp, .-bench_floor_switch_jmp

        .globl  bench_floor_trampoline
        .hidden bench_floor_trampoline
        .type   bench_floor_trampoline,@function
        .p2align 4
bench_floor_trampoline:
        movq    %rax, %rdi
        movq    %r13, %rsi
        callq   *%r12
        ud2
        .size   bench_floor_trampoline, .-bench_floor_trampoline
)");

namespace {

using namespace bench;  // the helpers of benchmarks/bench_common.h

// ---------------------------------------------------------------------------
// Clocks.

inline uint64_t tsc_begin() {
  _mm_lfence();
  uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}

inline uint64_t tsc_end() {
  unsigned aux;
  uint64_t t = __rdtscp(&aux);
  _mm_lfence();
  return t;
}

// TSC ticks per ns, calibrated against CLOCK_MONOTONIC over `ms` ms.
double calibrate_tsc(int ms) {
  uint64_t n0 = now_ns();
  uint64_t c0 = tsc_begin();
  timespec d{0, static_cast<long>(ms) * 1000000};
  while (nanosleep(&d, &d) != 0 && errno == EINTR) {
  }
  uint64_t n1 = now_ns();
  uint64_t c1 = tsc_end();
  return static_cast<double>(c1 - c0) / static_cast<double>(n1 - n0);
}

// ---------------------------------------------------------------------------
// CPU affinity.

void set_affinity(pid_t tid, const cpu_set_t& s) {
  if (sched_setaffinity(tid, sizeof s, &s) != 0) die("sched_setaffinity", errno);
}

// ---------------------------------------------------------------------------
// 1a. Context switch: weft and the floor, one thread.

struct WeftPair {
  sys::Context main;
  sys::Context co;
  uint32_t co_mxcsr;  // the MXCSR the coroutine sets on entry
};

// MXCSR's low 6 bits are sticky exception flags: any inexact floating-point
// operation sets PE (0x20). A context that computed something and one that
// did not differ there, and then every switch's ldmxcsr really changes the
// register. The benchmark measures both cases explicitly: the coroutine sets
// `co_mxcsr` on entry, and main() makes sure its own PE flag is set.
constexpr uint32_t kMxcsrFlags = 0x3f;
constexpr uint32_t kMxcsrPE = 0x20;

void weft_entry(void* t, void* arg) {
  sys::context_entered();
  auto* p = static_cast<WeftPair*>(arg);
  _mm_setcsr(p->co_mxcsr);
  for (;;) t = sys::context_switch(&p->co, &p->main, reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(t) + 1));
}

struct FloorPair {
  void* main_sp = nullptr;
  void* co_sp = nullptr;
};

// The coroutine of a floor pair: sends back what it gets plus one, by
// `Switch` (bench_floor_switch or bench_floor_switch_jmp).
template <void* (*Switch)(void**, void*, void*)>
void floor_entry(void* t, void* arg) {
  auto* p = static_cast<FloorPair*>(arg);
  for (;;) {
    t = Switch(&p->co_sp, p->main_sp, reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(t) + 1));
  }
}

// Lays out the floor's frame (r15 r14 r13 r12 rbx rbp rip, lowest first) so
// that the first switch "returns" into the trampoline with a 16-aligned rsp.
void floor_init(void** sp, char* lo, size_t size, void (*entry)(void*, void*), void* arg) {
  uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size) & ~uintptr_t{15};
  auto* f = reinterpret_cast<uint64_t*>(top - 7 * sizeof(uint64_t));
  f[0] = 0;                                   // r15
  f[1] = 0;                                   // r14
  f[2] = reinterpret_cast<uint64_t>(arg);     // r13
  f[3] = reinterpret_cast<uint64_t>(entry);   // r12
  f[4] = 0;                                   // rbx
  f[5] = 0;                                   // rbp
  f[6] = reinterpret_cast<uint64_t>(&bench_floor_trampoline);  // rip
  *sp = f;
}

struct PerSwitch {
  double ns;
  double cycles;  // TSC (reference) cycles
};

// Runs `roundtrips` round trips (2 switches each) of `sw`, which switches to
// the other context with transfer i and returns what the other side sent
// back (i + 1). The sum is checked so that nothing can be elided.
template <class Sw>
PerSwitch time_switches(uint64_t roundtrips, Sw&& sw) {
  for (uint64_t i = 0; i < 2000; i++) sw(i);  // warm caches and predictors
  uint64_t acc = 0;
  uint64_t n0 = now_ns();
  uint64_t c0 = tsc_begin();
  for (uint64_t i = 0; i < roundtrips; i++) acc += sw(i);
  uint64_t c1 = tsc_end();
  uint64_t n1 = now_ns();
  if (acc != roundtrips * (roundtrips + 1) / 2) fail("context switch transfer values are wrong");
  double sw_count = 2.0 * static_cast<double>(roundtrips);
  return {static_cast<double>(n1 - n0) / sw_count, static_cast<double>(c1 - c0) / sw_count};
}

// ---------------------------------------------------------------------------
// 1b. NPTL: futex handoff between two pthreads.

long futex(std::atomic<uint32_t>* w, int op, uint32_t v) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(w), op, v, nullptr, nullptr, 0);
}

struct PingPong {
  std::atomic<uint32_t> seq{0};  // even: player 0's turn; odd: player 1's
  uint32_t warm = 0;             // even
  uint32_t total = 0;            // even, > warm
  uint64_t t0 = 0, t1 = 0;       // written by player 0
  // Written only by the player whose turn it is (the turn is handed over
  // with release/acquire on seq), so plain fields suffice.
  int cpu[2] = {-1, -1};         // where each player last ran
  uint32_t cross = 0;            // timed handoffs that crossed CPUs
};

struct Player {
  PingPong* pp;
  uint32_t parity;
};

// Each increment of seq is one handoff: the player whose turn it is passes
// the turn on, wakes the other and sleeps until the turn comes back.
void* player_main(void* arg) {
  auto* pl = static_cast<Player*>(arg);
  PingPong* p = pl->pp;
  for (;;) {
    uint32_t s = p->seq.load(std::memory_order_acquire);
    while ((s & 1) != pl->parity) {
      futex(&p->seq, FUTEX_WAIT_PRIVATE, s);
      s = p->seq.load(std::memory_order_acquire);
    }
    if (pl->parity == 0) {
      if (s == p->warm) p->t0 = now_ns();
      if (s == p->total) p->t1 = now_ns();
    }
    int c = sched_getcpu();
    if (s > p->warm && s <= p->total && c != p->cpu[1 - pl->parity]) p->cross++;
    p->cpu[pl->parity] = c;
    p->seq.store(s + 1, std::memory_order_release);
    futex(&p->seq, FUTEX_WAKE_PRIVATE, 1);
    if (s >= p->total) break;  // the other side sees s+1 >= total and stops too
  }
  return nullptr;
}

// ns per handoff; *cross_frac: the fraction of handoffs that crossed CPUs.
double time_futex_handoff(uint32_t handoffs, bool pinned, double* cross_frac) {
  PingPong p;
  p.warm = 1000;
  p.total = p.warm + (handoffs & ~1u);
  Player pl[2] = {{&p, 0}, {&p, 1}};
  cpu_set_t mask = pinned ? one_cpu(g_cpu) : g_all_cpus;
  pthread_t t[2];
  for (int i = 0; i < 2; i++) t[i] = bench::start_thread(player_main, &pl[i], &mask);
  for (auto& th : t) pthread_join(th, nullptr);
  *cross_frac = static_cast<double>(p.cross) / static_cast<double>(p.total - p.warm);
  return static_cast<double>(p.t1 - p.t0) / static_cast<double>(p.total - p.warm);
}

// ---------------------------------------------------------------------------
// 2. KLT create+join vs pthread_create+join.

std::atomic<uint64_t> g_bodies{0};

void klt_body(void*) { g_bodies.fetch_add(1, std::memory_order_relaxed); }

void* pthread_body(void*) {
  g_bodies.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}

// µs per call of `once`, `iters` calls in a row.
template <class F>
double us_per(int iters, F&& once) {
  uint64_t n0 = now_ns();
  for (int i = 0; i < iters; i++) once();
  uint64_t n1 = now_ns();
  return static_cast<double>(n1 - n0) / 1e3 / iters;
}

// µs per create+join by `once`, after 20 warm-ups; every body it starts
// bumps g_bodies, so that a thread that never ran fails the run (`what`
// names the kind of thread).
template <class F>
double time_create_join(int iters, const char* what, F&& once) {
  for (int i = 0; i < 20; i++) once();
  uint64_t before = g_bodies.load();
  double us = us_per(iters, once);
  if (g_bodies.load() - before != static_cast<uint64_t>(iters)) {
    failf("a %s body did not run", what);
  }
  return us;
}

// `altstack`: keep the default 64 KiB sigaltstack (else none).
double time_klt(int iters, bool altstack) {
  sys::KltOptions opts;  // the defaults: 256 KiB stack, 4 KiB guard, 64 KiB sigaltstack
  if (!altstack) opts.altstack_size = 0;
  return time_create_join(iters, "KLT", [&] {
    sys::Klt* k = nullptr;
    const char* what = nullptr;
    if (int r = sys::klt_create(klt_body, nullptr, opts, &k, &what); r != 0) {
      failf("klt_create: %s (%s)", strerror(-r), what ? what : "?");
    }
    sys::klt_join(k);
  });
}

double time_pthread(int iters) {
  return time_create_join(iters, "pthread", [] {
    pthread_t t;
    if (int r = pthread_create(&t, nullptr, pthread_body, nullptr); r != 0) die("pthread_create", r);
    pthread_join(t, nullptr);
  });
}

// ---------------------------------------------------------------------------
// 3. Guarded stack vs plain mmap.

constexpr size_t kStackSize = 64 * 1024;
uintptr_t g_sink = 0;

// µs per stack.
double time_stack(int iters) {
  return us_per(iters, [] {
    sys::Stack s;
    if (int r = sys::stack_allocate(kStackSize, 4096, &s); r != 0) die("stack_allocate", r);
    g_sink += reinterpret_cast<uintptr_t>(s.base);
    sys::stack_release(&s);
  });
}

double time_mmap(int iters) {
  return us_per(iters, [] {
    void* p = mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) die("mmap", errno);
    g_sink += reinterpret_cast<uintptr_t>(p);
    munmap(p, kStackSize);
  });
}

// ---------------------------------------------------------------------------
// Output.

// "NPTL/weft 1.23x": the ratio with what it divides.
std::string fmt_ratio(const char* label, double r) {
  return std::string(label) + " " + bench::fmt_ratio(r);
}

const char* guard_name(sys::GuardKind k) {
  switch (k) {
    case sys::GuardKind::kMadvise: return "madvise(MADV_GUARD_INSTALL)";
    case sys::GuardKind::kMprotect: return "mprotect(PROT_NONE)";
    case sys::GuardKind::kNone: return "none";
  }
  return "?";
}

void usage(FILE* f) {
  fprintf(f,
          "usage: sys_bench [--quick] [--rounds=N] [--out=DIR] [--help]\n"
          "\n"
          "Benchmarks weft's sys/ layer against the NPTL way of doing the same work,\n"
          "in one run, and prints one table: median and min over the rounds (weft and\n"
          "the comparison interleaved, order alternating), and the ratio of medians.\n"
          "\n"
          "  context switch   sys::context_switch between a native context and one on a\n"
          "                   guarded stack, one thread pinned to one CPU; vs a futex\n"
          "                   handoff between two pthreads (pinned to one CPU, and\n"
          "                   unpinned) and vs minimal asm switches without MXCSR/x87\n"
          "                   save (the floor), ending in ret and in pop+jmp\n"
          "  KLT create+join  sys::klt_create/klt_join vs pthread_create/pthread_join,\n"
          "                   on one CPU and unpinned\n"
          "  stack            sys::stack_allocate+stack_release (64 KiB, guarded) vs\n"
          "                   mmap+munmap of 64 KiB without guard\n"
          "\n"
          "  --quick       about 3 s in all (3 rounds, fewer iterations), for CI / demos\n"
          "  --rounds=N    rounds per measurement (default 7; 3 with --quick)\n"
          "  --out=DIR     where sys_bench.csv (every number of the table) and the\n"
          "                sys_bench-*.svg bar charts go (default: results/ next to\n"
          "                this program)\n"
          "  --help        this text\n"
          "\n"
          "A default run takes 10-25 s on a 2-core VM (cross-CPU futex wakeups vary).\n");
}

}  // namespace

int main(int argc, char** argv) {
  bench::g_prog = "sys_bench";
  const auto [quick, rounds, out] = bench::parse_options(argc, argv, usage);

  const uint64_t switch_roundtrips = quick ? 1000000 : 5000000;
  const uint32_t handoffs = quick ? 8000 : 30000;
  const int create_iters = quick ? 1500 : 5000;
  const int stack_iters = quick ? 30000 : 100000;

  uint64_t start = now_ns();
  bench::init_cpus();
  const cpu_set_t pinned = one_cpu(g_cpu);

  const char* what = nullptr;
  if (int r = sys::klt_backend_init(&what); r != 0) {
    failf("KLT backend unusable: %s", what ? what : strerror(-r));
  }
  const double tsc_per_ns = calibrate_tsc(100);

  // The context pairs live for the whole run; their coroutines loop forever
  // and are simply abandoned at exit.
  sys::Stack weft_stack, weft_diff_stack, floor_stack, floor_jmp_stack;
  for (sys::Stack* st : {&weft_stack, &weft_diff_stack, &floor_stack, &floor_jmp_stack}) {
    if (int r = sys::stack_allocate(kStackSize, 4096, st); r != 0) die("stack_allocate", r);
  }
  // Set PE in this thread's MXCSR (an inexact division); it is sticky, and
  // nothing here clears it.
  volatile double third = 1.0;
  third = third / 3.0;
  _mm_setcsr(_mm_getcsr() | kMxcsrPE);
  const uint32_t main_mxcsr = _mm_getcsr();
  WeftPair wp, wd;  // wp: the same MXCSR on both sides; wd: exception flags differ
  wp.co_mxcsr = main_mxcsr;
  wd.co_mxcsr = main_mxcsr & ~kMxcsrFlags;
  sys::context_init_native(&wp.main);
  sys::context_init(&wp.co, weft_stack.lo(), weft_stack.size(), weft_entry, &wp);
  sys::context_init_native(&wd.main);
  sys::context_init(&wd.co, weft_diff_stack.lo(), weft_diff_stack.size(), weft_entry, &wd);
  FloorPair fp, fj;
  floor_init(&fp.co_sp, floor_stack.lo(), floor_stack.size(), floor_entry<bench_floor_switch>, &fp);
  floor_init(&fj.co_sp, floor_jmp_stack.lo(), floor_jmp_stack.size(),
             floor_entry<bench_floor_switch_jmp>, &fj);

  auto weft_sw = [&](uint64_t i) {
    return reinterpret_cast<uintptr_t>(sys::context_switch(&wp.main, &wp.co, reinterpret_cast<void*>(i)));
  };
  auto weft_diff_sw = [&](uint64_t i) {
    return reinterpret_cast<uintptr_t>(sys::context_switch(&wd.main, &wd.co, reinterpret_cast<void*>(i)));
  };
  auto floor_sw = [&](uint64_t i) {
    return reinterpret_cast<uintptr_t>(bench_floor_switch(&fp.main_sp, fp.co_sp, reinterpret_cast<void*>(i)));
  };
  auto floor_jmp_sw = [&](uint64_t i) {
    return reinterpret_cast<uintptr_t>(bench_floor_switch_jmp(&fj.main_sp, fj.co_sp, reinterpret_cast<void*>(i)));
  };

  Samples sw_ns, sw_cyc, swd_ns, swd_cyc, fl_ns, fl_cyc, fj_ns, fj_cyc, fx_pin, fx_free, fx_pin_x, fx_free_x;
  Samples klt, klt_noalt, pth, klt_free, pth_free, stk, mm;
  auto add_switch = [](Samples& ns, Samples& cyc, PerSwitch s) {
    ns.add(s.ns);
    cyc.add(s.cycles);
  };
  bench::Progress progress("sys_bench");
  for (int r = 0; r < rounds; r++) {
    const bool weft_first = r % 2 == 0;

    // 1. Switches, pinned to one CPU; weft first or last.
    progress.round(r + 1, rounds, "context switches");
    set_affinity(0, pinned);
    if (weft_first) add_switch(sw_ns, sw_cyc, time_switches(switch_roundtrips, weft_sw));
    add_switch(fl_ns, fl_cyc, time_switches(switch_roundtrips, floor_sw));
    add_switch(fj_ns, fj_cyc, time_switches(switch_roundtrips, floor_jmp_sw));
    if (!weft_first) add_switch(sw_ns, sw_cyc, time_switches(switch_roundtrips, weft_sw));
    add_switch(swd_ns, swd_cyc, time_switches(switch_roundtrips / 4, weft_diff_sw));
    set_affinity(0, g_all_cpus);

    double x;
    progress.round(r + 1, rounds, "futex handoffs");
    bench::run_both(weft_first, [&] {
      fx_pin.add(time_futex_handoff(handoffs, true, &x));
      fx_pin_x.add(x);
    }, [&] {
      fx_free.add(time_futex_handoff(handoffs, false, &x));
      fx_free_x.add(x);
    });

    // 2, 3. Creation and stacks: pinned to one CPU (new threads inherit
    // the creator's mask), then creation again unpinned.
    progress.round(r + 1, rounds, "KLT create+join and stacks, 1 CPU");
    set_affinity(0, pinned);
    if (weft_first) {
      klt.add(time_klt(create_iters, true));
      klt_noalt.add(time_klt(create_iters, false));
      pth.add(time_pthread(create_iters));
      stk.add(time_stack(stack_iters));
      mm.add(time_mmap(stack_iters));
    } else {
      pth.add(time_pthread(create_iters));
      klt_noalt.add(time_klt(create_iters, false));
      klt.add(time_klt(create_iters, true));
      mm.add(time_mmap(stack_iters));
      stk.add(time_stack(stack_iters));
    }
    set_affinity(0, g_all_cpus);
    progress.round(r + 1, rounds, "KLT create+join, unpinned");
    if (weft_first) {
      klt_free.add(time_klt(create_iters, true));
      pth_free.add(time_pthread(create_iters));
    } else {
      pth_free.add(time_pthread(create_iters));
      klt_free.add(time_klt(create_iters, true));
    }
  }
  double secs = static_cast<double>(now_ns() - start) / 1e9;
  progress.clear();

  printf("weft sys_bench: %d rounds%s, weft and comparison interleaved; median and min of rounds\n",
         rounds, quick ? " (--quick)" : "");
  printf("klt backend: %s   stack guard: %s   TSC: %.1f MHz (calibrated vs CLOCK_MONOTONIC)\n\n",
         sys::klt_backend_name(), guard_name(sys::stack_guard_mechanism()), tsc_per_ns * 1e3);
  printf("%-24s %-10s %9s %9s  %-28s %9s %9s  %s\n", "weft", "unit", "median", "min",
         "compared with", "median", "min", "ratio of medians");
  printf("%s\n", std::string(24 + 1 + 10 + 2 * 10 + 2 + 28 + 2 * 10 + 2 + 19, '-').c_str());
  auto row = [](const char* w, const char* unit, const Samples& a, const char* other, const Samples& b,
                const std::string& ratio) {
    printf("%-24s %-10s %9s %9s  %-28s %9s %9s  %s\n", w, unit, fmt(a.median()).c_str(),
           fmt(a.min()).c_str(), other, fmt(b.median()).c_str(), fmt(b.min()).c_str(), ratio.c_str());
  };
  row("context_switch", "ns/switch", sw_ns, "NPTL futex handoff, 1 CPU", fx_pin,
      fmt_ratio("NPTL/weft", fx_pin.median() / sw_ns.median()));
  row("context_switch", "ns/switch", sw_ns, "NPTL futex handoff, unpinned", fx_free,
      fmt_ratio("NPTL/weft", fx_free.median() / sw_ns.median()));
  row("context_switch", "ns/switch", sw_ns, "floor switch, ret", fl_ns,
      fmt_ratio("weft/floor", sw_ns.median() / fl_ns.median()));
  row("context_switch", "ns/switch", sw_ns, "floor switch, pop+jmp", fj_ns,
      fmt_ratio("weft/floor", sw_ns.median() / fj_ns.median()));
  row("context_switch", "TSC cyc/sw", sw_cyc, "floor switch, ret", fl_cyc,
      fmt_ratio("weft/floor", sw_cyc.median() / fl_cyc.median()));
  row("context_switch", "TSC cyc/sw", sw_cyc, "floor switch, pop+jmp", fj_cyc,
      fmt_ratio("weft/floor", sw_cyc.median() / fj_cyc.median()));
  row("ctx_switch, MXCSR diff", "ns/switch", swd_ns, "floor switch, ret", fl_ns,
      fmt_ratio("weft/floor", swd_ns.median() / fl_ns.median()));
  row("klt_create+join, 1 CPU", "us/thread", klt, "pthread_create+join, 1 CPU", pth,
      fmt_ratio("NPTL/weft", pth.median() / klt.median()));
  row(" same, no sigaltstack", "us/thread", klt_noalt, "pthread_create+join, 1 CPU", pth,
      fmt_ratio("NPTL/weft", pth.median() / klt_noalt.median()));
  row("klt_create+join, unpin.", "us/thread", klt_free, "pthread_create+join, unpin.", pth_free,
      fmt_ratio("NPTL/weft", pth_free.median() / klt_free.median()));
  row("stack_allocate+release", "us/stack", stk, "mmap+munmap, no guard", mm,
      fmt_ratio("mmap/weft", mm.median() / stk.median()));
  printf("\n");
  printf("context_switch: native context <-> context on a guarded 64 KiB stack, one thread pinned\n"
         "  to CPU %d; 1 switch = 1 call (a round trip is 2); %" PRIu64 " round trips per round.\n",
         g_cpu, switch_roundtrips);
  printf("futex handoff: 2 pthreads, each wakes the other (FUTEX_WAKE) and sleeps (FUTEX_WAIT);\n"
         "  1 handoff = one thread to the other, %u per round. \"1 CPU\": both pinned to CPU %d.\n"
         "  Handoffs that crossed CPUs (median): 1 CPU %.0f%%, unpinned %.0f%% (cross-CPU wakeups\n"
         "  of an idle vCPU cost far more here; the scheduler decides, so unpinned varies).\n",
         handoffs, g_cpu, 100 * fx_pin_x.median(), 100 * fx_free_x.median());
  printf("floor: asm switch saving only rbx, rbp, r12-r15 and rsp (no MXCSR / x87 control word);\n"
         "  \"ret\" resumes with ret like weft (the return stack buffer mispredicts it every time),\n"
         "  \"pop+jmp\" with an indirect jump like Boost.Context.\n");
  printf("MXCSR diff: the two contexts' MXCSR differ only in the sticky exception flags\n"
         "  (main 0x%04x, coroutine 0x%04x), as after any inexact FP operation on one side;\n"
         "  the other context_switch rows have equal MXCSR on both sides.\n",
         main_mxcsr, main_mxcsr & ~kMxcsrFlags);
  printf("TSC cycles are reference cycles at %.0f MHz, not core clock cycles (turbo / VM).\n",
         tsc_per_ns * 1e3);
  printf("klt: default KltOptions (256 KiB stack + 4 KiB guard, 64 KiB sigaltstack) or the same\n"
         "  without sigaltstack; trivial body, %d sequential create+join per round; \"1 CPU\":\n"
         "  creator and thread on CPU %d, \"unpin.\": the scheduler may wake the other vCPU.\n",
         create_iters, g_cpu);
  printf("stack: 64 KiB usable + 4 KiB guard vs 64 KiB, untouched, %d per round, on CPU %d.\n",
         stack_iters, g_cpu);
  printf("total run time %.1f s\n", secs);

  if (g_sink == 1) printf(" \n");  // keeps the stack loops' results observable

  // The same numbers for the CSV file and the figures.
  Report report("sys_bench", system_summary());
  report.set_note(rounds_note(rounds, quick));
  report.add_value("system", "TSC", "frequency", "MHz", tsc_per_ns * 1e3, 1);
  report.add("sys", "weft", "context switch", "ns/switch", sw_ns);
  report.add("sys", "floor switch, ret", "context switch", "ns/switch", fl_ns);
  report.add("sys", "floor switch, pop+jmp", "context switch", "ns/switch", fj_ns);
  report.add("sys", "NPTL futex handoff, 1 CPU", "context switch", "ns/switch", fx_pin);
  report.add("sys", "NPTL futex handoff, unpinned", "context switch", "ns/switch", fx_free);
  report.add("sys", "weft", "context switch, MXCSR diff", "ns/switch", swd_ns);
  report.add("sys", "weft", "context switch", "TSC cycles/switch", sw_cyc);
  report.add("sys", "floor switch, ret", "context switch", "TSC cycles/switch", fl_cyc);
  report.add("sys", "floor switch, pop+jmp", "context switch", "TSC cycles/switch", fj_cyc);
  report.add("sys", "weft", "KLT create+join, 1 CPU", "us/thread", klt);
  report.add("sys", "weft, no sigaltstack", "KLT create+join, 1 CPU", "us/thread", klt_noalt);
  report.add("sys", "NPTL", "KLT create+join, 1 CPU", "us/thread", pth);
  report.add("sys", "weft", "KLT create+join, unpinned", "us/thread", klt_free);
  report.add("sys", "NPTL", "KLT create+join, unpinned", "us/thread", pth_free);
  report.add("sys", "weft", "stack allocate+release", "us/stack", stk);
  report.add("sys", "mmap+munmap, no guard", "stack allocate+release", "us/stack", mm);
  report.add("futex handoffs", "NPTL futex handoff, 1 CPU", "crossed CPUs", "fraction", fx_pin_x);
  report.add("futex handoffs", "NPTL futex handoff, unpinned", "crossed CPUs", "fraction", fx_free_x);
  report.add_figure({"switch", "context switch vs the floor and a futex handoff", Figure::kBars, {"sys"},
                     {"ns/switch"}, "ns per switch; lower is better", ""});
  report.add_figure({"cycles", "context switch vs the floor, TSC cycles", Figure::kBars, {"sys"},
                     {"TSC cycles/switch"}, "TSC reference cycles per switch; lower is better", ""});
  report.add_figure({"create", "KLT create+join and stacks, weft vs NPTL", Figure::kBars, {"sys"},
                     {"us/thread", "us/stack"}, "us per thread or stack; lower is better", ""});
  return report.finish(out);
}
