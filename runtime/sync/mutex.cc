// runtime/sync/mutex.cc — weft::Mutex, an adaptive futex-word mutex.
//
// The state word (Mutex::state_):
//
//   bit 0  kLocked      somebody holds the mutex
//   bit 1  kHasWaiters  the wait queue is not empty (changed only under the
//                       queue lock; a hint that unlock must look at it)
//   bit 2  kWoken       a waiter was woken to compete and has not yet either
//                       taken the mutex or queued again: unlock need not wake
//                       another (avoids a herd of losers, as Go's mutexWoken)
//   bit 3  kHandoff     starvation mode: unlock hands the mutex directly to
//                       the first waiter, and nobody may take it otherwise
//
// Acquiring:
//   fast  if !(kLocked|kHandoff): CAS in kLocked (barging past queued
//         waiters is allowed outside handoff mode).
//   slow  loop: if !(kLocked|kHandoff): CAS in kLocked (clearing kWoken if we
//         were the woken one) -> done. Else, once per round, spin while the
//         holder is running on a CPU (adaptive, below). Else, under the queue
//         lock, re-check, set kHasWaiters (and kHandoff if this waiter has
//         waited over 1 ms), queue (at the back the first time, at the front
//         after being woken: it keeps its place) and block. Woken with the
//         mutex handed over (tag kHanded): done; woken plainly: compete again.
// Releasing:
//   fast  if no handoff and (nobody queued or a woken waiter competes):
//         CAS out kLocked.
//   slow  if a woken waiter is already competing (and was woken less than
//         1 ms ago: the fast path samples that), or nobody waits, and no
//         handoff: just clear kLocked. Else under the queue lock: if
//         kHandoff or the first waiter waited over 1 ms, pop it, make it the
//         owner and keep kLocked set (kHandoff stays while the waiters
//         served are starving: it ends when the queue drains or the waiter
//         just served had waited less than 1 ms); else pop it, clear
//         kLocked, set kWoken, and wake it.
//
// Why nothing is lost: every change to kHasWaiters and every queue change
// happens under the queue lock, and a waiter queues only after seeing
// kLocked|kHandoff with kHasWaiters set by its own CAS, so the holder's
// release — a CAS that fails if kHasWaiters appeared — takes the slow path
// and finds it. A woken waiter that gives up (timeout) clears kWoken and,
// if the mutex is free and others wait, wakes one of them itself.
//
// Adaptive spinning (the Solaris rule): a ULT spins only if the holder is a
// ULT running on a CPU right now (its worker's current ULT, and the worker
// is not inside a blocking region), and only for about twice the mutex's
// recent hold time (a running average of contended holds, in TSC ticks).
// A parked or blocked holder, a foreign-thread holder, or a single worker
// (the holder cannot be running then) means: park at once.
#include <x86intrin.h>

#include <cstdio>
#include <new>

#include "runtime/debug_info.h"
#include "runtime/priority.h"
#include "runtime/scheduler.h"
#include "runtime/sync/wait_list.h"
#include "sys/raw_log.h"
#include "weft/sync.h"

