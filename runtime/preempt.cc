// runtime/preempt.cc — time-slice preemption (issue 13).
//
// Who asks. The monitor (monitor.cc) sees a worker whose switch count has
// not moved for Options::time_slice while it runs a ULT (Worker::current
// set, not in a blocking region). It asks only if that KLT has been on a
// CPU since its last look (its per-thread CPU clock advanced by at least
// an eighth of the wall time: one clock_gettime per candidate per tick,
// from half a slice on) and is on a CPU or waiting for one now (task state
// 'R' from /proc, read only then, with one pread of the stat file the
// worker opened at its start: sys/task_state.h): a KLT asleep in a system
// call is left alone, so a preemption signal does not turn a blocking call that a ULT
// made directly (poll, nanosleep: the calls that end with EINTR whatever
// SA_RESTART says) into an EINTR. (A KLT that computes for a tick and
// enters such a call in the microseconds between the check and the
// signal can still see one; weft's own waits never block the KLT.)
// Two more askers use request_now (state 'R' only, no CPU-clock history):
// the monitor's wake-up preemption (it woke ULTs and no worker is idle:
// the workers whose ULT ran longest) and Scheduler::preempt_for_priority
// (a high-priority ULT is runnable and no worker is idle: the worker
// running the lowest priority). The request is Worker::preempt_at = the switch count it saw +
// 1, then the doorbell (SIGRTMAX-1, tgkill to that KLT: signal.cc). A
// request whose ULT has switched meanwhile is moot (pending() drops it),
// so nothing on the switch path has to clear it.
//
// Where a ULT is switched out. The doorbell handler runs on the
// interrupted ULT's stack (signal.cc). It switches the ULT out (Caladan's
// way: from the handler, not Go's injected call) only when all of these
// hold; otherwise the request stays, the monitor sends it again at its
// next tick, and the ULT's next safe point takes it:
//  - the interrupted code runs on the ULT's own stack (not the KLT's
//    signal stack, not the scheduler's stack);
//  - its instruction pointer is in code where switching out is harmless
//    (pc_preemptible): the program and its libraries, not weft (whose
//    scheduler state a second ULT on this KLT would then touch), not
//    glibc, libstdc++, libgcc_s or the dynamic loader (their locks and
//    per-thread caches belong to the KLT: a ULT switched out inside
//    malloc would leave the KLT's tcache or arena lock to the next ULT),
//    not weft's dependencies (liburing, spdlog, fmt, Abseil), a sanitizer
//    runtime, nor the vDSO (weft calls its clock_gettime with internal
//    locks held). Decided with one binary search in a table built
//    once (prepare: dl_iterate_phdr's executable segments; for a program
//    linked with libweft.a, weft's own functions are cut out of it by
//    their symbols, see weft_function below);
//  - the KLT holds no weft lock (sys::t_locks_held) and the ULT holds no
//    KLT-level lock of the application's (pthread mutexes, rwlocks and
//    spin locks, counted per ULT by the interposers at the end of this
//    file: another ULT of the same KLT that wanted one would block the
//    KLT the holder needs), nor signal.cc's table lock (sig_defer);
//  - the ULT is not bound and not in a blocking region (those run alone
//    on their KLT), and ThreadSanitizer is not in the build (it runs
//    handlers late, inside its own interceptors, where no switch is safe).
// Safe points that take a standing request: every switch (it is then moot),
// and the interposed unlock of the last KLT lock a ULT held.
//
// What the ULT keeps. The kernel saved its registers, FP/vector state and
// the interrupted kernel mask in the signal frame on the ULT's stack; the
// handler restores the KLT's mask (the worker's constant mask) and calls
// preempt_current, which switches to the scheduler loop like a yield. The
// ULT resumes on the same KLT (UltDesc::preempted_on: code interrupted at
// an arbitrary instruction may hold that KLT's errno or thread_local
// addresses in registers), returns from the handler, and sigreturn restores
// everything. Its signal mask, errno, pin and locale are per ULT and are
// not touched. A pinned ULT may be preempted; it stays on its worker as
// every preempted ULT does.
//
// Not kept: a thread_local read-modify-write in the application's own
// code is not atomic against another ULT of the same KLT once preemption
// may interleave them (ULTs of one KLT share its thread_locals; runtime.h,
// "Preemption", says to use UltLocal).
#include "runtime/preempt.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include "runtime/libc_next.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "sys/spin.h"
#include "sys/task_state.h"

