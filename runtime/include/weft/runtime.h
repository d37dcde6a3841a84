// weft/runtime.h — user-level threads (ULTs) on a pool of kernel threads.
//
//   weft::Runtime rt(weft::Options{.workers = 4});
//   weft::JoinHandle<int> h = rt.spawn([] { return 42; });  // from any thread
//   absl::StatusOr<int> v = h.join();       // parks a ULT; blocks a foreign thread
//   absl::StatusOr<int> r = rt.block_on([] { return 42; });
//
// Handles are weft/join_handle.h's (typed results, exceptions, join on
// destruction); task groups and timeout() are in weft/task_group.h;
// cancellation is described under "Cancellation" below.
//
// Terms. A *ULT* is a function running on a small stack of its own; many
// ULTs share a few *workers* (kernel threads, KLTs, that weft makes itself).
// A *foreign thread* is any thread that is not running a ULT: main(), a
// pthread of the application, a weft worker's own scheduler. Calls made in a
// ULT never block its worker when they wait: the ULT parks and the worker
// runs another. The same calls made on a foreign thread block that thread.
//
// Migration hazard. A ULT may resume on a different worker after any call
// that can park it: join(), this_ult::yield(), this_ult::sleep_for(), a
// weft lock or channel, weft::io. The compiler may keep the address of a
// `thread_local` — or of `errno`, whose `__errno_location()` glibc declares
// `const` — in a register across such a call, and then read the *previous*
// worker's copy:
//
//     thread_local int counter;
//     void f() {
//       int* p = &counter;              // address on worker A
//       weft::this_ult::yield();        // may resume on worker B
//       ++*p;                           // still A's counter: a data race
//     }
//
// weft saves `errno` (and the C++ exception state used by `catch` blocks and
// std::current_exception) in the ULT at every switch and restores it on
// resume. And this header redefines the `errno` macro (see "errno" below)
// so that code compiled with it reads the errno of the kernel thread it
// runs on *now*, even at -O2 where glibc's own macro would let the compiler
// keep the old thread's address: `errno = 5; weft::this_ult::yield();
// assert(errno == 5);` holds in a ULT. Code compiled without weft's headers
// (a prebuilt library, a .c file that includes only <errno.h>) keeps the
// hazard, and so does an address taken explicitly (`int* p = &errno;`)
// before the call. The tools for everything else:
//   - weft::Pin keeps the current ULT on its worker for a scope;
//   - weft::UltLocal<T> is per-ULT storage that moves with the ULT;
//   - SpawnOptions::bound gives a ULT a kernel thread of its own for life.
//
// Per-thread libc state. glibc keeps some state per kernel thread; on an
// unbound ULT, which shares its kernel thread with other ULTs and may move
// between kernel threads, weft makes this much follow the ULT:
//   - errno and the C++ exception state (saved and restored at switches);
//   - the locale set with uselocale() (weft's uselocale);
//   - what glibc believes the thread's stack is (pthread_getattr_np reports
//     the ULT's stack; libc's alloca limit is a quarter of it);
//   - pthread_exit() ends the ULT, not the kernel thread (see Ult::exit_value);
//   - the signal mask and the signals pending on the ULT (see "Signals" at
//     the end of this header).
// This does NOT follow an unbound ULT: thread_local variables and
// pthread_getspecific values (per kernel thread: use UltLocal), the thread
// name (pthread_setname_np), CPU affinity, scheduling policy, the tid
// (gettid), and
// cancellation: pthread_cancel of a kernel thread that runs ULTs is refused
// (ENOTSUP). A bound ULT (SpawnOptions::bound) has a kernel thread of its
// own that starts fresh for it and ends with it: all of the above is its
// own, its thread_local destructors run when it ends, and nothing carries
// over to the next bound ULT.
//
// Preemption (Options::time_slice, default 10 ms; 0 turns it off). A ULT
// that runs that long without parking, yielding or exiting, while its
// kernel thread is on a CPU, is switched out by a signal to that thread
// (weft's doorbell, SIGRTMAX-1) and goes behind the ULTs waiting for its
// worker; timers and the other workers' queues are served meanwhile.
// Wake-up preemption: when a sleeper's timer fires (or a high-priority ULT
// becomes runnable) while every worker is busy, the worker whose ULT has
// run longest (at least 250 us) is switched out the same way, so a ULT
// woken beside CPU-bound ones runs within about a tenth of a millisecond
// rather than a whole slice later. A
// preempted ULT resumes on the same kernel thread with its registers, FP
// state, errno, signal mask, locale and pins as they were, so the
// migration hazard above does not grow: an address held in a register at
// the interrupted instruction stays valid. It is switched out only where
// that is harmless, and otherwise later, at the first place where it is:
//   - only in the application's own code (the program and its libraries):
//     never inside weft, the C or C++ runtime (malloc, stdio, iostreams,
//     operator new), libgcc, the dynamic loader, liburing, spdlog, fmt,
//     Abseil or a sanitizer runtime;
//   - never while the ULT holds a pthread mutex, rwlock or spin lock
//     (std::mutex included: weft's pthread_mutex_lock/unlock and friends
//     count them per ULT), whose waiters would block the kernel thread the
//     holder needs; the unlock of its last one takes a pending preemption;
//   - never a bound ULT, nor one inside weft::blocking(), nor one whose
//     kernel thread is asleep in a system call (no signal is sent then).
//     The signal goes only to a kernel thread seen on a CPU, but one that
//     enters a system call in the microseconds between that look and the
//     signal has it interrupted: a direct nanosleep(), usleep(), poll(),
//     select() or epoll_wait() (the calls that end with EINTR whatever
//     SA_RESTART says) may then return EINTR, as with any signal on a
//     thread. It is rare (a ULT alternating 300 us of computing with a
//     direct 1 ms usleep, never parking in weft: 0-5 in 300-700 usleeps, the
//     test Preempt.DirectSleepAfterComputingIsRarelyInterrupted); code that
//     calls these directly should retry on EINTR, as POSIX asks, or use
//     weft's sleeps and io, which preemption never interrupts;
//   - not under ThreadSanitizer, which delays signal handlers to its own
//     interceptors: there no preemption signal is sent, and a ULT is
//     switched out only at its weft calls.
// What preemption does change: ULTs of one kernel thread share its
// thread_local variables, and a thread_local read-modify-write in the
// application's own code is no longer atomic against the other ULTs of
// that thread (use UltLocal, or an atomic). With the static library, weft
// tells its own code from the program's by the program's symbol table: a
// stripped program is preempted only in its shared libraries (a warning
// says so at start). Each preemption signal is delivered on the running
// ULT's stack (the kernel's signal frame, 1-3 KiB with the CPU's vector
// state), so a ULT may commit one more page of its stack the first time
// one reaches it. RuntimeStats counts preemptions requested, taken and
// deferred.
//
// Interposed libc functions. libweft exports pthread_exit, pthread_cancel,
// uselocale, dlopen, dlmopen and dlclose, and the pthread lock functions
// above (outside ULTs they do what glibc does). With the shared library they apply to the whole process; with the
// static library to calls made by the executable, and to calls made by
// shared libraries only if the executable exports them (-rdynamic).
//
// Errors are values: every call that can fail returns absl::Status or
// absl::StatusOr, and no weft call reports through errno.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <errno.h>

