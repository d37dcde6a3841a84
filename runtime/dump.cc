// runtime/dump.cc — weft::dump_ults (weft/debug.h), and the thread that
// dumps on WEFT_DUMP_SIGNAL and when a runtime hangs (Options::hang_dump).
//
// Finding the ULTs: the process-wide descriptor table (ult.h), read without
// its lock — chunks are never freed, so any descriptor may be read at any
// time; one in use has live_in set. Everything read from a descriptor that
// is not ours is a racy snapshot (relaxed loads): a ULT may park, wake or
// exit while the dump looks at it, and the dump says what it saw.
//
// Backtraces of switched-out ULTs (parked, or runnable in a queue), without
// touching them: the used part of the ULT's stack [saved sp, top) is copied
// with process_vm_readv on our own pid (a stack unmapped meanwhile gives
// EFAULT, never a fault), every word of the copy that points into the
// original range is moved by the same offset (saved frame pointers and
// other stack addresses, so the copy describes itself), and libgcc's
// unwinder runs on the copy: weft_run_on_frame (sys/context_x86_64.S)
// calls collect_main with the copy's switch frame as its caller's frame,
// and _Unwind_Backtrace walks from there through the ULT's frames by their
// CFI exactly as for a live stack. The unwinder stops when a frame's CFA
// leaves the copy (a torn copy — the ULT ran while we copied — then ends
// the trace early instead of sending the unwinder through wild pointers).
// The sp read before and after the copy must match, or the line says the
// ULT ran meanwhile.
#include "weft/debug.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/debugging/symbolize.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/debug_info.h"
#include "runtime/scheduler.h"
#include "runtime/ult.h"
#include "sys/context.h"
#include "sys/context_layout.h"
#include "sys/futex.h"
#include "sys/raw_syscall.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WEFT_DUMP_NO_COPY_UNWIND 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define WEFT_DUMP_NO_COPY_UNWIND 1
#endif
#endif

