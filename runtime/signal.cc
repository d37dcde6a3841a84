// runtime/signal.cc — POSIX signals on ULTs: per-ULT masks, delivery to
// one ULT that accepts, sigwait that parks (issue 12). What is not kept is
// listed at the end of this comment.
//
// The picture (DESIGN.md "Signals", the Solaris 2.5 variant: a signal KLT
// receives what the workers never see):
//
//  - Every ULT has a mask and a set of signals sent to it (UltDesc::
//    sig_mask, sig_pending). pthread_sigmask/sigprocmask in a ULT change its
//    mask with a plain store; a spawned ULT inherits its creator's mask.
//  - Every weft KLT that runs ULTs keeps one constant kernel mask
//    (worker_kernel_mask): all asynchronous signals blocked, except those the
//    kernel sends to the thread that caused them (faults, SIGPIPE, SIGXFSZ,
//    SIGSYS), the doorbell and sys/'s all-KLTs signal. So the kernel
//    delivers a process-directed signal to the signal KLT ("weft-signal",
//    which blocks nothing weft manages) or to a foreign thread that does not
//    block it.
//  - weft keeps the application's dispositions (sigaction, signal) in its
//    table and installs its own handler (on_signal) in the kernel for every
//    signal it manages: one the application catches, one a ULT blocks or
//    waits for. The old action reported back is always the application's.
//  - on_signal on the signal KLT records the signal in the table (standard
//    signals coalesce into one pending instance, real-time ones queue with
//    their siginfo) and wakes the KLT's loop, which makes one accepting ULT
//    take it: a running ULT gets a doorbell (a directed signal to its KLT;
//    the doorbell handler runs the handler on the ULT's stack, case 1/3),
//    a runnable one takes it when it next runs (case 2), a parked one is
//    woken to take it (its wait then goes on or ends: sigsuspend ends,
//    weft io ends with EINTR as the system call would, park.h
//    handler_interrupts, counted per ULT in sig_handled/sig_no_restart).
//    When none accepts, the signal stays in the table (case 4) until a ULT
//    unblocks it (a mask change delivers before it returns) or waits for it.
//  - On a foreign thread that does not block it, the signal is that
//    thread's: its handler runs there, as with glibc — unless a ULT waits
//    for it (sigwait), which then gets it through the table.
//  - A ULT takes signals only at safe points, where it holds no weft lock:
//    switch-in (switch_from, ult_entry), the end of a blocking region, a
//    mask change, a sigwait-family call, and the doorbell handler when the
//    interrupted code runs on the ULT's stack outside this file's table
//    lock (UltDesc::sig_defer). A handler runs with the ULT's mask widened
//    by sa_mask and the signal (unless SA_NODEFER) and restored from the
//    ucontext it was given, as sigreturn would.
//  - Taking a signal from the table is the only way it leaves: exactly one
//    ULT (or foreign thread) acts on each instance, whatever the nudges.
//
// Locking: one spin lock guards the table (dispositions, pending
// instances, waiter counts). Whoever holds it cannot be interrupted by a
// handler that wants it: handlers run with every signal blocked
// (sa_mask full); normal code on a foreign thread or the signal KLT blocks
// every signal in the kernel while it holds the lock; a ULT raises its
// sig_defer (the doorbell then defers) and its worker's kernel mask blocks
// every asynchronous signal anyway.
//
// Reserved: SIGRTMAX (sys/'s all-KLTs signal) and SIGRTMAX-1 (the
// doorbell), besides glibc's two. sigaction on them fails with EINVAL, as
// glibc's own do; masks silently leave them out (as glibc's sigfillset and
// pthread_sigmask leave out its own), so that "block everything" works.
//
// Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) are weft's in the
// kernel from the first runtime on (on_sync): the overflow report, then the
// application's disposition on the faulting ULT.
//
// SignalSets own their signals: instances of those go to a separate
// pending word (set_pending) that no ULT looks at, and the signal KLT hands
// them to the oldest set that holds them.
//
// A signal that no ULT accepts but a thread of the application does (its
// kernel mask leaves it open) is sent on to that thread
// (forward_to_threads), with tgkill: its siginfo then says SI_TKILL. A
// thread's mask opens without weft seeing it when its handler returns
// (sigreturn), and that thread may have been the only taker while the
// handler ran: so while a signal stays pending that nobody takes, the
// signal KLT looks again (1 ms, doubling to 64 ms), and a foreign thread's
// own pthread_sigmask that opens a pending signal takes it before it
// returns (take_opened), as the kernel would.
//
// ThreadSanitizer (the sanitizer build): it runs a handler that lands
// outside its interceptors only when the thread next passes one, so the
// signal KLT's wait is bounded there (signal_klt_main), as are foreign
// threads' untimed futex waits (sys/futex.cc); it keeps one deferred
// instance per signal number, so queued real-time counts are not kept
// under TSan.
//
// Not kept (runtime.h, "Signals"): per-ULT sigaltstack; signals directed
// at a worker's pthread_t from elsewhere (they stay blocked on that KLT);
// ULT-directed real-time signals coalesce (process-directed ones keep their
// count); siglongjmp out of a handler leaves the ULT's mask as the handler
// had it; a forked child that migrates before exec execs with the worker
// mask.
#include "runtime/signal.h"

#include "runtime/debug_info.h"
#include "runtime/libc_next.h"

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <mutex>
#include <new>

#include "runtime/park.h"
#include "runtime/preempt.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"
#include "sys/klt.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "sys/signal_chain.h"
#include "sys/spin.h"
#include "weft/signal.h"
#include "weft/sync.h"

namespace weft {

// A SignalSet's shared part: in the table's registry (table lock), with
// its received instances (its own mutex; waiters park on its condvar).
struct SignalSet::State {
  uint64_t bits = 0;
  State* next = nullptr;
  Mutex mu;
  CondVar cv;
  std::deque<siginfo_t> received;  // guarded by mu
};

}  // namespace weft

