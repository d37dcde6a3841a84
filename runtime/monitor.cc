// runtime/monitor.cc — the monitor KLT: one per runtime, runs no ULTs.
//
// Each tick it looks at every active worker:
//  - In a blocking region (weft::blocking) for longer than the threshold:
//    hand off (handoff_locked). The worker's queued ULTs and timed parks
//    move to the global queue and to a spare worker, the spare takes the
//    blocked worker's slot (and so its share of the work), and the blocked
//    worker becomes retired: when its ULT comes back it runs on, then the
//    worker serves only what must run on its KLT (pinned ULTs, its io ring).
//    This is the seeds' scheduler activation, without kernel upcalls.
//  - Running one ULT without a switch for longer than the threshold, with
//    its KLT asleep in the kernel (a system call no hook covers, a
//    pthread_mutex_lock that sleeps, a page fault on a slow file): hand
//    its slot to a spare as for a region (kernel_block_handoff). Found
//    cheaply: only a worker already stalled that long is a suspect, its
//    CPU clock is sampled (one system call per tick), and only when that
//    clock stood still does the monitor read the KLT's state from /proc
//    (three calls): 'S' or 'D' at two looks in a row is blocked; 'R'
//    (computing, or runnable but not given a CPU by a busy machine) is
//    not. Such a KLT, back from its call and still running its ULT as a
//    retired worker, takes the place of an idle active worker
//    (rejoin_if_idle_slot).
//  - Running one ULT without a switch for longer than the threshold while
//    ULTs wait in its deque or run_next (a long computation): those are
//    moved to the global queue and an idle worker is woken (a hog rescue).
//    Its yield queue is the running KLT's own and stays (time-slice
//    preemption frees it).
//  - Fires the due timers of a worker that runs a ULT or is blocked in a
//    region (fire_busy_timers): timers never wait for a busy worker. It
//    wakes for the earliest of them rather than at its next tick, and when
//    no worker is idle to run what it woke, it asks the worker whose ULT
//    has run longest (250 us at least) to switch it out (wake-up
//    preemption, preempt_longest_running).
//  - Time slices and priorities: asks a worker whose ULT has run past
//    Options::time_slice to switch it out, and, while high-priority ULTs
//    wait, the worker running the lowest priority (preempt.cc).
//  - Not switched since the last tick with work queued: settle its deferred
//    notify (scheduler.cc, "Deferred notify").
//  - A retired worker (set_concurrency lowered) whose KLT is in a blocking
//    region or runs a ULT, with ULTs still in its deque or run_next: they
//    go to the global queue (its own hand-over waits for a scheduler pass
//    that may not come for long).
// Every kReapEvery it runs the reaper (death_row.h).
//
// The tick is 1 ms while any worker is awake, shorter while a blocking
// region is open (it wakes when that region reaches the threshold) or a
// busy worker has a timer due sooner, and
// 100 ms when all workers sleep — then whoever makes work kicks it awake
// (Scheduler::kick_monitor): a worker leaving the idle set (after its
// npidle--, whether or not it slept), a region opening (after its
// blocking store). Store, then load, on both sides: see below and
// tests/runtime_wakeup_model_test.cc.
#include <algorithm>
#include <ctime>

#include "runtime/death_row.h"
#include "runtime/log.h"
#include "runtime/preempt.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"
#include "sys/task_state.h"

