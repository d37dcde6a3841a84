// runtime/scheduler.h — workers, the scheduler that owns them, and the
// operations ULTs use to switch, park and exit. The design comment is at the
// top of scheduler.cc.
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "runtime/counter.h"
#include "runtime/death_row.h"
#include "runtime/intrusive_queue.h"
#include "runtime/locks.h"
#include "runtime/park.h"
#include "runtime/poller.h"
#include "runtime/timer_heap.h"
#include "runtime/trace.h"
#include "runtime/ult.h"
#include "runtime/work_deque.h"
#include "sys/context.h"
#include "sys/klt.h"
#include "sys/raw_log.h"
#include "weft/runtime.h"

namespace weft::rt {

inline constexpr size_t kDequeCapacity = 256;

// Limits of weft::Options and SpawnOptions (validated, pool.cc).
inline constexpr int kMaxWorkers = 32768;                    // workers, max_workers
inline constexpr size_t kDefaultStackSize = 64 * 1024;
inline constexpr uint32_t kMinTraceEvents = 1024;                // Options::trace_events
inline constexpr uint32_t kMaxTraceEvents = 1u << 24;
inline constexpr uint32_t kDefaultTraceEvents = 1u << 18;
// Options::fd_table_slots = -1 grows the descriptor table to min(soft
// RLIMIT_NOFILE, this).
inline constexpr int kDefaultFdTableSlots = 65536;
// Grows the process's descriptor table as Options::fd_table_slots = `asked`
// says (pool.cc); a failure is logged.
void grow_fd_table(int asked);
inline constexpr size_t kMinStackSize = 16 * 1024;
inline constexpr size_t kMaxStackSize = size_t{1} << 40;      // 1 TiB (sys/stack.cc's limit)
// InvalidArgument if a nonzero SpawnOptions::stack_size is out of range.
absl::Status validate_spawn_stack_size(size_t n);

// What the context that switches away asks the context it switches to to do
// once the switch is complete (the switcher is then off its stack). Packed
// with the switcher's descriptor (64-byte aligned) into the transfer value.
enum class SwitchAction : uintptr_t {
  kNone = 0,         // nothing (scheduler -> ULT)
  kRequeue = 1,      // yield: put the ULT back on a run queue
  kFinishPark = 2,   // park: kParking -> kParked, or requeue if woken meanwhile
  kExit = 3,         // exit: the stack is free; someone else releases the ULT
  kExitRelease = 4,  // exit: the stack is free and the ULT is released here
  kPreempt = 5,      // time-slice preemption: queue it behind this worker's yielders (it stays here)
};

struct Worker;

// A worker's owner-only state (Tokio's `Core`): used without locks or
// atomics by the worker's own KLT — its scheduler loop, the ULTs it runs,
// and that KLT inside a blocking region before it has announced the region
// (blocking.cc). Reached only through Worker::core(), whose overloads name
// who is calling:
//  - core(): the owner (debug builds check that the caller's KLT is the
//    worker's and is not inside a blocking region);
//  - core(const HandoffClaim&): the monitor, between its claim of a
//    worker blocked in a region (flag 3 of Worker::blocking) and its
//    release (flag 2); it drains yield_queue. Only the claim
//    CAS makes a HandoffClaim, so only the protocol can reach the state
//    from another thread;
//  - core_in_fork_child(): the one KLT of a forked child, rebuilding the
//    pool (the owners do not exist there);
//  - core_before_start(): the creator, before the worker's KLT exists.
struct WorkerCore {
  sys::Context sched_ctx;         // the KLT's own stack, where loop() runs
  uint64_t tick = 0;              // scheduler-loop passes
  int32_t until_loop = 1;         // direct switches left before one goes via loop() (<= 0: due)
  int* errno_ptr = nullptr;       // this KLT's errno (fixed for the KLT's life)
  void* eh_globals = nullptr;     // this KLT's __cxa_eh_globals (fixed likewise)
  uint64_t rng = 0;
  bool spinning = false;          // counted in Scheduler::nmspinning
  // A ULT was queued here (spawn, wake) while the deque was empty, and no
  // idle worker was woken for it yet: this worker will probably run it
  // itself at its next switch. If it is still queued at that switch (or at
  // the monitor's next tick), idle workers are notified then.
  bool notify_deferred = false;
  LocalCache cache;               // recycled descriptors with stacks
  // ULTs that yielded here, and ULTs woken from this worker's scheduler
  // loop (io completions, timers), FIFO, not stealable: yield between ULTs
  // of one worker then needs no atomic operation. When other workers are
  // idle, the scheduler loop moves every other one of them to the global
  // queue (spill_half_of_yield_queue); a retired worker hands all of them
  // over; the worker never sleeps while this queue holds a ULT.
  //
  // Served at a bounded interval even while run_next and the deque never
  // empty (issue 13: a spawn chain starved a woken sleeper for 0.4-1 s):
  // a scheduler pass that finds both local work and yielders runs the
  // oldest yielder and grants the rest a turn (yield_turns): pick_local
  // then takes that many from this queue before run_next and the deque.
  // Batches and the deque alternate: no pass grants more while a batch is
  // in progress, and after one the next pass leaves run_next and the deque
  // their turn (deque_turn_owed). A ULT queued here therefore waits at
  // most the batch ahead of it plus about 2 x kGlobalEvery switches; one in
  // the deque, at most one batch (the yield queue's length) per
  // kGlobalEvery of the deque's own switches.
  IntrusiveQueue<UltDesc> yield_queue;
  uint32_t yield_turns = 0;
  // A batch of turns was granted since run_next and the deque last had
  // theirs: the next pass that finds the batch used up gives them theirs
  // instead of granting another (find_runnable_inner).
  bool deque_turn_owed = false;
  // Preempted ULTs of high and background priority (they resume on this
  // worker, like every preempted ULT): high ones run right after the
  // scheduler-wide high queue, background ones after all normal work
  // (or once they waited past the background bound). The yield queue
  // holds the normal ones.
  IntrusiveQueue<UltDesc> stay_high;
  IntrusiveQueue<UltDesc> stay_bg;
};

// The monitor's claim on a worker blocked in a region (monitor.cc,
// handoff): made only by Worker::claim_for_handoff's CAS (epoch,1) ->
// (epoch,3), given back by Worker::end_handoff, which publishes
// (epoch+1,2). While it exists the worker's KLT does not touch its core.
class HandoffClaim {
 public:
  HandoffClaim(const HandoffClaim&) = delete;
  HandoffClaim& operator=(const HandoffClaim&) = delete;
  HandoffClaim(HandoffClaim&&) = default;
  Worker* worker() const { return w_; }

