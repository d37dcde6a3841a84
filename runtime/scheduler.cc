// runtime/scheduler.cc — the scheduler: switching between ULTs, park and
// unpark, the run queues, wake-ups of idle workers and the worker loop.
//
// Actors
//   ULT      a function on a stack of its own (runtime/ult.h). Its state word
//            says live / parking / parked / exited; where a live ULT waits is
//            said by the queue it is in, and it is in at most one.
//   Worker   a KLT that runs ULTs (scheduler.h). Shared: a Chase–Lev deque
//            (work_deque.h), a one-slot run_next for the ULT it just woke,
//            an inbox for ULTs that must run on it (pinned, bound), and a
//            timer heap under its own lock (timer_heap.h: whoever is free
//            fires a due timer). Owner only (WorkerCore, reached through
//            core()): a yield queue, a cache of recycled descriptors; the
//            monitor reaches them only with a HandoffClaim. And a Poller
//            to sleep on, which io/ supplies (its engine). Workers
//            [0, active) run ULTs; the others are retired (set_concurrency)
//            and serve only their inbox and timers. A bound worker runs
//            one bound ULT and nothing else. The FIFOs and caches are one
//            IntrusiveQueue.
//   Monitor  a KLT that runs no ULTs: the reaper, the blocking-region
//            handoff, the hog rescue, the timers of busy workers and
//            time-slice preemption requests (monitor.cc, preempt.cc).
//
// Fair latency (issue 13): nothing waits for a busy worker for long.
//   - Timers: a worker running a ULT or blocked in a region has its due
//     timers fired by the monitor (1 ms tick); the woken ULTs go to the
//     global queue, where an idle worker takes them at once.
//   - The yield queue (yielders, and ULTs woken by the scheduler loop) is
//     served at every scheduler pass that finds other local work too
//     (WorkerCore::yield_turns), so a spawn chain cannot starve it; a
//     pass comes every kGlobalEvery switches at most. Its batches and the
//     deque alternate (WorkerCore::deque_turn_owed), so a stream of woken
//     ULTs cannot starve the deque either.
//   - Time slices: a ULT that runs Options::time_slice without switching
//     is switched out by the doorbell signal where that is safe
//     (preempt.cc); every scheduler pass serves the global queue first,
//     and the preempted ULT waits behind this worker's yielders and
//     resumes on this worker (UltDesc::preempted_on). So a worker's
//     inbox, io completions (its poll), timers and queues are served at
//     least once per slice even under a CPU-bound ULT.
//
// The path of a ULT
//   spawn  -> create_ult (a recycled descriptor+stack when possible) ->
//             submit_new: the spawning worker's deque, or the global
//             injection queue from a foreign thread (a bound ULT goes to the
//             inbox of its own worker) -> notify_work().
//   run    -> a worker takes it (run_next, own deque bottom, inbox, global
//             queue, or steals the top of another deque) and switches to it.
//   switch -> ULTs switch directly to the next ULT of their worker when there
//             is one (run_next, else own deque; the scheduler loop every
//             kGlobalEvery switches so that the global queue, the inbox and
//             the timers are served), else to the worker's scheduler context.
//             The switcher passes a SwitchAction that the resumed side
//             performs once the switcher is off its stack: requeue it
//             (yield), finish its park, or finish its exit. Doing these after
//             the switch is what keeps two workers off one stack: a ULT is
//             never visible in a queue while its stack is still in use.
//   park   -> park_current: kLive -> kParking, switch, then kParking ->
//             kParked (FinishPark). unpark(): kParked -> kLive and enqueue,
//             or leave a kWake permit (ult.h has the state diagram, checked
//             by change_state/cas_state). Layers above the runtime (io/)
//             park and wake only through park.h.
//   exit   -> exit_current: join bookkeeping under the join lock; a parked
//             joiner on this worker is resumed directly (no queue); the stack
//             is declared free by the next context (kExit); the descriptor is
//             released by whoever completes join/detach (ult_life.cc).
//
// Wake-ups: the invariant that prevents lost wake-ups (Go's "spinning")
//   An idle worker sleeps on its Poller. Work is published to a queue and
//   then notify_work() wakes one sleeping worker only if no worker is
//   spinning (looking for work), because a spinner is bound to find it:
//
//   publisher                          worker going to sleep
//   push ULT to a queue                idle set += self; npidle++   (locked RMW)
//   full fence                         if spinning: nmspinning--    (locked RMW)
//   read npidle, nmspinning            re-check every queue (global, all
//   if npidle > 0 && nmspinning == 0:    deques, own inbox, timers)
//     wake_one(): under idle_lock, if  if work: a former spinner spins
//     a worker is idle: nmspinning       again (nmspinning++); leave the
//     0 -> 1, pop it; then wake it       idle set; retry
//                                      else: Poller::wait; leave the idle set
//                                      then (both cases) kick the monitor
//
//   Both sides do "store, full fence, load", so at least one sees the other:
//   either the sleeper's re-check sees the ULT, or the publisher sees the
//   sleeper in the idle set and (no spinner) wakes one — which, woken as a
//   spinner, checks every queue; or it sees a spinner, and that spinner will
//   either find the ULT or go through the same re-check before sleeping. A
//   spinner that finds work and was the last spinner wakes another idle
//   worker (there may be more work) — also one whose re-check found it, which
//   is why it spins again there: publishers that saw it spinning woke
//   nobody. nmspinning counts only real spinners: wake_one raises it only
//   with an idle worker in hand, under idle_lock. ULTs that must run on one
//   worker (its inbox) wake that worker directly (wake_worker) after the
//   same fence.
//
//   The monitor sleeps long only when every active worker is idle; it
//   announces that (monitor_idle = 1) before it reads npidle, and a worker
//   leaving the idle set decrements npidle before it reads monitor_idle
//   (kick_monitor), so a worker that goes on to run ULTs either is seen busy
//   or kicks the monitor awake (monitor.cc).
//
//   tests/runtime_wakeup_model_test.cc checks these handshakes by
//   enumerating every interleaving of a model of them (publishers, workers,
//   the monitor; and a worker retired and re-activated by set_concurrency):
//   no work queued while a worker sleeps, no long monitor sleep while a
//   worker runs. Keep the model in step with the code.
//
//   Deferred notify. A worker that queues a ULT on its own empty deque or
//   run_next (spawn then join; wake a partner then park) is about to run it
//   itself; waking an idle worker for it costs a futex wake (microseconds
//   here) and usually finds nothing to steal. So such a push only sets
//   notify_deferred. At the worker's next switch, after it took the next
//   ULT off its queues, settle_deferred_notify() runs notify_work() if work
//   is still queued; the monitor does the same for a worker that has not
//   switched for a tick (a ULT that spawns and then computes). A push onto
//   a non-empty deque (surplus work) notifies at once. The work is never
//   lost — the pushing worker runs its own queues — only parallelism can
//   be delayed, by at most one monitor tick.
#include "runtime/scheduler.h"
#include "runtime/signal.h"
#include "runtime/preempt.h"

#include <cxxabi.h>
#include <unwind.h>

#include <cerrno>
#include <cstring>

#include "runtime/log.h"
#include "runtime/thread_compat.h"
#include "sys/raw_log.h"
#include "sys/thread_stack.h"