namespace weft::rt::preempt {
namespace {

struct Range {
  uintptr_t lo, hi;  // [lo, hi)
};

// The published table: sorted, disjoint ranges of preemptible code. Never
// freed (a handler may be reading an old one); rebuilt only when objects
// are loaded or unloaded.
struct Table {
  std::vector<Range> ok;
  unsigned long long adds = 0, subs = 0;
};
std::atomic<const Table*> g_table{nullptr};
std::mutex g_build_mu;  // serialises builds (monitors of several runtimes)

bool starts(const char* s, const char* p) { return strncmp(s, p, strlen(p)) == 0; }

// Objects whose code is never preempted, by the start of their file name.
bool denied_object(const char* path) {
  const char* base = strrchr(path, '/');
  base = base != nullptr ? base + 1 : path;
  static const char* const kDenied[] = {
      "libc.so", "libc-", "ld-linux", "ld-2.", "libpthread", "libdl.", "librt.", "libresolv", "libnss_", "libanl",
      "libutil", "libstdc++", "libgcc_s", "liburing", "libspdlog", "libfmt", "libabsl_", "libasan", "libtsan",
      "liblsan", "libubsan", "libhwasan", "libweft", "linux-vdso", "linux-gate"};
  for (const char* d : kDenied)
    if (starts(base, d)) return true;
  return false;
}

// weft's C-linkage functions (interposers and assembly): in a program
// linked with libweft.a their symbols carry no weft namespace. Keep in step
// with `nm -g --defined-only libweft.a | grep -v ' _Z'` (HACKING.md).
bool weft_c_function(const char* n) {
  static const char* const kNames[] = {
      "dlclose", "dlmopen", "dlopen", "fork", "pause", "pclose", "popen", "posix_spawn", "posix_spawnp",
      "pthread_cancel", "pthread_exit", "pthread_kill", "pthread_sigmask", "raise", "setegid", "seteuid",
      "setgid", "setgroups", "setregid", "setresgid", "setresuid", "setreuid", "setuid", "sigaction", "signal",
      "sigpending", "sigprocmask", "sigsuspend", "sigtimedwait", "sigwait", "sigwaitinfo", "system",
      "uselocale", "wait", "wait4", "waitid", "waitpid", "pthread_mutex_lock", "pthread_mutex_trylock",
      "pthread_mutex_timedlock", "pthread_mutex_clocklock", "pthread_mutex_unlock", "pthread_rwlock_rdlock",
      "pthread_rwlock_wrlock", "pthread_rwlock_tryrdlock", "pthread_rwlock_trywrlock",
      "pthread_rwlock_timedrdlock", "pthread_rwlock_timedwrlock", "pthread_rwlock_clockrdlock",
      "pthread_rwlock_clockwrlock", "pthread_rwlock_unlock", "pthread_spin_lock", "pthread_spin_trylock",
      "pthread_spin_unlock"};
  if (starts(n, "weft_")) return true;
  for (const char* k : kNames)
    if (strcmp(n, k) == 0) return true;
  return false;
}

// Whether the nested name at p (after "_ZN" or "_ZZN": <len><id>... up to
// its 'E') has template arguments: 'I' after a component.
bool nested_is_template(const char* p) {
  for (;;) {
    while (*p == 'K' || *p == 'L' || *p == 'V' || *p == 'r') ++p;
    if (*p < '0' || *p > '9') return *p == 'I';
    size_t len = 0;
    while (*p >= '0' && *p <= '9') len = len * 10 + static_cast<size_t>(*p++ - '0');
    for (size_t i = 0; i < len; ++i)
      if (p[i] == '\0') return false;
    p += len;
    if (*p == 'I') return true;
  }
}

// Whether a function symbol of the object that holds libweft.a is weft's.
// Mangled names tell weft's compiled code from code the application's
// translation units instantiated from weft's public headers:
//  - a name that mentions weft's internal namespaces (rt, sys,
//    io_internal), or weft's anonymous namespaces or internal-linkage
//    functions: weft's (including std::vector<rt::Worker*> and the like);
//  - a function in namespace weft (_ZN4weft, _ZNK4weft): weft's if global
//    (compiled in libweft.a) or a compiler clone of one (".cold",
//    ".constprop"); a weak or local one is a header template or inline
//    function instantiated in the application (make_closure's invoke,
//    into which the application's lambda is often inlined; Channel<T>):
//    the application's code;
//  - a local entity of a function in namespace weft (_ZZN4weft: lambdas,
//    statics): weft's when that function is not a template;
//  - weft's C functions.
bool weft_function(const char* n, unsigned bind) {
  static const char* const kInternal[] = {"4weft2rt", "4weft3sys", "4weft11io_internal", "4weft12io_internal",
                                          "4weft12_GLOBAL__N_1", "4weft6detail12_GLOBAL__N_1",
                                          "4weft2io12_GLOBAL__N_1", "4weftL", "4weft6detailL", "4weft2ioL"};
  for (const char* k : kInternal)
    if (strstr(n, k) != nullptr) return true;
  if (starts(n, "_ZZN4weft") || starts(n, "_ZZNK4weft")) return !nested_is_template(n + (n[4] == 'K' ? 5 : 4));
  if (starts(n, "_ZN4weft") || starts(n, "_ZNK4weft")) return bind == STB_GLOBAL || strchr(n, '.') != nullptr;
  if (n[0] == '_' && n[1] == 'Z') return false;
  return weft_c_function(n);
}

// Reads the function symbols of the ELF file at `path` (loaded at `bias`)
// that weft_function() claims, and its PLT sections, as ranges. False if
// the file has no symbol table (stripped).
// Raw system calls, not libc's open/fstat/close: libweft-hook interposes
// those (HACKING.md, 2d), and this may run on a ULT.
bool weft_ranges_from_symtab(const char* path, uintptr_t bias, std::vector<Range>* out) {
  int fd = static_cast<int>(
      sys::raw_syscall(SYS_openat, AT_FDCWD, reinterpret_cast<long>(path), O_RDONLY | O_CLOEXEC));
  if (fd < 0) return false;
  struct stat st;
  if (sys::raw_syscall(SYS_fstat, fd, reinterpret_cast<long>(&st)) != 0 ||
      st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    sys::raw_syscall(SYS_close, fd);
    return false;
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  sys::raw_syscall(SYS_close, fd);
  if (map == MAP_FAILED) return false;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  bool found = false;
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 && eh->e_shoff != 0 &&
      eh->e_shoff + static_cast<size_t>(eh->e_shnum) * sizeof(Elf64_Shdr) <= size) {
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    // The object's PLT stubs (.plt, .plt.sec, .plt.got) are cut out too:
    // weft's own calls to other objects go through them, e.g. the switch
    // path's call of __sanitizer_finish_switch_fiber, and a ULT switched
    // out there is switched out inside weft (ASan: "starting fiber switch
    // while in fiber switch", 1 run in 40 of runtime_signal_test). The
    // program's own calls lose only the few instructions of a stub.
    if (eh->e_shstrndx != SHN_UNDEF && eh->e_shstrndx < eh->e_shnum &&
        sh[eh->e_shstrndx].sh_offset + sh[eh->e_shstrndx].sh_size <= size) {
      const Elf64_Shdr& names = sh[eh->e_shstrndx];
      for (int i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_name >= names.sh_size || (sh[i].sh_flags & SHF_EXECINSTR) == 0 || sh[i].sh_addr == 0) continue;
        const char* n = reinterpret_cast<const char*>(base + names.sh_offset + sh[i].sh_name);
        if (strncmp(n, ".plt", 4) == 0 || strncmp(n, ".iplt", 5) == 0)
          out->push_back(Range{bias + sh[i].sh_addr, bias + sh[i].sh_addr + sh[i].sh_size});
      }
    }
    for (int i = 0; i < eh->e_shnum; ++i) {
      if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
      const Elf64_Shdr& strs = sh[sh[i].sh_link];
      if (sh[i].sh_offset + sh[i].sh_size > size || strs.sh_offset + strs.sh_size > size) continue;
      found = true;
      const auto* syms = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
      size_t nsyms = sh[i].sh_size / sizeof(Elf64_Sym);
      const char* names = reinterpret_cast<const char*>(base + strs.sh_offset);
      for (size_t k = 0; k < nsyms; ++k) {
        const Elf64_Sym& s = syms[k];
        unsigned type = ELF64_ST_TYPE(s.st_info);
        if ((type != STT_FUNC && type != STT_GNU_IFUNC) || s.st_shndx == SHN_UNDEF || s.st_size == 0) continue;
        if (s.st_name >= strs.sh_size) continue;
        if (!weft_function(names + s.st_name, ELF64_ST_BIND(s.st_info))) continue;
        out->push_back(Range{bias + s.st_value, bias + s.st_value + s.st_size});
      }
    }
  }
  munmap(map, size);
  return found;
}

// Sorts and merges ranges.
void normalise(std::vector<Range>* v) {
  std::sort(v->begin(), v->end(), [](const Range& a, const Range& b) { return a.lo < b.lo; });
  std::vector<Range> out;
  for (const Range& r : *v) {
    if (!out.empty() && r.lo <= out.back().hi) {
      out.back().hi = std::max(out.back().hi, r.hi);
    } else {
      out.push_back(r);
    }
  }
  v->swap(out);
}

// `seg` minus the sorted, disjoint `holes`, appended to out.
void subtract(const Range& seg, const std::vector<Range>& holes, std::vector<Range>* out) {
  uintptr_t at = seg.lo;
  auto it = std::lower_bound(holes.begin(), holes.end(), seg.lo, [](const Range& h, uintptr_t x) { return h.hi <= x; });
  for (; it != holes.end() && it->lo < seg.hi; ++it) {
    if (it->lo > at) out->push_back(Range{at, it->lo});
    at = std::max(at, it->hi);
  }
  if (at < seg.hi) out->push_back(Range{at, seg.hi});
}

struct BuildState {
  Table* t;
  uintptr_t weft_pc;  // an address of weft's code: finds the object that holds it
};

int build_one(struct dl_phdr_info* info, size_t, void* arg) {
  auto* b = static_cast<BuildState*>(arg);
  b->t->adds = info->dlpi_adds;
  b->t->subs = info->dlpi_subs;
  const char* name = info->dlpi_name != nullptr ? info->dlpi_name : "";
  std::vector<Range> segs;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
    segs.push_back(Range{info->dlpi_addr + ph.p_vaddr, info->dlpi_addr + ph.p_vaddr + ph.p_memsz});
  }
  if (segs.empty() || (name[0] != '\0' && denied_object(name))) return 0;
  bool holds_weft = false;
  for (const Range& r : segs) holds_weft |= b->weft_pc >= r.lo && b->weft_pc < r.hi;
  if (!holds_weft) {
    for (const Range& r : segs) b->t->ok.push_back(r);
    return 0;
  }
  // libweft.a linked into this object: cut weft's functions out.
  const char* path = name[0] != '\0' ? name : "/proc/self/exe";
  std::vector<Range> weft;
  if (!weft_ranges_from_symtab(path, info->dlpi_addr, &weft)) {
    log().warn("time-slice preemption: {} holds weft's code and has no symbol table (stripped): ULTs are "
               "not preempted in its code (only in other libraries' and at safe points)",
               path);
    return 0;
  }
  normalise(&weft);
  for (const Range& r : segs) subtract(r, weft, &b->t->ok);
  return 0;
}