namespace weft::rt {
namespace {

constexpr int64_t kBusyTickNs = 1000 * 1000;         // 1 ms
constexpr int64_t kIdleTickNs = 100 * 1000 * 1000;   // 100 ms
constexpr int64_t kMinTickNs = 20 * 1000;            // 20 µs
constexpr int64_t kReapEveryNs = 100 * 1000 * 1000;

bool has_stealable_work(Worker* w) {
  return !w->deque.empty_approx() || w->run_next.load(std::memory_order_relaxed) != nullptr;
}

// Moves w's stealable ULTs (deque, run_next) to the global queue.
// Safe from any thread: steal() and the run_next exchange are.
int64_t take_stealable(Scheduler* s, Worker* w) {
  int64_t n = 0;
  while (!w->deque.empty_approx()) {
    if (UltDesc* u = w->deque.steal()) {
      s->global_push(u);
      ++n;
    }
  }
  if (UltDesc* u = w->run_next.exchange(nullptr, std::memory_order_acq_rel)) {
    s->global_push(u);
    ++n;
  }
  return n;
}

// A retired worker that is idle (no ULT on it, not in a blocking region,
// nothing pinned to it waiting) can take a blocked worker's slot.
Worker* find_spare_locked(Scheduler* s) {
  int act = s->active.load(std::memory_order_relaxed);
  int n = s->nworkers.load(std::memory_order_relaxed);
  for (int j = act; j < n; ++j) {
    Worker* c = s->worker_at(j);
    if (Scheduler::can_take_slot(c)) return c;
  }
  if (n < s->max_workers) {
    absl::StatusOr<Worker*> w = s->start_worker(n);  // starts retired: its slot is >= active
    if (w.ok()) return *w;
    log().warn("blocking handoff: cannot start a spare worker: {}", w.status().ToString());
  }
  return nullptr;
}

// Hands the slot of w, blocked in a region opened with word `st`, to a
// spare. Caller holds concurrency_lock.
void handoff_locked(Scheduler* s, Worker* w, uint64_t st) {
  if (s->stopped.load(std::memory_order_acquire)) return;
  int i = w->index.load(std::memory_order_relaxed);
  if (i >= s->active.load(std::memory_order_relaxed)) return;
  Worker* spare = find_spare_locked(s);
  if (spare == nullptr) return;  // at max_workers: the region blocks its worker, as a plain call would
  // Claim w (flag 3). From here until we publish flag 2, w's owner-only
  // state is ours: its KLT, if it leaves the region, waits for flag 2.
  std::optional<HandoffClaim> claim = w->claim_for_handoff(st);
  if (!claim) return;
  WorkerCore& core = w->core(*claim);
  s->swap_slots_locked(i, spare->index.load(std::memory_order_relaxed));
  int64_t moved = 0;
  for (UltDesc* u; (u = core.stay_high.pop_front()) != nullptr;) w->inbox_push(u);  // preempted: resume on w
  for (UltDesc* u; (u = core.stay_bg.pop_front()) != nullptr;) w->inbox_push(u);
  for (UltDesc* u; (u = core.yield_queue.pop_front()) != nullptr;) {
    if (u->must_stay()) {
      w->inbox_push(u);  // pinned or preempted: resumes on w's KLT once its region ends
    } else {
      s->global_push(u);
      ++moved;
    }
  }
  moved += take_stealable(s, w);
  // Its timed parks stay in its heap: the monitor fires them while its KLT
  // is blocked (fire_busy_timers), its own loop once it is back.
  w->end_handoff(std::move(*claim));
  s->handoffs.fetch_add(1, std::memory_order_relaxed);
  if (__builtin_expect(s->tracer != nullptr, 0))
    s->tracer->shared()->put(trace::kHandoff, 0, static_cast<uint64_t>(i), static_cast<uint64_t>(w->tid.load()),
                             spare->tid.load());
  s->wake_worker(spare);
  s->notify_work();
  log().debug("blocking handoff: slot {} from worker tid {} to tid {}; {} ULTs moved", i, w->tid.load(),
              spare->tid.load(), moved);
}

// Hands the slot of w, whose KLT is asleep in the kernel inside the ULT it
// runs (no blocking region: the KLT made no promise about its owner-only
// state), to a spare. Only what other threads may touch moves: the slot
// (the KLT reads its index at its next scheduler pass, as after
// set_concurrency lowered the level), the deque and run_next (steal and
// exchange), and its timers, which the monitor fires while it runs a ULT
// (fire_busy_timers). Its yield queue, preempted ULTs and io ring stay
// with the KLT: when its call returns and its ULT next switches, the
// retired worker hands its queues over (Worker::find_runnable_inner). The
// switch count `seen` is what the monitor saw while it found the KLT
// asleep: if the worker switched since, it is no longer blocked. Caller
// holds concurrency_lock. Returns whether it handed off (not at
// max_workers, nor when the worker moved meanwhile).
bool kernel_block_handoff_locked(Scheduler* s, Worker* w, uint64_t seen) {
  if (s->stopped.load(std::memory_order_acquire)) return false;
  int i = w->index.load(std::memory_order_relaxed);
  int act = s->active.load(std::memory_order_relaxed);
  if (i >= act) return false;
  if (w->switches.load(std::memory_order_acquire) + w->sleeps.load(std::memory_order_acquire) != seen) return false;
  Worker* spare = find_spare_locked(s);
  if (spare == nullptr) return false;  // at max_workers: the call blocks its worker, as without weft
  int j = spare->index.load(std::memory_order_relaxed);
  s->swap_slots_locked(i, j);
  // A swap of one active and one retired slot: the level is unchanged.
  WEFT_DCHECK(j >= act && s->worker_at(i) == spare && s->worker_at(j) == w && s->active.load(std::memory_order_relaxed) == act,
              "kernel-block handoff swapped slots %d and %d with %d active", i, j, act);
  int64_t moved = take_stealable(s, w);
  s->kernel_block_handoffs.fetch_add(1, std::memory_order_relaxed);
  if (__builtin_expect(s->tracer != nullptr, 0))
    s->tracer->shared()->put(trace::kKernelHandoff, 0, static_cast<uint64_t>(i), static_cast<uint64_t>(w->tid.load()),
                             spare->tid.load());
  w->monitor_asleep = 0;
  w->monitor_cpu_at = 0;  // from here its samples are rejoin_if_idle_slot's
  s->wake_worker(spare);
  s->notify_work();
  log().debug("kernel-block handoff: slot {} from worker tid {} (asleep in the kernel) to tid {}; {} ULTs moved", i,
              w->tid.load(), spare->tid.load(), moved);
  return true;
}

// A worker handed off while asleep in the kernel goes on running its ULT
// once the call returns, as a retired worker, until that ULT next switches
// (a ULT switched out by preemption resumes on the same KLT): one more KLT
// runs ULTs than the concurrency level says, for as long as that ULT
// never calls into weft. When an active worker sits idle meanwhile, the
// two swap slots back: the retired one, awake again and running its ULT,
// rejoins, and the idle one becomes the spare. Not for a KLT still in a
// region or still asleep in the kernel (the monitor's next look would
// hand it off again): its CPU clock must have advanced by an eighth of the
// time since the last look (one system call per tick, only while a
// worker is idle). Returns whether it swapped.
bool rejoin_if_idle_slot(Scheduler* s, Worker* w, int64_t now) {
  if (w->is_bound || w->current.load(std::memory_order_relaxed) == nullptr ||
      w->in_blocking.load(std::memory_order_acquire) || s->npidle.load(std::memory_order_relaxed) == 0) {
    w->monitor_cpu_at = 0;
    return false;
  }
  long long cpu = sys::task_cpu_ns(w->tid.load(std::memory_order_relaxed));
  bool awake = w->monitor_cpu_at != 0 && cpu >= 0 && (cpu - w->monitor_cpu_ns) * 8 >= now - w->monitor_cpu_at;
  w->monitor_cpu_ns = cpu;
  w->monitor_cpu_at = now;
  if (!awake || !s->concurrency_lock.try_lock()) return false;
  bool swapped = false;
  int i = w->index.load(std::memory_order_relaxed);
  int act = s->active.load(std::memory_order_relaxed);
  if (!s->stopped.load(std::memory_order_acquire) && i >= act && w->current.load(std::memory_order_relaxed) != nullptr) {
    for (int j = 0; j < act && !swapped; ++j) {
      Worker* idle = s->worker_at(j);
      if (!Scheduler::can_take_slot(idle)) continue;
      s->swap_slots_locked(j, i);
      // One active and one retired slot swapped: the level is unchanged.
      WEFT_DCHECK(s->worker_at(j) == w && s->worker_at(i) == idle && s->active.load(std::memory_order_relaxed) == act,
                  "rejoin swapped slots %d and %d with %d active", j, i, act);
      s->wake_worker(idle);  // it finds itself retired and settles as a spare
      swapped = true;
      log().debug("rejoin: worker tid {} takes slot {} back from idle tid {}", w->tid.load(), j, idle->tid.load());
    }
  }
  s->concurrency_lock.unlock();
  return swapped;
}

// Fires the due timers of every pool worker that will not reach its own
// scheduler loop soon: one running a ULT, or blocked in a region (active
// or retired). Their ULTs are unparked from here, so they go to the global
// queue, where an idle worker (woken by the unpark) or the next scheduler
// pass of a busy one takes them. An idle worker sleeps until its own
// earliest deadline and fires it itself. (Until issue 13 a worker's timers
// waited for its own loop: a sleep on a worker busy with one long ULT woke
// about a second late while another worker sat idle.)
// Returns the earliest deadline still pending on such a worker (-1: none),
// so that the monitor wakes for it instead of at its next 1 ms tick; and
// counts in *fired the timers it fired.
int64_t fire_busy_timers(Scheduler* s, int64_t now, size_t* fired) {
  int64_t next = -1;
  int n = s->nworkers.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) {
    Worker* w = s->worker_at(i);
    if (w == nullptr) continue;
    int64_t e = w->timers.earliest();
    if (e < 0) continue;
    if (w->current.load(std::memory_order_relaxed) == nullptr && !w->in_blocking.load(std::memory_order_acquire))
      continue;  // in its loop: it fires them itself
    if (e <= now) {
      size_t k = w->fire_timers(now);
      *fired += k;
      s->timers_fired_by_monitor.fetch_add(k, std::memory_order_relaxed);
      e = w->timers.earliest();
    }
    if (e >= 0 && (next < 0 || e < next)) next = e;
  }
  return next;
}

// Wake-up preemption (as CFS's): ULTs the monitor just woke wait in the
// global queue; if no worker is idle to take them, the workers whose ULT
// has run longest — at least kWakeupGranularityNs — are asked to switch it
// out, one per woken ULT (their next scheduler pass serves the global queue
// first). So a sleeper beside CPU-bound ULTs runs a fraction of a
// millisecond after its deadline, not a slice later. Off with time_slice 0.
constexpr int64_t kWakeupGranularityNs = 250 * 1000;  // 250 us

void preempt_longest_running(Scheduler* s, int64_t now, size_t woken) {
  if (s->time_slice_ns <= 0 || s->npidle.load(std::memory_order_seq_cst) > 0) return;
  // As many workers as ULTs were woken (each preempted worker takes a
  // share of the global queue), those whose ULT has run longest first.
  int act = s->active.load(std::memory_order_acquire);
  for (size_t k = 0; k < woken; ++k) {
    Worker* target = nullptr;
    for (int i = 0; i < act; ++i) {
      Worker* w = s->worker_at(i);
      if (w->in_blocking.load(std::memory_order_relaxed) || w->current.load(std::memory_order_relaxed) == nullptr) continue;
      if (now - w->monitor_stalled_since < kWakeupGranularityNs || w->monitor_preempt_sent == now) continue;
      if (target == nullptr || w->monitor_stalled_since < target->monitor_stalled_since) target = w;
    }
    if (target == nullptr) return;
    target->monitor_preempt_sent = now;  // not twice in this pass
    if (preempt::request_now(s, target)) s->preempt_requested.fetch_add(1, std::memory_order_relaxed);
  }
}

// Returns the time until the monitor has something to do before its next
// tick — a blocking region reaches the threshold, a busy worker's timer
// is due — or -1.
int64_t scan(Scheduler* s, int64_t now) {
  size_t fired = 0;
  int64_t timer_next = fire_busy_timers(s, now, &fired);
  if (fired != 0) preempt_longest_running(s, now, fired);
  // High-priority ULTs still wait while no worker is idle: ask again (the
  // waker's request may have been deferred or gone to a KLT that was in a
  // system call).
  if (s->high_count.load(std::memory_order_relaxed) != 0) s->preempt_for_priority();
  int64_t next = -1;
  int act = s->active.load(std::memory_order_acquire);
  int64_t threshold = s->blocking_threshold_ns;
  for (int i = 0; i < act; ++i) {
    Worker* w = s->worker_at(i);
    // Blocking region.
    uint64_t st = w->blocking.load(std::memory_order_acquire);
    if ((st & 3) == 1) {
      // The region may have opened after `now` was read: its start is
      // then later than now (elapsed 0, not negative: threshold minus a
      // negative elapsed overflowed for a threshold of "never", UBSan in
      // the clean-clone ASan run of 1e0c2b4's hook_redis test).
      int64_t since = w->blocking_since_ns.load(std::memory_order_relaxed);
      int64_t elapsed = std::max<int64_t>(0, now - since);
      if (elapsed >= threshold) {
        if (s->concurrency_lock.try_lock()) {  // never wait: shutdown may hold it for long
          handoff_locked(s, w, st);
          s->concurrency_lock.unlock();
        }
      } else {
        int64_t left = threshold - elapsed;  // 0 <= elapsed < threshold: no overflow
        next = next < 0 ? left : std::min(next, left);
      }
      continue;
    }
    // Stalled: no switch since the last look.
    uint64_t seen = w->switches.load(std::memory_order_relaxed) + w->sleeps.load(std::memory_order_relaxed);
    if (seen != w->monitor_seen) {
      w->monitor_seen = seen;
      w->monitor_stalled_since = now;
      w->monitor_cpu_at = 0;  // samples belong to one stall
      w->monitor_asleep = 0;
      continue;
    }
    // The KLT's CPU clock, sampled each tick once the ULT has gone without
    // a switch for half a slice or for the handoff threshold (one system
    // call): whether it has been on a CPU for at least an eighth of the
    // time since the last sample.
    //
    // Time slice: the ULT running here since the last switch has had it.
    // Asked again every tick while it stays (a deferred request: the ULT
    // may have left the code where it could not be switched out), and only
    // of a KLT that has been on a CPU: one that sits in a system call a ULT
    // made directly must not get a signal that would end that call with
    // EINTR (preempt.cc).
    //
    // Asleep in the kernel: a clock that stood still and a state of 'S' or
    // 'D' at two samples in a row (so about 2 ms asleep: a KLT that only
    // waits in short bursts, e.g. for a contended std::mutex, is left
    // alone) mean a blocking call (or fault) no hook covered: hand off.
    bool slice_due = s->time_slice_ns > 0 && now - w->monitor_stalled_since >= s->time_slice_ns / 2;
    bool block_due = now - w->monitor_stalled_since >= threshold;
    if (w->current.load(std::memory_order_relaxed) != nullptr && (slice_due || block_due)) {
      int tid = w->tid.load(std::memory_order_acquire);  // then stat_fd (Worker)
      long long cpu = sys::task_cpu_ns(tid);
      bool sampled = w->monitor_cpu_at != 0 && cpu >= 0;
      bool on_cpu = sampled && (cpu - w->monitor_cpu_ns) * 8 >= now - w->monitor_cpu_at;
      w->monitor_cpu_ns = cpu;
      w->monitor_cpu_at = now;
      bool asleep = false;
      if (block_due && sampled && !on_cpu) {
        char state = sys::task_state(w->stat_fd.load(std::memory_order_relaxed), tid);
        asleep = state == 'S' || state == 'D';
      }
      w->monitor_asleep = asleep ? w->monitor_asleep + 1 : 0;
      if (w->monitor_asleep >= 2 && s->concurrency_lock.try_lock()) {  // never wait: shutdown may hold it for long
        bool handed = kernel_block_handoff_locked(s, w, seen);
        s->concurrency_lock.unlock();
        if (handed) continue;
        // Not handed off (no spare within max_workers): the hog rescue
        // below still moves its queued ULTs to the global queue.
      }
      if (slice_due && on_cpu && now - w->monitor_stalled_since >= s->time_slice_ns &&
          now - w->monitor_preempt_sent >= std::min<int64_t>(s->time_slice_ns, kBusyTickNs)) {
        w->monitor_preempt_sent = now;
        preempt::request(s, w, seen);
      }
    } else {
      w->monitor_cpu_at = 0;
      w->monitor_asleep = 0;
    }
    if (!has_stealable_work(w)) continue;
    if (w->current.load(std::memory_order_relaxed) != nullptr && now - w->monitor_stalled_since >= threshold) {
      if (int64_t moved = take_stealable(s, w); moved != 0) {
        s->hog_rescues.fetch_add(1, std::memory_order_relaxed);
        if (__builtin_expect(s->tracer != nullptr, 0))
          s->tracer->shared()->put(trace::kHogRescue, 0, static_cast<uint64_t>(w->index.load()), static_cast<uint64_t>(moved));
      }
    }
    s->notify_work();  // deferred notify's backstop
  }
  // Retired workers hand their stealable ULTs over at their next scheduler
  // pass; one whose KLT is inside a blocking region, or runs a ULT that
  // never passes through the loop (a region after a region), would keep
  // them for as long — and no thief looks at a retired slot, nor does the
  // handoff above. Move them to the global queue from here (steal and the
  // run_next exchange are safe from any thread).
  int n = s->nworkers.load(std::memory_order_acquire);
  for (int i = act; i < n; ++i) {
    Worker* w = s->worker_at(i);
    if (w == nullptr) continue;
    if (rejoin_if_idle_slot(s, w, now)) continue;
    // A retired KLT running a ULT may rejoin: look again next tick, not
    // after a 100 ms idle tick.
    if (w->current.load(std::memory_order_relaxed) != nullptr && !w->is_bound) next = next < 0 ? kBusyTickNs : std::min(next, kBusyTickNs);
    if (!has_stealable_work(w)) continue;
    bool stuck = w->in_blocking.load(std::memory_order_acquire) || w->current.load(std::memory_order_relaxed) != nullptr;
    if (stuck && take_stealable(s, w) != 0) s->notify_work();
  }
  if (timer_next >= 0) {  // wake for a busy worker's next timer, not a whole tick later
    int64_t left = timer_next - now;
    next = next < 0 ? left : std::min(next, left);
  }
  return next;
}

}  // namespace