namespace weft::rt {

thread_local Worker* t_worker __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

// Every kGlobalEvery-th switch goes through the scheduler loop (inbox,
// timers, io, the global queue before the local queues: fairness for work
// that a worker's own queues would otherwise starve).
constexpr uint64_t kGlobalEvery = 61;
constexpr int kStealRounds = 4;
// Priorities (weft::Priority) and the background bound (runtime.h).
constexpr uint8_t kPrioBackground = 0, kPrioNormal = 1, kPrioHigh = 2;
constexpr int64_t kBackgroundMaxWaitNs = 100 * 1000 * 1000;  // 100 ms
inline uint8_t prio_of(const UltDesc* u) { return u->eff_prio.load(std::memory_order_relaxed); }

// Whether `u`, pinned to worker `w` (home) and runnable again, waits in
// w's yield queue rather than its inbox: on an active worker, for normal
// priority (high and background ones keep the inbox, served before normal
// work). Only w's owner may then push it there (the yield queue is the
// owner's): handle_transfer, make_runnable, find_runnable_inner.
inline bool queues_pinned_locally(const Worker* w, const UltDesc* u) { return w->active() && prio_of(u) == kPrioNormal; }

constexpr int64_t kMaxPollerWaitNs = int64_t{3600} * 1000 * 1000 * 1000;  // 1 hour

// libstdc++'s per-thread exception state (cxxabi.h: __cxa_eh_globals).
struct EhGlobals {
  void* caught;
  unsigned uncaught;
};

uintptr_t encode(UltDesc* u, SwitchAction a) { return reinterpret_cast<uintptr_t>(u) | static_cast<uintptr_t>(a); }
UltDesc* decode_ult(uintptr_t t) { return reinterpret_cast<UltDesc*>(t & ~uintptr_t{63}); }
SwitchAction decode_action(uintptr_t t) { return static_cast<SwitchAction>(t & 63); }
static_assert(alignof(UltDesc) >= 64);

// errno and the exception globals are per KLT; a ULT carries its own across
// switches. Their addresses are fixed for a KLT's life, so each worker looks
// them up once (worker_main) and the switch path uses the addresses of the
// worker the ULT is on *now* (UltDesc::worker, set by whoever resumed it). Never
// take them from __errno_location()/__cxa_get_globals() in a ULT: both are
// declared `const`, and a result cached across a switch names the previous
// KLT's (the migration hazard, HACKING.md).
inline void save_thread_state(UltDesc* u, Worker* w) {
  u->saved_errno = *w->core().errno_ptr;
  auto* g = static_cast<EhGlobals*>(w->core().eh_globals);
  u->eh_caught = g->caught;
  u->eh_uncaught = g->uncaught;
}

inline void restore_thread_state(UltDesc* u, Worker* w) {
  *w->core().errno_ptr = u->saved_errno;
  auto* g = static_cast<EhGlobals*>(w->core().eh_globals);
  g->caught = u->eh_caught;
  g->uncaught = u->eh_uncaught;
  // glibc's idea of this thread's stack (its alloca cutoff, pthread_getattr_np)
  // is the ULT's stack while the ULT runs: two %fs-relative stores
  // (sys/thread_stack.h, issue 9 #2).
  sys::thread_stack_set(u->stack.lo(), u->stack.size());
  restore_ult_locale(u);  // one compare unless the ULTs' locales differ
}

inline void fresh_thread_state(Worker* w) {
  *w->core().errno_ptr = 0;
  auto* g = static_cast<EhGlobals*>(w->core().eh_globals);
  g->caught = nullptr;
  g->uncaught = 0;
}

uint64_t next_random(uint64_t* s) {  // xorshift64*
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

// The trace's kRun event: `next` is about to run on w. Recorded by the
// switching side, where w and next are at hand anyway, and out of line:
// recorded on the resumed side, inlined, the tracing-off yield cost about
// 1.5 ns more here (18.2 -> 19.7 ns).
__attribute__((noinline, cold)) void trace_run(Worker* w, UltDesc* next) {
  w->trace->put(trace::kRun, next->id_value());
}

// Performs the action the context that switched to us asked for. Runs on
// the resumed context (a ULT or the scheduler loop) of worker `w`.
void handle_transfer(Worker* w, uintptr_t t) {
  UltDesc* x = decode_ult(t);
  switch (decode_action(t)) {
    case SwitchAction::kNone:
      return;
    case SwitchAction::kRequeue:
      // Read home once: after the push x may run on it and change it (a
      // ULT that moved to the fork KLT clears it there, fork.cc).
      if (Worker* home = x->home; home != nullptr) {
        if (home == w && queues_pinned_locally(w, x)) {
          w->core().yield_queue.push_back(x);  // pinned here: behind the yielders (must_stay)
        } else {
          home->inbox_push(x);
          if (home != w) w->sched->wake_worker(home);
        }
      } else if (prio_of(x) != kPrioNormal) {
        w->sched->prio_push(x);
      } else if (w->is_bound || !w->active()) {
        w->sched->global_push(x);
        w->sched->notify_work();
      } else {
        w->core().yield_queue.push_back(x);
      }
      return;
    case SwitchAction::kFinishPark: {
      bump(w->parks);
      if (__builtin_expect(w->trace != nullptr, 0)) {
        w->trace->put(trace::kPark, x->id_value(), reinterpret_cast<uint64_t>(x->wait_what.load(std::memory_order_relaxed)),
                      reinterpret_cast<uint64_t>(x->wait_obj.load(std::memory_order_relaxed)),
                      x->wait_arg.load(std::memory_order_relaxed));
      }
      uint32_t expected = ult_state::kParking;
      if (cas_state(x, &expected, ult_state::kParked)) return;
      // Woken while parking: the permit is consumed by this park returning.
      change_state(x, ult_state::kParking | ult_state::kWake, ult_state::kLive);
      w->sched->make_runnable(x, w);
      return;
    }
    case SwitchAction::kPreempt:
      // Behind this worker's yielders; it must resume here (preempted_on).
      // A retired worker runs only its inbox: then it goes there.
      WEFT_DCHECK(x->preempted_on == w, "ULT %u preempted on another worker", x->index);
      if (__builtin_expect(w->trace != nullptr, 0)) w->trace->put(trace::kPreempt, x->id_value());
      if (!w->is_bound && w->active()) {
        uint8_t p = prio_of(x);
        (p == kPrioHigh ? w->core().stay_high : p == kPrioBackground ? w->core().stay_bg : w->core().yield_queue).push_back(x);
        if (p == kPrioBackground) x->bg_since = monotonic_ns();
      } else {
        w->inbox_push(x);
      }
      return;
    case SwitchAction::kExit:
    case SwitchAction::kExitRelease:
      __atomic_store_n(&x->ctx.sp, nullptr, __ATOMIC_RELAXED);  // dump_ults reads it from other threads
      mark_exited(x);
      x->on_stack.store(false, std::memory_order_release);
      if (decode_action(t) == SwitchAction::kExitRelease) release(x);
      return;
  }
}

// Switches from `self` (running on its worker) to `next` or, if null, to the
// worker's scheduler loop, asking for `action`. Returns when `self` is
// resumed, on whatever worker that is.
__attribute__((always_inline)) inline void switch_from(UltDesc* self, UltDesc* next, SwitchAction action) {
  Worker* w = self->worker.load(std::memory_order_relaxed);
  if (w->core().notify_deferred) w->sched->settle_deferred_notify(w);
  save_thread_state(self, w);
  sys::Context* to;
  if (next != nullptr) {
    next->worker.store(w, std::memory_order_release);  // release: readers off the worker (signal.cc) then see *w
    w->current.store(next, std::memory_order_relaxed);
    bump(w->switches);
    if (__builtin_expect(w->trace != nullptr, 0)) trace_run(w, next);
    to = &next->ctx;
  } else {
    w->current.store(nullptr, std::memory_order_relaxed);
    to = &w->core().sched_ctx;
  }
  uintptr_t t = reinterpret_cast<uintptr_t>(sys::context_switch(&self->ctx, to, reinterpret_cast<void*>(encode(self, action))));
  w = self->worker.load(std::memory_order_relaxed);  // the worker that resumed us
  if (decode_action(t) != SwitchAction::kNone) handle_transfer(w, t);
  restore_thread_state(self, w);
  if (__builtin_expect(sig::deliverable(self), 0)) sig::deliver(self);  // a safe point (signal.cc)
}

// Not UBSan's null check: a handler for a forced unwinding,
// catch (abi::__forced_unwind&), binds its reference to a null object (the
// C++ personality passes no exception object for a forced unwind), which
// -fsanitize=null reports.
[[noreturn]] __attribute__((no_sanitize("null"))) void ult_entry(void* transfer, void* arg) {
  sys::context_entered();
  UltDesc* self = static_cast<UltDesc*>(arg);
  Worker* w = self->worker.load(std::memory_order_relaxed);
  handle_transfer(w, reinterpret_cast<uintptr_t>(transfer));
  fresh_thread_state(w);
  sys::thread_stack_set(self->stack.lo(), self->stack.size());
  // The stack pointer of this frame (at the call below). When the unwinder
  // examines ult_entry's frame, the CFA it reports (that of the callee it
  // came from, libgcc's view) equals it; for every deeper frame it is lower
  // (unwind_and_exit's stop function).
  const void* sp;
  __asm__ volatile("movq %%rsp, %0" : "=r"(sp));
  self->unwind_limit = sp;
  self->exit_value = nullptr;
  self->exit_unwinding = false;
  self->locale = nullptr;
  restore_ult_locale(self);
  if (sig::deliverable(self)) sig::deliver(self);
  try {
    self->invoke(self->closure);
  } catch (abi::__forced_unwind&) {
    // weft's own forced unwinding (pthread_exit) stops before this frame;
    // this one was started by glibc directly (pthread_exit or cancellation
    // reached glibc without passing weft's interposer).
    sys::raw_logf("weft: forced unwinding not started by weft reached the entry of ULT %u.%u \"%s\" "
                  "(glibc's pthread_exit or cancellation was called directly; with the static "
                  "library, export weft's pthread_exit from the executable)",
                  self->index, self->generation.load(), self->name);
    abort();
  } catch (const std::exception& e) {
    sys::raw_logf("weft: exception escaped ULT %u.%u \"%s\": %s", self->index,
                  self->generation.load(), self->name, e.what());
    abort();
  } catch (...) {
    sys::raw_logf("weft: exception escaped ULT %u.%u \"%s\" (not a std::exception)", self->index,
                  self->generation.load(), self->name);
    abort();
  }
  // The KLT keeps no locale of an exited ULT (it may be freed after join).
  self->locale = nullptr;
  restore_ult_locale(self);
  exit_current(self);
}

// glibc's exception class for forced unwinding ("GNUCFOR\0"): libstdc++
// treats any forced unwind as abi::__forced_unwind whatever the class.
constexpr _Unwind_Exception_Class kForcedUnwindClass = 0x474e5543464f5200ULL;

// Called by the unwinder before each frame's personality routine. Lets
// every frame of the ULT's function unwind (destructors, cleanup handlers,
// catch blocks that rethrow); at ult_entry's frame (or the end of the
// stack) it leaves the unwinder and finishes the exit. The abandoned
// unwinder frames hold no locks.
_Unwind_Reason_Code exit_stop(int, _Unwind_Action actions, _Unwind_Exception_Class, _Unwind_Exception*,
                              _Unwind_Context* ctx, void* arg) {
  UltDesc* self = static_cast<UltDesc*>(arg);
  if ((actions & _UA_END_OF_STACK) != 0 ||
      _Unwind_GetRegionStart(ctx) == reinterpret_cast<uintptr_t>(&ult_entry) ||
      reinterpret_cast<const char*>(_Unwind_GetCFA(ctx)) >= static_cast<const char*>(self->unwind_limit)) {
    self->locale = nullptr;
    restore_ult_locale(self);
    exit_current(self);
  }
  return _URC_NO_REASON;
}

// Runs if a catch block swallowed the forced unwinding (did not rethrow):
// the ULT cannot both exit and go on.
void exit_exception_cleanup(_Unwind_Reason_Code, _Unwind_Exception*) {
  UltDesc* self = current_ult();
  sys::raw_logf("weft: ULT %u.%u \"%s\" called pthread_exit() and a catch (...) block did not rethrow "
                "the forced unwinding (abi::__forced_unwind must be rethrown)",
                self ? self->index : 0, self ? self->generation.load() : 0, self ? self->name : "?");
  abort();
}

}  // namespace

void* ult_entry_address() { return reinterpret_cast<void*>(&ult_entry); }

}  // namespace weft::rt

