// runtime/ult_life.cc — creating, joining, detaching and releasing ULTs.
//
// Join protocol (all under the descriptor's join_lock, which also guards the
// generation against release):
//
//   joiner                         exiting ULT (exit_current)      detacher
//   lock; check generation         lock; exited = true;            lock; check generation
//   exited? -> consume, release    waiter = joiner;                exited? -> release
//   else joiner = &w; unlock       release_here = detached;        else detached = true
//   wait until w.done              unlock; wake waiter             unlock
//   release                        (release_here: the next context releases)
//
// Exactly one party releases: the exit path if the ULT was detached before
// it exited, else whoever joins or detaches. The generation advances (every
// id goes stale) under the join lock at the moment that party is decided —
// by the exit path when a joiner or detach came first, else by the join or
// detach that finds the ULT exited. release() then waits until the exited
// ULT is off its stack (UltDesc::on_stack) before the descriptor is reused.
#include <algorithm>
#include <cstring>

#include "runtime/death_row.h"
#include "runtime/debug_info.h"
#include "absl/strings/str_cat.h"
#include "runtime/scheduler.h"
#include "runtime/signal.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft::rt {

void* ult_entry_address();

namespace {

constexpr uint32_t kRefillBatch = 32;

UltDesc* cache_pop(Worker* w) { return w->core().cache.list.pop_front(); }

void cache_push(Worker* w, UltDesc* u) {
  w->core().cache.list.push_front(u);
  if (w->core().cache.list.size() > LocalCache::kCap) {
    // Spill the older half to the death row.
    IntrusiveQueue<UltDesc> spill;
    w->core().cache.list.split_after(LocalCache::kCap / 2, &spill);
    death_row().put(&spill, w->sched->default_stack_size);
  }
}

}  // namespace

// Drains a worker's cache into the death row (worker exit).
void drain_local_cache(Worker* w) {
  if (!w->core().cache.list.empty()) death_row().put(&w->core().cache.list, w->sched->default_stack_size);
}

UltDesc* create_ult(Scheduler* s, Worker* w, const SpawnOptions& o, const detail::Closure& c, absl::Status* err) {
  if (absl::Status v = validate_spawn_stack_size(o.stack_size); !v.ok()) {
    *err = v;
    return nullptr;
  }
  if (static_cast<uint8_t>(o.priority) > static_cast<uint8_t>(Priority::kHigh)) {
    *err = absl::InvalidArgumentError(absl::StrCat("SpawnOptions::priority ", static_cast<int>(o.priority),
                                                   " is not a weft::Priority (0 background, 1 normal, 2 high)"));
    return nullptr;
  }
  size_t size = o.stack_size == 0 ? s->default_stack_size : sys::round_to_pages(o.stack_size);
  if (c.size + 4096 > size) {
    *err = absl::InvalidArgumentError("the callable does not fit on the ULT's stack");
    return nullptr;
  }
  UltDesc* u = nullptr;
  if (w != nullptr && size == s->default_stack_size) {
    u = cache_pop(w);
    if (u == nullptr) {
      IntrusiveQueue<UltDesc> batch;
      if (death_row().take_batch(size, kRefillBatch, &batch) > 0) {
        u = batch.pop_front();
        while (UltDesc* rest = batch.pop_front()) w->core().cache.list.push_front(rest);
      }
    }
  } else {
    u = death_row().take(size);
  }
  if (u == nullptr) {
    u = ult_table::allocate();
    if (u == nullptr) {
      *err = absl::ResourceExhaustedError("the ULT table is full (16,777,216 descriptors)");
      return nullptr;
    }
    const char* what = nullptr;
    int r = sys::stack_allocate(size, s->opts.guard_size, &u->stack, &what);
    if (r != 0) {
      ult_table::free(u);
      *err = absl::ResourceExhaustedError(std::string("cannot map a ULT stack: ") + (what ? what : "") +
                                          " (" + strerror(-r) + ")");
      return nullptr;
    }
    death_row().count_mapped();
  }
  WEFT_DCHECK(u->state.load(std::memory_order_relaxed) == ult_state::kExited, "reused ULT %u not exited", u->index);
  WEFT_DCHECK(!u->on_stack.load(std::memory_order_relaxed), "reused ULT %u still on its stack", u->index);

  change_state(u, ult_state::kExited, ult_state::kLive);
  u->on_stack.store(true, std::memory_order_relaxed);
  u->clear_life();
  u->saved_errno = 0;
  uint64_t inherited = sig::mask_for_spawn();  // as pthread_create
  sig::note_blocked(inherited, nullptr);
  u->sig_mask.store(inherited, std::memory_order_relaxed);
  u->sig_pending.store(0, std::memory_order_relaxed);
  u->sig_waiting.store(0, std::memory_order_relaxed);
  u->sig_defer = 0;
  u->sig_handled.store(0, std::memory_order_relaxed);
  u->sig_no_restart.store(0, std::memory_order_relaxed);
  u->eh_caught = nullptr;
  u->eh_uncaught = 0;
  u->next = nullptr;
  u->sched = s;
  u->base_prio.store(static_cast<uint8_t>(o.priority), std::memory_order_relaxed);
  u->eff_prio.store(static_cast<uint8_t>(o.priority), std::memory_order_relaxed);
  size_t n = std::min(o.name.size(), sizeof u->name - 1);
  if (n > 0) memcpy(u->name, o.name.data(), n);  // an empty string_view may have a null data()
  u->name[n] = '\0';

  // The closure sits at the top of the stack; the first frame starts below.
  uintptr_t top = reinterpret_cast<uintptr_t>(u->stack.hi());
  size_t align = c.align < 16 ? 16 : c.align;
  uintptr_t obj = (top - c.size) & ~(static_cast<uintptr_t>(align) - 1);
  c.move_to(reinterpret_cast<void*>(obj), c.src);
  u->closure = reinterpret_cast<void*>(obj);
  u->invoke = c.invoke_and_destroy;
  u->drop = c.drop;
  sys::context_init(&u->ctx, u->stack.lo(), obj - reinterpret_cast<uintptr_t>(u->stack.lo()),
                    reinterpret_cast<sys::ContextEntry>(ult_entry_address()), u);
  u->live_in.store(s, std::memory_order_release);
  return u;
}