 private:
  friend struct Worker;
  HandoffClaim(Worker* w, uint64_t word) : w_(w), word_(word) {}
  Worker* w_;
  uint64_t word_;  // the blocking word as claimed (epoch, 3)
};

// A kernel thread running ULTs. Fields are grouped by who may touch them;
// the owner-only ones are in WorkerCore.
struct alignas(64) Worker {
  // --- fixed at creation ------------------------------------------------------
  struct Scheduler* sched = nullptr;
  // Slot in Scheduler::slots: [0, active) run ULTs, the rest are retired or
  // spare. Changes when a blocking-region handoff swaps two workers' slots
  // (monitor.cc); -1 for bound workers.
  std::atomic<int> index{-1};
  bool is_bound = false;          // runs only the bound ULTs in its inbox
  sys::Klt* klt = nullptr;
  std::atomic<int> tid{0};
  // A pool worker's /proc stat file (sys::task_stat_open of its tid), for
  // the monitor's and preemption's task-state reads; -1 for bound workers
  // and while unopened. Invariant: written by the worker's KLT before it
  // publishes `tid` (release), or in a fork child before other threads
  // exist, and closed only by ~Worker or forget_worker (no reader is left
  // then): a reader that saw tid != 0 with acquire reads it unchanged.
  std::atomic<int> stat_fd{-1};
  std::unique_ptr<Poller> poller;
  ~Worker();
  // Opens stat_fd for thread `tid` (left -1 if that fails); closes it.
  // Raw system calls only: both also run in a fork child.
  void open_stat_file(int tid);
  void close_stat_file();

  // --- owner only -------------------------------------------------------------
  inline WorkerCore& core();  // the owner (checked in debug builds)
  WorkerCore& core(const HandoffClaim& c) {
    WEFT_DCHECK(c.worker() == this, "a handoff claim used on another worker");
    return core_;
  }
  WorkerCore& core_in_fork_child() { return core_; }
  WorkerCore& core_before_start() { return core_; }
  // ULT running now; null while in loop(). Written only by the owner;
  // read by others (adaptive mutex spinning, overflow reports): relaxed.
  std::atomic<UltDesc*> current{nullptr};