const Table* build() {
  auto* t = new Table;
  BuildState b{t, reinterpret_cast<uintptr_t>(&build)};
  dl_iterate_phdr(build_one, &b);
  normalise(&t->ok);
  return t;
}

int read_counts(struct dl_phdr_info* info, size_t, void* arg) {
  auto* c = static_cast<unsigned long long*>(arg);
  c[0] = info->dlpi_adds;
  c[1] = info->dlpi_subs;
  return 1;  // the first object is enough
}

}  // namespace

void prepare() {
  std::lock_guard<std::mutex> g(g_build_mu);
  if (g_table.load(std::memory_order_acquire) != nullptr) return;
  g_table.store(build(), std::memory_order_release);
}

void refresh_if_changed() {
  const Table* t = g_table.load(std::memory_order_acquire);
  if (t == nullptr) return;
  unsigned long long c[2] = {0, 0};
  dl_iterate_phdr(read_counts, c);
  if (c[0] == t->adds && c[1] == t->subs) return;
  std::lock_guard<std::mutex> g(g_build_mu);
  if (g_table.load(std::memory_order_acquire) != t) return;
  g_table.store(build(), std::memory_order_release);  // the old one stays: a handler may read it
}

bool pc_preemptible(uintptr_t pc) {
  const Table* t = g_table.load(std::memory_order_acquire);
  if (t == nullptr) return false;
  const std::vector<Range>& v = t->ok;
  size_t lo = 0, hi = v.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v[mid].hi <= pc) {
      lo = mid + 1;
    } else if (v[mid].lo > pc) {
      hi = mid;
    } else {
      return true;
    }
  }
  return false;
}