#include <atomic>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/join_handle.h"
#include "weft/time.h"
#include "weft/ult_id.h"

namespace weft {

class Runtime;

// How a Runtime is built. A value outside its range makes the Runtime fail
// to start: Runtime::status() is InvalidArgument naming the field (the
// constructor never throws).
struct Options {
  // Workers that run ULTs, 0..32768. 0: one per CPU this process may run on.
  // Each worker holds one file descriptor of its own, opened when its
  // thread starts and closed with the Runtime (its /proc stat file, read by
  // preemption and blocking handoff; not reopened at each read, which would
  // take the lowest free number for a moment). weft io adds the engine's
  // descriptors, set up at the worker's first io or idle wait.
  int workers = 0;
  // The most workers set_concurrency() and blocking-region handoffs may
  // use, 0..32768, and not below `workers`. 0: max(workers, 4 x CPUs).
  int max_workers = 0;
  // Default usable stack size of a ULT, rounded up to pages: 16 KiB..1 TiB,
  // or 0 for 64 KiB. Stacks are committed lazily: a ULT costs the pages it
  // touches, not this size. While a ULT runs, glibc sees its stack as the
  // thread's stack, so libc's own alloca limit (__libc_alloca_cutoff) is a
  // quarter of it, and pthread_getattr_np reports it.
  size_t stack_size = 64 * 1024;
  // Guard region below every ULT stack (0 = none). Touching it aborts the
  // process with a "weft: stack overflow in ULT <id> "<name>"" report.
  // Stacks are mapped next to each other, so a function whose frame is
  // larger than the guard could skip it and write into a neighbouring
  // ULT's stack without a fault — unless its code was compiled with
  // -fstack-clash-protection, which probes every page of a large frame or
  // alloca: weft is built with it and weft.pc's Cflags pass it to your code
  // (pkg-config --cflags weft; add it yourself if you do not use
  // pkg-config). The 256 KiB default covers frames up to 256 KiB in code
  // built without it (libraries you do not compile). It costs address
  // space, not memory: no page of it is ever committed, and it adds no
  // mapping (MADV_GUARD_INSTALL, Linux 6.13+; with the mprotect fallback a
  // guard of any size splits the stack's mapping once). Measured here, a
  // fresh stack's mmap+guard took about 10 us with a 256 KiB guard against
  // 6.6 us with 4 KiB; recycled stacks pay nothing.
  size_t guard_size = 256 * 1024;
  // A worker whose ULT has been inside weft::blocking() this long has its
  // queued ULTs and its place handed to a spare kernel thread, so the other
  // ULTs keep running (see weft::blocking). Takes effect within about 1 ms
  // after the threshold. Not negative; microseconds::max() means never.
  //
  // The same holds, without a region, for a ULT whose kernel thread is
  // found asleep in the kernel (a blocking system call weft does not
  // route — a raw syscall(), a library's own blocking call without
  // libweft-hook — a pthread_mutex_lock that sleeps, a page fault on a
  // slow file): after this long without a switch and two more monitor
  // ticks (about 2 ms) in which its CPU clock stood still and /proc said
  // it was asleep ('S' or 'D'), the monitor gives its place, its deque and
  // its next-to-run ULT to a spare kernel thread
  // (RuntimeStats::kernel_block_handoffs). A ULT that computes is never
  // handed off (that is preemption's business), nor one whose kernel
  // thread waits only in short bursts. What stays with the blocked kernel
  // thread until its call returns and its ULT next switches: ULTs that
  // yielded on it or were woken by its own scheduler loop, ULTs preempted
  // there, and io completions on its ring. Once the call has returned, if
  // the ULT runs on without switching while an active worker is idle, the
  // two swap places back (so the pool does not run more kernel threads
  // than its concurrency level for long).
  std::chrono::microseconds blocking_handoff{200};
  // Time-slice preemption: a ULT that has run this long without switching
  // while other ULTs wait for its worker is switched out (it goes behind
  // them and later resumes on the same kernel thread, as if nothing had
  // happened: registers, FP state, errno, signal mask). Zero turns it off,
  // and wake-up preemption with it: then a ULT runs until it parks, yields
  // or exits, unless a high-priority ULT needs its worker (see Priority).
  // Not negative. See "Preemption" above for where a ULT is never
  // interrupted.
  std::chrono::microseconds time_slice{10000};
  // A ULT that waits on a weft::Mutex lends its priority to the holder
  // until the holder releases it (see Priority). false: no inheritance
  // (the holder keeps its own priority: a priority inversion can last).
  bool priority_inheritance = true;
  // Hang detector: when no ULT of this runtime has switched for this long
  // while ULTs wait to run, every ULT is dumped to stderr (weft/debug.h,
  // dump_ults), once per stall. Zero: off (the environment variable
  // WEFT_HANG_DUMP=SECONDS sets it for runtimes that leave it zero). Not
  // negative. Checked every 100 ms by a thread of the runtime's own.
  std::chrono::milliseconds hang_dump{0};
  // Event trace: when not empty, what every kernel thread of this runtime
  // does (which ULT runs when, idle sleeps, spawns, parks and what for,
  // unparks with an arrow to the resumption, steals, preemptions, blocking
  // regions and handoffs, io submissions and completions) is recorded in
  // memory and written to this file as Chrome trace JSON when the runtime
  // stops (shutdown() or the destructor); open it in https://ui.perfetto.dev
  // or chrome://tracing. The file is created (truncated) when the runtime
  // starts: a path that cannot be created makes status() InvalidArgument.
  // A write error at the end is logged on stderr and returned by
  // shutdown(). Empty: the environment variable WEFT_TRACE, if set and not
  // empty, names the file of the first runtime of the process that leaves
  // this empty; later ones (while the variable keeps its value) write
  // "<name>-2.json", "-3", ... (the suffix goes before a ".json" ending);
  // an env path that cannot be created is logged
  // and the runtime runs without a trace. Off (empty, no WEFT_TRACE), the
  // trace costs nothing measurable (an untaken branch at each event site).
  // On, an event costs a TSC read and a 48-byte store (figures in the
  // README). A forked child does not write its parent's file.
  std::string trace_file = {};
  // Events kept per worker, and for all other threads together (the
  // newest; older ones are overwritten and counted in the file's
  // "events_overwritten"), 1024..16777216, rounded up to a power of two:
  // 48 bytes each, touched as used. 0: WEFT_TRACE_EVENTS if set, else
  // 262144 (12 MiB per worker at most).
  uint32_t trace_events = 0;
  // Descriptor slots the process's file table is grown to when the runtime
  // starts, before weft starts a thread of its own: -1 (the default) is
  // min(the soft RLIMIT_NOFILE, 65536); 0 leaves the table as it is; else
  // 1 .. the soft RLIMIT_NOFILE (above it, or below -1, status() is
  // InvalidArgument). Why: Linux grows the table by doubling (64, 256,
  // 512, ... slots) when a descriptor needs a higher number, and in a
  // process with several threads each growth waits for an RCU grace
  // period, during which every thread that opens a descriptor waits too:
  // measured here, both workers stopped for 10-33 ms as 1,000 ULTs opened
  // connections (a ticker ULT's longest gap 10-34 ms, 4-6 ms with the
  // table grown first). Grown while the process has one thread, it costs
  // microseconds; with several (a second runtime, or threads of the
  // application's), one grace period at start. The kernel keeps the table
  // for the life of the process: about 8 bytes of kernel memory per slot
  // (65536 slots: about 520 KiB). If the kernel refuses (ENOMEM), a warning
  // is logged and the runtime starts anyway. Raise RLIMIT_NOFILE before
  // starting the runtime for the table to cover it. A forked child's table
  // is sized by the kernel to the descriptors open at the fork; the child's
  // rebuilt runtime grows it again before it starts a thread.
  int fd_table_slots = -1;
};

// A live ULT, as Runtime::live_ults() lists it.
struct UltInfo {
  UltId id;
  std::string name;  // SpawnOptions::name ("" if none was given)
};

// Scheduling priority of a ULT (SpawnOptions::priority,
// this_ult::set_priority). Three levels:
//   kHigh        runs before any normal or background ULT: a high ULT that
//                becomes runnable while no worker is idle preempts the
//                worker running the lowest-priority ULT (a directed signal,
//                the same safety rules as time slices: see "Preemption");
//                the monitor repeats the request every millisecond until
//                one is free. High ULTs share the workers round-robin
//                among themselves (time slices apply).
//   kNormal      the default; ordinary work stealing and time slices.
//   kBackground  runs only when no high or normal ULT waits for that
//                worker, except that one that has waited 100 ms runs next
//                (with time slices on, a background ULT waits at most about
//                100 ms plus one slice; with time_slice 0 it may wait as
//                long as a normal ULT keeps its worker).
// A ULT waiting on a weft::Mutex raises the holder to its own priority
// until the holder unlocks it (priority inheritance, along chains of held
// mutexes; Options::priority_inheritance). Pinned and bound ULTs run on
// their own kernel thread whatever their priority.
enum class Priority : uint8_t { kBackground = 0, kNormal = 1, kHigh = 2 };

// How one ULT is spawned.
struct SpawnOptions {
  // For diagnostics (stack-overflow reports, logs); truncated to 31 bytes.
  std::string_view name = {};
  // Usable stack bytes, 16 KiB..1 TiB (rounded up to pages); 0 means the
  // runtime's Options::stack_size. Outside the range the spawn fails with
  // InvalidArgument.
  size_t stack_size = 0;
  // A bound ULT runs on a kernel thread of its own for its whole life (the
  // seed's bound thread): it never migrates and its kernel thread runs
  // nothing else. Costs a kernel thread; use it for code that relies on
  // thread_local addresses or kernel-thread identity.
  bool bound = false;
  // kBackground, kNormal or kHigh (see Priority); other values fail the
  // spawn with InvalidArgument. Not inherited from the spawning ULT.
  Priority priority = Priority::kNormal;
};

// Counters of one worker, read without stopping it (each value is exact,
// the set is not a snapshot).
struct WorkerStats {
  int index = 0;            // position in the pool
  int tid = 0;              // kernel thread id
  bool active = false;      // runs ULTs at the current concurrency level
  uint64_t switches = 0;    // context switches into ULTs
  uint64_t steals = 0;      // ULTs taken from another worker's queue
  uint64_t parks = 0;       // ULTs that parked (blocked) on this worker
  uint64_t sleeps = 0;      // times the worker itself went to sleep, idle
  uint64_t spawned = 0;     // ULTs spawned by ULTs running here
  uint64_t reaped = 0;      // exited ULTs whose descriptor was recycled here
  // ULTs waiting in its queues now: its stealable queue, its next-to-run
  // slot and its inbox (ULTs that yielded on it are not counted).
  uint64_t queued = 0;
  // Where its kernel thread's time went since it started, in ns: asleep
  // with nothing to run; inside weft::blocking() regions that have ended
  // (a region still open is counted when it ends); and the rest (busy_ns:
  // running ULTs, including system calls they make directly, and its
  // scheduler loop). Read with one clock read per sleep and per region,
  // none per switch.
  int64_t idle_ns = 0;
  int64_t blocking_ns = 0;
  int64_t busy_ns = 0;
  // Its io engine (0 when weft io is not linked in or not used here):
  // requests submitted (io_uring: SQEs, weft's own timeouts and wake-ups
  // included; epoll: readiness waits armed), completions taken in
  // (io_uring: CQEs; epoll: events), and system calls into the engine
  // (io_uring_enter; epoll_wait).
  uint64_t io_submitted = 0;
  uint64_t io_completed = 0;
  uint64_t io_enters = 0;
};

struct RuntimeStats {
  std::vector<WorkerStats> workers;  // the pool, bound-ULT threads excluded
  uint64_t spawned = 0;      // every ULT spawned, from anywhere
  uint64_t exited = 0;       // every ULT whose function returned
  uint64_t live = 0;         // spawned and not yet exited
  // ULTs of this runtime by state now, from one pass over the ULT table
  // (O(ULTs ever made); each entry is read without stopping anything, so
  // the four need not add up to `live` while ULTs change state): running
  // on a worker, runnable (queued), parked (waiting on something), and
  // exited but not yet joined or detached.
  uint64_t ults_running = 0;
  uint64_t ults_runnable = 0;
  uint64_t ults_parked = 0;
  uint64_t ults_exited_unjoined = 0;
  uint64_t global_queued = 0;  // ULTs in the shared queues (not any worker's)
  uint64_t reaped = 0;       // descriptors recycled (workers + monitor)
  uint64_t cached = 0;       // descriptors with a stack ready for reuse
  uint64_t stacks_mapped = 0;    // stacks ever mmap'd
  uint64_t stacks_unmapped = 0;  // stacks given back by the reaper
  int bound_threads = 0;     // kernel threads running a bound ULT now
  uint64_t handoffs = 0;     // workers replaced while blocked in weft::blocking()
  // Workers replaced because their kernel thread was found asleep in the
  // kernel inside a ULT, outside any weft::blocking() region (a system
  // call or fault weft does not route: Options::blocking_handoff).
  uint64_t kernel_block_handoffs = 0;
  uint64_t hog_rescues = 0;  // times queued ULTs were taken from a worker whose
                             // ULT ran too long without a switch
  // Timed waits (sleep_for, CondVar::wait_for, io deadlines...) pending
  // now. A wait that ends early takes its timer out at once.
  uint64_t timers_pending = 0;
  // Timers the monitor fired because their worker was busy (running one
  // ULT, or blocked in weft::blocking()); idle workers fire their own.
  uint64_t timers_fired_by_monitor = 0;
  // How late timers fired (the wake-up queued minus the deadline), counted
  // in buckets: <= 10 us, <= 100 us, <= 1 ms, <= 10 ms, <= 100 ms, more.
  // The ULT then runs when a worker takes it from its queue.
  std::array<uint64_t, 6> timer_lateness{};
  // Time-slice preemption (Options::time_slice): signals sent to a worker
  // whose ULT ran past its slice while others waited; preemptions that
  // switched the ULT out; and signals that found it where it may not be
  // switched out (weft's or libc's code, a lock held: retried at the next
  // monitor tick and taken at the next safe point).
  uint64_t preemptions_requested = 0;
  uint64_t preemptions_taken = 0;
  uint64_t preemptions_deferred = 0;
  // Priorities: preemptions asked for because a high-priority ULT became
  // runnable while no worker was idle; ULTs raised by priority inheritance;
  // background ULTs run because they had waited past their bound.
  uint64_t priority_preemptions = 0;
  uint64_t priority_boosts = 0;
  uint64_t background_starvation_runs = 0;
};

// `s` in the Prometheus text exposition format (version 0.0.4), every
// metric named `<prefix>_...` with a HELP and TYPE line: counters end in
// `_total`, per-worker series carry a `worker="<index>"` label, times are
// in seconds. The application serves the string (weft runs no HTTP
// server). `prefix` must be a valid metric name start ([a-zA-Z_:]
// [a-zA-Z0-9_:]*); an invalid one is replaced by "weft".
std::string prometheus_text(const RuntimeStats& s, std::string_view prefix = "weft");

namespace detail {

// Spawns on `rt`, or on the runtime of the calling ULT when rt is null.
Spawned spawn(Runtime* rt, const SpawnOptions& opts, const Closure& c);

// The handle for a callable F spawned with `opts` on rt (null: the
// calling ULT's runtime).
template <class F>
JoinHandle<std::invoke_result_t<std::decay_t<F>&>> spawn_handle(Runtime* rt, F&& fn, const SpawnOptions& opts) {
  using Fn = std::decay_t<F>;
  using R = std::invoke_result_t<Fn&>;
  Fn f(std::forward<F>(fn));
  Spawned s = spawn(rt, opts, make_task_closure<Fn, R>(&f));
  void* slot = s.task != nullptr ? &static_cast<Task<Fn, R>*>(s.task)->slot : nullptr;
  return JoinHandle<R>(s.id, std::move(s.status), slot);
}

bool in_ult();

}  // namespace detail

// A pool of workers running ULTs, plus one monitor thread that recycles
// exited ULTs (and, in later versions, hands off stuck workers).
class Runtime {
 public:
  // Starts the workers and the monitor. If that fails (invalid Options, no
  // glibc support for raw threads, no memory, thread limits), status() says
  // why and every spawn on this runtime returns that error. Never throws
  // for bad Options.
  explicit Runtime(Options opts = {});