void drop_result(UltDesc* u) {
  if (u->drop == nullptr) return;
  std::exception_ptr lost;
  u->drop(u->closure, &lost);
  u->drop = nullptr;
  if (lost) report_lost_exception(u, lost, "the ULT was detached");
}

void report_lost_exception(const UltDesc* u, const std::exception_ptr& e, const char* how) {
  char what[200];
  exception_text(e, what, sizeof what);
  sys::raw_logf("weft: exception escaped ULT %u.%u \"%s\" and nobody will join it (%s): %s", u->index,
                u->generation.load(std::memory_order_relaxed), u->name, how, what);
  abort();
}

void wait_off_stack(const UltDesc* u) {
  // The exiting ULT's context clears on_stack right after its switch away,
  // a few instructions from now — unless its KLT was preempted (a vCPU
  // taken away on a shared machine, or a real-time thread on our CPU): then
  // spinning only keeps it from running. Spin briefly, then yield, as
  // SpinLock does.
  for (int spins = 0; u->on_stack.load(std::memory_order_acquire);) {
    if (++spins < 128) {
      cpu_relax();
    } else {
      sys::sched_yield();
    }
  }
}

void release(UltDesc* u) {
  wait_off_stack(u);
  // Nobody can reach it from here: for_each_live skips it, and every id
  // of it is stale (a requester that copied its stop source holds a
  // reference of its own).
  u->live_in.store(nullptr, std::memory_order_release);
  // Only the ULT itself installs a source, and it has exited: a plain
  // look (no read-modify-write on the spawn+join path).
  if (std::stop_source* src = u->stop_source.load(std::memory_order_acquire)) {
    u->stop_source.store(nullptr, std::memory_order_relaxed);
    delete src;
  }
  free(u->locals);
  u->locals = nullptr;
  u->locals_count = 0;
  u->locals_capacity = 0;
  sys::context_destroy(&u->ctx);
  u->sched = nullptr;  // valid only while the ULT is live
  u->next = nullptr;
  if (u->retired()) {  // its generation would wrap: never reuse it (ult.h)
    death_row().retire(u);
    return;
  }

  // The local cache is the worker's core: not from inside a blocking region
  // (join/detach there end here too; core_owner() is null there).
  Worker* w = core_owner();
  if (w != nullptr && w->active() && u->stack.size() == w->sched->default_stack_size) {
    cache_push(w, u);
    bump(w->reaped);
  } else {
    IntrusiveQueue<UltDesc> one;
    one.push_back(u);
    death_row().put(&one, u->stack.size());
  }
}