  // --- shared ---------------------------------------------------------------
  WorkDeque<UltDesc, kDequeCapacity> deque;  // owner pushes/pops, anyone steals
  std::atomic<UltDesc*> run_next{nullptr};   // woken ULT to run next; thieves may take it
  KltMutex inbox_lock;                   // guards inbox
  IntrusiveQueue<UltDesc> inbox;         // ULTs that must run here (pinned, bound)
  std::atomic<uint32_t> inbox_count{0};
  bool woken_spinning = false;           // guarded by Scheduler::idle_lock
  bool in_idle_set = false;              // guarded by Scheduler::idle_lock
  std::atomic<bool> stop{false};         // leave loop() (shutdown, or a bound worker whose ULT is gone)
  // Bound workers: threads between "took u->home" and "done waking it"
  // (make_runnable, submit_new). A finished bound worker is freed only when
  // this is 0, so a waker never touches a freed Worker (pool.cc,
  // "Bound workers").
  std::atomic<int> wakers{0};
  // Blocking regions (weft::blocking, runtime/blocking.cc). While a ULT is
  // inside one, its worker's `current` is null (weft calls made there act as
  // on a foreign thread: they block the KLT) and the worker's KLT promises
  // not to touch the owner-only state (WorkerCore) until it leaves the region. The
  // monitor may then take that state and give the worker's slot to a spare
  // worker (a handoff). The word: epoch << 2 | flag, flag 0 = not blocking,
  // 1 = blocking, 3 = being handed off (the monitor is moving the state),
  // 2 = handed off. The monitor claims with CAS (epoch,1) -> (epoch,3) and
  // publishes (epoch+1,2) when done; the leaving KLT's CAS (epoch,1) ->
  // (epoch,0) fails exactly when it lost its slot, and then it waits out
  // flag 3 before it touches anything.
  std::atomic<uint64_t> blocking{0};
  std::atomic<int64_t> blocking_since_ns{0};
  UltDesc* blocking_ult = nullptr;            // the ULT inside the region (overflow reports)
  std::atomic<bool> in_blocking{false};   // flag != 0, for readers that need one load
  // Timed parks made by ULTs while they ran here (timer_heap.h): fired by
  // the owner at its scheduler passes and by the monitor while the owner
  // runs a ULT or is blocked in a region. Never moved.
  TimerHeap timers;
  // The monitor's claim on this worker, blocked in the region that `word`
  // (flag 1) describes: the CAS to flag 3, or nothing if the region ended
  // or changed meanwhile. end_handoff publishes (epoch+1, 2).
  std::optional<HandoffClaim> claim_for_handoff(uint64_t word) {
    WEFT_DCHECK((word & 3) == 1, "claim of a worker not blocking (word %llu)", static_cast<unsigned long long>(word));
    if (!blocking.compare_exchange_strong(word, (word & ~uint64_t{3}) | 3, std::memory_order_acq_rel)) return std::nullopt;
    return HandoffClaim(this, (word & ~uint64_t{3}) | 3);
  }
  void end_handoff(HandoffClaim&& c) {
    WEFT_DCHECK(c.worker() == this, "a handoff claim ended on another worker");
    blocking.store((((c.word_ >> 2) + 1) << 2) | 2, std::memory_order_release);  // done: the KLT may look again
  }
  // Monitor-only bookkeeping (monitor.cc): the switch count it saw last and
  // since when it has not changed.
  uint64_t monitor_seen = 0;
  int64_t monitor_stalled_since = 0;
  int64_t monitor_preempt_sent = 0;  // when it last asked this worker to preempt
  long long monitor_cpu_ns = 0;      // its KLT's CPU clock at the last sample,
  int64_t monitor_cpu_at = 0;        // taken then (0: no sample for this stall)
  int monitor_asleep = 0;            // consecutive samples that found its KLT asleep in the kernel
  // A time-slice preemption asked by the monitor (preempt.cc): the switch
  // count (switches + sleeps) it saw, plus one; 0 = none. Moot once the
  // count has moved.
  std::atomic<uint64_t> preempt_at{0};