namespace weft {

// One cache line (Mutex's layout comment, weft/sync.h): the Pinned base is
// empty and must stay so.
static_assert(sizeof(Mutex) == 64, "weft::Mutex grew past one cache line");

namespace {

using rt::sync::QueueLock;
using rt::sync::SyncWaiter;

constexpr uint32_t kLocked = 1;
constexpr uint32_t kHasWaiters = 2;
constexpr uint32_t kWoken = 4;
constexpr uint32_t kHandoff = 8;

constexpr uintptr_t kHanded = 1;                 // SyncWaiter::tag
constexpr int64_t kStarvingNs = 1000 * 1000;     // 1 ms
constexpr uint64_t kSpinMinTicks = 2000;         // ~1 µs at 2 GHz
constexpr uint64_t kSpinMaxTicks = 50000;        // ~20 µs
constexpr uint64_t kSpinDefaultTicks = 4000;

uint64_t ticks() { return __rdtsc(); }

// Is `owner` a ULT running on a CPU right now?
bool owner_running(uintptr_t owner) {
  if (owner == 0 || (owner & 1)) return false;  // free, or a foreign thread: unknown
  auto* u = reinterpret_cast<rt::UltDesc*>(owner);
  rt::Worker* w = u->worker.load(std::memory_order_relaxed);
  return w != nullptr && w->current.load(std::memory_order_relaxed) == u &&
         !w->in_blocking.load(std::memory_order_relaxed);
}

// The ULT that holds a Mutex, or null (free, or a foreign thread).
rt::UltDesc* holder_ult(uintptr_t owner) {
  return owner == 0 || (owner & 1) ? nullptr : reinterpret_cast<rt::UltDesc*>(owner);
}

// "ULT 12.3 "name"" or "thread 0x7f..." for misuse messages.
[[maybe_unused]] const char* describe(uintptr_t who, char* buf, size_t n) {
  if (who == 0) {
    snprintf(buf, n, "nobody");
  } else if (who & 1) {
    snprintf(buf, n, "thread %#lx", static_cast<unsigned long>(who & ~uintptr_t{1}));
  } else {
    auto* u = reinterpret_cast<rt::UltDesc*>(who);
    snprintf(buf, n, "ULT %u.%u \"%s\"", u->index, u->generation.load(std::memory_order_relaxed), u->name);
  }
  return buf;
}

// Statistics: rt::bump (runtime/counter.h), a plain load and store, not a
// locked add: increments racing on two CPUs may be lost (the counters can
// under-count, never over-count); a locked add would tax the contended path.
using rt::bump;

// The low 32 bits of the TSC, never 0 (0 means "not timed").
uint32_t ticks32() {
  uint32_t t = static_cast<uint32_t>(ticks());
  return t == 0 ? 1 : t;
}

}  // namespace

// Priority inheritance's view of a Mutex (runtime/priority.h).
struct detail::MutexPi {
  static rt::UltDesc* owner(const void* m) {
    return holder_ult(static_cast<const Mutex*>(m)->owner_.load(std::memory_order_acquire));
  }
  // The owner word (0 free, a UltDesc*, or a pthread_t | 1), for dumps.
  static uintptr_t owner_word(const void* m) {
    return static_cast<const Mutex*>(m)->owner_.load(std::memory_order_relaxed);
  }
};

// For dump_ults (runtime/dump.cc): who holds the Mutex at m, as its owner
// word. m must be a Mutex a ULT waits on (alive).
uintptr_t rt::debug_mutex_owner(const void* m) { return detail::MutexPi::owner_word(m); }

// A Mutex's counters live outside it (the Mutex stays one cache line): made
// by the first contended lock(), installed with a CAS, freed with the Mutex.
// Only contended paths touch them.
struct detail::MutexStats {
  std::atomic<uint64_t> contended{0}, spins{0}, spin_acquired{0}, parks{0}, handoffs{0};
};

namespace {
detail::MutexStats* stats_of(std::atomic<detail::MutexStats*>& slot) {
  detail::MutexStats* s = slot.load(std::memory_order_acquire);
  if (s != nullptr) return s;
  auto* fresh = new (std::nothrow) detail::MutexStats;
  if (fresh == nullptr) return nullptr;  // no memory: do without counters
  if (slot.compare_exchange_strong(s, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) return fresh;
  delete fresh;  // another contender installed its own first
  return s;
}
}  // namespace

Mutex::~Mutex() {
#if WEFT_DCHECK_ENABLED
  uint32_t s = state_.load(std::memory_order_relaxed);
  if (s != 0) {
    char b[96];
    sys::raw_logf("weft: Mutex %p destroyed while %s (held by %s)", static_cast<void*>(this),
                  (s & kHasWaiters) ? "it has waiters" : "locked",
                  describe(owner_.load(std::memory_order_relaxed), b, sizeof b));
    abort();
  }
#endif
  delete stats_.load(std::memory_order_relaxed);
}

void Mutex::lock() {
  // Free and nobody queued; or free with waiters queued (barging is allowed
  // outside handoff mode).
  uint32_t old = 0;
  if (state_.compare_exchange_strong(old, kLocked, std::memory_order_acquire, std::memory_order_relaxed) ||
      (!(old & (kLocked | kHandoff)) &&
       state_.compare_exchange_strong(old, old | kLocked, std::memory_order_acquire, std::memory_order_relaxed))) {
    owner_.store(rt::sync::self_identity(), std::memory_order_release);
    return;
  }
  lock_slow(-1);
}

bool Mutex::try_lock() {
  uint32_t old = state_.load(std::memory_order_relaxed);
  if (old & (kLocked | kHandoff)) return false;
  if (!state_.compare_exchange_strong(old, old | kLocked, std::memory_order_acquire, std::memory_order_relaxed))
    return false;
  owner_.store(rt::sync::self_identity(), std::memory_order_release);
  return true;
}

bool Mutex::lock_until(int64_t deadline_ns) { return lock_slow(deadline_ns); }

absl::Status Mutex::lock(std::stop_token stop) {
  if (stop.stop_requested()) return absl::CancelledError("stop requested before Mutex::lock");
  if (try_lock() || lock_slow(-1, &stop)) return absl::OkStatus();
  return absl::CancelledError("stop requested while waiting for the Mutex");
}

bool Mutex::lock_slow(int64_t deadline_ns, const std::stop_token* stop) {
  const uintptr_t me = rt::sync::self_identity();
#if WEFT_DCHECK_ENABLED
  if (owner_.load(std::memory_order_relaxed) == me) {
    char b[96];
    sys::raw_logf("weft: %s relocks Mutex %p, which it already holds (self-deadlock)",
                  describe(me, b, sizeof b), static_cast<void*>(this));
    abort();
  }
#endif
  detail::MutexStats* st = stats_of(stats_);
  if (st != nullptr) bump(st->contended);
  rt::UltDesc* self = (me & 1) ? nullptr : reinterpret_cast<rt::UltDesc*>(me);
  SyncWaiter w;
  rt::sync::init_waiter(&w, "Mutex", this);
  bool awoke = false;  // we are the waiter kWoken speaks of
  bool spun = false;   // spin at most once per round
  bool waited = false; // spun or parked: this hold feeds the hold-time estimate
  for (;;) {
    uint32_t old = state_.load(std::memory_order_relaxed);
    if (!(old & (kLocked | kHandoff))) {
      uint32_t nw = old | kLocked;
      if (awoke) nw &= ~kWoken;
      if (state_.compare_exchange_weak(old, nw, std::memory_order_acquire, std::memory_order_relaxed)) break;
      continue;
    }
    if (!spun && self != nullptr && !(old & kHandoff) && owner_running(owner_.load(std::memory_order_acquire))) {
      spun = true;
      waited = true;
      if (st != nullptr) bump(st->spins);
      uint64_t est = hold_ticks_.load(std::memory_order_relaxed);
      uint64_t budget = est == 0 ? kSpinDefaultTicks : 2 * est;
      budget = budget < kSpinMinTicks ? kSpinMinTicks : budget > kSpinMaxTicks ? kSpinMaxTicks : budget;
      uint64_t start = ticks();
      bool freed = false;
      for (;;) {
        for (int i = 0; i < 8; ++i) rt::cpu_relax();
        uint32_t s = state_.load(std::memory_order_relaxed);
        if (!(s & (kLocked | kHandoff))) {
          freed = true;
          break;
        }
        if (!owner_running(owner_.load(std::memory_order_acquire)) || ticks() - start > budget) break;
      }
      if (freed) {
        // Try once at the top of the loop; count it if it works.
        uint32_t s = state_.load(std::memory_order_relaxed);
        if (!(s & (kLocked | kHandoff))) {
          uint32_t nw = s | kLocked;
          if (awoke) nw &= ~kWoken;
          if (state_.compare_exchange_strong(s, nw, std::memory_order_acquire, std::memory_order_relaxed)) {
            if (st != nullptr) bump(st->spin_acquired);
            break;
          }
        }
        continue;
      }
    }
    if ((deadline_ns >= 0 && rt::monotonic_ns() >= deadline_ns) || (stop != nullptr && stop->stop_requested())) {
      if (awoke) {
        // We leave the competition: if the mutex is free meanwhile with
        // waiters queued, nobody else is awake to take it — wake one.
        state_.fetch_and(~kWoken, std::memory_order_acq_rel);
        wake_one_waiter();
      }
      return false;
    }
    // Queue.
    {
      QueueLock g(queue_);
      old = state_.load(std::memory_order_relaxed);
      if (!(old & (kLocked | kHandoff))) continue;  // freed meanwhile
      uint32_t nw = old | kHasWaiters;
      if (awoke) nw &= ~kWoken;
      int64_t now = rt::monotonic_ns();
      if (w.since_ns != 0 && now - w.since_ns > kStarvingNs) nw |= kHandoff;
      if (!state_.compare_exchange_strong(old, nw, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
      awoke = false;
      w.state.store(0, std::memory_order_relaxed);
      w.tag = 0;
      if (w.since_ns == 0) {
        w.since_ns = now;
        rt::sync::push_back(queue_, &w);
      } else {
        rt::sync::push_front(queue_, &w);  // a woken loser keeps its place
      }
    }
    if (st != nullptr) bump(st->parks);
    waited = true;
    // Priority inheritance (runtime/priority.cc): record what we wait for
    // (a chain of holders runs through it) and lend our priority to a ULT
    // holder of lower priority, before we park.
    bool lent = false;
    if (self != nullptr && self->sched->opts.priority_inheritance) {
      if (rt::UltDesc* holder = holder_ult(owner_.load(std::memory_order_acquire))) {
        rt::pi_wait(self, this, holder, &detail::MutexPi::owner);
        lent = true;
      }
    }
    bool got = rt::sync::block(&w, deadline_ns, stop);
    if (lent) rt::pi_wait_end(self);
    if (!got && !rt::sync::cancel_wait(queue_, &w)) {
      // Timed out while queued and removed ourselves.
      QueueLock g(queue_);
      if (queue_.size == 0) state_.fetch_and(~(kHasWaiters | kHandoff), std::memory_order_acq_rel);
      return false;
    }
    if (w.tag == kHanded) {  // the unlocker made us the owner
      acquired_at_.store(ticks32(), std::memory_order_relaxed);
      return true;
    }
    awoke = true;
    spun = false;
  }
  owner_.store(me, std::memory_order_release);
  // rdtsc is slow on some VMs (tens of ns): time only holds that made
  // somebody wait, which are the ones the spin budget is about.
  if (waited) acquired_at_.store(ticks32(), std::memory_order_relaxed);
  return true;
}

void Mutex::unlock() {
#if WEFT_DCHECK_ENABLED
  uintptr_t me = rt::sync::self_identity();
  uintptr_t owner = owner_.load(std::memory_order_relaxed);
  if (owner != me) {
    char a[96], b[96];
    sys::raw_logf("weft: %s unlocks Mutex %p, which it does not hold (holder: %s)", describe(me, a, sizeof a),
                  static_cast<void*>(this), describe(owner, b, sizeof b));
    abort();
  }
#endif
  // The holder, for priority inheritance: after the release below we look
  // whether a waiter lent it a priority (priority.cc: the waiter records
  // its loan, fences, then checks owner_; we clear owner_, release with a
  // locked RMW, then read pi_count — on x86-64 the locked RMW orders that
  // store before that load, so one of the two sees the other).
  rt::UltDesc* holder = holder_ult(owner_.load(std::memory_order_relaxed));
  owner_.store(0, std::memory_order_relaxed);
  uint32_t at = acquired_at_.load(std::memory_order_relaxed);
  if (at != 0) {  // a contended hold: feed the running estimate (1/8 weight)
    acquired_at_.store(0, std::memory_order_relaxed);
    // 32-bit TSC arithmetic: exact for holds under 2^32 ticks (about 2 s);
    // a longer one counts as shorter, which only caps a spin budget that is
    // capped at kSpinMaxTicks anyway.
    uint32_t held = static_cast<uint32_t>(ticks()) - at;
    uint32_t est = hold_ticks_.load(std::memory_order_relaxed);
    hold_ticks_.store(est == 0 ? held : est - est / 8 + held / 8, std::memory_order_relaxed);
  }
  // Nobody queued; or a woken waiter already competes and no handoff: just
  // release (the common case under contention too). But a woken waiter
  // that cannot run (its worker is busy) must not let the queue starve:
  // every 16th such unlock looks at how long ago it was woken, and past
  // 1 ms takes the slow path, which hands off to a starving queue head.
  uint32_t old = kLocked;
  if (!state_.compare_exchange_strong(old, 0, std::memory_order_release, std::memory_order_relaxed)) {
    bool woken_stale = false;
    bool done = false;
    if (!(old & kHandoff) && (old & kWoken)) {
      uint32_t n = woken_unlocks_.load(std::memory_order_relaxed) + 1;  // a sample count: races are harmless
      woken_unlocks_.store(n, std::memory_order_relaxed);
      woken_stale = (old & kHasWaiters) && (n & 15) == 0 &&
                    rt::monotonic_ns() - woken_at_.load(std::memory_order_relaxed) > kStarvingNs;
      done = !woken_stale &&
             state_.compare_exchange_strong(old, old & ~kLocked, std::memory_order_release, std::memory_order_relaxed);
    }
    if (!done) unlock_slow(old, woken_stale);
  }
  if (holder != nullptr && holder->pi_count.load(std::memory_order_relaxed) != 0) rt::pi_released(holder, this);
}

void Mutex::unlock_slow(uint32_t old, bool woken_stale) {
  for (;;) {
    WEFT_DCHECK(old & kLocked, "Mutex %p unlocked while not locked (state %u)", static_cast<void*>(this), old);
    if ((old & kHandoff) || ((old & kHasWaiters) && (!(old & kWoken) || woken_stale))) break;
    // Nobody queued, or a woken waiter is already competing: just release.
    if (state_.compare_exchange_weak(old, old & ~kLocked, std::memory_order_release, std::memory_order_relaxed))
      return;
  }
  SyncWaiter* w = nullptr;
  {
    QueueLock g(queue_);
    old = state_.load(std::memory_order_relaxed);
    w = queue_.head;
    if (w == nullptr) {  // the waiters timed out meanwhile
      while (!state_.compare_exchange_weak(old, old & ~(kLocked | kHasWaiters | kHandoff),
                                           std::memory_order_release, std::memory_order_relaxed)) {
      }
      return;
    }
    bool starving = rt::monotonic_ns() - w->since_ns > kStarvingNs;
    if ((old & kHandoff) || starving) {
      rt::sync::pop_front(queue_);
      owner_.store(w->who, std::memory_order_release);
      w->tag = kHanded;
      // Handoff mode lasts while the waiters served are starving (Go's
      // rule): it ends when the queue drains or its head waited < 1 ms.
      uint32_t rest = queue_.size == 0 ? 0 : starving ? (kHasWaiters | kHandoff) : kHasWaiters;
      while (!state_.compare_exchange_weak(old, kLocked | (old & kWoken) | rest, std::memory_order_release,
                                           std::memory_order_relaxed)) {
      }
      if (detail::MutexStats* st = stats_.load(std::memory_order_acquire)) bump(st->handoffs);
    } else if (old & kWoken) {
      w = nullptr;  // a waiter became awake meanwhile: it competes
      while (!state_.compare_exchange_weak(old, old & ~kLocked, std::memory_order_release,
                                           std::memory_order_relaxed)) {
      }
    } else {
      rt::sync::pop_front(queue_);
      uint32_t rest = queue_.size != 0 ? kHasWaiters : 0;
      woken_at_.store(rt::monotonic_ns(), std::memory_order_relaxed);
      while (!state_.compare_exchange_weak(old, (old & ~(kLocked | kHasWaiters)) | kWoken | rest,
                                           std::memory_order_release, std::memory_order_relaxed)) {
      }
    }
  }
  if (w != nullptr) rt::sync::wake(w);
}

// Called by a woken waiter that gives up: if the mutex is free and somebody
// waits, wake the first waiter to compete in our place.
void Mutex::wake_one_waiter() {
  SyncWaiter* w = nullptr;
  {
    QueueLock g(queue_);
    uint32_t old = state_.load(std::memory_order_relaxed);
    if ((old & (kLocked | kWoken | kHandoff)) || queue_.head == nullptr) return;
    w = rt::sync::pop_front(queue_);
    uint32_t rest = queue_.size != 0 ? kHasWaiters : 0;
    woken_at_.store(rt::monotonic_ns(), std::memory_order_relaxed);
    while (!state_.compare_exchange_weak(old, (old & ~kHasWaiters) | kWoken | rest, std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
      if (old & (kLocked | kWoken | kHandoff)) {  // someone took it: put w back
        rt::sync::push_front(queue_, w);
        return;
      }
    }
  }
  rt::sync::wake(w);
}

Mutex::Stats Mutex::stats() const {
  Stats s;
  if (const detail::MutexStats* st = stats_.load(std::memory_order_acquire)) {
    s.contended = st->contended.load(std::memory_order_relaxed);
    s.spins = st->spins.load(std::memory_order_relaxed);
    s.spin_acquired = st->spin_acquired.load(std::memory_order_relaxed);
    s.parks = st->parks.load(std::memory_order_relaxed);
    s.handoffs = st->handoffs.load(std::memory_order_relaxed);
  }
  // TSC ticks to ns, calibrated once against the monotonic clock.
  static const double ns_per_tick = [] {
    int64_t t0 = rt::monotonic_ns();
    uint64_t c0 = ticks();
    while (rt::monotonic_ns() - t0 < 2000000) {
    }
    return static_cast<double>(rt::monotonic_ns() - t0) / static_cast<double>(ticks() - c0);
  }();
  s.hold_estimate_ns = static_cast<uint64_t>(static_cast<double>(hold_ticks_.load(std::memory_order_relaxed)) * ns_per_tick);
  return s;
}

}  // namespace weft