  // shutdown(), then frees everything.
  ~Runtime();

  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // OK if the runtime started. InvalidArgument: an Options field is out of
  // range (the message names it). Otherwise the error of starting the
  // kernel threads (Unimplemented, ResourceExhausted, Internal).
  absl::Status status() const;

  // Spawns a ULT running fn() (moved onto the ULT's stack) and returns its
  // handle, typed by fn's result (see weft/join_handle.h: join() gives the
  // result, or rethrows the exception that escaped fn). Callable from any
  // thread, in or out of a ULT of any runtime. The ULT starts on the
  // calling worker's queue (or the runtime's injection queue from a foreign
  // thread) and may be stolen by any worker. Errors (in the returned
  // handle's status()): the runtime failed or is shut down
  // (FailedPrecondition), no memory for a stack (ResourceExhausted), fn and
  // its result do not fit on the stack (InvalidArgument). Keep the handle,
  // or detach() it: a discarded handle asks the ULT to stop and joins it
  // at once (as std::jthread's destructor does).
  template <class F>
  [[nodiscard]] JoinHandle<std::invoke_result_t<std::decay_t<F>&>> spawn(F&& fn, const SpawnOptions& opts = {}) {
    return detail::spawn_handle(this, std::forward<F>(fn), opts);
  }