void monitor_main(void* arg) {
  auto* s = static_cast<Scheduler*>(arg);
  int64_t next_reap = monotonic_ns() + kReapEveryNs;
  int64_t tick_ns = kBusyTickNs;
  bool idle = false;
  while (s->monitor_word.load(std::memory_order_acquire) == 0) {
    timespec tick{tick_ns / 1000000000, tick_ns % 1000000000};
    if (idle) {
      sys::futex_wait_for(&s->monitor_idle, 1, &tick);  // returns at once if kicked already
    } else {
      sys::futex_wait_for(&s->monitor_word, 0, &tick);
    }
    s->monitor_idle.store(0, std::memory_order_relaxed);
    idle = false;
    int64_t now = monotonic_ns();
    int64_t next_event = scan(s, now);
    tick_ns = kBusyTickNs;
    if (next_event >= 0) {
      tick_ns = std::clamp(next_event, kMinTickNs, tick_ns);
    } else if (s->npidle.load(std::memory_order_relaxed) >= s->active.load(std::memory_order_relaxed)) {
      // All asleep: sleep long, but announce it first and look once more,
      // so that a region opened or a worker woken meanwhile kicks us
      // (store then load on both sides: one of them sees the other):
      //
      //   monitor                          worker leaving the idle set
      //   monitor_idle = 1    (seq_cst)    npidle--        (seq_cst RMW)
      //   read npidle, blocking (seq_cst)  read monitor_idle (seq_cst)
      //   all idle: futex_wait(idle, 1)    1: exchange 0, futex_wake
      s->monitor_idle.store(1, std::memory_order_seq_cst);
      // (Shutdown stores monitor_word before it clears monitor_idle.)
      bool busy = s->npidle.load(std::memory_order_seq_cst) < s->active.load(std::memory_order_relaxed) ||
                  s->monitor_word.load(std::memory_order_seq_cst) != 0;
      for (int i = 0; !busy && i < s->active.load(std::memory_order_relaxed); ++i)
        busy = (s->worker_at(i)->blocking.load(std::memory_order_seq_cst) & 3) == 1;
      if (busy) {
        s->monitor_idle.store(0, std::memory_order_relaxed);
      } else {
        tick_ns = kIdleTickNs;
        idle = true;
      }
    }
    if (now >= next_reap) {
      next_reap = now + kReapEveryNs;
      if (s->time_slice_ns > 0) preempt::refresh_if_changed();  // code loaded or unloaded since
      uint64_t n = death_row().reap();
      if (n != 0) {
        s->monitor_reaped.fetch_add(n, std::memory_order_relaxed);
        log().debug("reaper: recycled {} idle ULT descriptors", n);
      }
    }
  }
}

}  // namespace weft::rt
