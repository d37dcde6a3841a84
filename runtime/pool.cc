// runtime/pool.cc — the life of a Scheduler's worker pool: Options
// validation, start, set_concurrency, bound and fork workers, shutdown,
// live-ULT accounting and stats.
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "runtime/death_row.h"
#include "runtime/debug_info.h"
#include "runtime/fork.h"
#include "runtime/globals.h"
#include "runtime/log.h"
#include "runtime/scheduler.h"
#include "runtime/preempt.h"
#include "runtime/signal.h"
#include "sys/fd_table.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "sys/task_state.h"

namespace weft {
namespace rt {
namespace {

constexpr size_t kWorkerStack = 256 * 1024;

int online_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

absl::Status klt_error(int r, const char* what, const char* role) {
  std::string msg = absl::StrCat("cannot start the ", role, " thread: ", what ? what : "", " (",
                                 strerror(-r), ")");
  if (r == -ENOTSUP) return absl::UnimplementedError(msg);
  if (r == -ENOMEM || r == -EAGAIN) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

void worker_main(void* arg) {
  auto* w = static_cast<Worker*>(arg);
  set_current_worker(w);
  int tid = sys::gettid();
  // Opened here, once, at the KLT's start (sys/task_state.h says why not at
  // each look); failure leaves -1: task_state() then says 0 (not 'R', not
  // asleep), so this worker is neither preempted nor handed off by state.
  if (!w->is_bound) w->open_stat_file(tid);
  if (w->trace != nullptr && w->trace->per_klt()) w->trace->tid.store(tid, std::memory_order_relaxed);
  w->started_ns.store(monotonic_ns(), std::memory_order_relaxed);
  w->tid.store(tid, std::memory_order_release);
  sys::context_init_native(&w->core().sched_ctx);
  w->init_thread_state();
  w->loop();
  drain_local_cache(w);
  sys::context_destroy(&w->core().sched_ctx);
  set_current_worker(nullptr);
}

// A new worker (pool slot `index`, or -1 for a bound or fork worker) and
// its KLT, running loop(). `role` names it in errors.
absl::StatusOr<std::unique_ptr<Worker>> launch_worker(Scheduler* s, int index, bool bound, const char* name,
                                                       const char* role) {
  auto w = std::make_unique<Worker>();
  w->sched = s;
  w->index = index;
  w->is_bound = bound;
  w->core_before_start().rng = 0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(index + 2) + reinterpret_cast<uintptr_t>(w.get());
  w->poller = s->make_poller(index);
  if (s->tracer != nullptr) w->trace = index >= 0 && !bound ? s->tracer->new_worker_ring() : s->tracer->shared();
  sys::KltOptions ko;
  ko.stack_size = kWorkerStack;
  ko.name = name;
  sigset_t mask;  // constant for the KLT's life (runtime/signal.cc)
  sig::worker_kernel_mask(&mask);
  ko.sigmask = &mask;
  const char* what = nullptr;
  int r = sys::klt_create(worker_main, w.get(), ko, &w->klt, &what);
  if (r != 0) return klt_error(r, what, role);
  return w;
}

absl::Status validate_stack_size(size_t n, const char* what) {
  if (n != 0 && (n < kMinStackSize || n > kMaxStackSize))
    return absl::InvalidArgumentError(absl::StrCat(what, " ", n, " is outside [", kMinStackSize, ", ", kMaxStackSize,
                                                   "] (0 = the default)"));
  return absl::OkStatus();
}

// Options outside their range are the caller's error, reported by
// Runtime::status() (the constructor never throws): nothing is allocated
// or started for them.
absl::Status validate_options(const Options& o) {
  if (o.workers < 0 || o.workers > kMaxWorkers)
    return absl::InvalidArgumentError(absl::StrCat("Options::workers ", o.workers, " is outside [0, ", kMaxWorkers, "]"));
  if (o.max_workers < 0 || o.max_workers > kMaxWorkers)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::max_workers ", o.max_workers, " is outside [0, ", kMaxWorkers, "]"));
  if (o.max_workers > 0 && o.max_workers < o.workers)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::max_workers ", o.max_workers, " is below Options::workers ", o.workers));
  if (absl::Status s = validate_stack_size(o.stack_size, "Options::stack_size"); !s.ok()) return s;
  if (o.blocking_handoff.count() < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::blocking_handoff is negative (", o.blocking_handoff.count(), " us)"));
  if (o.time_slice.count() < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::time_slice is negative (", o.time_slice.count(), " us)"));
  if (o.hang_dump.count() < 0)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::hang_dump is negative (", o.hang_dump.count(), " ms)"));
  if (o.trace_events != 0 && (o.trace_events < kMinTraceEvents || o.trace_events > kMaxTraceEvents))
    return absl::InvalidArgumentError(absl::StrCat("Options::trace_events ", o.trace_events, " is outside [",
                                                   kMinTraceEvents, ", ", kMaxTraceEvents, "] (or 0)"));
  if (o.fd_table_slots < -1)
    return absl::InvalidArgumentError(
        absl::StrCat("Options::fd_table_slots ", o.fd_table_slots, " is below -1 (-1: the default, 0: off)"));
  if (o.fd_table_slots > 0) {
    long limit = sys::nofile_soft_limit();
    if (limit >= 0 && o.fd_table_slots > limit)
      return absl::InvalidArgumentError(absl::StrCat("Options::fd_table_slots ", o.fd_table_slots,
                                                     " is above the soft RLIMIT_NOFILE (", limit,
                                                     "): raise the limit first, or ask for fewer"));
  }
  return absl::OkStatus();
}

}  // namespace

// Grows the descriptor table as Options::fd_table_slots asks (see there
// and sys/fd_table.h), before the runtime starts a thread: growing it
// later, with several threads, makes each doubling wait for an RCU grace
// period with every thread that opens a descriptor. Also called by the
// atfork child (fork.cc): a fork child's table is sized to fit the
// descriptors open at the fork, and the child's runtime is rebuilt.
void grow_fd_table(int asked) {
  if (asked == 0) return;
  int slots = asked;
  if (asked < 0) {
    long limit = sys::nofile_soft_limit();
    if (limit <= 0) return;
    slots = static_cast<int>(std::min<long>(limit, kDefaultFdTableSlots));
  }
  if (int r = sys::grow_fd_table(slots); r != 0)
    log().warn("could not grow the descriptor table to {} slots ({}): growing it later may stall every thread "
               "that opens a descriptor for an RCU grace period (Options::fd_table_slots)",
               slots, strerror(-r));
}

Worker::~Worker() { close_stat_file(); }

void Worker::open_stat_file(int for_tid) {
  int fd = sys::task_stat_open(for_tid);
  stat_fd.store(fd >= 0 ? fd : -1, std::memory_order_relaxed);
}

void Worker::close_stat_file() {
  int fd = stat_fd.exchange(-1, std::memory_order_relaxed);
  if (fd >= 0) sys::close_fd(fd);
}

absl::Status validate_spawn_stack_size(size_t n) { return validate_stack_size(n, "SpawnOptions::stack_size"); }

Scheduler::Scheduler(const Options& o) : opts(o) {
  start_status = validate_options(o);
  if (!start_status.ok()) return;  // start() returns it
  int cpus = online_cpus();
  if (opts.workers == 0) opts.workers = std::min(cpus, opts.max_workers > 0 ? opts.max_workers : kMaxWorkers);
  max_workers = opts.max_workers > 0 ? opts.max_workers : std::min(std::max(opts.workers, 4 * cpus), kMaxWorkers);
  default_stack_size = sys::round_to_pages(opts.stack_size == 0 ? kDefaultStackSize : opts.stack_size);
  poller_factory = registered_poller_factory(&poller_ctx);
  blocking_threshold_ns = detail::saturating_ns(opts.blocking_handoff).count();
  if (blocking_threshold_ns < 0) blocking_threshold_ns = 0;
  time_slice_ns = detail::saturating_ns(opts.time_slice).count();
  slots = std::make_unique<std::atomic<Worker*>[]>(static_cast<size_t>(max_workers));
  for (int i = 0; i < max_workers; ++i) slots[static_cast<size_t>(i)].store(nullptr, std::memory_order_relaxed);
  start_status = make_tracer();
}

// The tracer Options::trace_file or WEFT_TRACE asks for (see Options).
absl::Status Scheduler::make_tracer() {
  uint32_t events = opts.trace_events;
  if (events == 0) {
    events = kDefaultTraceEvents;
    if (const char* e = getenv("WEFT_TRACE_EVENTS"); e != nullptr && *e != '\0') {
      char* end = nullptr;
      unsigned long v = strtoul(e, &end, 10);
      if (*end == '\0' && v >= kMinTraceEvents && v <= kMaxTraceEvents) {
        events = static_cast<uint32_t>(v);
      } else {
        sys::raw_logf("weft: WEFT_TRACE_EVENTS=%s is not a number in [%u, %u]: %u used", e, kMinTraceEvents,
                      kMaxTraceEvents, kDefaultTraceEvents);
      }
    }
  }
  if (!opts.trace_file.empty()) {
    absl::StatusOr<std::unique_ptr<trace::Tracer>> t = trace::Tracer::create(opts.trace_file, events);
    if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("Options::trace_file: ", t.status().message()));
    tracer = std::move(*t);
    return absl::OkStatus();
  }
  const char* env = getenv("WEFT_TRACE");
  if (env == nullptr || *env == '\0') return absl::OkStatus();
  // The runtimes made since WEFT_TRACE last changed (this one included).
  static std::mutex env_lock;
  static std::string env_seen;
  static int env_runtimes = 0;
  int n;
  {
    std::lock_guard<std::mutex> g(env_lock);
    if (env_seen != env) {
      env_seen = env;
      env_runtimes = 0;
    }
    n = ++env_runtimes;
  }
  std::string path = env;
  if (n > 1) {
    std::string suffix = absl::StrCat("-", n);
    if (path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
      path.insert(path.size() - 5, suffix);
    } else {
      path += suffix;
    }
  }
  absl::StatusOr<std::unique_ptr<trace::Tracer>> t = trace::Tracer::create(path, events);
  if (!t.ok()) {
    sys::raw_logf("weft: WEFT_TRACE: %s: this runtime runs without a trace", std::string(t.status().message()).c_str());
    return absl::OkStatus();
  }
  tracer = std::move(*t);
  return absl::OkStatus();
}

std::unique_ptr<Poller> Scheduler::make_poller(int index) {
  std::unique_ptr<Poller> p;
  if (poller_factory != nullptr) p = poller_factory(index, poller_ctx);
  if (!p) p = std::make_unique<FutexPoller>();
  return p;
}

absl::StatusOr<Worker*> Scheduler::start_fork_worker_locked() {
  absl::StatusOr<std::unique_ptr<Worker>> w = launch_worker(this, -1, true, "weft-fork", "fork");
  if (!w.ok()) return w.status();
  fork_worker = std::move(*w);
  return fork_worker.get();
}

absl::Status Scheduler::start_monitor_locked() {
  sys::KltOptions ko;
  ko.stack_size = kWorkerStack;
  ko.name = "weft-monitor";
  sigset_t mask;  // runs no ULT: the signal KLT or the application's threads take signals
  sig::worker_kernel_mask(&mask);
  sigaddset(&mask, SIGRTMAX - 1);
  ko.sigmask = &mask;
  const char* what = nullptr;
  int r = sys::klt_create(monitor_main, this, ko, &monitor, &what);
  if (r != 0) return klt_error(r, what, "monitor");
  return absl::OkStatus();
}

Scheduler::~Scheduler() {
  (void)shutdown();
}

absl::StatusOr<Worker*> Scheduler::start_worker(int index) {
  char name[16];
  snprintf(name, sizeof name, "weft-w%d", index);
  absl::StatusOr<std::unique_ptr<Worker>> w = launch_worker(this, index, false, name, "worker");
  if (!w.ok()) return w.status();
  Worker* raw = w->get();
  worker_storage.push_back(std::move(*w));
  slots[static_cast<size_t>(index)].store(raw, std::memory_order_release);
  nworkers.store(index + 1, std::memory_order_release);
  return raw;
}

absl::Status Scheduler::start_workers_locked(int n) {
  for (int i = nworkers.load(std::memory_order_relaxed); i < n; ++i) {
    absl::StatusOr<Worker*> w = start_worker(i);
    if (!w.ok()) return w.status();
  }
  return absl::OkStatus();
}

absl::Status Scheduler::start() {
  if (!start_status.ok()) {  // invalid Options (constructor)
    gate.fetch_or(kClosed, std::memory_order_acq_rel);
    return start_status;
  }
  grow_fd_table(opts.fd_table_slots);  // before weft starts a thread of its own
  const char* what = nullptr;
  if (int r = sys::klt_backend_init(&what); r != 0) {
    start_status = klt_error(r, what, "first");
    return start_status;
  }
  install_fork_handlers();
  credentials_linked();
  if (!sig::start(&what)) {
    start_status = absl::ResourceExhaustedError(std::string("cannot start the signal kernel thread: ") +
                                                (what ? what : "?"));
    return start_status;
  }
  if (time_slice_ns > 0) preempt::prepare();  // the code a ULT may be preempted in (preempt.cc)
  // Listed before any KLT starts: a fork from here on finds this runtime,
  // takes its locks and rebuilds it in the child (fork.cc).
  {
    LockGuard<KltMutex> rg(globals().runtimes_lock);
    globals().runtimes.push_back(this);
  }
  {
    LockGuard<KltMutex> g(concurrency_lock);
    start_status = start_workers_locked(opts.workers);
    if (start_status.ok()) start_status = start_monitor_locked();
    if (start_status.ok()) {
      // Workers started before `active` covered them and went to sleep as
      // retired; wake them so they register as active idle workers.
      active.store(opts.workers, std::memory_order_release);
      for (int i = 0; i < opts.workers; ++i) wake_worker(worker_at(i));
    }
  }
  if (!start_status.ok()) {
    // Close the runtime and stop what did start.
    gate.fetch_or(kClosed, std::memory_order_acq_rel);
    (void)shutdown();
    return start_status;
  }
  log().debug("runtime started: {} workers (max {}), {} KiB stacks, KLT backend {}", opts.workers,
              max_workers, default_stack_size / 1024, sys::klt_backend_name());
  return absl::OkStatus();
}

bool Scheduler::can_take_slot(const Worker* c) {
  return c->current.load(std::memory_order_relaxed) == nullptr && (c->blocking.load(std::memory_order_acquire) & 3) == 0 &&
         c->inbox_count.load(std::memory_order_relaxed) == 0 && !c->stop.load(std::memory_order_relaxed);
}

void Scheduler::swap_slots_locked(int i, int j) {
  Worker* a = worker_at(i);
  Worker* b = worker_at(j);
  slots[static_cast<size_t>(i)].store(b, std::memory_order_release);
  slots[static_cast<size_t>(j)].store(a, std::memory_order_release);
  b->index.store(i, std::memory_order_release);
  a->index.store(j, std::memory_order_release);
}

absl::Status Scheduler::set_concurrency(int n) {
  if (!start_status.ok()) return absl::FailedPreconditionError(absl::StrCat("the runtime did not start: ", start_status.ToString()));
  if (n < 1 || n > max_workers)
    return absl::InvalidArgumentError(absl::StrCat("concurrency ", n, " is outside [1, ", max_workers, "]"));
  // Never blocks for long: concurrency_lock is held only for short work
  // (shutdown takes it after its last ULT is gone, to stop the pool).
  LockGuard<KltMutex> g(concurrency_lock);
  if (stopped.load(std::memory_order_acquire) || !start_status.ok())
    return absl::FailedPreconditionError("the runtime is not running");
  if (absl::Status s = start_workers_locked(n); !s.ok()) return s;
  // Raising: a slot about to become active may hold a worker still inside
  // a blocking region it was handed off from (or its ULT, after it): it
  // could run nothing, and the monitor cannot hand it off twice. Put an
  // idle retired worker (or a new one, within max_workers) there instead.
  for (int i = active.load(std::memory_order_relaxed); i < n; ++i) {
    if (can_take_slot(worker_at(i))) continue;
    int j = n;
    while (j < nworkers.load(std::memory_order_relaxed) && !can_take_slot(worker_at(j))) ++j;
    if (j == nworkers.load(std::memory_order_relaxed)) {
      if (j >= max_workers || !start_worker(j).ok()) break;  // keep the busy one: it returns soon
    }
    swap_slots_locked(i, j);
  }
  int old = active.exchange(n, std::memory_order_acq_rel);
  // Raised: retired workers wake up and look for work. Lowered: the retired
  // ones wake up, notice, and hand their queues over.
  int lo = std::min(old, n), hi = std::max(old, n);
  for (int i = lo; i < hi; ++i) wake_worker(worker_at(i));
  if (n > old) notify_work();
  log().debug("concurrency {} -> {}", old, n);
  return absl::OkStatus();
}

// Bound workers. A bound ULT gets a KLT of its own that ends with it: when
// the ULT exits, its worker's loop calls bound_done and returns, and the KLT
// exits like a thread — its thread_local and pthread-key destructors run
// then, and the next bound ULT starts on a fresh thread (fresh
// thread_locals, locale, thread name, signal mask and CPU affinity; sys/
// caches KLT stacks and TLS blocks, so this costs a clone, not mmaps).
// bound_done moves the worker to bound_finished; reap_bound_workers (at the
// next bound spawn, and at shutdown) frees those whose KLT has exited.
//
// Freeing a Worker needs one more guarantee: a thread that made the bound
// ULT runnable (make_runnable, submit_new) read u->home and still calls
// wake_worker(home) after the push, by which time the ULT may have run,
// exited and its worker finished. Such a waker raises home->wakers before
// the push (the ULT cannot run, so cannot exit, before the push) and lowers
// it after its last access; reap waits for 0 before it frees the worker.
absl::StatusOr<Worker*> Scheduler::take_bound_worker() {
  reap_bound_workers(false);
  LockGuard<KltMutex> g(bound_lock);
  char name[16];
  snprintf(name, sizeof name, "weft-b%llu", static_cast<unsigned long long>(bound_made++ % 1000000));
  absl::StatusOr<std::unique_ptr<Worker>> w = launch_worker(this, -1, true, name, "bound-ULT");
  if (!w.ok()) return w.status();
  bound_all.push_back(std::move(*w));
  bound_busy.fetch_add(1, std::memory_order_relaxed);
  return bound_all.back().get();
}

// The bound worker `w` will run no (more) ULT: on its own KLT after its ULT
// exited (its loop returns next), or from spawn when create_ult failed
// after the worker was made (it is stopped and woken).
void Scheduler::bound_done(Worker* w) {
  {
    LockGuard<KltMutex> g(bound_lock);
    bound_finished.push_back(w);
    bound_busy.fetch_sub(1, std::memory_order_relaxed);
    w->stop.store(true, std::memory_order_release);
  }
  if (w != current_worker()) w->poller->wake();
}

void Scheduler::reap_bound_workers(bool all) {
  std::vector<std::unique_ptr<Worker>> reaped;
  {
    LockGuard<KltMutex> g(bound_lock);
    for (size_t i = 0; i < bound_finished.size();) {
      Worker* w = bound_finished[i];
      // Its KLT is gone (clone: the kernel cleared the tid; pthread: fn
      // returned), or, at shutdown, it is about to be: join below.
      if (!all && w->klt != nullptr && sys::klt_tid(w->klt) != 0) {
        ++i;
        continue;
      }
      bound_finished[i] = bound_finished.back();
      bound_finished.pop_back();
      auto it = std::find_if(bound_all.begin(), bound_all.end(), [w](auto& p) { return p.get() == w; });
      WEFT_DCHECK(it != bound_all.end(), "finished bound worker not in bound_all");
      // Its counters are final (its ULT exited; spawns from its KLT's
      // thread_local destructors count as foreign): fold them in first,
      // then drop the worker from bound_all, in one critical section, so
      // live_ults() sees each count exactly once.
      bound_reaped_created.fetch_add(w->created.load(std::memory_order_acquire), std::memory_order_release);
      bound_reaped_exited.fetch_add(w->exited.load(std::memory_order_acquire), std::memory_order_release);
      reaped.push_back(std::move(*it));
      bound_all.erase(it);
    }
  }
  for (auto& w : reaped) {
    if (w->klt != nullptr) sys::klt_join(w->klt);
    w->klt = nullptr;
    while (w->wakers.load(std::memory_order_acquire) != 0) sys::sched_yield();
  }
}

absl::Status Scheduler::shutdown() {
  // From a ULT of this runtime it would wait for itself. Inside a
  // weft::blocking() region current_ult() is null, but the KLT is still one
  // of this runtime's workers (a bound one too), running the region's ULT.
  if (Worker* w = current_worker(); w != nullptr && w->sched == this)
    return absl::FailedPreconditionError(
        "shutdown() called from a ULT of the runtime it would wait for (also inside weft::blocking())");
  // One shutdown at a time; a second caller waits here for the first, then
  // returns OK. No ULT of this runtime ever takes shutdown_lock (above).
  LockGuard<KltMutex> sg(shutdown_lock);
  absl::Status s = shutdown_locked();
  // Unlisted outside concurrency_lock: fork's prepare takes runtimes_lock
  // before each runtime's concurrency_lock (fork.cc, lock order).
  LockGuard<KltMutex> rg(globals().runtimes_lock);
  auto& v = globals().runtimes;
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
  return s;
}

// shutdown's work; the caller holds shutdown_lock.
absl::Status Scheduler::shutdown_locked() {
  if (stopped.load(std::memory_order_acquire)) return absl::OkStatus();
  shutting_down.store(true, std::memory_order_seq_cst);
  // Wait for the last ULT; then close the gate (spawns fail from here on).
  // concurrency_lock is NOT held while waiting: the ULTs we wait for may
  // call set_concurrency() (which works until the runtime has stopped), and
  // the monitor may still hand off a worker blocked in a region.
  for (;;) {
    uint32_t seen = exit_signal.load(std::memory_order_acquire);
    if (live_ults() == 0) {
      uint64_t idle = 0;
      if (gate.compare_exchange_strong(idle, kClosed, std::memory_order_acq_rel) || (idle & kClosed)) {
        // A foreign spawn may have completed between the count and the
        // close; if so, wait for it too (the gate stays closed).
        if (live_ults() == 0) break;
      }
    }
    timespec backstop{0, 2 * 1000 * 1000};
    sys::futex_wait_for(&exit_signal, seen, &backstop);
  }
  // A foreign waker (unpark from a thread that is not one of our workers)
  // may still be inside make_runnable() for a ULT that has since run and
  // exited: it reads the workers to wake one. Wait until it is out, so that
  // ~Runtime cannot free them under it. Found by the TSan gate (a data race
  // between ~UringEngine and UringEngine::wake() from a foreign unpark).
  while (foreign_wakers.load(std::memory_order_acquire) != 0) sys::sched_yield();
  // Likewise the signal KLT's scan (signal.cc, nudge), which reads the
  // worker of a ULT it saw running (TSan: a race with ~Worker).
  sig::forget_workers();
  // No ULT is left, and none can be made: stop the pool. Under
  // concurrency_lock, so that a set_concurrency() or a handoff in progress
  // finishes first and later ones see `stopped`.
  LockGuard<KltMutex> g(concurrency_lock);
  stopped.store(true, std::memory_order_release);
  for (auto& w : worker_storage) {
    w->stop.store(true, std::memory_order_release);
    w->poller->wake();
  }
  {
    // Every bound ULT has exited: each bound worker is finished or about to
    // call bound_done; stop them all anyway (a worker made for a spawn that
    // failed is already stopped).
    LockGuard<KltMutex> bg(bound_lock);
    for (auto& w : bound_all) {
      w->stop.store(true, std::memory_order_release);
      w->poller->wake();
    }
  }
  if (monitor != nullptr) {
    monitor_word.store(1, std::memory_order_seq_cst);
    sys::futex_wake(&monitor_word, 1);
    monitor_idle.store(0, std::memory_order_seq_cst);  // out of the long sleep too
    sys::futex_wake(&monitor_idle, 1);
    sys::klt_join(monitor);  // it only ever try_locks concurrency_lock
    monitor = nullptr;
  }
  {
    // The fork KLT (fork.cc): no ULT is on it once none is live.
    LockGuard<KltMutex> bg(bound_lock);
    if (fork_worker != nullptr && fork_worker->klt != nullptr) {
      fork_worker->stop.store(true, std::memory_order_release);
      fork_worker->poller->wake();
      sys::klt_join(fork_worker->klt);
      fork_worker->klt = nullptr;
    }
  }
  for (auto& w : worker_storage) {
    if (w->klt != nullptr) sys::klt_join(w->klt);
    w->klt = nullptr;
  }
  // Bound KLTs: wait until every one has called bound_done (its loop sees
  // `stop`), then join and free them all, outside bound_lock (their
  // thread_local destructors may take it).
  for (;;) {
    {
      LockGuard<KltMutex> bg(bound_lock);
      for (auto& w : bound_all) {
        if (std::find(bound_finished.begin(), bound_finished.end(), w.get()) == bound_finished.end() &&
            !w->stop.load(std::memory_order_acquire)) {
          w->stop.store(true, std::memory_order_release);
          w->poller->wake();
        }
      }
      bool all_finished = bound_finished.size() == bound_all.size();
      if (all_finished) break;
    }
    sys::sched_yield();
  }
  reap_bound_workers(true);
  log().debug("runtime stopped");
  if (tracer != nullptr) {
    // Every KLT that records is joined (trace.h's invariant).
    if (absl::Status t = tracer->write(); !t.ok()) {
      sys::raw_logf("weft: %s", std::string(t.message()).c_str());
      return t;
    }
  }
  return absl::OkStatus();
}

uint64_t Scheduler::live_ults() const {
  // The order of the passes is what makes a zero trustworthy (scheduler.h).
  uint64_t e = 0, c = 0;
  int n = nworkers.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) e += worker_at(i)->exited.load(std::memory_order_acquire);
  {
    LockGuard<KltMutex> g(const_cast<KltMutex&>(bound_lock));
    e += bound_reaped_exited.load(std::memory_order_acquire);
    for (auto& w : bound_all) e += w->exited.load(std::memory_order_acquire);
  }
  full_fence();
  c = foreign_created.load(std::memory_order_acquire);
  n = nworkers.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) c += worker_at(i)->created.load(std::memory_order_acquire);
  {
    LockGuard<KltMutex> g(const_cast<KltMutex&>(bound_lock));
    c += bound_reaped_created.load(std::memory_order_acquire);
    for (auto& w : bound_all) c += w->created.load(std::memory_order_acquire);
  }
  return c - e;
}

RuntimeStats Scheduler::stats() const {
  RuntimeStats r;
  int n = nworkers.load(std::memory_order_acquire);
  int act = active.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    const Worker* w = worker_at(i);
    WorkerStats ws;
    ws.index = i;
    ws.tid = w->tid.load(std::memory_order_relaxed);
    ws.active = i < act;
    ws.switches = w->switches.load(std::memory_order_relaxed);
    ws.steals = w->steals.load(std::memory_order_relaxed);
    ws.parks = w->parks.load(std::memory_order_relaxed);
    ws.sleeps = w->sleeps.load(std::memory_order_relaxed);
    ws.spawned = w->created.load(std::memory_order_relaxed);
    ws.reaped = w->reaped.load(std::memory_order_relaxed);
    r.reaped += ws.reaped;
    int64_t d = w->deque.size_approx();
    ws.queued = static_cast<uint64_t>(std::max<int64_t>(0, d)) +
                (w->run_next.load(std::memory_order_relaxed) != nullptr ? 1 : 0) +
                w->inbox_count.load(std::memory_order_relaxed);
    ws.idle_ns = w->idle_ns.load(std::memory_order_relaxed);
    ws.blocking_ns = w->blocking_ns.load(std::memory_order_relaxed);
    int64_t started = w->started_ns.load(std::memory_order_relaxed);
    if (started != 0) ws.busy_ns = std::max<int64_t>(0, monotonic_ns() - started - ws.idle_ns - ws.blocking_ns);
    if (w->poller != nullptr) {
      const Poller::Counters& pc = w->poller->counters();
      ws.io_submitted = pc.submitted.load(std::memory_order_relaxed);
      ws.io_completed = pc.completed.load(std::memory_order_relaxed);
      ws.io_enters = pc.enters.load(std::memory_order_relaxed);
    }
    r.workers.push_back(ws);
  }
  uint64_t exited = 0, created = foreign_created.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    exited += worker_at(i)->exited.load(std::memory_order_relaxed);
    created += worker_at(i)->created.load(std::memory_order_relaxed);
  }
  {
    LockGuard<KltMutex> g(const_cast<KltMutex&>(bound_lock));
    exited += bound_reaped_exited.load(std::memory_order_relaxed);
    created += bound_reaped_created.load(std::memory_order_relaxed);
    for (auto& w : bound_all) {
      exited += w->exited.load(std::memory_order_relaxed);
      created += w->created.load(std::memory_order_relaxed);
    }
  }
  r.spawned = created;
  r.exited = exited;
  r.live = live_ults();
  UltCounts by_state = count_ults(this);
  r.ults_running = by_state.running;
  r.ults_runnable = by_state.runnable;
  r.ults_parked = by_state.parked;
  r.ults_exited_unjoined = by_state.exited_unjoined;
  r.global_queued = static_cast<uint64_t>(std::max<int64_t>(
      0, global_count.load(std::memory_order_relaxed) + high_count.load(std::memory_order_relaxed) +
             bg_count.load(std::memory_order_relaxed)));
  r.reaped += monitor_reaped.load(std::memory_order_relaxed);
  r.cached = death_row().cached();
  r.stacks_mapped = death_row().mapped();
  r.stacks_unmapped = death_row().unmapped();
  r.bound_threads = bound_busy.load(std::memory_order_relaxed);
  r.handoffs = handoffs.load(std::memory_order_relaxed);
  r.kernel_block_handoffs = kernel_block_handoffs.load(std::memory_order_relaxed);
  r.hog_rescues = hog_rescues.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) r.timers_pending += const_cast<Worker*>(worker_at(i))->timers.size();
  {
    LockGuard<KltMutex> g(const_cast<KltMutex&>(bound_lock));
    for (auto& w : bound_all) r.timers_pending += w->timers.size();
  }
  r.timers_fired_by_monitor = timers_fired_by_monitor.load(std::memory_order_relaxed);
  for (size_t b = 0; b < r.timer_lateness.size(); ++b) r.timer_lateness[b] = timer_late[b].load(std::memory_order_relaxed);
  r.preemptions_requested = preempt_requested.load(std::memory_order_relaxed);
  r.preemptions_taken = preempt_taken.load(std::memory_order_relaxed);
  r.preemptions_deferred = preempt_deferred.load(std::memory_order_relaxed);
  r.priority_preemptions = priority_preemptions.load(std::memory_order_relaxed);
  r.priority_boosts = priority_boosts.load(std::memory_order_relaxed);
  r.background_starvation_runs = background_starvation_runs.load(std::memory_order_relaxed);
  return r;
}

}  // namespace rt

}  // namespace weft