  // Runs fn() as a ULT and blocks the calling thread until it returns, then
  // returns its result as join() would (JoinResult: absl::Status for void
  // and Status functions, the StatusOr a StatusOr function returns,
  // StatusOr<std::reference_wrapper<T>> for a T&, else StatusOr<R>). From a
  // foreign thread the thread blocks on a futex; from a ULT the ULT parks,
  // and a stop request of that ULT is passed on to fn's ULT, whose end it
  // then waits for. An exception thrown by fn is rethrown here. Errors: as
  // spawn().
  template <class F>
  JoinResult<std::invoke_result_t<std::decay_t<F>&>> block_on(F&& fn) {
    auto h = spawn(std::forward<F>(fn));
    auto r = h.join();
    if (!h.joinable() || !h.status().ok()) return r;
    (void)h.request_stop();  // join() was cancelled: the caller is asked to stop
    return h.join_ignoring_stop();
  }

  // Sets how many workers run ULTs (1..Options::max_workers). Raising it
  // starts or wakes workers; lowering it makes the surplus workers hand
  // their queued ULTs to the others and sleep once their current ULT
  // parks or yields. Bound ULTs are not counted. Callable from any thread
  // or ULT, also while shutdown() waits for the last ULTs; it blocks only
  // briefly (another set_concurrency or a handoff in progress). Errors:
  // InvalidArgument outside the range; FailedPrecondition if the runtime
  // failed to start or has stopped; the error of thread creation if a new
  // worker cannot be started.
  absl::Status set_concurrency(int n);

