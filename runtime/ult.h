// runtime/ult.h — the ULT descriptor (rt::UltDesc; the public handle is
// weft::Ult), its state word, and the ULT table.
//
// Descriptors are type-stable: they live in a process-wide table of chunks
// that are never freed (the seed's "index into an array of thread
// pointers"), so any id, however stale, can be checked against the
// descriptor's generation without touching freed memory. A ULT id is
// (generation << 32 | index). The generation changes when the descriptor is
// released for reuse, which makes every older id stale.
//
// Generations never wrap. A descriptor is reused (the caches hand the same
// one to spawn after spawn on a busy worker) until its generation has
// counted to 2^32 - 1; the release after that *retires* it instead: the
// generation becomes 0, which no id carries, its stack is unmapped, and the
// table never hands it out again. So an id, once stale, stays stale for the
// life of the process — it never names a later ULT. Cost: one descriptor
// (sizeof(UltDesc)) per 2^32 spawns of one slot (about 20 minutes of spawning
// at full speed); the 2^24-entry table lasts for 2^56 spawns.
//
// A descriptor's stack (with the ULT's closure at its top) is separate and
// recycled with it through the death-row caches (runtime/death_row.h).
#pragma once

#include <locale.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stop_token>

#include "runtime/locks.h"
#include "runtime/timer_heap.h"
#include "sys/raw_log.h"
#include "sys/context.h"
#include "sys/stack.h"

namespace weft::rt {

struct Worker;
struct Scheduler;

// The ULT state word. Only park/unpark/exit change it; being queued or
// running does not (the scheduler's queues say where a live ULT is).
//
//   bits 0-1  state
//     kLive     running, or runnable in exactly one queue
//     kParking  decided to park, still on its stack or being switched off it
//     kParked   off-CPU, in no queue; only unpark() makes it runnable
//     kExited   its function returned; waiting for join/detach to release it
//   bit 2     kWake: an unpark() arrived while the ULT was not kParked; the
//             next park() consumes it and returns at once (a permit, as in
//             Java's LockSupport), so a wake-up between "register as a
//             waiter" and "park" is never lost.
//
// Legal transitions (who):
//   kLive -> kLive|kWake            unpark() on a live ULT (anyone)
//   kLive|kWake -> kLive            park() consumes the permit (the ULT)
//   kLive -> kParking               park() (the ULT itself, by CAS)
//   kParking -> kParking|kWake      unpark() while parking (anyone)
//   kParking -> kParked             finish_park, after the switch (its worker)
//   kParking|kWake -> kLive         finish_park sees the permit and requeues
//   kParked -> kLive                unpark() (anyone, by CAS), then enqueues
//   kLive[|kWake] -> kExited        the exit action, after the switch (a
//                                   permit left over is dropped)
//   kExited -> kLive                spawn, when a released descriptor is reused
// legal_transition() is this table; every change of the word goes through
// change_state(), cas_state() or mark_exited() (below UltDesc), which check
// it in debug builds. (A forked child resets the descriptors of ULTs that do not exist
// there: no transition, fork.cc.)
namespace ult_state {
inline constexpr uint32_t kLive = 0;
inline constexpr uint32_t kParking = 1;
inline constexpr uint32_t kParked = 2;
inline constexpr uint32_t kExited = 3;
inline constexpr uint32_t kStateMask = 3;
inline constexpr uint32_t kWake = 4;

constexpr bool legal_transition(uint32_t from, uint32_t to) {
  switch (from) {
    case kLive: return to == (kLive | kWake) || to == kParking || to == kExited;
    case kLive | kWake: return to == kLive || to == kExited;
    case kParking: return to == (kParking | kWake) || to == kParked;
    case kParking | kWake: return to == kLive;
    case kParked: return to == kLive;
    case kExited: return to == kLive;
    default: return false;
  }
}
}  // namespace ult_state

// Somebody waiting in join(). Lives on the joiner's stack; the exiting side
// reads `ult` before it sets `done`, and touches nothing after the wake.
struct JoinWaiter {
  struct UltDesc* ult = nullptr;           // the joining ULT, or null for a foreign thread
  std::atomic<uint32_t> done{0};       // futex word for a foreign joiner
};

// One ULT-local value (weft::UltLocal).
struct LocalSlot {
  uint32_t key;
  void* value;
  void (*destroy)(void*);
};

// The generation of a retired descriptor: no id has it (UltId::valid()).
inline constexpr uint32_t kRetiredGeneration = 0;

struct alignas(64) UltDesc {
  // --- switch path (hot) --------------------------------------------------
  sys::Context ctx;
  // The worker running it (or that ran it last), set by whoever resumes it;
  // read by other threads only as a hint (adaptive spinning): relaxed.
  std::atomic<Worker*> worker{nullptr};
  std::atomic<uint32_t> state{ult_state::kExited};
  int saved_errno = 0;
  void* eh_caught = nullptr;       // __cxa_eh_globals: caughtExceptions
  unsigned eh_uncaught = 0;        //                   uncaughtExceptions
  uint32_t pin_count = 0;          // written only by the ULT itself
  // Entries in pi_mutex below (priority inheritance): on the hot lines
  // because every weft::Mutex unlock by this ULT reads it.
  std::atomic<uint8_t> pi_count{0};
  Worker* home = nullptr;          // bound/pinned: must run only on this worker
  // Set while the ULT is switched out by a time-slice preemption: it must
  // resume on this worker (preempt.cc). Written by the ULT itself before
  // it switches out and after it resumes; read by its worker's owner-only
  // paths (and the monitor's handoff, under its claim) that would move it.
  Worker* preempted_on = nullptr;
  // Whether this ULT, queued, must stay on the worker it is queued on
  // (pinned or bound: home; preempted: preempted_on). Owner-only paths
  // that move a worker's local queues elsewhere (spill to the global
  // queue, retirement, the monitor's handoff) leave such a ULT to that
  // worker's inbox. Both fields are written only by the ULT itself, so
  // they are stable while it is queued.
  bool must_stay() const { return home != nullptr || preempted_on != nullptr; }
  UltDesc* next = nullptr;             // intrusive link: inbox, global queue, caches