  // --- counters: the owner increments, anyone reads ---------------------------
  std::atomic<uint64_t> switches{0}, steals{0}, parks{0}, sleeps{0}, reaped{0};
  // Time asleep in poller->wait and inside ended blocking regions, ns (the
  // owner adds: bump_by); when its KLT started (before tid is
  // published). For WorkerStats.
  std::atomic<int64_t> idle_ns{0}, blocking_ns{0};
  std::atomic<int64_t> started_ns{0};
  // Live accounting (see Scheduler::live_ults): ULTs spawned by ULTs running
  // here, and ULTs that exited here. Release stores, acquire loads.
  alignas(64) std::atomic<uint64_t> created{0};
  std::atomic<uint64_t> exited{0};

  bool active() const { return !is_bound && index.load(std::memory_order_relaxed) < sched_active(); }
  int sched_active() const;
  void loop();
  UltDesc* find_runnable();
  UltDesc* find_runnable_inner();
  void stop_spinning();
  UltDesc* pick_local(bool for_yield);
  // Work that only this worker's scheduler loop does: it is retired (hand
  // its queues over), ULTs that must run here wait in the inbox, or io
  // completions wait to be reaped. (pick_local, yield_current, loop_owed.)
  bool loop_work_waiting() const {
    return !active() || inbox_count.load(std::memory_order_relaxed) != 0 || poller->needs_poll();
  }
  // A timer of this worker's heap is due (lock-free look).
  bool timer_due() {
    int64_t e = timers.earliest();
    return e >= 0 && e <= monotonic_ns();
  }
  // Owner only: whether the ULT running here should let the scheduler loop
  // run before it goes on (the end of a blocking region, blocking.cc):
  // the worker is retired, other ULTs wait (its queues, inbox, the global
  // queue), io completions wait to be reaped, or a timer is due.
  bool loop_owed();
  void init_thread_state();  // on the worker's own KLT, before loop()
  // The yield queue's oldest ULT, to run here. Invariant: a ULT queued
  // there that must stay (UltDesc::must_stay) stays on this worker.
  UltDesc* yield_pop() {
    UltDesc* u = core_.yield_queue.pop_front();
    WEFT_DCHECK(u == nullptr || ((u->home == nullptr || u->home == this) &&
                                 (u->preempted_on == nullptr || u->preempted_on == this)),
                "ULT %u in the yield queue of worker %d must stay on another", u->index,
                index.load(std::memory_order_relaxed));
    return u;
  }
  void spill_half_of_yield_queue();  // every other queued ULT to the global queue
  void inbox_push(UltDesc* u);
  UltDesc* inbox_pop();
  // Fires this worker's due timers (the owner's loop, or the monitor):
  // their ULTs are unparked from the calling context. Counts lateness;
  // returns how many fired.
  size_t fire_timers(int64_t now);

  // The ring this worker's events go to (trace.h): its own for a pool
  // worker, the shared one for a bound or fork worker; null when the
  // runtime does not trace. Set before its KLT starts, then fixed; read
  // only by this worker's KLT (at each switch: in the padding before
  // core_, it moves no other field).
  trace::Ring* trace = nullptr;

 private:
  // On lines of its own: other threads read the counters above, and the
  // switch path writes this at every switch.
  alignas(64) WorkerCore core_;
};

// One weft::Runtime's scheduler: the pool, its queues and its caches.
struct alignas(64) Scheduler {
  explicit Scheduler(const Options& o);
  ~Scheduler();

  absl::Status start();
  absl::Status shutdown();
  absl::Status shutdown_locked();  // shutdown's work; takes concurrency_lock
  absl::Status set_concurrency(int n);
  RuntimeStats stats() const;

  // --- configuration (fixed) ---------------------------------------------------
  Options opts;
  int max_workers = 0;
  PollerFactory poller_factory = nullptr;
  void* poller_ctx = nullptr;
  absl::Status start_status;