namespace {
// Rings w's doorbell for a preemption of what it runs at switch count
// `seen`, if its KLT is on a CPU (or waiting for one): one asleep in the
// kernel could only have its system call ended with EINTR by the signal.
bool ring(Worker* w, uint64_t seen) {
  int tid = w->tid.load(std::memory_order_acquire);  // then stat_fd (Worker)
  if (tid == 0 || sys::task_state(w->stat_fd.load(std::memory_order_relaxed), tid) != 'R') return false;
  w->preempt_at.store(seen + 1, std::memory_order_release);
#if !defined(__SANITIZE_THREAD__)
  sys::tgkill(sys::getpid(), tid, SIGRTMAX - 1);
#else
  // No signal under ThreadSanitizer: its handler would never switch the
  // ULT out (may_switch_out), and TSan runs it late, inside its own
  // interceptors; sent, it ended a ULT's direct usleep(500 ms) with EINTR
  // after 80 us (CI of a3d953c, Blocking.PlainBlockingCallStallsTheWorker-
  // WithHandoffsOff). The request and the task-state look stay: a safe
  // point still sees the request, and the stats count it.
#endif
  return true;
}
}  // namespace

void request(Scheduler* s, Worker* w, uint64_t seen) {
  if (ring(w, seen)) s->preempt_requested.fetch_add(1, std::memory_order_relaxed);
}