  // --- identity -----------------------------------------------------------
  uint32_t index = 0;                       // position in the table (fixed)
  std::atomic<uint32_t> generation{1};      // changes at every release
  char name[32] = {};

  // --- life -----------------------------------------------------------------
  Scheduler* sched = nullptr;      // the runtime it belongs to
  sys::Stack stack;                // its stack; the closure sits at its top
  bool default_stack = false;      // stack has the runtime's default size (cacheable)
  bool bound = false;              // runs on a KLT of its own
  bool fork_cached = false;        // scratch of a forked child's table scan (fork.cc)
  void* closure = nullptr;
  void (*invoke)(void*) = nullptr;
  // Destroys the result in the closure's Task that no joiner will take
  // (detached ULTs), handing out an exception it holds (join_handle.h).
  void (*drop)(void*, std::exception_ptr*) = nullptr;
  // The runtime it is live in, from spawn (release store, after every
  // field above) until release: what Scheduler::for_each_live reads to
  // find a runtime's ULTs in the table (stop.cc).
  std::atomic<Scheduler*> live_in{nullptr};

  // --- cancellation (runtime/stop.cc) -------------------------------------------
  // Set (never cleared while the ULT lives) by a stop request; read by the
  // ULT's cancellable waits after every park. The requester sets it under
  // join_lock with the ULT's generation checked, then unparks the ULT.
  std::atomic<bool> stop{false};
  // The std::stop_source behind this_ult::stop_token(), made on demand by
  // the ULT itself (CAS from null); deleted by release(). A requester
  // copies it under join_lock (a copy keeps its state alive) and calls
  // request_stop() on the copy after unlocking (stop_callbacks are user
  // code). Whoever comes second of "flag set" and "source installed" makes
  // the source's request (both sides seq_cst: stop.cc).
  std::atomic<std::stop_source*> stop_source{nullptr};

  // True from spawn until the context after its exit switch declares its
  // stack free (SwitchAction::kExit). release() waits for false before the
  // descriptor and stack can be reused: a joiner may run before the exiting
  // ULT has finished switching away.
  std::atomic<bool> on_stack{false};

  // --- join (guarded by join_lock) -------------------------------------------
  SpinLock join_lock;
  bool exited = false;
  bool detached = false;
  JoinWaiter* joiner = nullptr;

  // --- timed park -------------------------------------------------------------
  // Its entry in the timer heap of the worker it parked on (timer_heap.h).
  TimerNode timer;

  // --- per-ULT libc state (runtime/thread_compat.h) ----------------------------
  // The locale the ULT set with uselocale(), nullptr for the global one.
  // Written only by the ULT itself; reset by ult_entry.
  locale_t locale = nullptr;