namespace weft::rt::sig {

std::atomic<uint64_t> g_process_pending{0};

namespace {

// --- glibc's own functions ---------------------------------------------------

template <class F>
F next(const char* name) {
  return libc_next<F>(name);
}

using SigmaskFn = int (*)(int, const sigset_t*, sigset_t*);

SigmaskFn glibc_sigmask_fn() {
  static SigmaskFn f = next<SigmaskFn>("pthread_sigmask");
  return f;
}
int glibc_sigmask(int how, const sigset_t* set, sigset_t* old) { return glibc_sigmask_fn()(how, set, old); }
using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);
int glibc_sigaction(int s, const struct sigaction* a, struct sigaction* o) {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer must see weft's handlers: it defers every handler to a
  // point where its runtime is consistent, and one it does not know about
  // can interrupt it anywhere (a hang in the process-signal test).
  static SigactionFn tsan = reinterpret_cast<SigactionFn>(dlsym(RTLD_DEFAULT, "__interceptor_sigaction"));
  if (tsan != nullptr) return tsan(s, a, o);
#endif
  return __sigaction(s, a, o);
}

// --- signal numbers ----------------------------------------------------------

// SIGRTMAX is a function call in glibc; on Linux it is always 64 (the
// kernel's _NSIG), which start() checks.
constexpr int kSigRtMax = 64;
constexpr int doorbell() { return kSigRtMax - 1; }
bool valid(int s) { return s >= 1 && s <= 64; }
bool is_sync(int s) { return s == SIGSEGV || s == SIGBUS || s == SIGFPE || s == SIGILL || s == SIGTRAP; }
// glibc's SIGCANCEL and SIGSETXID (__SIGRTMIN, +1) and weft's two.
constexpr uint64_t reserved_bits() { return bit(32) | bit(33) | bit(kSigRtMax - 1) | bit(kSigRtMax); }
constexpr uint64_t kUnblockable = bit(SIGKILL) | bit(SIGSTOP);
int lowest(uint64_t b) { return __builtin_ctzll(b) + 1; }

uint64_t to_bits(const sigset_t* s) {
  uint64_t b;
  memcpy(&b, s, sizeof b);  // glibc on Linux: bit s-1 of the first word is signal s
  return b;
}
void from_bits(uint64_t b, sigset_t* s) {
  sigemptyset(s);
  memcpy(s, &b, sizeof b);
}
// What a ULT's mask may hold.
uint64_t maskable(uint64_t b) { return b & ~kUnblockable & ~reserved_bits(); }

// --- the table ---------------------------------------------------------------

constexpr int kRtCapacity = 256;  // queued instances per real-time signal

struct RtRing {
  uint32_t head = 0, tail = 0;  // tail - head instances, in order
  siginfo_t items[kRtCapacity];
};

struct Table {
  sys::SpinFlag lock;
  struct sigaction app[65];      // the application's dispositions (valid where known)
  uint64_t app_known = 0;        // bit s: app[s] holds the application's action
  uint64_t managed = 0;          // bit s: on_signal is s's kernel handler
  siginfo_t std_info[32];        // standard signals: the pending instance
  RtRing* rt = nullptr;          // signals 32..64 (mmap'd at start)
  uint16_t waiters[65] = {};     // ULTs in a sigwait-family call for s
  uint64_t rt_full = 0;          // real-time signals the signal KLT blocks while their ring is full
  std::atomic<uint64_t> wanted{0};  // set_bits | wait_bits: foreign threads leave these to the signal KLT
  uint64_t wait_bits = 0;           // bit s: waiters[s] != 0
  uint64_t set_bits = 0;            // bit s: some SignalSet holds s
  std::atomic<uint64_t> set_pending{0};  // instances held for a SignalSet (same storage as the process's)
  weft::SignalSet::State* sets = nullptr;  // registry, oldest first
  std::atomic<int> routing{0};      // instances the signal KLT is handing to sets
  std::atomic<uint32_t> wake{0};    // the signal KLT's futex word
  std::atomic<int> klt_tid{0};
  std::atomic<uint64_t> managed_fast{0};  // `managed`, readable without the lock
  sys::Klt* klt = nullptr;
  bool started = false;
};

Table g;

// Holds the table lock. On a ULT: raises its sig_defer (the worker's kernel
// mask already blocks every asynchronous signal). Elsewhere (a foreign
// thread, the signal KLT, a blocking region), outside a handler: blocks
// every signal in the kernel for the duration. In a handler (every signal
// blocked already): nothing more.
class Locked {
 public:
  enum Where { kUlt, kThread, kHandler };
  Locked(Where where, UltDesc* self) : where_(where), self_(self) {
    if (where_ == kUlt) {
      ++self_->sig_defer;
    } else if (where_ == kThread) {
      sigset_t all;
      sigfillset(&all);
      glibc_sigmask(SIG_SETMASK, &all, &saved_);
    }
    g.lock.lock();
  }
  ~Locked() {
    g.lock.unlock();
    if (where_ == kUlt) {
      --self_->sig_defer;
    } else if (where_ == kThread) {
      glibc_sigmask(SIG_SETMASK, &saved_, nullptr);
    }
  }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Where where_;
  UltDesc* self_;
  sigset_t saved_;
};

// The application's action for s (the table's, else the kernel's as it was
// before weft touched s). Caller holds the lock.
struct sigaction& app_action_locked(int s) {
  if (!(g.app_known & bit(s))) {
    glibc_sigaction(s, nullptr, &g.app[s]);
    g.app_known |= bit(s);
  }
  return g.app[s];
}

bool has_handler(const struct sigaction& a) {
  return (a.sa_flags & SA_SIGINFO) ? a.sa_sigaction != nullptr : (a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN);
}

void on_signal(int s, siginfo_t* si, void* uctx);

// Makes on_signal s's kernel handler. Caller holds the lock.
void manage_locked(int s) {
  if ((g.managed & bit(s)) || is_sync(s) || !g.started) return;
  (void)app_action_locked(s);
  struct sigaction k;
  memset(&k, 0, sizeof k);
  k.sa_sigaction = on_signal;
  k.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
  sigfillset(&k.sa_mask);
  if (glibc_sigaction(s, &k, nullptr) == 0) {
    g.managed |= bit(s);
    g.managed_fast.store(g.managed, std::memory_order_release);
  }
}

void on_sync(int s, siginfo_t* si, void* uctx);

// The kernel action of a synchronous signal s: on_sync, on the KLT's
// signal stack (an overflowed ULT stack has no room), with the
// application's sa_mask and SA_NODEFER. Caller holds the lock.
void install_sync_locked(int s) {
  const struct sigaction& a = app_action_locked(s);
  struct sigaction k;
  memset(&k, 0, sizeof k);
  k.sa_sigaction = on_sync;
  k.sa_flags = SA_SIGINFO | SA_ONSTACK | (a.sa_flags & SA_NODEFER);
  k.sa_mask = a.sa_mask;
  glibc_sigaction(s, &k, nullptr);
}

// Signals weft must see once a ULT blocks them (so that they stay pending
// instead of taking their default action on the signal KLT).
uint64_t manageable(uint64_t b) {
  return b & ~reserved_bits() & ~kUnblockable & ~(bit(SIGSEGV) | bit(SIGBUS) | bit(SIGFPE) | bit(SIGILL) | bit(SIGTRAP));
}

// Records one instance of s, pending for the process. False if the ring of
// a real-time signal is full. Caller holds the lock.
// Where pending instances of s are counted: a SignalSet's share, or the
// process's. Caller holds the lock.
std::atomic<uint64_t>& pending_word(int s) {
  return (g.set_bits & bit(s)) ? g.set_pending : g_process_pending;
}

bool record_locked(int s, const siginfo_t* si) {
  std::atomic<uint64_t>& word = pending_word(s);
  if (s < 32) {
    if (!(word.load(std::memory_order_relaxed) & bit(s))) {
      g.std_info[s] = *si;
      word.fetch_or(bit(s), std::memory_order_release);
    }
    return true;
  }
  RtRing& r = g.rt[s - 32];
  if (r.tail - r.head >= static_cast<uint32_t>(kRtCapacity)) return false;
  r.items[r.tail % kRtCapacity] = *si;
  ++r.tail;
  word.fetch_or(bit(s), std::memory_order_release);
  return true;
}

// Takes the oldest pending instance of s into *si. Caller holds the lock
// and saw s pending.
void take_locked(int s, siginfo_t* si) {
  std::atomic<uint64_t>& word = pending_word(s);
  if (s < 32) {
    *si = g.std_info[s];
    word.fetch_and(~bit(s), std::memory_order_acq_rel);
    return;
  }
  RtRing& r = g.rt[s - 32];
  *si = r.items[r.head % kRtCapacity];
  ++r.head;
  if (r.head == r.tail) word.fetch_and(~bit(s), std::memory_order_acq_rel);
}

// Moves the pending instances of the signals in `b` between the process's
// count and the sets' (their storage is shared). Caller holds the lock.
void move_pending_locked(uint64_t b, std::atomic<uint64_t>& from, std::atomic<uint64_t>& to) {
  uint64_t moving = from.load(std::memory_order_relaxed) & b;
  if (moving == 0) return;
  from.fetch_and(~moving, std::memory_order_acq_rel);
  to.fetch_or(moving, std::memory_order_acq_rel);
}

void publish_wanted_locked() { g.wanted.store(g.set_bits | g.wait_bits, std::memory_order_release); }

void wake_signal_klt() {
  g.wake.store(1, std::memory_order_release);
  sys::futex_wake(&g.wake, 1);
}

void synthesize(int s, siginfo_t* si) {
  memset(si, 0, sizeof *si);
  si->si_signo = s;
  si->si_code = SI_TKILL;
  si->si_pid = sys::getpid();
  si->si_uid = getuid();
}

// --- acting on a signal ------------------------------------------------------

// The default action of s, done by the calling thread: nothing for the
// signals whose default is to be ignored; stop the process for the stop
// signals; otherwise end the process with s (its kernel action back to
// SIG_DFL, unblocked here, and sent to this thread).
void default_action(int s) {
  switch (s) {
    case SIGCHLD:
    case SIGURG:
    case SIGWINCH:
    case SIGCONT:
      return;
    case SIGTSTP:
    case SIGTTIN:
    case SIGTTOU:
      sys::raw_syscall(SYS_kill, sys::getpid(), SIGSTOP);
      return;
    default:
      break;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  glibc_sigaction(s, &dfl, nullptr);
  uint64_t one = bit(s);
  sys::sigprocmask(SIG_UNBLOCK, &one, nullptr);
  sys::tgkill(sys::getpid(), sys::gettid(), s);
  sys::raw_logf("weft: signal %d with its default action did not end the process", s);
  _exit(128 + s);
}

// The application's action for s, about to be taken (table lock held):
// SA_RESETHAND resets the disposition to SIG_DFL as the handler starts.
struct sigaction take_action_locked(int s) {
  struct sigaction& cur = app_action_locked(s);
  struct sigaction a = cur;
  if (has_handler(a) && (a.sa_flags & SA_RESETHAND)) {
    memset(&cur, 0, sizeof cur);
    cur.sa_handler = SIG_DFL;
  }
  return a;
}

// Runs the application's action for (s, si) on `self`, the calling ULT.
void act(UltDesc* self, int s, siginfo_t* si) {
  struct sigaction a;
  {
    Locked l(Locked::kUlt, self);
    a = take_action_locked(s);
  }
  if (!has_handler(a)) {
    if (a.sa_handler == SIG_DFL) default_action(s);
    return;
  }
  int saved_errno = errno;
  uint64_t old = self->sig_mask.load(std::memory_order_relaxed);
  uint64_t during = old | to_bits(&a.sa_mask) | ((a.sa_flags & SA_NODEFER) ? 0 : bit(s));
  self->sig_mask.store(maskable(during), std::memory_order_relaxed);
  ucontext_t uc;
  memset(&uc, 0, sizeof uc);
  from_bits(old, &uc.uc_sigmask);
  self->sig_handled.fetch_add(1, std::memory_order_relaxed);
  if (!(a.sa_flags & SA_RESTART)) self->sig_no_restart.fetch_add(1, std::memory_order_relaxed);
  if (a.sa_flags & SA_SIGINFO) {
    a.sa_sigaction(s, si, &uc);
  } else {
    a.sa_handler(s);
  }
  // As sigreturn: the mask the handler's context holds (it may change it).
  self->sig_mask.store(maskable(to_bits(&uc.uc_sigmask)), std::memory_order_relaxed);
  errno = saved_errno;
}

// Signals that only a KLT's own kernel mask should ever block in the
// process (the worker mask leaves them open): kernel-directed ones.
uint64_t thread_directed_bits() {
  return bit(SIGSEGV) | bit(SIGBUS) | bit(SIGFPE) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGSYS) | bit(SIGPIPE) |
         bit(SIGXFSZ);
}

bool on_ult_stack(const UltDesc* u, const void* uctx) {
  auto* uc = static_cast<const ucontext_t*>(uctx);
  auto* sp = reinterpret_cast<const char*>(uc->uc_mcontext.gregs[REG_RSP]);
  return sp >= static_cast<const char*>(u->stack.lo()) && sp < static_cast<const char*>(u->stack.hi());
}

// After a handler ran on u in a doorbell handler: u's code may be between
// a wait's last check and its park (a weft io wait that a handler ends,
// park.h handler_interrupts), and nothing else would wake it. A wake permit
// makes that park return at once, so the wait sees the handler; elsewhere it
// is one spurious return, which every park allows. Lock-free (a CAS on the
// state word): u runs on this KLT, so its state is kLive or kParking.
void leave_permit(UltDesc* u) {
  uint32_t s = u->state.load(std::memory_order_acquire);
  for (;;) {
    uint32_t st = s & ult_state::kStateMask;
    if ((s & ult_state::kWake) || (st != ult_state::kLive && st != ult_state::kParking)) return;
    if (u->state.compare_exchange_weak(s, s | ult_state::kWake, std::memory_order_acq_rel)) return;
  }
}

// In a handler on a worker: runs the deliverable signals of the ULT it
// interrupted, if that is safe (on the ULT's stack, outside the table
// lock); else they wait for its next safe point.
void deliver_in_handler(Worker* w, void* uctx) {
  UltDesc* u = w->current.load(std::memory_order_relaxed);
  if (u == nullptr || u->sig_defer != 0 || !on_ult_stack(u, uctx) || !deliverable(u)) return;
  // The handlers run with the interrupted mask (the worker's constant one,
  // so faults inside them are taken) plus the doorbell: doorbells queue (a
  // real-time signal) while this KLT blocks it — in this handler, around a
  // fork — and unblocking it here let every queued one nest a frame on the
  // ULT's stack before any delivery, until it overflowed (issue 14: seen
  // in process_spawn's HundredSpawners, 1 run in 20-60). Now the next one
  // comes after this handler returns, at the same depth; a ULT inside a
  // signal handler is not time-sliced meanwhile.
  sigset_t m = static_cast<ucontext_t*>(uctx)->uc_sigmask;
  sigaddset(&m, doorbell());
  glibc_sigmask(SIG_SETMASK, &m, nullptr);
  uint32_t before = u->sig_handled.load(std::memory_order_relaxed);
  deliver(u);
  if (u->sig_handled.load(std::memory_order_relaxed) != before) leave_permit(u);
}

// In the doorbell handler on w: a time-slice preemption stands for the ULT
// it interrupted. If that ULT may be switched out where it was interrupted
// (preempt.cc says when), restore the KLT's mask (the worker's constant
// one: this handler runs with every signal blocked) and switch it out; it
// resumes here, on this KLT, and the handler's return (sigreturn) restores
// its registers and FP state. Else the request stays for its next safe
// point or the monitor's next doorbell.
void preempt_in_handler(Worker* w, void* uctx) {
  UltDesc* u = w->current.load(std::memory_order_relaxed);
  auto* uc = static_cast<ucontext_t*>(uctx);
  uintptr_t pc = static_cast<uintptr_t>(uc->uc_mcontext.gregs[REG_RIP]);
  if (u == nullptr || !preempt::may_switch_out(w, u, pc, on_ult_stack(u, uctx))) return;
  w->preempt_at.store(0, std::memory_order_relaxed);
  w->sched->preempt_taken.fetch_add(1, std::memory_order_relaxed);
  glibc_sigmask(SIG_SETMASK, &uc->uc_sigmask, nullptr);
  preempt_current(u);
}

// A foreign thread that does not block s takes it: its handler runs here,
// with this thread's kernel mask widened as sigaction says.
void act_on_thread(int s, siginfo_t* si, void* uctx) {
  struct sigaction a;
  {
    Locked l(Locked::kHandler, nullptr);
    a = take_action_locked(s);
  }
  if (!has_handler(a)) {
    if (a.sa_handler == SIG_DFL) default_action(s);
    return;
  }
  sigset_t m = static_cast<ucontext_t*>(uctx)->uc_sigmask;
  sigorset(&m, &m, &a.sa_mask);
  if (!(a.sa_flags & SA_NODEFER)) sigaddset(&m, s);
  glibc_sigmask(SIG_SETMASK, &m, nullptr);
  if (a.sa_flags & SA_SIGINFO) {
    a.sa_sigaction(s, si, uctx);
  } else {
    a.sa_handler(s);
  }
}

void on_signal(int s, siginfo_t* si, void* uctx) {
  int saved_errno = errno;
  Worker* w = current_worker();
  if (s == doorbell()) {
    if (w != nullptr) {
      deliver_in_handler(w, uctx);
      if (preempt::pending(w)) preempt_in_handler(w, uctx);
    }
  } else if (w != nullptr) {
    // On a worker only what the kernel sends to this thread (SIGPIPE...)
    // or what was sent to this KLT: the ULT it runs takes it.
    UltDesc* u = w->current.load(std::memory_order_relaxed);
    if (u == nullptr) u = w->blocking_ult;
    if (u != nullptr) {
      u->sig_pending.fetch_or(bit(s), std::memory_order_release);
      deliver_in_handler(w, uctx);
    } else {
      Locked l(Locked::kHandler, nullptr);
      (void)record_locked(s, si);
      wake_signal_klt();
    }
  } else if (sys::gettid() == g.klt_tid.load(std::memory_order_relaxed)) {
    Locked l(Locked::kHandler, nullptr);
    if (!record_locked(s, si))
      sys::raw_logf("weft: more than %d instances of signal %d pending; one was dropped", kRtCapacity, s);
    if (s >= 32 && g.rt[s - 32].tail - g.rt[s - 32].head >= static_cast<uint32_t>(kRtCapacity)) {
      // Full: blocked here (after this handler returns) until the ring
      // drains; the kernel queues the next ones meanwhile and enforces
      // RLIMIT_SIGPENDING.
      sigaddset(&static_cast<ucontext_t*>(uctx)->uc_sigmask, s);
      g.rt_full |= bit(s);
    }
    wake_signal_klt();
  } else if (g.wanted.load(std::memory_order_acquire) & bit(s)) {
    Locked l(Locked::kHandler, nullptr);
    (void)record_locked(s, si);
    wake_signal_klt();
  } else {
    act_on_thread(s, si, uctx);
  }
  errno = saved_errno;
}

// SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP: taken where they land, by the
// ULT that faulted (the one the worker runs, or the one inside a blocking
// region), whatever its mask (a blocked fault kills a thread too). A
// guard-page hit is a stack overflow, reported with the ULT's name. Then
// the application's disposition: its handler runs here, on the KLT's
// signal stack; SIG_DFL or SIG_IGN restore the kernel's default, and the
// faulting instruction, run again, ends the process as it would have
// without weft (a sync signal sent with kill() gets the default action
// directly).
void on_sync(int s, siginfo_t* si, void* uctx) {
  int saved_errno = errno;
  Worker* w = current_worker();
  UltDesc* u = w != nullptr ? w->current.load(std::memory_order_relaxed) : nullptr;
  if (u == nullptr && w != nullptr) u = w->blocking_ult;
  if (u != nullptr && (s == SIGSEGV || s == SIGBUS)) report_if_overflow(u, si, uctx);
  // The lock may be this thread's own (a fault in a locked section): then
  // the action is read without it.
  bool locked = g.lock.try_lock();
  struct sigaction a = take_action_locked(s);
  if (locked) g.lock.unlock();
  if (has_handler(a)) {
    if (a.sa_flags & SA_SIGINFO) {
      a.sa_sigaction(s, si, uctx);
    } else {
      a.sa_handler(s);
    }
    errno = saved_errno;
    return;
  }
  if (si->si_code <= 0) {  // sent (kill, tgkill, sigqueue), not a fault
    if (a.sa_handler == SIG_DFL) default_action(s);
    errno = saved_errno;
    return;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  glibc_sigaction(s, &dfl, nullptr);
  errno = saved_errno;
}

// --- the signal KLT ------------------------------------------------------------

// Makes one ULT that accepts a pending signal take it soon. Returns true if
// some ULT accepts one (look again later: it may not have taken it yet).
// Held by nudge() while it holds pointers into some runtime's workers (a
// ULT's worker, its tid, its scheduler): a runtime stopping takes it once
// its ULTs have all exited and before it frees its workers
// (forget_workers), so no scan still points into them. Reset in a forked
// child.
KltMutex g_scan_lock;

bool nudge() {
  uint64_t p = g_process_pending.load(std::memory_order_acquire);
  if (p == 0) return false;
  LockGuard<KltMutex> scan(g_scan_lock);
  UltDesc* running = nullptr;
  UltDesc* parked = nullptr;
  bool runnable = false;
  uint64_t n = ult_table::size();
  for (uint64_t i = 0; i < n && running == nullptr; ++i) {
    UltDesc* u = ult_table::lookup(i);
    if (u == nullptr) continue;
    uint32_t st = u->state.load(std::memory_order_acquire) & ult_state::kStateMask;
    if (st == ult_state::kExited) continue;
    uint64_t accepts = (p & ~u->sig_mask.load(std::memory_order_relaxed)) | (p & u->sig_waiting.load(std::memory_order_relaxed));
    if (accepts == 0) continue;
    Worker* w = u->worker.load(std::memory_order_acquire);
    if (st == ult_state::kParked) {
      if (parked == nullptr) parked = u;
    } else if (w != nullptr && w->current.load(std::memory_order_relaxed) == u) {
      running = u;
    } else {
      runnable = true;
    }
  }
  if (running != nullptr) {
    Worker* w = running->worker.load(std::memory_order_acquire);
    int tid = w != nullptr ? w->tid.load(std::memory_order_relaxed) : 0;
    if (tid != 0) sys::tgkill(sys::getpid(), tid, doorbell());
    return true;
  }
  if (runnable) return true;
  if (parked != nullptr) {
    unpark_urgent(parked);
    return true;
  }
  return false;
}

// Hands pending instances of the sets' signals to the sets (the oldest set
// holding each), in batches: taken under the table lock, queued under each
// set's own mutex after it.
void route_to_sets();

// The signals no ULT accepts but some thread of the application does (its
// kernel mask does not block them: the main thread, a pthread of its own):
// that thread gets them, as it would without weft. One instance each per
// call, sent with tgkill (its siginfo then says SI_TKILL from this process:
// the kernel lets nobody forge the original, DESIGN.md "Signals"). Looks at
// /proc/self/task: a slow path, for signals nobody in weft takes.
void forward_to_threads() {
  uint64_t p = g_process_pending.load(std::memory_order_acquire);
  if (p == 0) return;
  DIR* d = opendir("/proc/self/task");
  if (d == nullptr) return;
  int self_tid = sys::gettid();
  while (p != 0) {
    dirent* e = readdir(d);
    if (e == nullptr) break;
    int tid = atoi(e->d_name);
    if (tid <= 0 || tid == self_tid) continue;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
    FILE* f = fopen(path, "re");
    if (f == nullptr) continue;
    char line[256];
    uint64_t blocked = ~uint64_t{0};
    while (fgets(line, sizeof line, f) != nullptr)
      if (strncmp(line, "SigBlk:", 7) == 0) blocked = strtoull(line + 7, nullptr, 16);
    fclose(f);
    uint64_t takes = p & ~blocked;
    for (; takes != 0; takes &= takes - 1) {
      int s = lowest(takes);
      siginfo_t si;
      {
        Locked l(Locked::kThread, nullptr);
        if (!(g_process_pending.load(std::memory_order_relaxed) & bit(s))) continue;
        take_locked(s, &si);
      }
      sys::tgkill(sys::getpid(), tid, s);
      p &= ~bit(s);
    }
  }
  closedir(d);
}

// A foreign thread whose kernel mask now leaves open signals that are
// pending in the table (pthread_sigmask just opened them) takes them, as
// the kernel delivers a pending signal before the unblocking call returns:
// each is re-sent to this thread with tgkill, its handler runs at once.
// Not the signals a ULT waits for or a SignalSet holds (`wanted`).
void take_opened() {
  if (g_process_pending.load(std::memory_order_acquire) == 0) return;
  if (sys::gettid() == g.klt_tid.load(std::memory_order_relaxed)) return;
  sigset_t cur;
  glibc_sigmask(SIG_BLOCK, nullptr, &cur);
  uint64_t open = maskable(~to_bits(&cur)) & ~g.wanted.load(std::memory_order_acquire);
  uint64_t taken = 0;
  {
    Locked l(Locked::kThread, nullptr);
    for (uint64_t p = g_process_pending.load(std::memory_order_relaxed) & open; p != 0; p &= p - 1) {
      siginfo_t si;
      take_locked(lowest(p), &si);
      taken |= p & -p;
    }
  }
  for (; taken != 0; taken &= taken - 1) sys::tgkill(sys::getpid(), sys::gettid(), lowest(taken));
}

void signal_klt_main(void*) {
  g.klt_tid.store(sys::gettid(), std::memory_order_release);
  sigset_t m;
  sigemptyset(&m);
  sigaddset(&m, doorbell());
  glibc_sigmask(SIG_SETMASK, &m, nullptr);
  // While a signal stays pending that no ULT and no thread takes, how long
  // to wait before looking again: a thread whose handler was running had
  // every signal blocked and reopens them at sigreturn, which weft does not
  // see (the comment at the top, "A signal that no ULT accepts").
  long unclaimed_wait_ms = 1;
  for (;;) {
    route_to_sets();
    bool again = nudge();
    bool unclaimed = false;
    if (!again) {
      forward_to_threads();
      unclaimed = g_process_pending.load(std::memory_order_acquire) != 0;
    }
    uint64_t reopen = 0;
    {
      Locked l(Locked::kThread, nullptr);
      // Rings that drained: let the kernel deliver what it queued.
      for (uint64_t f = g.rt_full; f != 0; f &= f - 1) {
        int s = lowest(f);
        RtRing& r = g.rt[s - 32];
        if (r.tail - r.head < static_cast<uint32_t>(kRtCapacity / 2)) reopen |= bit(s);
      }
      g.rt_full &= ~reopen;
    }
    if (reopen != 0) {
      sigset_t m;
      from_bits(reopen, &m);
      glibc_sigmask(SIG_UNBLOCK, &m, nullptr);
    }
    if (g.rt_full != 0) again = true;  // look at the rings again soon
    if (g.wake.exchange(0, std::memory_order_acq_rel) != 0) {
      unclaimed_wait_ms = 1;
      continue;
    }
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer runs a handler that interrupts a thread outside its
    // interceptors only when the thread next passes one, and the futex wait
    // is raw (restarted after the handler): wait at most 1 ms, then pass an
    // intercepted blocking call, where the deferred on_signal runs.
    again = true;
    usleep(0);
    if (g.wake.exchange(0, std::memory_order_acq_rel) != 0) continue;
#endif
    if (again) {
      timespec ms{0, 1000 * 1000};
      sys::futex_wait_for(&g.wake, 0, &ms);
    } else if (unclaimed) {
      timespec t{0, unclaimed_wait_ms * 1000 * 1000};
      sys::futex_wait_for(&g.wake, 0, &t);
      if (unclaimed_wait_ms < 64) unclaimed_wait_ms *= 2;
    } else {
      sys::futex_wait(&g.wake, 0);
    }
  }
}

void route_to_sets() {
  for (;;) {
    constexpr int kBatch = 32;
    siginfo_t got[kBatch];
    weft::SignalSet::State* to[kBatch];
    int n = 0;
    {
      Locked l(Locked::kThread, nullptr);
      while (n < kBatch) {
        uint64_t p = g.set_pending.load(std::memory_order_relaxed);
        if (p == 0) break;
        int s = lowest(p);
        weft::SignalSet::State* st = g.sets;
        while (st != nullptr && !(st->bits & bit(s))) st = st->next;
        if (st == nullptr) {  // its set went away meanwhile: the process's again
          move_pending_locked(bit(s), g.set_pending, g_process_pending);
          continue;
        }
        take_locked(s, &got[n]);
        to[n++] = st;
      }
      g.routing.fetch_add(n, std::memory_order_acq_rel);  // each set outlives its instances' hand-over
    }
    if (n == 0) return;
    for (int i = 0; i < n; ++i) {
      {
        std::lock_guard<weft::Mutex> guard(to[i]->mu);
        to[i]->received.push_back(got[i]);
      }
      to[i]->cv.notify_one();
      g.routing.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

}  // namespace

// --- the scheduler's side -------------------------------------------------------

void deliver(UltDesc* self) {
  for (;;) {
    uint64_t mask = self->sig_mask.load(std::memory_order_relaxed);
    uint64_t own = self->sig_pending.load(std::memory_order_acquire) & ~mask;
    siginfo_t si;
    int s;
    if (own != 0) {
      s = lowest(own);
      self->sig_pending.fetch_and(~bit(s), std::memory_order_acq_rel);
      synthesize(s, &si);
    } else {
      if ((g_process_pending.load(std::memory_order_acquire) & ~mask) == 0) return;
      {
        Locked l(Locked::kUlt, self);
        uint64_t proc = g_process_pending.load(std::memory_order_relaxed) & ~mask;
        if (proc == 0) continue;
        s = lowest(proc);
        take_locked(s, &si);
      }
    }
    act(self, s, &si);
  }
}

namespace {
thread_local bool t_mask_known = false;
thread_local uint64_t t_mask = 0;  // a foreign thread's kernel mask, as last seen
}  // namespace

uint64_t mask_for_spawn() {
  Worker* w = current_worker();
  if (w != nullptr) {
    if (UltDesc* u = w->current.load(std::memory_order_relaxed)) return u->sig_mask.load(std::memory_order_relaxed);
    if (UltDesc* u = w->blocking_ult) return u->sig_mask.load(std::memory_order_relaxed);
    return 0;
  }
  if (!t_mask_known) {
    sigset_t cur;
    glibc_sigmask(SIG_BLOCK, nullptr, &cur);
    t_mask = maskable(to_bits(&cur));
    t_mask_known = true;
  }
  return t_mask;
}

void worker_kernel_mask(sigset_t* out) {
  sigfillset(out);
  uint64_t open = thread_directed_bits() | bit(doorbell()) | bit(SIGRTMAX);
  for (int s = 1; s <= 64; ++s)
    if (open & bit(s)) sigdelset(out, s);
}

namespace {
sys::SpinFlag g_start_lock;  // one start() at a time (reset in a forked child)
}  // namespace

bool start(const char** what) {
  std::lock_guard<sys::SpinFlag> guard(g_start_lock);
  if (g.started) return true;
  if (SIGRTMAX != kSigRtMax) {
    if (what) *what = "SIGRTMAX is not 64 in this C library";
    return false;
  }
  if (g.rt == nullptr) {
    void* p = mmap(nullptr, sizeof(RtRing) * 33, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      if (what) *what = "cannot map the signal table";
      return false;
    }
    g.rt = static_cast<RtRing*>(p);
    for (int i = 0; i < 33; ++i) new (&g.rt[i]) RtRing();
  }
  {
    // The doorbell: its handler runs on the interrupted stack (the ULT's),
    // not the KLT's signal stack, so that a handler it runs is on the ULT.
    struct sigaction k;
    memset(&k, 0, sizeof k);
    k.sa_sigaction = on_signal;
    k.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&k.sa_mask);
    if (glibc_sigaction(doorbell(), &k, nullptr) != 0) {
      if (what) *what = "cannot install the doorbell's handler";
      return false;
    }
  }
  {
    Locked l(Locked::kThread, nullptr);
    g.started = true;
    // Signals the application already catches: weft's handler goes in
    // front. The synchronous ones are always weft's (overflow reports).
    for (int s = 1; s <= 64; ++s) {
      if (reserved_bits() & bit(s) || kUnblockable & bit(s)) continue;
      if (is_sync(s)) {
        install_sync_locked(s);
      } else if (has_handler(app_action_locked(s))) {
        manage_locked(s);
      }
    }
  }
  sys::KltOptions ko;
  ko.name = "weft-signal";
  ko.stack_size = 64 * 1024;
  if (sys::klt_create(signal_klt_main, nullptr, ko, &g.klt, what) != 0) {
    g.started = false;
    return false;
  }
  return true;
}

void note_blocked(uint64_t mask, UltDesc* self) {
  uint64_t todo = manageable(mask) & ~g.managed_fast.load(std::memory_order_acquire);
  if (todo == 0 || !g.started) return;
  // A blocked signal must stay pending, not take its default action on the
  // signal KLT: weft must see it (once per signal and process).
  Locked l(self != nullptr ? Locked::kUlt : Locked::kThread, self);
  for (uint64_t b = todo & ~g.managed; b != 0; b &= b - 1) manage_locked(lowest(b));
}

void forget_workers() {
  LockGuard<KltMutex> scan(g_scan_lock);  // a scan in progress ends first
}

void after_fork_child(UltDesc* self) {
  g.lock.reset_after_fork();
  g_scan_lock.reset_after_fork();
  g_start_lock.reset_after_fork();
  g_process_pending.store(0, std::memory_order_relaxed);
  if (g.rt != nullptr)
    for (int i = 0; i < 33; ++i) g.rt[i].head = g.rt[i].tail = 0;
  for (auto& n : g.waiters) n = 0;
  g.wait_bits = 0;
  g.set_pending.store(0, std::memory_order_relaxed);
  // SignalSets are objects of the parent's threads' stacks and heaps: they
  // exist in the child too (fork copies memory) and keep their signals.
  publish_wanted_locked();
  g.klt = nullptr;
  g.klt_tid.store(0, std::memory_order_relaxed);
  g.started = false;
  t_mask_known = false;
  if (self != nullptr) {
    sigset_t m;
    from_bits(self->sig_mask.load(std::memory_order_relaxed), &m);
    glibc_sigmask(SIG_SETMASK, &m, nullptr);
  }
}

// --- the calls a ULT makes ----------------------------------------------------

namespace {

// pthread_sigmask in a ULT. Returns 0 or an errno value.
int ult_sigmask(UltDesc* self, int how, const sigset_t* set, sigset_t* old) {
  uint64_t cur = self->sig_mask.load(std::memory_order_relaxed);
  if (set != nullptr) {
    uint64_t b = to_bits(set);
    uint64_t next;
    switch (how) {
      case SIG_BLOCK: next = cur | b; break;
      case SIG_UNBLOCK: next = cur & ~b; break;
      case SIG_SETMASK: next = b; break;
      default: return EINVAL;
    }
    next = maskable(next);
    if ((next & ~cur & ~g.managed_fast.load(std::memory_order_relaxed)) != 0) note_blocked(next, self);
    if (old != nullptr) from_bits(cur, old);
    self->sig_mask.store(next, std::memory_order_relaxed);
    // POSIX: a signal this call unblocks is delivered before it returns.
    if ((cur & ~next) != 0 && deliverable(self)) deliver(self);
    return 0;
  }
  if (old != nullptr) from_bits(cur, old);
  return 0;
}

// sigtimedwait in a ULT: the signal number, or -errno.
int ult_sigtimedwait(UltDesc* self, uint64_t set, siginfo_t* info, const timespec* timeout) {
  if (timeout != nullptr && (timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000L || timeout->tv_sec < 0))
    return -EINVAL;
  set = maskable(set);
  int64_t deadline = -1;
  if (timeout != nullptr)
    deadline = monotonic_ns() + timeout->tv_sec * 1000000000LL + timeout->tv_nsec;
  siginfo_t si;
  {
    Locked l(Locked::kUlt, self);
    for (uint64_t b = set & ~g.managed; b != 0; b &= b - 1) manage_locked(lowest(b));
    for (uint64_t b = set; b != 0; b &= b - 1) ++g.waiters[lowest(b)];
    g.wait_bits |= set;
    publish_wanted_locked();
  }
  int result = -EAGAIN;
  WaitNote note(self, "sigwait");
  for (;;) {
    uint64_t own = self->sig_pending.load(std::memory_order_acquire) & set;
    if (own != 0) {
      int s = lowest(own);
      self->sig_pending.fetch_and(~bit(s), std::memory_order_acq_rel);
      synthesize(s, &si);
      result = s;
      break;
    }
    {
      Locked l(Locked::kUlt, self);
      uint64_t proc = g_process_pending.load(std::memory_order_relaxed) & set;
      if (proc != 0) {
        int s = lowest(proc);
        take_locked(s, &si);
        result = s;
      } else {
        self->sig_waiting.store(set, std::memory_order_release);
      }
    }
    if (result > 0) break;
    if (deadline < 0) {
      park_current(self);
    } else if (!park_current_until(self, deadline) && monotonic_ns() >= deadline) {
      // One more look (a signal may have come with the timeout).
      deadline = monotonic_ns();
    }
    self->sig_waiting.store(0, std::memory_order_release);
    if (deadline >= 0 && monotonic_ns() >= deadline) {
      // Last look before giving up.
      uint64_t own2 = self->sig_pending.load(std::memory_order_acquire) & set;
      Locked l(Locked::kUlt, self);
      uint64_t proc = g_process_pending.load(std::memory_order_relaxed) & set;
      if (own2 == 0 && proc == 0) break;
    }
  }
  self->sig_waiting.store(0, std::memory_order_release);
  {
    Locked l(Locked::kUlt, self);
    for (uint64_t b = set; b != 0; b &= b - 1) {
      int s = lowest(b);
      if (--g.waiters[s] == 0) g.wait_bits &= ~bit(s);
    }
    publish_wanted_locked();
  }
  if (result > 0 && info != nullptr) *info = si;
  return result;
}

// sigsuspend in a ULT: returns once a handler has run.
void ult_sigsuspend(UltDesc* self, uint64_t mask) {
  uint64_t old = self->sig_mask.load(std::memory_order_relaxed);
  uint32_t handled = self->sig_handled.load(std::memory_order_relaxed);
  self->sig_mask.store(maskable(mask), std::memory_order_relaxed);
  WaitNote note(self, "sigsuspend");
  for (;;) {
    if (deliverable(self)) deliver(self);
    if (self->sig_handled.load(std::memory_order_relaxed) != handled) break;
    park_current(self);
  }
  self->sig_mask.store(old, std::memory_order_relaxed);
  if (deliverable(self)) deliver(self);
}

// A signal for ULT u: pending on it; it takes it at its next safe point,
// which a doorbell (running) or a wake-up (parked) brings soon.
void send_to_ult(UltDesc* u, int s) {
  u->sig_pending.fetch_or(bit(s), std::memory_order_acq_rel);
  UltDesc* self = current_ult();
  if (u == self) {
    if (deliverable(self)) deliver(self);
    return;
  }
  uint32_t st = u->state.load(std::memory_order_acquire) & ult_state::kStateMask;
  Worker* w = u->worker.load(std::memory_order_acquire);
  if (st == ult_state::kParked) {
    if ((bit(s) & ~u->sig_mask.load(std::memory_order_relaxed)) || (bit(s) & u->sig_waiting.load(std::memory_order_relaxed)))
      unpark_urgent(u);
  } else if (w != nullptr && w->current.load(std::memory_order_relaxed) == u) {
    if (int tid = w->tid.load(std::memory_order_relaxed); tid != 0) sys::tgkill(sys::getpid(), tid, doorbell());
  }
}

}  // namespace

}  // namespace weft::rt::sig

namespace weft::rt {

// Both counters are written only on the ULT itself (act(), on its stack,
// perhaps in a doorbell handler that interrupted it) and read here by it.
uint64_t handler_mark(const UltDesc* self) {
  return (static_cast<uint64_t>(self->sig_no_restart.load(std::memory_order_relaxed)) << 32) |
         self->sig_handled.load(std::memory_order_relaxed);
}

bool handler_interrupts(const UltDesc* self, uint64_t mark, bool restartable) {
  if (restartable) return self->sig_no_restart.load(std::memory_order_relaxed) != static_cast<uint32_t>(mark >> 32);
  return self->sig_handled.load(std::memory_order_relaxed) != static_cast<uint32_t>(mark);
}

}  // namespace weft::rt

// --- public API (weft/signal.h) ---------------------------------------------------

namespace weft {

absl::Status signal(UltId id, int sig) {
  using namespace rt::sig;
  if (!valid(sig) || (reserved_bits() & bit(sig))) return absl::InvalidArgumentError("not a signal a ULT can be sent");
  rt::UltDesc* u = id.valid() ? rt::ult_table::lookup(id.value()) : nullptr;
  if (u == nullptr || u->generation.load(std::memory_order_acquire) != id.generation() ||
      (u->state.load(std::memory_order_acquire) & rt::ult_state::kStateMask) == rt::ult_state::kExited)
    return absl::NotFoundError("no running ULT has this id");
  if (sig == SIGKILL || sig == SIGSTOP) {
    sys::tgkill(sys::getpid(), sys::getpid(), sig);  // the process's, as with pthread_kill
    return absl::OkStatus();
  }
  send_to_ult(u, sig);
  return absl::OkStatus();
}

SignalSet::SignalSet(std::initializer_list<int> signals) {
  using namespace rt::sig;
  uint64_t bits = 0;
  for (int s : signals) {
    if (!valid(s) || (reserved_bits() & bit(s)) || (kUnblockable & bit(s))) {
      status_ = absl::InvalidArgumentError("SignalSet: signal " + std::to_string(s) +
                                           " is not one a set can hold (invalid, reserved, SIGKILL or SIGSTOP)");
      return;
    }
    bits |= bit(s);
  }
  if (!g.started) {
    status_ = absl::FailedPreconditionError("SignalSet: no weft::Runtime has started in this process");
    return;
  }
  auto* st = new State;
  st->bits = bits;
  {
    rt::UltDesc* self = rt::current_ult();
    Locked l(self != nullptr ? Locked::kUlt : Locked::kThread, self);
    for (uint64_t b = bits; b != 0; b &= b - 1)
      if (!is_sync(lowest(b))) manage_locked(lowest(b));
    State** tail = &g.sets;
    while (*tail != nullptr) tail = &(*tail)->next;
    *tail = st;
    uint64_t fresh = bits & ~g.set_bits;
    g.set_bits |= bits;
    move_pending_locked(fresh, g_process_pending, g.set_pending);  // already pending: the set's now
    publish_wanted_locked();
  }
  state_ = st;
  wake_signal_klt();
}

SignalSet::~SignalSet() {
  using namespace rt::sig;
  if (state_ == nullptr) return;
  // Nothing below parks: the caller stays on this KLT throughout.
  rt::UltDesc* self = rt::current_ult();
  {
    Locked l(self != nullptr ? Locked::kUlt : Locked::kThread, self);
    State** p = &g.sets;
    while (*p != state_) p = &(*p)->next;
    *p = state_->next;
    uint64_t still = 0;
    for (State* o = g.sets; o != nullptr; o = o->next) still |= o->bits;
    uint64_t freed = g.set_bits & ~still;
    g.set_bits = still;
    move_pending_locked(freed, g.set_pending, g_process_pending);
    publish_wanted_locked();
  }
  // The signal KLT may be handing this set an instance right now.
  while (g.routing.load(std::memory_order_acquire) != 0) sys::sched_yield();
  {
    Locked l(self != nullptr ? Locked::kUlt : Locked::kThread, self);
    for (const siginfo_t& si : state_->received) (void)record_locked(si.si_signo, &si);  // back to the process
  }
  delete state_;
  wake_signal_klt();
}

int SignalSet::wait_ns(int64_t timeout_ns, siginfo_t* info) {
  if (state_ == nullptr) return -1;
  std::unique_lock<Mutex> lock(state_->mu);
  if (timeout_ns < 0) {
    state_->cv.wait(lock, [&] { return !state_->received.empty(); });
  } else if (timeout_ns > 0) {
    if (!state_->cv.wait_for(lock, std::chrono::nanoseconds(timeout_ns), [&] { return !state_->received.empty(); }))
      return 0;
  } else if (state_->received.empty()) {
    return 0;
  }
  siginfo_t si = state_->received.front();
  state_->received.pop_front();
  if (info != nullptr) *info = si;
  return si.si_signo;
}

absl::StatusOr<SignalState> signal_state(UltId id) {
  rt::UltDesc* u = id.valid() ? rt::ult_table::lookup(id.value()) : nullptr;
  if (u == nullptr || u->generation.load(std::memory_order_acquire) != id.generation())
    return absl::NotFoundError("no ULT has this id");
  SignalState st;
  rt::sig::from_bits(u->sig_mask.load(std::memory_order_relaxed), &st.mask);
  rt::sig::from_bits(u->sig_pending.load(std::memory_order_relaxed), &st.pending);
  return st;
}

}  // namespace weft

// --- the interposed C functions ------------------------------------------------

extern "C" {

using weft::rt::current_ult;
using weft::rt::UltDesc;
namespace S = weft::rt::sig;

__attribute__((visibility("default"))) int pthread_sigmask(int how, const sigset_t* set, sigset_t* old) {
  if (UltDesc* self = current_ult()) return S::ult_sigmask(self, how, set, old);
  int r = S::glibc_sigmask(how, set, old);
  if (r == 0 && set != nullptr && weft::rt::current_worker() == nullptr) {
    S::t_mask_known = false;
    if (how != SIG_BLOCK) S::take_opened();
  }
  return r;
}

__attribute__((visibility("default"))) int sigprocmask(int how, const sigset_t* set, sigset_t* old) {
  int r = pthread_sigmask(how, set, old);
  if (r != 0) {
    errno = r;
    return -1;
  }
  return 0;
}

__attribute__((visibility("default"))) int sigpending(sigset_t* set) {
  UltDesc* self = current_ult();
  if (self == nullptr) {
    static auto f = S::next<int (*)(sigset_t*)>("sigpending");
    return f(set);
  }
  uint64_t p = self->sig_pending.load(std::memory_order_relaxed) | S::g_process_pending.load(std::memory_order_relaxed);
  S::from_bits(p & self->sig_mask.load(std::memory_order_relaxed), set);
  return 0;
}

__attribute__((visibility("default"))) int sigaction(int s, const struct sigaction* act, struct sigaction* old) {
  if (!S::g.started || !S::valid(s) || s == SIGKILL || s == SIGSTOP)
    return S::glibc_sigaction(s, act, old);  // glibc's checks and answers
  if (S::reserved_bits() & S::bit(s)) {
    errno = EINVAL;
    return -1;
  }
  UltDesc* self = current_ult();
  S::Locked l(self ? S::Locked::kUlt : S::Locked::kThread, self);
  struct sigaction& cur = S::app_action_locked(s);
  if (old != nullptr) *old = cur;
  if (act != nullptr) {
    cur = *act;
    if (S::is_sync(s)) {
      S::install_sync_locked(s);
    } else if (S::has_handler(cur)) {
      S::manage_locked(s);
    } else if (!(S::g.managed & S::bit(s))) {
      S::glibc_sigaction(s, act, nullptr);  // SIG_DFL/SIG_IGN of a signal weft does not manage
    } else if (cur.sa_handler == SIG_IGN) {
      // Pending instances are discarded, as POSIX says for SIG_IGN.
      if (s < 32) S::g_process_pending.fetch_and(~S::bit(s), std::memory_order_acq_rel);
      else {
        S::g.rt[s - 32].head = S::g.rt[s - 32].tail;
        S::g_process_pending.fetch_and(~S::bit(s), std::memory_order_acq_rel);
      }
    }
  }
  return 0;
}

__attribute__((visibility("default"))) sighandler_t signal(int s, sighandler_t h) {
  if (h == SIG_ERR || !S::valid(s)) {
    errno = EINVAL;
    return SIG_ERR;
  }
  struct sigaction a, o;
  memset(&a, 0, sizeof a);
  a.sa_handler = h;
  sigemptyset(&a.sa_mask);
  sigaddset(&a.sa_mask, s);
  a.sa_flags = SA_RESTART;  // glibc's signal() is BSD's
  if (sigaction(s, &a, &o) < 0) return SIG_ERR;
  return o.sa_handler;
}

__attribute__((visibility("default"))) int raise(int s) {
  UltDesc* self = current_ult();
  if (self == nullptr || s == 0 || !S::valid(s) || (S::reserved_bits() & S::bit(s)) || s == SIGKILL || s == SIGSTOP) {
    static auto f = S::next<int (*)(int)>("raise");
    return f(s);
  }
  S::send_to_ult(self, s);
  return 0;
}

__attribute__((visibility("default"))) int pthread_kill(pthread_t t, int s) {
  UltDesc* self = current_ult();
  if (self != nullptr && pthread_equal(t, pthread_self()) && s != 0 && S::valid(s) &&
      !(S::reserved_bits() & S::bit(s)) && s != SIGKILL && s != SIGSTOP) {
    S::send_to_ult(self, s);
    return 0;
  }
  static auto f = S::next<int (*)(pthread_t, int)>("pthread_kill");
  return f(t, s);
}

__attribute__((visibility("default"))) int sigtimedwait(const sigset_t* set, siginfo_t* info, const timespec* ts) {
  UltDesc* self = current_ult();
  if (self == nullptr) {
    static auto f = S::next<int (*)(const sigset_t*, siginfo_t*, const timespec*)>("sigtimedwait");
    return f(set, info, ts);
  }
  int r = S::ult_sigtimedwait(self, S::to_bits(set), info, ts);
  if (r < 0) {
    errno = -r;
    return -1;
  }
  return r;
}

__attribute__((visibility("default"))) int sigwaitinfo(const sigset_t* set, siginfo_t* info) {
  if (current_ult() == nullptr) {
    static auto f = S::next<int (*)(const sigset_t*, siginfo_t*)>("sigwaitinfo");
    return f(set, info);
  }
  return sigtimedwait(set, info, nullptr);
}

__attribute__((visibility("default"))) int sigwait(const sigset_t* set, int* sig) {
  UltDesc* self = current_ult();
  if (self == nullptr) {
    static auto f = S::next<int (*)(const sigset_t*, int*)>("sigwait");
    return f(set, sig);
  }
  int r = S::ult_sigtimedwait(self, S::to_bits(set), nullptr, nullptr);
  if (r < 0) return -r;  // never EINTR (glibc bug 22478)
  *sig = r;
  return 0;
}

__attribute__((visibility("default"))) int sigsuspend(const sigset_t* mask) {
  UltDesc* self = current_ult();
  if (self == nullptr) {
    static auto f = S::next<int (*)(const sigset_t*)>("sigsuspend");
    return f(mask);
  }
  S::ult_sigsuspend(self, S::to_bits(mask));
  errno = EINTR;
  return -1;
}

__attribute__((visibility("default"))) int pause() {
  UltDesc* self = current_ult();
  if (self == nullptr) {
    static auto f = S::next<int (*)()>("pause");
    return f();
  }
  S::ult_sigsuspend(self, self->sig_mask.load(std::memory_order_relaxed));
  errno = EINTR;
  return -1;
}

}  // extern "C"