  // The current concurrency level.
  int concurrency() const;

  // Counters; see RuntimeStats.
  RuntimeStats stats() const;

  // Waits until every ULT of this runtime has returned — detached ones
  // included, and ULTs they spawn meanwhile — then stops the workers and
  // the monitor and joins their threads. New spawns fail once the last ULT
  // has exited. A ULT that never returns makes shutdown wait forever, as
  // joining a thread that never exits would. Idempotent; concurrent calls
  // wait for the first. Errors: FailedPrecondition if called from a ULT of
  // this runtime, also inside a weft::blocking() region (it would wait for
  // itself).
  absl::Status shutdown();

  // Graceful shutdown with a deadline: asks every ULT of this runtime to
  // stop (as JoinHandle::request_stop does; ULTs spawned from then on start
  // asked to stop), waits up to `timeout` for all of them to return, then
  // stops the runtime as shutdown() does and returns OK. If ULTs are still
  // alive at the deadline, returns DeadlineExceeded naming them (id and
  // name, the first 32) and leaves the runtime running: call it again, or
  // shutdown() to wait for them, or end the process (~Runtime waits for
  // them as shutdown() does). Stop requests end the cancellable waits (see
  // "Cancellation" below); a ULT parked in a wait that is not cancellable
  // (a Mutex::lock() without a stop token), or computing without looking
  // at this_ult::stop_requested(), survives. Errors: also
  // FailedPrecondition as shutdown() (called from this runtime's ULT).
  absl::Status shutdown(std::chrono::nanoseconds timeout);