  // --- pthread_exit in a ULT (runtime/pthread_compat.cc) ----------------------
  // The value passed to pthread_exit (PTHREAD_CANCELED never: cancellation
  // is refused), read by join; null when the function returned. Written
  // only by the ULT itself before it exits; reset by ult_entry.
  void* exit_value = nullptr;
  // ult_entry's stack pointer: forced unwinding started by pthread_exit
  // stops at ult_entry's frame and exits the ULT from there (scheduler.cc,
  // unwind_and_exit).
  const void* unwind_limit = nullptr;
  // Set by unwind_and_exit when that unwinding starts (reset by ult_entry):
  // lets a catch (...) in weft's headers tell it from an exception
  // (detail::exiting_by_unwind).
  bool exit_unwinding = false;
  // The _Unwind_Exception of that unwinding (it must outlive every frame
  // being unwound, so not on the ULT's stack).
  alignas(16) unsigned char exit_exception[64] = {};

  // --- signals (runtime/signal.cc) --------------------------------------------
  // Bit s-1 for signal s. The mask is written only by the ULT itself (and
  // by spawn before it runs); the dispatcher reads it to choose a ULT.
  std::atomic<uint64_t> sig_mask{0};
  // Signals sent to this ULT (raise, pthread_kill, weft::signal), pending
  // until it takes them: set by anyone, cleared by the ULT.
  std::atomic<uint64_t> sig_pending{0};
  // While a sigwait-family call of this ULT waits: the set it waits for
  // (the dispatcher wakes it for those); 0 otherwise.
  std::atomic<uint64_t> sig_waiting{0};
  // Depth of signal.cc sections that hold its table lock on this ULT: a
  // doorbell that arrives meanwhile leaves the signal pending for the next
  // safe point instead of running a handler that could take the lock.
  uint32_t sig_defer = 0;
  // Handlers run on this ULT so far (sigsuspend and pause return EINTR once
  // one ran).
  // Written by act() on the ULT itself, possibly in a doorbell handler that
  // interrupted the ULT's own code: relaxed atomics, read by that code.
  std::atomic<uint32_t> sig_handled{0};
  // Of those, the ones installed without SA_RESTART (weft io then ends an
  // interrupted call with EINTR: park.h, handler_interrupts).
  std::atomic<uint32_t> sig_no_restart{0};

  // --- preemption (runtime/preempt.cc) ------------------------------------------
  // KLT-level locks of the application (pthread mutexes, rwlocks, spin
  // locks) this ULT holds: it is not preempted while any is held. Written
  // by the ULT (the interposers), read by the doorbell handler on its KLT.
  std::atomic<uint32_t> klt_locks{0};

  // --- priority (weft::Priority: 0 background, 1 normal, 2 high) ------------------
  // Its own priority (spawn, this_ult::set_priority; written by the ULT),
  // and the effective one: the highest of its own and what waiters on the
  // weft::Mutexes it holds lend it (priority inheritance, mutex.cc). The
  // scheduler queues a ULT by its effective priority when it becomes
  // runnable. eff_prio is written under pi_lock (or by spawn before the
  // ULT runs); read anywhere (relaxed: a hint for queueing and for
  // choosing whom to preempt).
  // Atomic (relaxed) though guarded by pi_lock: a waiter on a mutex may
  // follow a stale owner word to this descriptor while spawn reuses it and
  // writes base_prio, pi_count and pi_waiting_on without the lock
  // (priority.cc, pi_wait, which takes its loan back when the descriptor
  // turns out not to hold the lock). TSan reported the plain fields.
  std::atomic<uint8_t> base_prio{1};
  std::atomic<uint8_t> eff_prio{1};
  int64_t bg_since = 0;  // when it was queued as background (starvation bound)
  // Priority inheritance (runtime/priority.cc). Guarded by pi_lock: the
  // mutexes this ULT holds whose waiters lent it a priority (pi_count of
  // them, at most kPiHeld: a loan through a ninth mutex raises eff_prio
  // but is not recorded, and ends at the next recompute), the highest
  // priority each lent; and the mutex it waits for (a chain of holders is
  // followed through it). Waiters add entries; the holder's unlock, or a
  // waiter that finds the mutex released meanwhile, takes them out.
  static constexpr int kPiHeld = 8;
  SpinLock pi_lock;
  const void* pi_mutex[kPiHeld] = {};
  uint8_t pi_prio[kPiHeld] = {};
  std::atomic<const void*> pi_waiting_on{nullptr};  // relaxed: see base_prio