namespace weft {
namespace {

using rt::UltDesc;
using rt::Worker;
namespace st = rt::ult_state;

constexpr int kMaxFrames = 48;
// Below the copy: the frames of collect_main, _Unwind_Backtrace and the
// loader's dl_iterate_phdr, and any signal handler that runs meanwhile.
constexpr size_t kRoom = 256 * 1024;

struct Trace {
  uintptr_t pc[kMaxFrames];
  int n = 0;
};

// --- unwinding -----------------------------------------------------------------

struct CopyJob {
  void* back_sp = nullptr;  // weft_run_on_frame's, to return to
  uintptr_t lo = 0, hi = 0; // the copy: CFAs must stay inside
  bool started = false;     // the fake return address was seen
  Trace* out = nullptr;
};

extern "C" char weft_context_switch_saved[];

_Unwind_Reason_Code collect_copy(struct _Unwind_Context* c, void* arg) {
  auto* j = static_cast<CopyJob*>(arg);
  uintptr_t ip = _Unwind_GetIP(c);
  if (!j->started) {
    // Frames of collect_main, then weft_context_switch's (the fake return
    // address); the ULT's own frames follow.
    if (ip == reinterpret_cast<uintptr_t>(weft_context_switch_saved)) j->started = true;
    return _URC_NO_REASON;
  }
  uintptr_t cfa = _Unwind_GetCFA(c);
  if (ip == 0 || j->out->n >= kMaxFrames) return _URC_END_OF_STACK;
  j->out->pc[j->out->n++] = ip;
  // The next step reads this frame's return address and saved registers
  // just below its CFA: stop if that is outside the copy.
  if (cfa < j->lo + 16 || cfa > j->hi) return _URC_END_OF_STACK;
  return _URC_NO_REASON;
}

[[noreturn]] void collect_main(void* arg) {
  auto* j = static_cast<CopyJob*>(arg);
  _Unwind_Backtrace(collect_copy, j);
  weft_run_on_frame_return(j->back_sp);
}

_Unwind_Reason_Code collect_here(struct _Unwind_Context* c, void* arg) {
  auto* t = static_cast<Trace*>(arg);
  uintptr_t ip = _Unwind_GetIP(c);
  if (ip == 0 || t->n >= kMaxFrames) return _URC_END_OF_STACK;
  t->pc[t->n++] = ip;
  return _URC_NO_REASON;
}

// Reads [addr, addr+len) of our own memory; false if any of it is unmapped.
bool safe_read(void* dst, uintptr_t addr, size_t len) {
  iovec local{dst, len};
  iovec remote{reinterpret_cast<void*>(addr), len};
  long r = sys::raw_syscall(SYS_process_vm_readv, sys::raw_syscall(SYS_getpid), reinterpret_cast<long>(&local), 1,
                            reinterpret_cast<long>(&remote), 1, 0);
  return r == static_cast<long>(len);
}

// The backtrace of a switched-out ULT whose saved sp was `sp`, from a copy
// of its stack. Returns false (and says why in *why) if none was taken.
bool trace_switched_out(const UltDesc* u, uintptr_t sp, Trace* out, const char** why) {
#if WEFT_DUMP_NO_COPY_UNWIND
  (void)u, (void)sp, (void)out;
  *why = "no backtrace under a sanitizer";
  return false;
#else
  uintptr_t top = reinterpret_cast<uintptr_t>(u->stack.hi());
  uintptr_t bottom = reinterpret_cast<uintptr_t>(u->stack.lo());
  if (u->stack.base == nullptr || sp < bottom || sp + WEFT_CTX_FRAME_SIZE > top) {
    *why = "no backtrace: its saved stack pointer is outside its stack";
    return false;
  }
  size_t used = top - sp;
  // The copy keeps sp's offset within its page (so its 16-byte alignment):
  // [room][page offset][copy of sp..top].
  size_t off = sp & 4095;
  size_t map = kRoom + ((off + used + 4095) & ~size_t{4095});
  void* m = mmap(nullptr, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    *why = "no backtrace: no memory for a stack copy";
    return false;
  }
  auto* base = static_cast<char*>(m);
  uintptr_t copy = reinterpret_cast<uintptr_t>(base + kRoom + off);
  bool ok = safe_read(reinterpret_cast<void*>(copy), sp, used);
  if (ok && reinterpret_cast<uintptr_t>(__atomic_load_n(&u->ctx.sp, __ATOMIC_RELAXED)) != sp) ok = false;
  if (!ok) {
    munmap(m, map);
    *why = "no backtrace: it ran while its stack was copied";
    return false;
  }
  // Rebase the copy's pointers into the original range (see the top).
  uintptr_t delta = copy - sp;
  auto* words = reinterpret_cast<uintptr_t*>(copy);
  for (size_t i = 0; i < used / sizeof(uintptr_t); ++i) {
    if (words[i] >= sp && words[i] < top) words[i] += delta;
  }
  CopyJob j;
  j.lo = copy;
  j.hi = copy + used;
  j.out = out;
  weft_run_on_frame(reinterpret_cast<void*>(copy), collect_main, &j, &j.back_sp);
  munmap(m, map);
  if (out->n == 0) {
    *why = "no backtrace: the unwinder found no frame";
    return false;
  }
  return true;
#endif
}

// --- output ----------------------------------------------------------------------

void print_trace(std::string* s, const Trace& t) {
  for (int i = 0; i < t.n; ++i) {
    uintptr_t pc = t.pc[i];
    // A return address points after the call: look up the call itself.
    void* look = reinterpret_cast<void*>(pc - 1);
    char name[512];
    if (absl::Symbolize(look, name, sizeof name)) {
      absl::StrAppendFormat(s, "    #%d 0x%x %s\n", i, pc, name);
      continue;
    }
    Dl_info di{};
    if (dladdr(look, &di) != 0 && di.dli_fname != nullptr) {
      absl::StrAppendFormat(s, "    #%d 0x%x (%s+0x%x)\n", i, pc, di.dli_fname,
                            pc - reinterpret_cast<uintptr_t>(di.dli_fbase));
    } else {
      absl::StrAppendFormat(s, "    #%d 0x%x\n", i, pc);
    }
  }
}

const char* prio_name(uint8_t p) { return p == 0 ? "background" : p == 2 ? "high" : "normal"; }

// Calls f on each descriptor in use (live_in set, any runtime), in table
// order, without a lock (see the top: a racy snapshot).
template <class F>
void for_each_in_use(F f) {
  uint64_t n = rt::ult_table::size();
  for (uint64_t i = 0; i < n; ++i) {
    UltDesc* u = rt::ult_table::lookup(i);
    if (u != nullptr && u->live_in.load(std::memory_order_acquire) != nullptr) f(u);
  }
}

// Is u running on w (the worker it runs on or last ran on) right now?
bool running_on(const UltDesc* u, const Worker* w) {
  return w != nullptr && w->current.load(std::memory_order_relaxed) == u;
}

// `ULT 3.1 "name"`.
std::string ult_label(const UltDesc* u) {
  char name[sizeof u->name + 1] = {};
  memcpy(name, u->name, sizeof u->name);  // a racy copy: spawn may be rewriting it
  return absl::StrFormat("ULT %u.%u \"%s\"", u->index, u->generation.load(std::memory_order_relaxed), name);
}

std::string describe_holder(uintptr_t word) {
  if (word == 0) return "free";
  if (word & 1) return absl::StrFormat("held by thread 0x%x", word & ~uintptr_t{1});
  return "held by " + ult_label(reinterpret_cast<const UltDesc*>(word));
}

struct Seen {
  const UltDesc* u;
  const void* mutex;  // the Mutex it waits on, or null
};

// Mutex wait cycles: ULT a waits on a Mutex held by ULT b, which waits on
// one held by c, ... back to a. Each cycle is reported once.
void report_cycles(std::string* s, const std::vector<Seen>& seen) {
  auto waits_on = [&](const UltDesc* u) -> const void* {
    for (const Seen& e : seen)
      if (e.u == u) return e.mutex;
    return nullptr;
  };
  std::vector<const UltDesc*> reported;
  for (const Seen& start : seen) {
    if (start.mutex == nullptr) continue;
    std::vector<const UltDesc*> path{start.u};
    const UltDesc* cur = start.u;
    const void* m = start.mutex;
    bool cycle = false;
    for (size_t steps = 0; m != nullptr && steps < seen.size(); ++steps) {
      uintptr_t w = rt::debug_mutex_owner(m);
      if (w == 0 || (w & 1)) break;
      cur = reinterpret_cast<const UltDesc*>(w);
      if (cur == start.u) {
        cycle = true;
        break;
      }
      bool again = false;
      for (const UltDesc* p : path) again |= p == cur;
      if (again) break;  // a cycle not through start: found from one of its members
      path.push_back(cur);
      m = waits_on(cur);
    }
    if (!cycle) continue;
    bool dup = false;
    for (const UltDesc* r : reported)
      for (const UltDesc* p : path) dup |= r == p;
    if (dup) continue;
    reported.insert(reported.end(), path.begin(), path.end());
    absl::StrAppend(s, "DEADLOCK: a cycle of Mutex waits:\n");
    for (const UltDesc* p : path) {
      const void* pm = waits_on(p);
      absl::StrAppendFormat(s, "  %s waits for Mutex %p, %s\n", ult_label(p), pm,
                            describe_holder(rt::debug_mutex_owner(pm)));
    }
    absl::StrAppend(s, "  (their backtraces above show where each waits)\n");
  }
}

absl::Status write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    long r = sys::raw_syscall(SYS_write, fd, reinterpret_cast<long>(s.data() + done), static_cast<long>(s.size() - done));
    if (r == -EINTR) continue;
    if (r < 0) return absl::InternalError(absl::StrCat("dump_ults: write: ", strerror(static_cast<int>(-r))));
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status dump_ults(int fd) {
  if (fd < 0) return absl::InvalidArgumentError(absl::StrCat("dump_ults: fd ", fd, " is negative"));
  static std::atomic<bool> symbolizer_ready{false};
  if (!symbolizer_ready.exchange(true)) absl::InitializeSymbolizer("/proc/self/exe");
  const UltDesc* self = rt::current_ult();
  Trace mine;
  _Unwind_Backtrace(collect_here, &mine);

  std::string out;
  std::vector<Seen> seen;
  size_t listed = 0;
  for_each_in_use([&](UltDesc* u) {
    ++listed;
    uint32_t state = u->state.load(std::memory_order_acquire) & st::kStateMask;
    Worker* w = u->worker.load(std::memory_order_relaxed);
    bool running = running_on(u, w);
    const char* what = u->wait_what.load(std::memory_order_relaxed);
    const void* obj = u->wait_obj.load(std::memory_order_relaxed);
    int64_t arg = u->wait_arg.load(std::memory_order_relaxed);
    absl::StrAppend(&out, ult_label(u), " ");
    bool switched_out = false;
    const void* on_mutex = nullptr;
    if (u == self) {
      absl::StrAppend(&out, "running (this dump)");
    } else if (state == st::kExited) {
      absl::StrAppend(&out, "exited, not yet joined");
    } else if (running || state == st::kParking) {
      absl::StrAppendFormat(&out, "running on worker %d (tid %d)", w->index.load(std::memory_order_relaxed),
                            w->tid.load(std::memory_order_relaxed));
    } else if (state == st::kParked) {
      switched_out = true;
      absl::StrAppend(&out, "parked");
      if (what != nullptr) {
        absl::StrAppend(&out, ": ", what);
        if (obj != nullptr) absl::StrAppendFormat(&out, " %p", obj);
        if (arg >= 0) absl::StrAppend(&out, " fd ", arg);
        if (obj != nullptr && strcmp(what, "Mutex") == 0) {
          on_mutex = obj;
          absl::StrAppend(&out, ", ", describe_holder(rt::debug_mutex_owner(obj)));
        }
      }
    } else {
      switched_out = true;
      absl::StrAppend(&out, "runnable");
    }
    // Bound: its worker is a bound one (u->bound itself is written by spawn
    // after the descriptor is published: not for other threads).
    absl::StrAppendFormat(&out, " (priority %s%s)\n", prio_name(u->eff_prio.load(std::memory_order_relaxed)),
                          w != nullptr && w->is_bound ? ", bound" : "");
    seen.push_back({u, on_mutex});
    if (u == self) {
      print_trace(&out, mine);
    } else if (switched_out) {
      auto sp = reinterpret_cast<uintptr_t>(__atomic_load_n(&u->ctx.sp, __ATOMIC_RELAXED));
      Trace t;
      const char* why = nullptr;
      if (sp != 0 && trace_switched_out(u, sp, &t, &why)) {
        print_trace(&out, t);
      } else {
        absl::StrAppend(&out, "    (", why != nullptr ? why : "no saved context", ")\n");
      }
    }
  });
  if (self == nullptr) {
    absl::StrAppend(&out, "called from thread ", sys::raw_syscall(SYS_gettid), ":\n");
    print_trace(&out, mine);
  }
  report_cycles(&out, seen);
  std::string head = absl::StrFormat("weft: %u ULTs (pid %d)\n", listed, static_cast<int>(getpid()));
  return write_all(fd, head + out);
}

}  // namespace weft

// --- the dump thread (WEFT_DUMP_SIGNAL, Options::hang_dump) ------------------

namespace weft::rt {

namespace {

// SIGQUIT, QUIT or a number; 0 if `v` is none of these.
int parse_signal(const char* v) {
  if (v == nullptr || *v == 0) return 0;
  char* end = nullptr;
  long n = strtol(v, &end, 10);
  if (*end == 0) return n > 0 && n < NSIG ? static_cast<int>(n) : 0;
  if (strncmp(v, "SIG", 3) == 0) v += 3;
  for (int s = 1; s < NSIG; ++s) {
    const char* a = sigabbrev_np(s);
    if (a != nullptr && strcmp(a, v) == 0) return s;
  }
  return 0;
}

// Switches made by the runtime's pool workers so far.
uint64_t total_switches(Scheduler* s) {
  uint64_t n = 0;
  int k = s->nworkers.load(std::memory_order_acquire);
  for (int i = 0; i < k; ++i)
    if (Worker* w = s->worker_at(i)) n += w->switches.load(std::memory_order_relaxed);
  return n;
}

}  // namespace

UltCounts count_ults(const Scheduler* s) {
  UltCounts c;
  for_each_in_use([&](UltDesc* u) {
    if (u->live_in.load(std::memory_order_relaxed) != s) return;
    uint32_t state = u->state.load(std::memory_order_relaxed) & st::kStateMask;
    if (state == st::kExited) {
      ++c.exited_unjoined;
    } else if (state == st::kParked) {
      ++c.parked;
    } else if (state == st::kParking || running_on(u, u->worker.load(std::memory_order_relaxed))) {
      ++c.running;
    } else {
      ++c.runnable;
    }
  });
  return c;
}

DumpWatch::DumpWatch(Scheduler* s, int64_t hang_ns) : sched_(s), hang_ns_(hang_ns), pid_(getpid()) {
  if (hang_ns_ == 0) {
    const char* h = getenv("WEFT_HANG_DUMP");
    if (h != nullptr && *h != 0) {
      char* end = nullptr;
      double secs = strtod(h, &end);
      if (*end == 0 && secs > 0) hang_ns_ = static_cast<int64_t>(secs * 1e9);
      else sys::raw_logf("weft: WEFT_HANG_DUMP=%s is not a number of seconds > 0: ignored", h);
    }
  }
  const char* sv = getenv("WEFT_DUMP_SIGNAL");
  if (sv != nullptr && *sv != 0) {
    int sig = parse_signal(sv);
    if (sig == 0) {
      sys::raw_logf("weft: WEFT_DUMP_SIGNAL=%s names no signal: ignored", sv);
    } else {
      auto set = std::make_unique<SignalSet>(std::initializer_list<int>{sig});
      if (set->status().ok()) {
        set_ = std::move(set);
      } else {
        sys::raw_logf("weft: WEFT_DUMP_SIGNAL=%s: %s", sv, std::string(set->status().message()).c_str());
      }
    }
  }
  if (set_ == nullptr && hang_ns_ == 0) return;
  thread_ = std::thread([this] { run(); });
}

DumpWatch::~DumpWatch() {
  if (!thread_.joinable()) return;
  if (getpid() != pid_) {
    // A forked child: the thread stayed in the parent. Nothing of its
    // state may wait for it here (a copied pthread condvar with its
    // waiter counted made the child hang in pthread_cond_destroy: the
    // stop word is a plain futex word for that reason).
    thread_.detach();
    return;
  }
  stop_.store(1, std::memory_order_release);
  sys::futex_wake(&stop_, 1);
  thread_.join();
}

void DumpWatch::run() {
  uint64_t last = total_switches(sched_);
  int64_t since = monotonic_ns();
  bool dumped = false;  // for this stall
  for (;;) {
    if (set_ != nullptr) {
      int sig = set_->wait_for(std::chrono::milliseconds(100));
      if (sig > 0) (void)dump_ults(2);
    } else {
      timespec tick{0, 100 * 1000 * 1000};
      (void)sys::futex_wait_for(&stop_, 0, &tick);
    }
    if (stop_.load(std::memory_order_acquire) != 0) return;
    if (hang_ns_ == 0) continue;
    uint64_t now_sw = total_switches(sched_);
    int64_t now = monotonic_ns();
    if (now_sw != last) {
      last = now_sw;
      since = now;
      dumped = false;
      continue;
    }
    if (dumped || now - since < hang_ns_) continue;
    if (count_ults(sched_).runnable == 0) continue;  // idle, or every ULT waits: not a hang of the scheduler
    dumped = true;
    sys::raw_logf("weft: no ULT has switched for %.1f s while ULTs wait to run (Options::hang_dump): dump follows",
                  static_cast<double>(now - since) / 1e9);
    (void)dump_ults(2);
  }
}

}  // namespace weft::rt