  // The ULTs live in this runtime now (spawned and not yet returned), with
  // their names. A walk of weft's ULT table: for diagnostics, not for hot
  // paths.
  std::vector<UltInfo> live_ults() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  friend struct RuntimeAccess;
};

// Spawns a ULT on the runtime of the calling ULT (see Runtime::spawn).
// Outside a ULT the returned handle carries FailedPrecondition.
template <class F>
[[nodiscard]] JoinHandle<std::invoke_result_t<std::decay_t<F>&>> spawn(F&& fn, const SpawnOptions& opts = {}) {
  return detail::spawn_handle(nullptr, std::forward<F>(fn), opts);
}

namespace detail {
struct BlockingRegion {
  void* ult = nullptr;
  void* worker = nullptr;
  uint64_t epoch = 0;
};
BlockingRegion blocking_enter();
void blocking_exit(const BlockingRegion& r);
}  // namespace detail

// Runs fn() — a call that may block its kernel thread and that weft cannot
// route through io_uring (a library's own blocking call, getaddrinfo, a
// database driver) — and returns its result.
//
// In a ULT, fn runs at once on the caller's own stack and kernel thread
// (thread_local state and the kernel thread id stay as they were, so it
// costs nothing when the call is fast). If it is still running after
// Options::blocking_handoff, the monitor hands the worker's queued ULTs and
// its place in the pool to a spare kernel thread, so the other ULTs keep
// running; the caller's kernel thread finishes fn and retires, and the
// caller goes on on a worker of the pool. Spare kernel threads are reused
// and bounded by Options::max_workers. The end of a region is a
// scheduling point: when other ULTs wait on the caller's worker, or a
// timer there is due, the caller queues behind them before it goes on (a
// loop of short regions does not hold its worker).
//
// Inside fn the kernel thread counts as a foreign thread: weft calls made
// there (locks, joins, sleep_for, weft::io) block the kernel thread instead
// of parking a ULT, and this_ult::id() returns the invalid id. Do not
// unlock, inside fn, a weft::Mutex locked outside it (debug builds see a
// different owner). Outside a ULT, blocking() just calls fn.
//
// Limit: a handoff moves the worker's queued ULTs and timers, not its io.
// Operations other ULTs had in flight on this worker (weft::io with
// io_uring) complete, and their deadlines fire, only when fn returns; a
// weft::io::close of such an fd from elsewhere returns within 50 ms, and
// the fd itself is closed (its number freed) when fn returns (weft/io.h,
// "Closing"). Keep the io
// of latency-sensitive ULTs off workers that run long blocking calls, or
// run those calls on a thread of your own.
template <class F>
decltype(auto) blocking(F&& fn) {
  struct Exit {
    detail::BlockingRegion r;
    ~Exit() { detail::blocking_exit(r); }
  } exit{detail::blocking_enter()};
  return std::forward<F>(fn)();
}

namespace this_ult {

// Lets other ULTs run: the caller goes to the back of its worker's queue
// (round-robin among the ULTs there). Outside a ULT: sched_yield().
void yield();

// Parks the calling ULT for at least `d` (its worker runs others meanwhile),
// or until it is asked to stop (see "Cancellation" below: then it returns
// early, at once if the request came before). Outside a ULT: sleeps the
// calling thread. d <= 0: yield() instead. nanoseconds::max() (or any d
// that would pass INT64_MAX ns of CLOCK_MONOTONIC) sleeps without a
// deadline: only a stop request ends it.
void sleep_for(std::chrono::nanoseconds d);

// Any duration: one too large for nanoseconds (hours::max()) saturates, so
// it sleeps practically forever; a negative one just yields.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  sleep_for(detail::saturating_ns(d));
}

bool stop_requested();  // (see "Cancellation" below)

// Parks the calling ULT until CLOCK_MONOTONIC reaches `deadline_ns` (a
// steady_clock time in ns). Outside a ULT: sleeps the thread. A deadline
// in the past yields; INT64_MAX sleeps forever. Internal; use sleep_until.
void sleep_until_monotonic_ns(int64_t deadline_ns);

// Parks the calling ULT until `t` (its worker runs others meanwhile);
// outside a ULT, sleeps the thread. steady_clock time points are waited for
// directly (one timer); any other clock as std::this_thread::sleep_until
// does: sleep for the difference, re-read that clock, repeat while it is
// still early (so a clock that jumps is followed). A time point in the past
// yields; time_point::max() sleeps until a stop request. Like sleep_for, it
// returns early when the ULT is asked to stop (see "Cancellation" below).
template <class Clock, class Duration>
void sleep_until(const std::chrono::time_point<Clock, Duration>& t) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    sleep_until_monotonic_ns(detail::saturating_ns(t.time_since_epoch()).count());
  } else {
    auto now = Clock::now();
    if (!(now < t)) {
      yield();
      return;
    }
    do {
      sleep_for(t - now);
      if (stop_requested()) return;  // asked to stop: sleep_for returned early
      now = Clock::now();
    } while (now < t);
  }
}

// The calling ULT's id; the invalid id outside a ULT.
UltId id();

// True when called from a ULT.
bool in_ult();

// Cancellation. A ULT can be asked to stop: JoinHandle::request_stop(),
// the handle's destructor, a TaskGroup whose child failed or that was
// asked to stop, Runtime::shutdown(timeout). The request sets a flag the
// ULT reads with stop_requested() (and through stop_token(), a
// std::stop_token whose std::stop_callbacks run in the requester), and it
// ends the ULT's *cancellable* waits at once (within one wake-up, from
// wherever the ULT was parked):
//   - this_ult::sleep_for / sleep_until return early;
//   - JoinHandle::join() returns Cancelled (the handle stays joinable);
//   - weft::io operations return -ECANCELED (the operation is cancelled on
//     the ring, or its readiness wait ends, before it returns: it did not
//     and will not take effect, except that bytes moved before the cancel
//     are returned as a short count);
//   - waits given a std::stop_token (CondVar::wait(lock, token, pred),
//     Mutex::lock(token), Semaphore::acquire(token), Channel
//     send/recv(token)): Cancelled when that token's stop is requested
//     (pass this_ult::stop_token() for the ULT's own).
// A cancellable wait called after the request returns at once. Waits not
// listed (Mutex::lock(), CondVar::wait without a token, RwLock, Barrier,
// WaitGroup) are not ended: their ULT stays parked until the wait is
// satisfied, as POSIX's pthread_mutex_lock is not a cancellation point.
// A request is never withdrawn. Outside a ULT, stop_requested() is false
// and stop_token() is a token that can never be stopped.
bool stop_requested();
std::stop_token stop_token();