namespace weft::detail {
bool exiting_by_unwind() {
  rt::UltDesc* self = rt::current_ult();
  return self != nullptr && self->exit_unwinding;
}
}  // namespace weft::detail

namespace weft::rt {

void unwind_and_exit(UltDesc* self, void* value) {
  self->exit_value = value;
  self->exit_unwinding = true;
  static_assert(sizeof(_Unwind_Exception) <= sizeof(UltDesc::exit_exception));
  auto* exc = reinterpret_cast<_Unwind_Exception*>(self->exit_exception);
  memset(exc, 0, sizeof *exc);
  exc->exception_class = kForcedUnwindClass;
  exc->exception_cleanup = exit_exception_cleanup;
  _Unwind_ForcedUnwind(exc, exit_stop, self);
  // Only if the unwinder could not start (no unwind tables): exit without.
  exit_current(self);
}

void Worker::init_thread_state() {
  core_.errno_ptr = &errno;
  core_.eh_globals = abi::__cxa_get_globals();
}

// ---------------------------------------------------------------------------
// ULT-side operations
// ---------------------------------------------------------------------------

__attribute__((always_inline)) inline UltDesc* Worker::pick_local(bool for_yield) {
  // Serve the scheduler loop regularly, and always when this worker must
  // not run ordinary work (bound, retired) or has ULTs that must run here.
  if (--core_.until_loop <= 0 || is_bound || loop_work_waiting()) return nullptr;
  // High-priority ULTs wait: the scheduler loop serves them first.
  if (sched->high_count.load(std::memory_order_relaxed) != 0 || !core_.stay_high.empty()) return nullptr;
  if (core_.yield_turns != 0) {  // yielders' turn, granted by the last scheduler pass
    --core_.yield_turns;
    if (UltDesc* u = yield_pop()) return u;
    core_.yield_turns = 0;
  }
  if (run_next.load(std::memory_order_relaxed) != nullptr) {
    UltDesc* u = run_next.exchange(nullptr, std::memory_order_acquire);
    if (u != nullptr) return u;
  }
  // Yield takes the oldest (round-robin); park and exit the newest (LIFO).
  // Yielded ULTs come last, after everything in the deque.
  if (!deque.owner_empty()) {
    if (UltDesc* u = for_yield ? deque.take_top() : deque.pop()) return u;
  }
  return yield_pop();
}

bool Worker::loop_owed() {
  if (is_bound) return false;  // its one ULT is the caller
  return loop_work_waiting() || run_next.load(std::memory_order_relaxed) != nullptr || !deque.owner_empty() ||
         !core_.yield_queue.empty() || sched->global_count.load(std::memory_order_relaxed) != 0 || timer_due();
}

void yield_current(UltDesc* self) {
  Worker* w = self->worker.load(std::memory_order_relaxed);
  if (__builtin_expect(prio_of(self) != kPrioNormal, 0)) {
    Scheduler* s = w->sched;
    if (prio_of(self) == kPrioHigh) {
      // Round-robin among high ULTs only: nothing else may run instead —
      // but the loop's own work (inbox, io completions, due timers) may be
      // what the yielder waits for.
      if (s->high_count.load(std::memory_order_relaxed) == 0 && (w->is_bound || w->core().stay_high.empty()) &&
          !w->loop_work_waiting() && !w->timer_due())
        return;
    }
    switch_from(self, nullptr, SwitchAction::kRequeue);  // to the class queue, through the loop
    return;
  }
  UltDesc* next = w->pick_local(true);
  if (next != nullptr && self->home == nullptr) {
    // The common case, done here rather than by handle_transfer on the far
    // side: queue ourselves behind the other yielders before switching.
    // Safe although our context is not saved yet: the yield queue is the
    // owner's alone (not stealable) and nothing on this KLT pops it before
    // the switch completes (no scheduler pass comes in between). The worker
    // is not bound (pick_local returned a ULT); if set_concurrency retires
    // it meanwhile, its next scheduler pass hands the queue over, as for a
    // ULT queued there by handle_transfer.
    WEFT_DCHECK(!w->is_bound, "fast yield on bound worker %d", w->index.load(std::memory_order_relaxed));
    w->core().yield_queue.push_back(self);
    switch_from(self, next, SwitchAction::kNone);
    return;
  }
  if (next == nullptr) {
    // Nothing local, or high-priority ULTs wait (pick_local leaves them to
    // the scheduler loop). If the loop has work for us (high ULTs, global
    // queue, inbox, timers) go through it; otherwise keep running. Until
    // issue 15 the high ULTs were missing here: a yield with one waiting
    // returned at once, for up to kGlobalEvery yields
    // (Priority.HighRunsBesidePinnedYielders measured 22).
    bool loop_has_work = w->core().until_loop <= 0 || w->is_bound || w->loop_work_waiting() ||
                         w->sched->global_count.load(std::memory_order_relaxed) != 0 ||
                         w->sched->high_count.load(std::memory_order_relaxed) != 0 || !w->core().stay_high.empty();
    if (!loop_has_work) return;
  }
  switch_from(self, next, SwitchAction::kRequeue);
}

void requeue_current(UltDesc* self) { switch_from(self, nullptr, SwitchAction::kRequeue); }

void preempt_current(UltDesc* self) {
  Worker* w = self->worker.load(std::memory_order_relaxed);
  self->preempted_on = w;
  switch_from(self, nullptr, SwitchAction::kPreempt);
  WEFT_DCHECK(current_worker() == w, "ULT %u preempted on worker %d resumed on another", self->index,
              w->index.load(std::memory_order_relaxed));
  self->preempted_on = nullptr;
}

Caller caller() {
  Worker* w = current_worker();
  if (w == nullptr) return {};
  return {w->current.load(std::memory_order_relaxed), w->poller.get()};
}

void park_current(UltDesc* self) {
  uint32_t s = self->state.load(std::memory_order_acquire);
  for (;;) {
    WEFT_DCHECK((s & ult_state::kStateMask) == ult_state::kLive, "park of ULT %u in state %u", self->index, s);
    if (s & ult_state::kWake) {  // a permit: consume it and return at once
      if (cas_state(self, &s, s & ~ult_state::kWake)) return;
      continue;
    }
    if (cas_state(self, &s, ult_state::kParking)) break;
  }
  Worker* w = self->worker.load(std::memory_order_relaxed);
  switch_from(self, w->pick_local(false), SwitchAction::kFinishPark);
}

bool park_current_until(UltDesc* self, int64_t deadline_ns) {
  // Into the heap of the worker we park on; whoever fires it (that worker
  // or the monitor) takes it out under the heap's lock. Cancel takes it out
  // if it is still there: then it did not fire (timer_heap.h).
  TimerHeap* heap = &self->worker.load(std::memory_order_relaxed)->timers;
  heap->add(self, deadline_ns);
  park_current(self);
  return heap->cancel(self);
}

namespace {
void unpark_impl(UltDesc* u, bool urgent);
}  // namespace

void unpark(UltDesc* u) { unpark_impl(u, false); }
void unpark_urgent(UltDesc* u) { unpark_impl(u, true); }

void Scheduler::make_runnable_urgent(UltDesc* u) {
  Worker* w = u->worker.load(std::memory_order_relaxed);
  if (u->home != nullptr || w == nullptr || w->sched != this || w->is_bound || !w->active()) {
    if (u->home != nullptr) {
      make_runnable(u, nullptr);
      return;
    }
    w = worker_at(0);
  }
  w->inbox_push(u);  // pick_local then goes through the loop at w's next switch
  wake_worker(w);
}

namespace {
void unpark_impl(UltDesc* u, bool urgent) {
  uint32_t s = u->state.load(std::memory_order_acquire);
  for (;;) {
    uint32_t st = s & ult_state::kStateMask;
    if (st == ult_state::kParked) {
      if (cas_state(u, &s, ult_state::kLive)) {
        Scheduler* sched = u->sched;
        // Before u is queued: once it runs it may exit and its id change.
        if (trace::Ring* r = trace_ring_here(sched); __builtin_expect(r != nullptr, 0))
          r->put(trace::kUnpark, u->id_value(), current_ult_id());
        // Inside a blocking region (a mutex unlocked or a condvar notified
        // by fn) this KLT is foreign: its worker's queues may be being
        // moved by the monitor's handoff (blocking.cc). in_blocking is this
        // KLT's own flag, so the relaxed load is exact.
        Worker* here = current_worker();
        if (here != nullptr && (here->sched != sched || here->in_blocking.load(std::memory_order_relaxed)))
          here = nullptr;
        // Invariant (shutdown_locked): a foreign waker is counted in
        // foreign_wakers from before `u` is queued until it has stopped
        // touching the scheduler. u is live until it runs, so shutdown,
        // which sees u's exit before it reads the count, sees this
        // increment too and waits for the decrement before the workers
        // can be freed. A worker of this scheduler needs no count: it is
        // joined before they are freed.
        if (here == nullptr) sched->foreign_wakers.fetch_add(1, std::memory_order_acq_rel);
        if (urgent && here == nullptr) {
          sched->make_runnable_urgent(u);
        } else {
          sched->make_runnable(u, here);
        }
        if (here == nullptr) sched->foreign_wakers.fetch_sub(1, std::memory_order_release);
        return;
      }
      continue;
    }
    if ((s & ult_state::kWake) || st == ult_state::kExited) return;
    if (cas_state(u, &s, s | ult_state::kWake)) return;
  }
}
}  // namespace

// Claims a parked ULT for a direct switch on `w` (no queue in between).
// Returns false, leaving the ULT to the normal unpark path, when it is not
// parked yet or must not run on `w`.
static bool claim_for_direct_switch(UltDesc* u, Worker* w) {
  if (w->is_bound || u->sched != w->sched || !w->active() || (u->home != nullptr && u->home != w)) return false;
  uint32_t expected = ult_state::kParked;
  return cas_state(u, &expected, ult_state::kLive);
}

void exit_current(UltDesc* self) {
  Scheduler* s = self->sched;
  // ULT-local values die with the ULT (their destructors may still park,
  // and may use other UltLocals, growing `locals`: copy each slot out and
  // clear it before calling its destructor).
  for (uint32_t i = 0; i < self->locals_count; ++i) {
    void* value = self->locals[i].value;
    void (*destroy)(void*) = self->locals[i].destroy;
    self->locals[i].value = nullptr;
    if (value != nullptr) destroy(value);
  }
  self->locals_count = 0;

  JoinWaiter* waiter;
  bool release_here;
  self->join_lock.lock();
  // Detached already: nobody will take the result, so destroy it now,
  // while this is still a live ULT (the result's destructor is user code
  // and may park). A detach that comes after this look and before the
  // exit below is seen on the next round; one that comes after the exit
  // drops the result itself (detach_ult). UltDesc::drop is cleared by the
  // drop, so it runs once.
  while (self->detached && self->drop != nullptr) {
    self->join_lock.unlock();
    drop_result(self);
    self->join_lock.lock();
  }
  if (Worker* tw = self->worker.load(std::memory_order_relaxed); __builtin_expect(tw->trace != nullptr, 0))
    tw->trace->put(trace::kExit, self->id_value());  // before the id may go stale, below
  self->exited = true;
  waiter = self->joiner;
  release_here = self->detached;
  // Joined or detached already: who releases is decided, so the id goes
  // stale now (ult_life.cc, "Join protocol").
  if (waiter != nullptr || release_here) advance_generation(self);
  self->join_lock.unlock();

  Worker* w = self->worker.load(std::memory_order_relaxed);

  UltDesc* next = nullptr;
  if (waiter != nullptr) {
    UltDesc* j = waiter->ult;  // read before `done`: the waiter may vanish after it
    waiter->done.store(1, std::memory_order_release);
    if (j == nullptr) {
      sys::futex_wake(&waiter->done, 1);
    } else if (claim_for_direct_switch(j, w)) {
      next = j;
    } else {
      unpark(j);
    }
  }
  // Counted as exited only now that the ULT has no more effects; shutdown
  // may proceed once nothing is live (the worker itself is joined by
  // shutdown, so finishing the switch below is still safe).
  w->exited.store(w->exited.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  if (s->shutting_down.load(std::memory_order_relaxed)) {
    s->exit_signal.fetch_add(1, std::memory_order_release);
    sys::futex_wake(&s->exit_signal, 1);
  }
  if (__builtin_expect(s->exit_when_idle, false)) exit_process_if_idle(s);
  if (next == nullptr) next = w->pick_local(false);
  if (w->core().notify_deferred) s->settle_deferred_notify(w);
  if (next != nullptr) {
    next->worker.store(w, std::memory_order_release);
    w->current.store(next, std::memory_order_relaxed);
    bump(w->switches);
    sys::context_exit_to(&self->ctx, &next->ctx,
                         reinterpret_cast<void*>(encode(self, release_here ? SwitchAction::kExitRelease : SwitchAction::kExit)));
  }
  w->current.store(nullptr, std::memory_order_relaxed);
  sys::context_exit_to(&self->ctx, &w->core().sched_ctx,
                       reinterpret_cast<void*>(encode(self, release_here ? SwitchAction::kExitRelease : SwitchAction::kExit)));
}

// ---------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------

void Worker::inbox_push(UltDesc* u) {
  LockGuard<KltMutex> g(inbox_lock);
  inbox.push_back(u);
  inbox_count.fetch_add(1, std::memory_order_release);
}

UltDesc* Worker::inbox_pop() {
  if (inbox_count.load(std::memory_order_acquire) == 0) return nullptr;
  LockGuard<KltMutex> g(inbox_lock);
  UltDesc* u = inbox.pop_front();
  if (u != nullptr) inbox_count.fetch_sub(1, std::memory_order_relaxed);
  return u;
}

void Scheduler::global_push(UltDesc* u) {
  LockGuard<KltMutex> g(global_lock);
  global_queue.push_back(u);
  global_count.fetch_add(1, std::memory_order_release);
}

void Scheduler::global_push_queue(IntrusiveQueue<UltDesc>* q) {
  if (q->empty()) return;
  const size_t n = q->size();
  LockGuard<KltMutex> g(global_lock);
  global_queue.append(*q);
  global_count.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
}

// Takes a share of the global queue: one to run, the rest onto w's deque.
UltDesc* Scheduler::global_pop_batch(Worker* w) {
  if (global_count.load(std::memory_order_acquire) == 0) return nullptr;
  LockGuard<KltMutex> g(global_lock);
  int64_t n = global_count.load(std::memory_order_relaxed);
  if (n == 0) return nullptr;
  int a = active.load(std::memory_order_relaxed);
  int64_t take = n / (a > 0 ? a : 1) + 1;
  if (take > n) take = n;
  if (take > static_cast<int64_t>(kDequeCapacity / 2)) take = kDequeCapacity / 2;
  UltDesc* first = global_queue.pop_front();
  int64_t taken = 1;
  while (taken < take && !global_queue.empty()) {
    // Off the queue before the push: once stealable, u may run and be
    // requeued elsewhere (its link reused).
    UltDesc* u = global_queue.pop_front();
    if (!w->deque.push(u)) {
      global_queue.push_front(u);  // the deque is full; nobody else saw u
      break;
    }
    ++taken;
  }
  global_count.fetch_sub(taken, std::memory_order_relaxed);
  return first;
}

// ---------------------------------------------------------------------------
// Priorities
//
// Three classes (weft::Priority). Normal ULTs use the per-worker queues and
// the global queue as described above. High and background ULTs that are
// runnable wait in two scheduler-wide FIFOs (prio_lock), so that any worker
// takes them: a worker's scheduler pass serves, in order, its inbox, the
// high queue, its preempted high ULTs, background ULTs that have waited
// 100 ms (kBackgroundMaxWaitNs: the starvation bound), then normal work
// (global, local, stolen), and background ULTs only when it found no
// normal work anywhere. Every switch looks at high_count (pick_local) and
// goes through the loop while high ULTs wait. A high ULT queued while no
// worker is idle preempts the worker running the lowest-priority ULT
// (preempt_for_priority: the doorbell, with the time slice's safety rules;
// the monitor repeats it every tick while high ULTs wait). Where a ULT
// waits is chosen by its effective priority (UltDesc::eff_prio) when it
// becomes runnable; priority inheritance (sync/mutex.cc) raises it, and
// moves a raised holder out of the background queue.
// ---------------------------------------------------------------------------

void Scheduler::prio_push(UltDesc* u) {
  uint8_t p;
  {
    LockGuard<KltMutex> g(prio_lock);
    // Read under the lock: a raise (promote_from_background) either
    // happened before, and is seen here, or finds u in the queue.
    p = prio_of(u);
    if (p == kPrioHigh) {
      high_queue.push_back(u);
      high_count.fetch_add(1, std::memory_order_release);
    } else if (p == kPrioBackground) {
      u->bg_since = monotonic_ns();
      bg_queue.push_back(u);
      bg_count.fetch_add(1, std::memory_order_release);
    }
  }
  if (p == kPrioNormal) global_push(u);  // raised to normal since the caller looked
  notify_work();
  if (p == kPrioHigh) preempt_for_priority();
}

UltDesc* Scheduler::high_pop() {
  if (high_count.load(std::memory_order_acquire) == 0) return nullptr;
  LockGuard<KltMutex> g(prio_lock);
  UltDesc* u = high_queue.pop_front();
  if (u != nullptr) high_count.fetch_sub(1, std::memory_order_relaxed);
  return u;
}

UltDesc* Scheduler::bg_pop(int64_t only_if_waited_since) {
  if (bg_count.load(std::memory_order_acquire) == 0) return nullptr;
  LockGuard<KltMutex> g(prio_lock);
  UltDesc* h = bg_queue.front();
  if (h == nullptr) return nullptr;
  if (only_if_waited_since >= 0 && h->bg_since > only_if_waited_since && prio_of(h) == kPrioBackground) return nullptr;
  bg_queue.pop_front();
  bg_count.fetch_sub(1, std::memory_order_relaxed);
  return h;
}

void Scheduler::promote_from_background(UltDesc* u) {
  bool moved = false;
  {
    LockGuard<KltMutex> g(prio_lock);
    if (bg_queue.remove(u)) {
      bg_count.fetch_sub(1, std::memory_order_relaxed);
      moved = true;
    }
  }
  if (!moved) return;  // running, parked, preempted (stay_bg: its worker looks), or queued elsewhere
  if (prio_of(u) == kPrioNormal) {
    global_push(u);
    notify_work();
  } else {
    prio_push(u);
  }
}

void Scheduler::preempt_for_priority() {
  if (npidle.load(std::memory_order_seq_cst) > 0) return;  // an idle worker takes it (notify_work woke one)
  Worker* me = current_worker();
  Worker* target = nullptr;
  uint8_t lowest = kPrioHigh;
  int act = active.load(std::memory_order_relaxed);
  for (int i = 0; i < act; ++i) {
    Worker* w = worker_at(i);
    if (w->in_blocking.load(std::memory_order_relaxed)) continue;
    UltDesc* c = w->current.load(std::memory_order_relaxed);
    if (c == nullptr) return;  // in its scheduler loop: it takes the high ULT next
    uint8_t p = prio_of(c);
    if (p < lowest || (p == lowest && target == me)) {
      lowest = p;
      target = w;
    }
  }
  if (target == nullptr) return;  // every worker runs a high ULT: they take turns by time slice
  if (preempt::request_now(this, target)) priority_preemptions.fetch_add(1, std::memory_order_relaxed);
}

void Scheduler::submit_new(UltDesc* u, Worker* local) {
  if (Worker* home = u->home; home != nullptr) {  // bound
    // After the push u may run, exit and its worker finish: hold the worker
    // (wakers) until the wake is done; never re-read u (pool.cc, "Bound
    // workers").
    home->wakers.fetch_add(1, std::memory_order_acq_rel);
    home->inbox_push(u);
    wake_worker(home);
    home->wakers.fetch_sub(1, std::memory_order_release);
    return;
  }
  if (prio_of(u) != kPrioNormal) {
    prio_push(u);
    return;
  }
  if (local != nullptr) {
    bool had_work = !local->deque.owner_empty();
    if (local->deque.push(u)) {
      // A lone active worker has nobody to wake: it runs its own deque.
      if (active.load(std::memory_order_relaxed) > 1) {
        if (had_work) notify_work(); else local->core().notify_deferred = true;
      }
      return;
    }
  }
  global_push(u);
  notify_work();
}

void Scheduler::make_runnable(UltDesc* u, Worker* here) {
  if (Worker* home = u->home; home != nullptr) {
    if (home == here && here == current_worker() && queues_pinned_locally(here, u)) {
      // Pinned here, woken here (an epoll readiness wait by this worker's
      // poll, a local unlock): the yield queue keeps it here (must_stay)
      // and in turn with the rest, as the inbox would not (below).
      here->core().yield_queue.push_back(u);
      return;
    }
    // As in submit_new: u may be gone after the push, and a bound home
    // with it; read home once and hold it until the wake is done.
    home->wakers.fetch_add(1, std::memory_order_acq_rel);
    home->inbox_push(u);
    if (home != here) wake_worker(home);
    home->wakers.fetch_sub(1, std::memory_order_release);
    return;
  }
  if (prio_of(u) != kPrioNormal) {
    prio_push(u);
    return;
  }
  if (here != nullptr && here->sched == this && !here->is_bound && here->active() && here == current_worker()) {
    if (here->current.load(std::memory_order_relaxed) == nullptr) {
      // Woken from the scheduler loop (io completions, timers): keep their
      // order, FIFO, behind what is already queued here. run_next is for a
      // ULT woken by the running ULT (locality); a batch of completions
      // pushed through it would run newest first and starve the oldest.
      here->core().yield_queue.push_back(u);
      here->core().notify_deferred = true;
      return;
    }
    // The owner fills an empty slot with a plain store: thieves only ever
    // swap a ULT out for null, so an empty slot cannot change under us.
    UltDesc* old = here->run_next.load(std::memory_order_relaxed);
    if (old == nullptr) {
      here->run_next.store(u, std::memory_order_release);
    } else {
      old = here->run_next.exchange(u, std::memory_order_acq_rel);
    }
    if (old != nullptr) {
      if (!here->deque.push(old)) global_push(old);
      notify_work();
    } else {
      here->core().notify_deferred = true;
    }
    return;
  }
  global_push(u);
  notify_work();
}

void Scheduler::settle_deferred_notify(Worker* w) {
  w->core().notify_deferred = false;
  if (!w->deque.owner_empty() || w->run_next.load(std::memory_order_relaxed) != nullptr) notify_work();
}

void Scheduler::notify_work() {
  full_fence();
  if (npidle.load(std::memory_order_relaxed) > 0 && nmspinning.load(std::memory_order_relaxed) == 0) wake_one();
}

// nmspinning goes 0 -> 1 only under idle_lock, and only when an idle worker
// is there to be woken as that spinner. (Until issue 9 #12 it went 0 -> 1
// first and back to 0 if the idle set was empty: in that window another
// publisher saw a spinner that did not exist and woke nobody, and its ULT
// waited for a busy worker's next pass. tests/runtime_wakeup_model_test.cc
// finds that interleaving in the old order.)
void Scheduler::wake_one() {
  Worker* w = nullptr;
  {
    LockGuard<KltMutex> g(idle_lock);
    if (idle.empty()) return;  // nobody sleeps: every worker will look again
    int zero = 0;
    if (!nmspinning.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return;  // a spinner will
    w = idle.back();
    idle.pop_back();
    w->in_idle_set = false;
    w->woken_spinning = true;  // it starts spinning, on our nmspinning count
    npidle.fetch_sub(1, std::memory_order_seq_cst);
  }
  w->poller->wake();
}

void Scheduler::wake_worker(Worker* w) {
  full_fence();
  if (w == current_worker()) return;
  {
    LockGuard<KltMutex> g(idle_lock);
    if (w->in_idle_set) {
      auto it = std::find(idle.begin(), idle.end(), w);
      if (it != idle.end()) idle.erase(it);
      w->in_idle_set = false;
      npidle.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
  w->poller->wake();
}

bool Scheduler::remove_idle(Worker* w, bool* was_woken_spinning) {
  LockGuard<KltMutex> g(idle_lock);
  *was_woken_spinning = w->woken_spinning;
  w->woken_spinning = false;
  if (!w->in_idle_set) return false;
  auto it = std::find(idle.begin(), idle.end(), w);
  if (it != idle.end()) idle.erase(it);
  w->in_idle_set = false;
  npidle.fetch_sub(1, std::memory_order_seq_cst);  // then kick_monitor (find_runnable_inner)
  return true;
}

// ---------------------------------------------------------------------------
// The scheduler loop
// ---------------------------------------------------------------------------

void Worker::spill_half_of_yield_queue() {
  IntrusiveQueue<UltDesc> keep, give;
  bool to_give = false;
  for (UltDesc* u; (u = core_.yield_queue.pop_front()) != nullptr;) {
    if (u->must_stay()) {  // pinned, or preempted (preempt.cc): resumes here
      keep.push_back(u);
      continue;
    }
    (to_give ? give : keep).push_back(u);
    to_give = !to_give;
  }
  core_.yield_queue.swap(keep);
  if (!give.empty()) {
    sched->global_push_queue(&give);
    sched->notify_work();
  }
}

void Scheduler::count_timer_lateness(int64_t late_ns) {
  int b = late_ns <= 10'000 ? 0 : late_ns <= 100'000 ? 1 : late_ns <= 1'000'000 ? 2
        : late_ns <= 10'000'000 ? 3 : late_ns <= 100'000'000 ? 4 : 5;
  timer_late[b].fetch_add(1, std::memory_order_relaxed);
}

size_t Worker::fire_timers(int64_t now) {
  TimerHeap::Fired due[32];
  size_t total = 0;
  for (;;) {
    size_t n = timers.take_due(now, due, 32);
    for (size_t i = 0; i < n; ++i) {
      sched->count_timer_lateness(due[i].late_ns);
      unpark(due[i].ult);
    }
    total += n;
    if (n < 32) return total;
  }
}

// A spinner that found work stops spinning; if it was the last spinner there
// may be more work than it can take, so it wakes another (Go's resetspinning).
void Worker::stop_spinning() {
  core_.spinning = false;
  if (sched->nmspinning.fetch_sub(1, std::memory_order_acq_rel) == 1) sched->notify_work();
}

UltDesc* Worker::find_runnable() {
  UltDesc* u = find_runnable_inner();
  if (u != nullptr && core_.spinning) stop_spinning();
  return u;
}

UltDesc* Worker::find_runnable_inner() {
  Scheduler* s = sched;
  for (;;) {
    if (stop.load(std::memory_order_acquire)) return nullptr;
    // The yield queue (yielded ULTs, and ULTs woken from this loop) stays
    // FIFO and local; a retired worker hands it over, and half of it goes
    // to the global queue when other workers are idle (below).
    if (!active()) {  // preempted ULTs resume here: a retired worker runs its inbox
      for (UltDesc* u; (u = core_.stay_high.pop_front()) != nullptr;) inbox_push(u);
      for (UltDesc* u; (u = core_.stay_bg.pop_front()) != nullptr;) inbox_push(u);
    }
    if (!core_.yield_queue.empty() && !active()) {
      for (UltDesc* u; (u = core_.yield_queue.pop_front()) != nullptr;) {
        if (u->must_stay()) {
          inbox_push(u);  // pinned or preempted: a retired worker runs its inbox
        } else {
          s->global_push(u);
        }
      }
      s->notify_work();
    }
    if (!timers.empty()) fire_timers(monotonic_ns());
    poller->poll();
    bool act = active();
    // The inbox: ULTs that must run here, queued by other threads, and
    // urgent wakes (signals). A pinned ULT of normal priority joins the
    // yield queue instead of running at once: its requeues and wakes by
    // this worker go there directly (handle_transfer, make_runnable), and
    // until they did, a stream of them served first starved everything
    // else here (issue 15: the high-priority ticker of hook_redis on epoll,
    // whose readiness waits are pinned, waited up to 56 ms; 100 pinned
    // yielders kept one worker's deque waiting until they ended:
    // Timers.DequeRunsBesidePinnedYielders, Priority.HighRunsBesidePinnedYielders).
    // Bounded by the count seen at the start: pushes go on meanwhile.
    for (uint32_t n = act ? inbox_count.load(std::memory_order_acquire) : 1; n != 0; --n) {
      UltDesc* u = inbox_pop();
      if (u == nullptr) break;
      if (!act || u->home != this || !queues_pinned_locally(this, u)) return u;
      core_.yield_queue.push_back(u);
    }

    if (act) {
      // Priorities: high first; background ULTs that waited past their
      // bound before normal work (scheduler.cc, "Priorities").
      if (UltDesc* u = s->high_pop()) return u;
      if (UltDesc* u = core_.stay_high.pop_front()) return u;
      if (s->bg_count.load(std::memory_order_relaxed) != 0 || !core_.stay_bg.empty()) {
        int64_t due = monotonic_ns() - kBackgroundMaxWaitNs;
        UltDesc* u = nullptr;
        if (UltDesc* h = core_.stay_bg.front(); h != nullptr && (h->bg_since <= due || prio_of(h) != kPrioBackground))
          u = core_.stay_bg.pop_front();  // waited past the bound, or raised by inheritance
        if (u == nullptr) u = s->bg_pop(due);
        if (u != nullptr) {
          if (prio_of(u) == kPrioBackground) s->background_starvation_runs.fetch_add(1, std::memory_order_relaxed);
          return u;
        }
      }
      // The global queue at every pass (a pass comes every kGlobalEvery
      // switches at most): ULTs woken by the monitor (timers of busy
      // workers) and by foreign threads wait there. Until issue 13 only
      // every kGlobalEvery-th pass looked, so a worker busy with a spawn
      // chain served it every ~3,700 switches (160 ms under ASan).
      if (UltDesc* u = s->global_pop_batch(this)) return u;
      // The yielders' turn (WorkerCore::yield_queue): while other local
      // work is queued, they would otherwise wait for all of it, and a
      // spawn chain never lets the deque empty.
      if (!core_.yield_queue.empty() &&
          (run_next.load(std::memory_order_relaxed) != nullptr || !deque.owner_empty())) {
        // Batches and the deque alternate. A batch granted by an earlier
        // pass that is not used up goes on, and no more is granted; once it
        // is, the next pass leaves run_next and the deque their turn (below,
        // then pick_local until the pass after, at most kGlobalEvery
        // switches). Until this, every pass granted the queue's whole
        // length again, including the ULTs woken since (io completions):
        // under a steady stream of them the batch never ended and the deque
        // waited for a lull (echo_bench, 1 worker, 1,000 closed-loop
        // connections: new connections' ULTs waited up to 13 s for their
        // first run; Timers.DequeRunsBesideStreamOfYielders).
        if (core_.yield_turns != 0) {
          --core_.yield_turns;
          return yield_pop();
        }
        if (core_.deque_turn_owed) {
          core_.deque_turn_owed = false;
        } else {
          core_.deque_turn_owed = true;
          core_.yield_turns = static_cast<uint32_t>(core_.yield_queue.size() - 1);
          if (core_.yield_turns != 0 && s->npidle.load(std::memory_order_relaxed) > 0) {
            spill_half_of_yield_queue();
            core_.yield_turns = static_cast<uint32_t>(core_.yield_queue.size() - 1);
          }
          return yield_pop();
        }
      }
      if (run_next.load(std::memory_order_relaxed) != nullptr) {
        if (UltDesc* u = run_next.exchange(nullptr, std::memory_order_acquire)) return u;
      }
      if (UltDesc* u = deque.pop()) return u;
      if (!core_.yield_queue.empty()) {
        // Woken by poll()/timers just now (FIFO). Share if others idle.
        if (core_.yield_queue.size() > 1 && s->npidle.load(std::memory_order_relaxed) > 0) spill_half_of_yield_queue();
        return yield_pop();
      }
      if (UltDesc* u = s->global_pop_batch(this)) return u;

      // Steal, as a spinner; at most half the busy workers spin at once.
      int nact = s->active.load(std::memory_order_relaxed);
      if (nact > 1 &&
          (core_.spinning || 2 * s->nmspinning.load(std::memory_order_relaxed) <
                           nact - s->npidle.load(std::memory_order_relaxed))) {
        if (!core_.spinning) {
          core_.spinning = true;
          s->nmspinning.fetch_add(1, std::memory_order_acq_rel);
        }
        for (int round = 0; round < kStealRounds; ++round) {
          int start = static_cast<int>(next_random(&core_.rng) % static_cast<uint64_t>(nact));
          for (int i = 0; i < nact; ++i) {
            int v = (start + i) % nact;
            if (v == index.load(std::memory_order_relaxed)) continue;
            Worker* victim = s->worker_at(v);
            UltDesc* u = victim->deque.steal();
            if (u == nullptr && round == kStealRounds - 1 &&
                victim->run_next.load(std::memory_order_relaxed) != nullptr)
              u = victim->run_next.exchange(nullptr, std::memory_order_acq_rel);
            if (u != nullptr) {
              bump(steals);
              if (__builtin_expect(trace != nullptr, 0)) trace->put(trace::kSteal, u->id_value(), static_cast<uint64_t>(v));
              return u;
            }
          }
          cpu_relax();
        }
      }
    } else if (!deque.owner_empty() || run_next.load(std::memory_order_relaxed) != nullptr) {
      // Retired by set_concurrency: hand the queued ULTs to the others —
      // at every pass that finds some, not once per retirement: a ULT that
      // ran here from the inbox (pinned) while the worker was active again
      // for a moment may have queued more, without this worker ever
      // passing through the active branch (issue 9 #12: two quick
      // set_concurrency flips left ULTs stranded in a retired deque, which
      // nobody steals from). Only the owner pushes to its deque and
      // run_next, so once empty here they stay empty until we run a ULT.
      UltDesc* u;
      while ((u = deque.pop()) != nullptr) s->global_push(u);
      if ((u = run_next.exchange(nullptr, std::memory_order_acq_rel)) != nullptr) s->global_push(u);
      s->notify_work();
    }

    if (act) {  // no high or normal work anywhere: background ULTs
      if (UltDesc* u = core_.stay_bg.pop_front()) return u;
      if (UltDesc* u = s->bg_pop(-1)) return u;
    }

    // Nothing to do: announce that we sleep, then look once more (the
    // handshake in the comment at the top of this file).
    if (act) {
      LockGuard<KltMutex> g(s->idle_lock);
      s->idle.push_back(this);
      in_idle_set = true;
      s->npidle.fetch_add(1, std::memory_order_acq_rel);
    }
    bool was_spinning = core_.spinning;
    if (core_.spinning) {
      core_.spinning = false;
      // A spinner that was retired meanwhile skips the re-check of the
      // shared queues below: if it was the last spinner, hand the duty on,
      // or a ULT published while it was the spinner could be missed.
      if (s->nmspinning.fetch_sub(1, std::memory_order_acq_rel) == 1 && !act) s->notify_work();
    }
    full_fence();
    bool work = inbox_count.load(std::memory_order_acquire) != 0 || stop.load(std::memory_order_acquire);
    if (!work && timer_due()) work = true;
    if (!work && act) {
      work = s->global_count.load(std::memory_order_acquire) != 0 || s->high_count.load(std::memory_order_acquire) != 0 ||
             s->bg_count.load(std::memory_order_acquire) != 0;
      int nact = s->active.load(std::memory_order_relaxed);
      for (int v = 0; !work && v < nact; ++v) {
        Worker* o = s->worker_at(v);
        work = !o->deque.empty_approx() || o->run_next.load(std::memory_order_relaxed) != nullptr;
      }
      if (!work && s->active.load(std::memory_order_relaxed) <= index.load(std::memory_order_relaxed))
        work = true;  // retired meanwhile
    }
    if (work && was_spinning && act) {
      // Publishers that saw us spinning woke nobody: we owe them what a
      // spinner owes (Go's findrunnable does the same). Spin again, so that
      // taking the work goes through stop_spinning(), which wakes another
      // worker if we are the last spinner — there may be more work than we
      // take. (Found missing by tests/runtime_wakeup_model_test.cc.)
      core_.spinning = true;
      s->nmspinning.fetch_add(1, std::memory_order_acq_rel);
    }
    if (!work) {
      bump(sleeps);
      int64_t until = timers.earliest();
      if (until >= 0) {
        // A far deadline (a timed wait of years) is cut to an hour: pollers
        // turn deadlines into relative milliseconds or timespecs, and one
        // spurious return an hour costs nothing.
        int64_t cap = detail::deadline_after(monotonic_ns(), kMaxPollerWaitNs);
        if (until > cap) until = cap;
      }
      int64_t slept_from = monotonic_ns();
      if (__builtin_expect(trace != nullptr, 0)) trace->put(trace::kIdle);
      poller->wait(until);
      if (__builtin_expect(trace != nullptr, 0)) trace->put(trace::kWake);
      bump_by(idle_ns, monotonic_ns() - slept_from);
    }
    bool woken_spinning = false;
    if (act) s->remove_idle(this, &woken_spinning);
    // We may run ULTs now: the monitor must watch on its short tick. Out of
    // the idle set first (npidle--, seq_cst), then look at monitor_idle —
    // the monitor stores monitor_idle = 1 and then reads npidle, so one of
    // us sees the other (monitor.cc). Also when we did not sleep: while we
    // stood in the idle set the monitor may have counted us idle. (Until
    // issue 9 #12 the kick came before remove_idle and only after a sleep.)
    s->kick_monitor();
    if (woken_spinning) {
      // wake_one counted us as a spinner.
      if (core_.spinning) {
        s->nmspinning.fetch_sub(1, std::memory_order_acq_rel);
      } else {
        core_.spinning = true;
      }
    }
  }
}

void Worker::loop() {
  for (;;) {
    UltDesc* u = find_runnable();
    if (u == nullptr) break;
    WEFT_DCHECK(u->home == nullptr || u->home == this, "ULT %u runs off its home worker", u->index);
    if (core_.notify_deferred) sched->settle_deferred_notify(this);
    u->worker.store(this, std::memory_order_release);  // see switch_from
    current.store(u, std::memory_order_relaxed);
    ++core_.tick;
    core_.until_loop = kGlobalEvery;
    bump(switches);
    if (__builtin_expect(trace != nullptr, 0)) trace_run(this, u);
    uintptr_t t = reinterpret_cast<uintptr_t>(sys::context_switch(&core_.sched_ctx, &u->ctx, nullptr));
    current.store(nullptr, std::memory_order_relaxed);
    if (__builtin_expect(trace != nullptr, 0)) trace->put(trace::kLoop);
    handle_transfer(this, t);
    SwitchAction a = decode_action(t);
    if (is_bound && (a == SwitchAction::kExit || a == SwitchAction::kExitRelease)) {
      // Our ULT is gone: this KLT ends with it (pool.cc, "Bound workers").
      sched->bound_done(this);
      return;
    }
    WEFT_DCHECK(!core_.spinning, "worker %d ran a ULT while counted as spinning", index.load(std::memory_order_relaxed));
  }
}

}  // namespace weft::rt