namespace {

// The descriptor `id` names, locked, if the id is current. Returns null with
// *err set otherwise.
UltDesc* lock_by_id(UltId id, absl::Status* err) {
  UltDesc* u = id.valid() ? ult_table::lookup(id.value()) : nullptr;
  if (u == nullptr) {
    *err = absl::NotFoundError("no ULT has this id (invalid or forged)");
    return nullptr;
  }
  u->join_lock.lock();
  if (u->generation.load(std::memory_order_relaxed) != id.generation()) {
    u->join_lock.unlock();
    *err = absl::NotFoundError("stale ULT id: the ULT was already joined or detached and released");
    return nullptr;
  }
  return u;
}

// The descriptor `id` names, with its join lock held, if nobody detached
// or joins it yet; else null with *err set (NotFound from lock_by_id, or
// FailedPrecondition with the message `detached` or `joining`).
UltDesc* lock_claimable(UltId id, const char* detached, const char* joining, absl::Status* err) {
  UltDesc* u = lock_by_id(id, err);
  if (u == nullptr) return nullptr;
  const char* why = u->detached ? detached : u->joiner != nullptr ? joining : nullptr;
  if (why == nullptr) return u;
  u->join_lock.unlock();
  *err = absl::FailedPreconditionError(why);
  return nullptr;
}

}  // namespace

absl::Status join_ult(UltId id, void** value, bool cancellable, void (*collect)(void*), void* ctx) {
  UltDesc* self = current_ult();
  if (self != nullptr && self->id_value() == id.value())
    return absl::FailedPreconditionError("a ULT cannot join itself");
  absl::Status err;
  UltDesc* u = lock_claimable(id, "the ULT is detached", "another caller is already joining this ULT", &err);
  if (u == nullptr) return err;
  if (u->exited) {
    u->detached = true;  // consumed
    advance_generation(u);
    u->join_lock.unlock();
    if (value != nullptr) *value = u->exit_value;
    if (collect != nullptr) {
      collect(ctx);
    } else {
      drop_result(u);
    }
    release(u);
    return absl::OkStatus();
  }
  if (cancellable && self != nullptr && self->stop.load(std::memory_order_acquire)) {
    u->join_lock.unlock();
    return absl::CancelledError("the joining ULT was asked to stop");
  }
  JoinWaiter w;
  w.ult = self;
  u->joiner = &w;
  u->join_lock.unlock();
  if (self != nullptr) {
    WaitNote note(self, "join", u);
    while (w.done.load(std::memory_order_acquire) == 0) {
      park_current(self);
      // A stop request of the joiner (it unparks us: stop.cc) ends the
      // wait unless the ULT has exited meanwhile: its exit path took w
      // under join_lock and will set done; then the join completes.
      if (cancellable && self->stop.load(std::memory_order_acquire) &&
          w.done.load(std::memory_order_acquire) == 0) {
        u->join_lock.lock();
        bool withdrawn = !u->exited;
        if (withdrawn) u->joiner = nullptr;
        u->join_lock.unlock();
        if (withdrawn) return absl::CancelledError("the joining ULT was asked to stop");
      }
    }
  } else {
    while (w.done.load(std::memory_order_acquire) == 0) sys::futex_wait(&w.done, 0);
  }
  if (value != nullptr) *value = u->exit_value;
  if (collect != nullptr) {
    collect(ctx);
  } else {
    drop_result(u);
  }
  release(u);
  return absl::OkStatus();
}

absl::Status detach_ult(UltId id) {
  absl::Status err;
  UltDesc* u = lock_claimable(id, "the ULT is already detached", "another caller is joining this ULT", &err);
  if (u == nullptr) return err;
  u->detached = true;
  bool exited = u->exited;
  if (exited) advance_generation(u);
  u->join_lock.unlock();
  if (exited) {
    drop_result(u);  // its exit path left the result to its joiner
    release(u);
  }
  return absl::OkStatus();
}

}  // namespace weft::rt