  // --- the pool -------------------------------------------------------------------
  // slots[i] is the worker in slot i (Worker::index == i): [0, active) run
  // ULTs; [active, nworkers) are retired or spare. A handoff swaps two slots
  // (monitor.cc); readers load a slot atomically and may see either worker,
  // both of which stay valid for the runtime's life (worker_storage).
  std::vector<std::unique_ptr<Worker>> worker_storage;  // every pool worker made
  std::unique_ptr<std::atomic<Worker*>[]> slots;        // max_workers entries
  std::atomic<int> nworkers{0};                   // slots filled: [0, nworkers)
  std::atomic<int> active{0};                     // workers running ULTs: [0, active)
  KltMutex concurrency_lock;                      // serialises set_concurrency, handoffs, shutdown's stop
  KltMutex shutdown_lock;                         // one shutdown() at a time (held while it waits)
  Worker* worker_at(int i) const { return slots[static_cast<size_t>(i)].load(std::memory_order_acquire); }
  std::atomic<uint64_t> handoffs{0};              // blocking-region handoffs done
  std::atomic<uint64_t> kernel_block_handoffs{0}; // handoffs of workers found asleep in the kernel (monitor.cc)
  std::atomic<uint64_t> hog_rescues{0};           // queues taken from a long-running ULT's worker
  // Timers: how late each fired (fire time - deadline), in the buckets of
  // RuntimeStats::timer_lateness; and how many the monitor fired for a
  // busy worker.
  alignas(64) std::atomic<uint64_t> timer_late[6] = {};
  std::atomic<uint64_t> timers_fired_by_monitor{0};
  void count_timer_lateness(int64_t late_ns);

  // --- idle workers and spinning (see "Wake-ups" in scheduler.cc) ----------------
  // npidle and nmspinning are read at every spawn and wake: keep them on
  // their own line, away from anything written often.
  alignas(64) std::atomic<int> npidle{0};
  std::atomic<int> nmspinning{0};
  alignas(64) KltMutex idle_lock;
  std::vector<Worker*> idle;                      // active workers asleep in find_runnable

  // --- global injection queue -------------------------------------------------------
  alignas(64) KltMutex global_lock;
  IntrusiveQueue<UltDesc> global_queue;  // guarded by global_lock
  std::atomic<int64_t> global_count{0};

  // --- priorities (see "Priorities" in scheduler.cc) ---------------------------------
  // Runnable ULTs of high and background priority wait here, scheduler-wide
  // (FIFO each); normal ones use the per-worker queues and the global one.
  // Every switch looks at high_count (pick_local); the counts are also part
  // of the idle re-check (the wake-up handshake), like global_count.
  alignas(64) std::atomic<int64_t> high_count{0};
  std::atomic<int64_t> bg_count{0};
  KltMutex prio_lock;
  IntrusiveQueue<UltDesc> high_queue, bg_queue;  // guarded by prio_lock
  std::atomic<uint64_t> priority_preemptions{0}, priority_boosts{0}, background_starvation_runs{0};
  // Queues a runnable ULT of high or background effective priority, then
  // the wake-up check; for a high one with no worker idle, preempts the
  // worker running the lowest-priority ULT (preempt_for_priority).
  void prio_push(UltDesc* u);
  UltDesc* high_pop();
  // A background ULT: the oldest if `only_if_waited_since` < 0 or it was
  // queued before that time; else null.
  UltDesc* bg_pop(int64_t only_if_waited_since);
  // Takes u out of the background queue if it is there (priority
  // inheritance raised it) and queues it by its new priority.
  void promote_from_background(UltDesc* u);
  // Asks the active worker running the lowest-priority ULT (below high) to
  // switch it out, if no worker is idle. From a waker and from the monitor.
  void preempt_for_priority();

  // --- life ----------------------------------------------------------------------------
  // Live ULTs are counted without a shared hot counter: each worker counts
  // the ULTs spawned by its ULTs (Worker::created) and the ULTs that exited
  // on it (Worker::exited); spawns from foreign threads are counted here.
  // live_ults() reads all exited counters, then (after a fence) all created
  // counters. If a ULT's exit is seen, its creation happened before it
  // (release/acquire through the queues), so it is seen too; any ULT that
  // was live at the instant between the two passes is counted in C and not
  // in E. Hence C - E == 0 proves that at that instant no ULT was live, and
  // then only a foreign spawn can make one: foreign spawns pass `gate`,
  // which counts them in flight and which shutdown closes.
  static constexpr uint64_t kClosed = uint64_t{1} << 63;
  alignas(64) std::atomic<uint64_t> gate{0};            // foreign spawns in flight | kClosed
  std::atomic<uint64_t> foreign_created{0};
  std::atomic<uint32_t> foreign_wakers{0};              // foreign unparks inside make_runnable
  std::atomic<uint32_t> exit_signal{0};                 // futex: exits during shutdown
  alignas(64) std::atomic<bool> shutting_down{false};
  std::atomic<bool> stopped{false};
  uint64_t live_ults() const;
  // Runtime::shutdown(timeout) (stop.cc).
  absl::Status shutdown_within(int64_t timeout_ns);
  // Set by shutdown(timeout) (stop.cc): every ULT spawned from then on
  // starts asked to stop.
  std::atomic<bool> stop_all{false};