bool request_now(Scheduler*, Worker* w) {
  return ring(w, w->switches.load(std::memory_order_relaxed) + w->sleeps.load(std::memory_order_relaxed));
}

bool pending(Worker* w) {
  uint64_t p = w->preempt_at.load(std::memory_order_acquire);
  if (p == 0) return false;
  uint64_t now = w->switches.load(std::memory_order_relaxed) + w->sleeps.load(std::memory_order_relaxed);
  if (p - 1 == now) return true;
  w->preempt_at.store(0, std::memory_order_relaxed);  // for a ULT that has switched since: moot
  return false;
}

bool may_switch_out(Worker* w, UltDesc* u, uintptr_t pc, bool on_ult_stack) {
#if defined(__SANITIZE_THREAD__)
  bool tsan = true;
#else
  bool tsan = false;
#endif
  bool ok = u != nullptr && !tsan && on_ult_stack && !w->is_bound && !w->in_blocking.load(std::memory_order_relaxed) &&
            u->sig_defer == 0 && u->klt_locks.load(std::memory_order_relaxed) == 0 && sys::locks_held() == 0 &&
            pc_preemptible(pc);
  if (!ok) w->sched->preempt_deferred.fetch_add(1, std::memory_order_relaxed);
  return ok;
}

void at_safe_point(uintptr_t ret) {
  Worker* w = current_worker();
  if (w == nullptr || !pending(w)) return;
  UltDesc* u = w->current.load(std::memory_order_relaxed);
  if (u == nullptr || !may_switch_out(w, u, ret, true)) return;
  w->preempt_at.store(0, std::memory_order_relaxed);
  w->sched->preempt_taken.fetch_add(1, std::memory_order_relaxed);
  preempt_current(u);
}

}  // namespace weft::rt::preempt

// ---------------------------------------------------------------------------
// KLT-level locks a ULT holds (pthread mutexes, rwlocks, spin locks: the
// kernel thread owns them). A ULT holding one is never preempted: another
// ULT of the same KLT that asked for it would block the KLT its holder
// needs to run on. Counted on the ULT (UltDesc::klt_locks) after every
// successful lock, uncounted after every successful unlock; on foreign
// threads the calls only forward. glibc's own internal locking does not
// come here (it does not go through these symbols), and needs not: the
// code that holds those locks is glibc's, where no ULT is preempted.
// ---------------------------------------------------------------------------