// The calling ULT's own priority (SpawnOptions::priority as changed by
// set_priority; not what inheritance lends it). kNormal outside a ULT.
Priority priority();

// Changes the calling ULT's own priority. Lowering it lets a queued ULT of
// higher priority run at once (the caller yields). FailedPrecondition
// outside a ULT (a thread's priority is the kernel's), InvalidArgument for
// a value outside Priority.
absl::Status set_priority(Priority p);

}  // namespace this_ult

// Scope guard: while at least one Pin of the current ULT is alive, the ULT
// stays on the worker it runs on now — parking and yielding resume it on the
// same kernel thread, and no other worker steals it — so addresses of
// thread_local variables and the kernel thread id stay valid. Nestable.
// Outside a ULT it does nothing. Pins are per ULT: create and destroy a Pin
// in the same ULT.
class Pin {
 public:
  Pin();
  ~Pin();
  Pin(const Pin&) = delete;
  Pin& operator=(const Pin&) = delete;

 private:
  bool active_;
};

namespace detail {
uint32_t ult_local_new_key();
void* ult_local_get(uint32_t key, void* (*make)(), void (*destroy)(void*));
}  // namespace detail

// Per-ULT storage: the migration-safe replacement for thread_local. Each
// ULT that calls get() gets its own T, value-initialised on first use and
// destroyed when the ULT's function returns. On a foreign thread, get()
// returns a per-thread T destroyed at thread exit. An UltLocal is typically
// a global or static; it must outlive every ULT that used it.
//
//   weft::UltLocal<int> requests;          // instead of thread_local int
//   void handle() { ++*requests; weft::this_ult::yield(); ++*requests; }
template <class T>
class UltLocal {
 public:
  UltLocal() : key_(detail::ult_local_new_key()) {}
  UltLocal(const UltLocal&) = delete;
  UltLocal& operator=(const UltLocal&) = delete;

  // The calling ULT's (or thread's) T.
  T& get() {
    return *static_cast<T*>(detail::ult_local_get(
        key_, []() -> void* { return new T(); }, [](void* p) { delete static_cast<T*>(p); }));
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }

 private:
  uint32_t key_;
};