  // --- monitor ----------------------------------------------------------------------------
  sys::Klt* monitor = nullptr;
  std::atomic<uint32_t> monitor_word{0};  // futex of the short tick: 1 = stop
  // Futex of the long (idle) sleep: 1 while the monitor is in it or about
  // to be. Whoever makes work for it (a blocking region opens, a worker
  // wakes up) kicks it: the exchange to 0 before the wake means a kick that
  // comes before the monitor's futex_wait makes that wait return at once
  // (it waits for the value 1), so no kick is lost.
  std::atomic<uint32_t> monitor_idle{0};
  // The load is seq_cst (a plain load on x86): it must not be ordered
  // before the caller's preceding seq_cst store/RMW (npidle--, blocking =
  // epoch|1), the other half of the handshake with monitor.cc.
  void kick_monitor() {
    if (monitor_idle.load(std::memory_order_seq_cst) != 0 && monitor_idle.exchange(0, std::memory_order_acq_rel) != 0)
      sys::futex_wake(&monitor_idle, 1);
  }
  std::atomic<uint64_t> monitor_reaped{0};

  // --- fork (runtime/fork.cc) --------------------------------------------------------
  // Set in the child of a fork made by one of this runtime's ULTs: that ULT
  // is the child's only thread of control, so the process exits with
  // status 0 when the last ULT returns (as a process does when its last
  // thread exits).
  bool exit_when_idle = false;
  // The KLT on which this runtime's ULTs call fork(): a bound-style worker
  // (it runs only what its inbox holds) made at the first fork, so that the
  // fork's page-table copy never stalls a pool worker (fork.cc). Created
  // under bound_lock; stopped and joined by shutdown.
  std::unique_ptr<Worker> fork_worker;
  absl::StatusOr<Worker*> start_fork_worker_locked();
  // Set just before such a child calls exit(): ~Runtime then does not shut
  // down (the caller is one of its ULTs; the process is ending).
  std::atomic<bool> exiting_process{false};
  // In a forked child: every KLT of this runtime but `keep` (the calling
  // one, or null) is gone, and so is every ULT but `self`; rebuilds the
  // pool around them and starts fresh workers and a monitor.
  void rebuild_after_fork(Worker* keep, UltDesc* self);

  // --- bound ULTs ------------------------------------------------------------------------
  // Each bound ULT gets a new KLT that ends with it (pool.cc, "Bound
  // workers"); finished ones are reaped at the next bound spawn and at
  // shutdown.
  KltMutex bound_lock;
  std::vector<std::unique_ptr<Worker>> bound_all;  // bound workers not yet reaped
  std::vector<Worker*> bound_finished;             // their ULT is gone; the KLT exits
  std::atomic<int> bound_busy{0};
  uint64_t bound_made = 0;                         // for KLT names; under bound_lock
  // Live accounting of reaped bound workers (their created/exited counters),
  // so that live_ults() stays exact; written under bound_lock.
  std::atomic<uint64_t> bound_reaped_created{0};
  std::atomic<uint64_t> bound_reaped_exited{0};
  // Joins and frees the bound workers whose KLT has exited. Not under
  // bound_lock; never blocks on a KLT that is still running.
  void reap_bound_workers(bool all);