// In namespace weft::rt (not a global anonymous namespace): the code table
// recognises weft's functions by their mangled names, and a ULT switched
// out between glibc's lock and the count below would hold the lock
// uncounted (seen under ASan, where `forward` is not inlined).
namespace weft::rt {
namespace {

inline void klt_lock_taken() {
  Worker* w = current_worker();
  if (w == nullptr) return;
  if (UltDesc* u = w->current.load(std::memory_order_relaxed))
    u->klt_locks.store(u->klt_locks.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

inline void klt_lock_released(uintptr_t ret) {
  Worker* w = current_worker();
  if (w == nullptr) return;
  UltDesc* u = w->current.load(std::memory_order_relaxed);
  if (u == nullptr) return;
  uint32_t n = u->klt_locks.load(std::memory_order_relaxed);
  if (n == 0) return;  // locked before the ULT ran here (or by another thread): not counted
  u->klt_locks.store(n - 1, std::memory_order_relaxed);
  if (n == 1 && w->preempt_at.load(std::memory_order_relaxed) != 0) preempt::at_safe_point(ret);
}

template <class F>
F next_fn(std::atomic<void*>* slot, const char* name) {
  void* p = slot->load(std::memory_order_acquire);
  if (p == nullptr) {
    p = reinterpret_cast<void*>(libc_next<F>(name));
    slot->store(p, std::memory_order_release);
  }
  return reinterpret_cast<F>(p);
}

// Calls glibc's `name` (found once, kept in *slot) and, if it succeeded,
// counts a lock taken, or released by code returning to `ret`.
enum class Lock { kTake, kRelease };
template <class... A>
int forward(std::atomic<void*>* slot, const char* name, Lock what, uintptr_t ret, A... a) {
  int r = next_fn<int (*)(A...)>(slot, name)(a...);
  if (r == 0) {
    if (what == Lock::kTake) {
      klt_lock_taken();
    } else {
      klt_lock_released(ret);
    }
  }
  return r;
}

// One exported function that forwards to glibc's of the same name. The
// slot is constant-initialised (no guard variable: a guard could itself
// take a pthread mutex).
#define WEFT_FORWARD(name, what, params, ...)                                                            \
  __attribute__((visibility("default"))) int name params {                                             \
    static std::atomic<void*> real{nullptr};                                                             \
    return forward(&real, #name, what, reinterpret_cast<uintptr_t>(__builtin_return_address(0)), __VA_ARGS__); \
  }

}  // namespace
}  // namespace weft::rt

extern "C" {

using weft::rt::forward;
using weft::rt::Lock;

WEFT_FORWARD(pthread_mutex_lock, Lock::kTake, (pthread_mutex_t* m), m)
WEFT_FORWARD(pthread_mutex_trylock, Lock::kTake, (pthread_mutex_t* m), m)
WEFT_FORWARD(pthread_mutex_timedlock, Lock::kTake, (pthread_mutex_t* m, const struct timespec* t), m, t)
WEFT_FORWARD(pthread_mutex_clocklock, Lock::kTake, (pthread_mutex_t* m, clockid_t c, const struct timespec* t), m, c, t)
WEFT_FORWARD(pthread_mutex_unlock, Lock::kRelease, (pthread_mutex_t* m), m)
WEFT_FORWARD(pthread_rwlock_rdlock, Lock::kTake, (pthread_rwlock_t* l), l)
WEFT_FORWARD(pthread_rwlock_wrlock, Lock::kTake, (pthread_rwlock_t* l), l)
WEFT_FORWARD(pthread_rwlock_tryrdlock, Lock::kTake, (pthread_rwlock_t* l), l)
WEFT_FORWARD(pthread_rwlock_trywrlock, Lock::kTake, (pthread_rwlock_t* l), l)
WEFT_FORWARD(pthread_rwlock_timedrdlock, Lock::kTake, (pthread_rwlock_t* l, const struct timespec* t), l, t)
WEFT_FORWARD(pthread_rwlock_timedwrlock, Lock::kTake, (pthread_rwlock_t* l, const struct timespec* t), l, t)
WEFT_FORWARD(pthread_rwlock_clockrdlock, Lock::kTake, (pthread_rwlock_t* l, clockid_t c, const struct timespec* t), l, c, t)
WEFT_FORWARD(pthread_rwlock_clockwrlock, Lock::kTake, (pthread_rwlock_t* l, clockid_t c, const struct timespec* t), l, c, t)
WEFT_FORWARD(pthread_rwlock_unlock, Lock::kRelease, (pthread_rwlock_t* l), l)
WEFT_FORWARD(pthread_spin_lock, Lock::kTake, (pthread_spinlock_t* l), l)
WEFT_FORWARD(pthread_spin_trylock, Lock::kTake, (pthread_spinlock_t* l), l)
WEFT_FORWARD(pthread_spin_unlock, Lock::kRelease, (pthread_spinlock_t* l), l)

}  // extern "C"