  // --- what it waits for (runtime/debug_info.h, WaitNote) ---------------------
  // Written by the ULT itself around a park, read by dump_ults and the gdb
  // extension without synchronization (relaxed: a hint for humans).
  std::atomic<const char*> wait_what{nullptr};
  std::atomic<const void*> wait_obj{nullptr};
  std::atomic<int64_t> wait_arg{-1};

  // --- ULT-local storage -------------------------------------------------------
  LocalSlot* locals = nullptr;     // malloc'd array, or null
  uint32_t locals_count = 0;
  uint32_t locals_capacity = 0;

  // The fields of one ULT's life that join/detach/pin/bound use, as a
  // released descriptor must have them before reuse (spawn, fork.cc).
  void clear_life() {
    worker.store(nullptr, std::memory_order_relaxed);
    home = nullptr;
    bound = false;
    exited = false;
    detached = false;
    joiner = nullptr;
    pin_count = 0;
    timer.pos = -1;  // in a forked child it may name a heap entry that is gone
    preempted_on = nullptr;
    klt_locks.store(0, std::memory_order_relaxed);
    pi_count.store(0, std::memory_order_relaxed);
    pi_waiting_on.store(nullptr, std::memory_order_relaxed);
    stop.store(false, std::memory_order_relaxed);
  }

  // Makes every existing id of this descriptor stale. Caller holds
  // join_lock. After generation 2^32 - 1 comes 0: retired (see the top of
  // this file; release() then retires the descriptor).
  friend void advance_generation(UltDesc* u) {
    uint32_t g = u->generation.load(std::memory_order_relaxed);
    u->generation.store(g + 1, std::memory_order_relaxed);  // 0xFFFFFFFF + 1 == kRetiredGeneration
  }
  bool retired() const { return generation.load(std::memory_order_relaxed) == kRetiredGeneration; }

  uint64_t id_value() const {
    return (static_cast<uint64_t>(generation.load(std::memory_order_relaxed)) << 32) | index;
  }
};

// Moves u's state word from `from` to `to` with a plain store: for the
// transitions only the caller can make at that moment (the diagram's
// "who"; nobody else writes the word while it holds `from`). Debug builds
// check that it holds `from` and that the diagram has the transition.
inline void change_state(UltDesc* u, uint32_t from, uint32_t to) {
  WEFT_DCHECK(u->state.load(std::memory_order_relaxed) == from && ult_state::legal_transition(from, to),
              "ULT %u: state %u -> %u (expected %u)", u->index, u->state.load(std::memory_order_relaxed), to, from);
  u->state.store(to, std::memory_order_relaxed);
}

// kLive[|kWake] -> kExited (the exit action). Only the kWake bit can change
// under the caller (an unpark that comes late: it is dropped), so the check
// looks at the state bits.
inline void mark_exited(UltDesc* u) {
  WEFT_DCHECK((u->state.load(std::memory_order_relaxed) & ult_state::kStateMask) == ult_state::kLive,
              "ULT %u exits in state %u", u->index, u->state.load(std::memory_order_relaxed));
  u->state.store(ult_state::kExited, std::memory_order_relaxed);
}

// The same by compare-and-swap (acq_rel), for the transitions that race
// (park, unpark, finish_park): true if the word held *expected and now
// holds `to`; else *expected is the word's value.
inline bool cas_state(UltDesc* u, uint32_t* expected, uint32_t to) {
  WEFT_DCHECK(ult_state::legal_transition(*expected, to), "ULT %u: illegal state change %u -> %u", u->index, *expected,
              to);
  return u->state.compare_exchange_strong(*expected, to, std::memory_order_acq_rel);
}

// The process-wide table of descriptors.
namespace ult_table {

// A descriptor from the table's free list, or a new one; nullptr only when
// the table is full (2^24 descriptors) or memory is exhausted. Its state is
// kExited, its generation the one its next id will carry.
UltDesc* allocate();

// Puts a descriptor with no stack back on the table's free list; a retired
// one (generation 0) is dropped instead: it is never handed out again.
void free(UltDesc* u);

// The descriptor an id names, or nullptr when no descriptor has that index.
// The caller must still compare the generation (under the join lock when it
// acts on the answer).
UltDesc* lookup(uint64_t id_value);

// Descriptors created so far (for tests and stats).
uint64_t size();

}  // namespace ult_table

}  // namespace weft::rt