  // --- operations -----------------------------------------------------------------------
  // Makes a ULT created by spawn runnable for the first time; `local` is
  // the spawning ULT's worker if it is an active pool worker of this
  // scheduler (its deque may be used), else null.
  void submit_new(UltDesc* u, Worker* local);
  // Makes a ULT runnable after unpark (or a requeue that must respect its home).
  void make_runnable(UltDesc* u, Worker* here);
  // From outside the workers (here == null in make_runnable): into the
  // inbox of the worker u ran on last, or of slot 0 if that one is not
  // active, instead of the global queue (unpark_urgent).
  void make_runnable_urgent(UltDesc* u);
  void global_push(UltDesc* u);
  void global_push_queue(IntrusiveQueue<UltDesc>* q);  // moves all of q
  UltDesc* global_pop_batch(Worker* w);
  // The wake-up check after new work is published (see scheduler.cc).
  void notify_work();
  // The check a worker owes for work it queued with notify deferred; called
  // at every switch, after the next ULT was taken off the local queues.
  void settle_deferred_notify(Worker* w);
  void wake_one();
  void wake_worker(Worker* w);
  bool remove_idle(Worker* w, bool* was_woken_spinning);
  absl::StatusOr<Worker*> start_worker(int index);
  absl::Status start_monitor_locked();            // caller holds concurrency_lock
  std::unique_ptr<Poller> make_poller(int index);  // the factory's, or a FutexPoller
  absl::StatusOr<Worker*> take_bound_worker();
  void bound_done(Worker* w);
  absl::Status start_workers_locked(int n);
  // A retired worker that may take an active slot: no ULT on it, not in a
  // blocking region (not even one it was handed off from), nothing pinned
  // to it waiting, not stopping.
  static bool can_take_slot(const Worker* c);
  // Exchanges the workers of slots i and j (and their indices). Caller holds
  // concurrency_lock; neither worker may be running ULTs of an active slot
  // it keeps (a retired worker reads its index at its next pass).
  void swap_slots_locked(int i, int j);

  size_t default_stack_size = 0;   // Options::stack_size rounded to pages
  int64_t blocking_threshold_ns = 0;  // Options::blocking_handoff
  int64_t time_slice_ns = 0;          // Options::time_slice (0: no preemption)

  // --- preemption (runtime/preempt.cc) -----------------------------------------
  std::atomic<uint64_t> preempt_requested{0}, preempt_taken{0}, preempt_deferred{0};