// ---------------------------------------------------------------------------
// Process-wide calls made in ULTs: fork, child processes, credentials.
//
// Fork. fork() keeps POSIX's meaning per ULT: the child has one thread of
// control, the ULT (or foreign thread) that called fork. In a ULT:
//   - the ULT moves to its runtime's fork kernel thread, forks there and
//     moves back, so the page-table copy (milliseconds for a large process)
//     never holds up a pool worker; a bound or pinned ULT forks in place;
//   - weft's pthread_atfork handlers run around the fork (registered when
//     libweft is loaded, so the application's prepare handlers run before
//     weft's and its child handlers after weft's, in POSIX order); they
//     hold weft's internal locks across the fork, so no internal lock is
//     ever found held in the child;
//   - in the child the ULT goes on running and every runtime is usable:
//     fresh workers, monitor and io engines (new rings or epoll instances;
//     the parent's are closed without being touched); spawn, join, locks,
//     timers and weft::io work. Every other ULT of the parent does not
//     exist there: joining or detaching one reports NotFound, and its
//     memory is reclaimed. A weft lock another ULT held at the fork stays
//     held in the child, as with threads (use pthread_atfork as for
//     threads). When the child's last ULT returns, the child exits with
//     status 0, as a process does when its last thread exits;
//   - the parent is undisturbed: its ULTs, timers and io go on.
// A foreign thread that forks while runtimes run gets the same child, with
// no ULT. vfork() from a ULT blocks its worker until the child calls exec
// or _exit; prefer posix_spawn (weft/process.h).
//
// Child processes. In a ULT, system(), popen(), pclose(), posix_spawn(),
// posix_spawnp(), waitpid(), wait(), wait4() and waitid() keep glibc's
// results and errno but park the ULT instead of blocking its worker
// (weft/process.h; weft::Process gives spawn/wait/kill as values).
//
// Credentials. setuid, setgid, seteuid, setegid, setreuid, setregid,
// setresuid, setresgid and setgroups, called anywhere (a ULT, a foreign
// thread), change the credentials of every kernel thread of the process
// before they return: glibc's own threads and every KLT weft made (pool,
// spare and retired workers, bound ULTs' threads, the monitor, the fork
// thread), including KLTs started while the call runs. A call glibc
// refuses (EPERM, EINVAL) changes nothing anywhere and returns glibc's
// error. If a kernel thread cannot make the change that succeeded on the
// caller (it blocks signal SIGRTMAX, which weft reserves for this), the
// process aborts with a message naming the thread, as glibc does when its
// own broadcast fails: a half-dropped privilege never goes on running.
//
// Static linking: these C functions are exported from libweft. With
// libweft.a, a call in the program itself binds to weft's; a call from a
// shared library binds to weft's only if the executable exports the symbol
// (link with -Wl,--export-dynamic, or use libweft.so).
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// Signals (weft/signal.h has weft::signal, signal_state and SignalSet).
//
// Interposed (exported from libweft; on a foreign thread each forwards to
// glibc and gives glibc's answers): pthread_sigmask, sigprocmask,
// sigpending, sigaction, signal, raise, pthread_kill (to the caller
// itself), sigwait, sigwaitinfo, sigtimedwait, sigsuspend, pause. Linking
// as for the credential calls above (static: the program's own calls;
// libweft.so: every call).
//
// In a ULT:
//   - the mask is the ULT's own: a change is a store, no system call; it
//     moves with the ULT, a spawned ULT inherits its spawner's (a ULT
//     spawned from a thread, that thread's), and the old-mask argument
//     reports it exactly. Worker kernel threads keep asynchronous signals
//     blocked in the kernel at all times; one kernel thread, "weft-signal",
//     receives the process's signals and hands each to a ULT;
//   - sigaction and signal keep the application's disposition (and report
//     it back as the old action); weft's dispatcher is what the kernel
//     holds. SA_SIGINFO, SA_RESTART, SA_NODEFER, SA_RESETHAND and sa_mask
//     keep their meaning on ULTs (the ULT's mask during the handler);
//   - a process-directed signal (kill, sigqueue, the terminal) goes to one
//     ULT that does not block it, with its siginfo: a running one at once
//     (a directed signal, SIGRTMAX-1, interrupts its kernel thread and the
//     handler runs on the ULT's stack); a runnable one when it next runs; a
//     parked one is woken, takes it, and its wait goes on or ends as below.
//     If no ULT accepts it, a thread of the application that does not block
//     it gets it (its si_code then reads SI_TKILL: Linux forwards no
//     original siginfo); else it stays pending until a ULT unblocks it.
//     Standard signals coalesce while pending; real-time ones queue (count,
//     order and si_value kept);
//   - raise and pthread_kill(pthread_self(), s) signal the calling ULT;
//     weft::signal(id, s) signals any ULT;
//   - sigwait, sigwaitinfo, sigtimedwait, sigsuspend and pause park the ULT;
//   - faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) and the signals the
//     kernel sends to the thread that caused them (SIGPIPE, SIGXFSZ, SIGSYS)
//     are taken by the ULT that caused them, its handler on the kernel
//     thread's alternate stack for faults; a stack-overflow fault is
//     reported with the ULT's name first. Default actions act as without
//     weft (a fault nobody catches kills the process);
//   - a handler that runs on a ULT waiting in weft::io ends the wait as it
//     would end the system call: read, write, readv, writev, recv, send,
//     accept and connect return -EINTR unless the handler has SA_RESTART
//     (they then go on waiting), poll returns -EINTR always, file
//     operations (pread, pwrite, openat, close, fsync, statx) finish. What
//     was transferred before the interruption is returned, never lost.
//     weft's waits (Mutex, CondVar, join, sleep_for...) go on after the
//     handler, as pthread_mutex_lock does.
//
// Reserved: SIGRTMAX (all-KLT credential broadcast) and SIGRTMAX-1 (the
// delivery doorbell); sigaction on them fails with EINVAL, and a mask
// never holds them (pthread_sigmask drops them from the set, as glibc
// drops its own two, so that blocking a full set keeps working). SIGRTMIN,
// as the application sees it, is free.
//
// Not kept: a per-ULT sigaltstack (a ULT's handlers run on the kernel
// thread's); real-time signals sent to one ULT (weft::signal, raise)
// coalesce; siglongjmp out of a handler does not restore the ULT's mask
// (glibc restores it with an internal call weft does not see: set it again
// with pthread_sigmask), and leaving by siglongjmp (or pthread_exit) a
// handler that interrupted a wait in weft, weft::io included, is undefined:
// the wait's record (an io_uring operation, an epoll waiter entry) is still
// in use (POSIX allows it out of read; handlers here run inside the wait);
// pthread_kill aimed at another ULT's pthread_t does
// not reach that ULT (use weft::signal); a forked child that changes kernel
// threads before exec starts the new program with asynchronous signals
// blocked.
// ---------------------------------------------------------------------------

}  // namespace weft

// ---------------------------------------------------------------------------
// errno
// ---------------------------------------------------------------------------
//
// glibc defines `errno` as (*__errno_location()) and declares that function
// `const`, so GCC computes the address once per function and keeps it across
// calls — across a park, after which a ULT may run on another kernel thread,
// the old address names the *previous* thread's errno. Code that includes
// this header gets an `errno` whose address is recomputed at every use from
// the thread pointer: an `asm volatile` read of %fs:0 (which the compiler
// may not merge or move across calls) plus errno's offset from it (the same
// for every thread: glibc's errno is initial-exec TLS), found once. No
// function call; a load, an add and an indirect access.
//
// What holds: in code compiled after including <weft/runtime.h> (or
// <weft/weft.h>), every use of `errno` reads and writes the errno of the
// kernel thread running the code at that moment, and weft carries each
// ULT's errno across switches, so errno follows the ULT. What does not:
// code compiled without this header (prebuilt libraries, other translation
// units) keeps glibc's macro and its hazard; so does `&errno` kept in a
// variable across a park. Define WEFT_NO_ERRNO_OVERRIDE before including
// weft's headers to keep glibc's macro.
namespace weft::detail {
// errno's offset from the thread pointer; 0 until the first use computes it.
inline std::atomic<long> errno_tp_offset{0};
long errno_tp_offset_init();  // computes and stores it (runtime.cc)

__attribute__((always_inline)) inline int* errno_location() {
  char* tp;
  __asm__ volatile("mov %%fs:0, %0" : "=r"(tp) : : "memory");
  long off = errno_tp_offset.load(std::memory_order_relaxed);
  if (__builtin_expect(off == 0, 0)) off = errno_tp_offset_init();
  return reinterpret_cast<int*>(tp + off);
}
}  // namespace weft::detail

#if !defined(WEFT_NO_ERRNO_OVERRIDE)
#undef errno
#define errno (*::weft::detail::errno_location())
#endif