  // The event trace (trace.h), or null: Options::trace_file, else
  // WEFT_TRACE. Made by the constructor, written by shutdown_locked once
  // every KLT that records has been joined. Last, so that it moves no hot
  // field (placed first among the configuration, it cost a yield ~1 ns).
  std::unique_ptr<trace::Tracer> tracer;
  absl::Status make_tracer();  // the constructor's
};

inline int Worker::sched_active() const { return sched->active.load(std::memory_order_relaxed); }

// The calling KLT's worker. Initial-exec TLS: every read is one %fs-relative
// load, never a cached address (see HACKING.md: a ULT may migrate at any
// call that can park it, so read this afresh after such a call).
extern thread_local Worker* t_worker __attribute__((tls_model("initial-exec")));

// The worker whose KLT is calling, or null on a foreign thread. The load
// is written in asm: one %fs-relative load through t_worker's
// initial-exec GOT slot, never a cached address (the "memory" clobber),
// and no UBSan null check of t_worker's address. GCC's check tests the
// flags of `add t_worker@gottpoff(%rip), %reg`, which ld relaxes into a
// `lea` (no flags) in an executable: the check then read stale flags and
// reported "load of null pointer of type 'struct Worker *'" (ASan+UBSan
// build, IoTrace.WaitingReadIsSubmittedAndDone, at a trace site). t_worker
// is constant-initialised, so skipping its TLS init wrapper is exact.
inline Worker* current_worker() {
  Worker* w;
  __asm__ volatile(
      "movq _ZN4weft2rt8t_workerE@gottpoff(%%rip), %0\n\t"
      "movq %%fs:(%0), %0"
      : "=r"(w)
      :
      : "memory");
  return w;
}
inline void set_current_worker(Worker* w) { t_worker = w; }
// The calling KLT's worker if this KLT may use that worker's core now: a
// worker's KLT outside a blocking region (inside one, the monitor may hold
// a HandoffClaim on the core). Else null. in_blocking is this KLT's own
// flag: the relaxed load is exact.
inline Worker* core_owner() {
  Worker* w = current_worker();
  return w != nullptr && !w->in_blocking.load(std::memory_order_relaxed) ? w : nullptr;
}
inline WorkerCore& Worker::core() {
  WEFT_DCHECK(core_owner() == this, "worker core used off its KLT or inside a blocking region (tid %d)",
              tid.load(std::memory_order_relaxed));
  return core_;
}
// The ULT running on the calling KLT, or null.
inline UltDesc* current_ult() {
  Worker* w = current_worker();
  return w != nullptr ? w->current.load(std::memory_order_relaxed) : nullptr;
}

// The ring an event recorded by the calling thread for runtime `s` goes
// to (trace.h): the calling worker's if it is one of `s`'s, else the
// shared one; null when `s` does not trace (then this is one load and a
// branch).
inline trace::Ring* trace_ring_here(const Scheduler* s) {
  if (__builtin_expect(s->tracer == nullptr, 1)) return nullptr;
  Worker* w = current_worker();
  return w != nullptr && w->sched == s && w->trace != nullptr ? w->trace : s->tracer->shared();
}
// The id of the ULT the calling KLT runs, 0 if none (a trace event's waker).
inline uint64_t current_ult_id() {
  UltDesc* u = current_ult();
  return u != nullptr ? u->id_value() : 0;
}

// ULT-side operations. `self` must be the calling ULT.
void yield_current(UltDesc* self);
// Switches away unconditionally (through the scheduler loop) and lets the
// loop requeue the ULT where it belongs: its home's inbox if it has one
// (bound, pinned, or a home just set to move it there), else a run queue.
// How a ULT moves itself to another KLT (fork.cc).
void requeue_current(UltDesc* self);
// park_current, park_current_until and unpark: runtime/park.h.
[[noreturn]] void exit_current(UltDesc* self);
// pthread_exit(value) in a ULT: forced unwinding of the ULT's stack (C++
// destructors and pthread_cleanup_push handlers run; catch (...) blocks see
// abi::__forced_unwind and must rethrow), then exit_current. Never returns.
[[noreturn]] void unwind_and_exit(UltDesc* self, void* value);

// Creating and releasing ULTs (runtime/ult_life.cc).
// `local` is as for Scheduler::submit_new (its cache may be used) or null.
UltDesc* create_ult(Scheduler* s, Worker* local, const SpawnOptions& o, const detail::Closure& c, absl::Status* err);
// Recycles an exited ULT whose generation was already advanced (under its
// join lock, by whoever decided who releases it).
void release(UltDesc* u);
// Waits until u is off its stack (UltDesc::on_stack false): spins briefly, then
// yields the KLT. Part of release().
void wait_off_stack(const UltDesc* u);
void drain_local_cache(Worker* w);
// Joins the ULT `id`; stores the value it passed to pthread_exit (or null)
// in *value when value is not null, and calls collect(ctx) (the handle
// takes the result from the ULT's Task) before the ULT is released.
// cancellable: a stop request of the calling ULT ends the wait with
// Cancelled (the ULT stays joinable).
absl::Status join_ult(UltId id, void** value = nullptr, bool cancellable = false, void (*collect)(void*) = nullptr,
                      void* ctx = nullptr);
// Detaches the ULT `id`; if it has exited, destroys its result (drop_result)
// and releases it.
absl::Status detach_ult(UltId id);
// Cancellation (stop.cc): whether self was asked to stop; asks the ULT
// `id` (false: stale id, or asked before); asks every ULT live in s and
// every ULT spawned in s from now on (returns how many were live); the
// ULTs live in s.
bool stop_requested(const UltDesc* self);
bool request_stop(UltId id);
size_t request_stop_all(Scheduler* s);
std::vector<UltInfo> live_ults_of(Scheduler* s);
// Destroys the result no joiner will take (UltDesc::drop); an exception it
// held is reported with the ULT's name and the process aborts.
void drop_result(UltDesc* u);
[[noreturn]] void report_lost_exception(const UltDesc* u, const std::exception_ptr& e, const char* how);
// e's what() (or "not a std::exception"), truncated to size (stop.cc).
void exception_text(const std::exception_ptr& e, char* out, size_t size);

// The SIGSEGV handler that reports stack overflows in ULTs (overflow.cc).
// In weft's handler of SIGSEGV/SIGBUS (signal.cc): if the fault is u's
// stack overflow, reports it with u's name and aborts; else returns.
void report_if_overflow(const UltDesc* u, const siginfo_t* si, const void* uctx);

// Entry of the monitor KLT (monitor.cc).
void monitor_main(void* sched);

// In a forked child (exit_when_idle): exits the process with status 0 if no
// ULT of `s` is live any more (fork.cc).
void exit_process_if_idle(Scheduler* s);

}  // namespace weft::rt
