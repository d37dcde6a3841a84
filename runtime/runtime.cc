// runtime/runtime.cc — the public API of weft/runtime.h: Runtime, the Ult
// handle, spawn, this_ult, Pin and UltLocal (the pool's life behind them is
// runtime/pool.cc).
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/death_row.h"
#include "runtime/debug_info.h"
#include "runtime/fork.h"
#include "runtime/globals.h"
#include "runtime/log.h"
#include "runtime/priority.h"
#include "runtime/scheduler.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft {

struct Runtime::Impl {
  explicit Impl(const Options& o) : sched(o) {}
  rt::Scheduler sched;
  // WEFT_DUMP_SIGNAL and Options::hang_dump (debug_info.h): made once the
  // pool runs, gone before it shuts down.
  std::unique_ptr<rt::DumpWatch> dump_watch;
};


// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

std::string UltId::ToString() const {
  if (!valid()) return "none";
  return absl::StrCat(index(), ".", generation());
}

Runtime::Runtime(Options opts) : impl_(std::make_unique<Impl>(opts)) {
  if (impl_->sched.start().ok())
    impl_->dump_watch = std::make_unique<rt::DumpWatch>(
        &impl_->sched, std::chrono::duration_cast<std::chrono::nanoseconds>(opts.hang_dump).count());
}

Runtime::~Runtime() {
  if (impl_->sched.exiting_process.load(std::memory_order_relaxed)) return;  // fork.cc
  impl_->dump_watch.reset();
  absl::Status s = impl_->sched.shutdown();
  if (!s.ok()) {
    sys::raw_logf("weft: ~Runtime: %s", std::string(s.message()).c_str());
    abort();
  }
}

absl::Status Runtime::status() const { return impl_->sched.start_status; }
absl::Status Runtime::set_concurrency(int n) { return impl_->sched.set_concurrency(n); }
int Runtime::concurrency() const { return impl_->sched.active.load(std::memory_order_relaxed); }
RuntimeStats Runtime::stats() const { return impl_->sched.stats(); }
absl::Status Runtime::shutdown() { return impl_->sched.shutdown(); }
absl::Status Runtime::shutdown(std::chrono::nanoseconds timeout) { return impl_->sched.shutdown_within(timeout.count()); }
std::vector<UltInfo> Runtime::live_ults() const { return rt::live_ults_of(&impl_->sched); }

struct RuntimeAccess {
  static rt::Scheduler* sched(Runtime* r) { return &r->impl_->sched; }
};

namespace detail {

Spawned spawn(Runtime* rt_handle, const SpawnOptions& opts, const Closure& c) {
  rt::Scheduler* s = nullptr;
  if (rt_handle != nullptr) {
    s = RuntimeAccess::sched(rt_handle);
  } else {
    rt::UltDesc* self = rt::current_ult();
    if (self == nullptr)
      return Spawned{UltId(), absl::FailedPreconditionError("weft::spawn() called outside a ULT; use Runtime::spawn")};
    s = self->sched;
  }
  if (!s->start_status.ok()) return Spawned{UltId(), s->start_status};
  // A spawn from one of this runtime's own workers runs in a live ULT, so
  // the runtime cannot reach zero live ULTs meanwhile. Any other spawn goes
  // through the gate, which shutdown closes (scheduler.h, live accounting).
  rt::Worker* local = rt::current_worker();
  if (local != nullptr && (local->sched != s || local->current.load(std::memory_order_relaxed) == nullptr)) local = nullptr;
  if (local == nullptr && (s->gate.fetch_add(1, std::memory_order_acq_rel) & rt::Scheduler::kClosed)) {
    s->gate.fetch_sub(1, std::memory_order_acq_rel);
    return Spawned{UltId(), absl::FailedPreconditionError("the runtime is shut down")};
  }
  auto leave_gate = [s, local] {
    if (local == nullptr) s->gate.fetch_sub(1, std::memory_order_acq_rel);
  };
  rt::Worker* home = nullptr;
  if (opts.bound) {
    absl::StatusOr<rt::Worker*> w = s->take_bound_worker();
    if (!w.ok()) {
      leave_gate();
      return Spawned{UltId(), w.status()};
    }
    home = *w;
  }
  absl::Status err;
  rt::Worker* pool_worker = local != nullptr && local->active() ? local : nullptr;
  rt::UltDesc* u = rt::create_ult(s, pool_worker, opts, c, &err);
  if (u == nullptr) {
    if (home != nullptr) s->bound_done(home);
    leave_gate();
    return Spawned{UltId(), err};
  }
  u->bound = opts.bound;
  u->home = home;
  UltId id = UltId::FromValue(u->id_value());
  if (rt::trace::Ring* r = rt::trace_ring_here(s); __builtin_expect(r != nullptr, 0)) {
    uint64_t name[3] = {};
    static_assert(sizeof name <= sizeof u->name);
    memcpy(name, u->name, sizeof name);
    r->put(rt::trace::kSpawn, u->id_value(), name[0], name[1], static_cast<int64_t>(name[2]));
  }
  if (local != nullptr) {
    local->created.store(local->created.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  } else {
    s->foreign_created.fetch_add(1, std::memory_order_release);
  }
  void* task = u->closure;
  // A runtime being stopped (shutdown with a deadline) stops what its
  // ULTs spawn meanwhile too.
  if (s->stop_all.load(std::memory_order_acquire)) u->stop.store(true, std::memory_order_relaxed);
  s->submit_new(u, pool_worker);
  leave_gate();
  return Spawned{id, absl::OkStatus(), task};
}

absl::Status join_handle(UltId id, void** exit_value, bool cancellable, void (*collect)(void*), void* ctx) {
  return rt::join_ult(id, exit_value, cancellable, collect, ctx);
}

absl::Status detach_handle(UltId id) { return rt::detach_ult(id); }

absl::Status join_id(UltId id) { return rt::join_ult(id); }

bool in_ult() { return rt::current_ult() != nullptr; }

long errno_tp_offset_init() {
  char* tp;
  __asm__ volatile("mov %%fs:0, %0" : "=r"(tp) : : "memory");
  // glibc's own accessor (the errno macro is ours here): its result on
  // this thread, relative to this thread's pointer, is the same for all.
  long off = reinterpret_cast<char*>(__errno_location()) - tp;
  errno_tp_offset.store(off, std::memory_order_relaxed);
  return off;
}

}  // namespace detail

namespace this_ult {

void yield() {
  rt::UltDesc* self = rt::current_ult();
  if (self == nullptr) {
    sys::sched_yield();
    return;
  }
  rt::yield_current(self);
}

Priority priority() {
  rt::UltDesc* self = rt::current_ult();
  return self == nullptr ? Priority::kNormal : static_cast<Priority>(self->base_prio.load(std::memory_order_relaxed));
}

absl::Status set_priority(Priority p) {
  if (static_cast<uint8_t>(p) > static_cast<uint8_t>(Priority::kHigh))
    return absl::InvalidArgumentError(absl::StrCat("priority ", static_cast<int>(p),
                                                   " is not a weft::Priority (0 background, 1 normal, 2 high)"));
  rt::UltDesc* self = rt::current_ult();
  if (self == nullptr) return absl::FailedPreconditionError("this_ult::set_priority called outside a ULT");
  uint8_t before = self->eff_prio.load(std::memory_order_relaxed);
  rt::set_own_priority(self, static_cast<uint8_t>(p));
  if (self->eff_prio.load(std::memory_order_relaxed) < before) rt::yield_current(self);  // let a higher one run
  return absl::OkStatus();
}

void sleep_for(std::chrono::nanoseconds d) {
  rt::UltDesc* self = rt::current_ult();
  if (d.count() <= 0) {
    yield();
    return;
  }
  if (self == nullptr) {
    timespec ts{static_cast<time_t>(d.count() / 1000000000), static_cast<long>(d.count() % 1000000000)};
    while (sys::raw_syscall(SYS_nanosleep, reinterpret_cast<long>(&ts), reinterpret_cast<long>(&ts)) == -EINTR) {
    }
    return;
  }
  sleep_until_monotonic_ns(detail::deadline_after(rt::monotonic_ns(), d.count()));
}

void sleep_until_monotonic_ns(int64_t deadline) {
  rt::UltDesc* self = rt::current_ult();
  if (deadline <= rt::monotonic_ns()) {
    yield();
    return;
  }
  if (self == nullptr) {
    // Absolute CLOCK_MONOTONIC sleep; INT64_MAX is 292 years after boot.
    timespec ts{static_cast<time_t>(deadline / 1000000000), static_cast<long>(deadline % 1000000000)};
    while (sys::raw_syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, reinterpret_cast<long>(&ts), 0) ==
           -EINTR) {
    }
    return;
  }
  rt::WaitNote note(self, "sleep");
  if (deadline == detail::kForeverNs) {
    // Practically forever (292 years after boot): no timer at all. Only a
    // stop request ends it (a spurious wake-up parks again).
    while (!rt::stop_requested(self)) rt::park_current(self);
    rt::yield_current(self);  // a loop of sleeps that ignores the stop must not spin on its worker
    return;
  }
  // A stop request (stop.cc) sets the flag, then unparks us.
  while (!rt::stop_requested(self) && rt::monotonic_ns() < deadline) rt::park_current_until(self, deadline);
  if (rt::stop_requested(self)) rt::yield_current(self);  // as above
}

UltId id() {
  rt::UltDesc* self = rt::current_ult();
  return self == nullptr ? UltId() : UltId::FromValue(self->id_value());
}

bool in_ult() { return rt::current_ult() != nullptr; }

}  // namespace this_ult

Pin::Pin() {
  rt::UltDesc* self = rt::current_ult();
  active_ = self != nullptr;
  if (!active_) return;
  if (self->pin_count++ == 0 && !self->bound) self->home = self->worker.load(std::memory_order_relaxed);
}

Pin::~Pin() {
  if (!active_) return;
  rt::UltDesc* self = rt::current_ult();
  WEFT_DCHECK(self != nullptr && self->pin_count > 0, "Pin destroyed outside the ULT that made it");
  if (--self->pin_count == 0 && !self->bound) self->home = nullptr;
}

// ---------------------------------------------------------------------------
// UltLocal
// ---------------------------------------------------------------------------

namespace detail {

namespace {

// Foreign threads' values: destroyed at thread exit.
struct ThreadLocals {
  std::vector<rt::LocalSlot> slots;
  ~ThreadLocals() {
    // By index: a destructor may add a slot (another UltLocal) meanwhile.
    for (size_t i = 0; i < slots.size(); ++i) {
      void* value = slots[i].value;
      slots[i].value = nullptr;
      if (value != nullptr) slots[i].destroy(value);
    }
  }
};
thread_local ThreadLocals thread_locals;
}  // namespace

uint32_t ult_local_new_key() { return rt::globals().next_local_key.fetch_add(1, std::memory_order_relaxed); }

void* ult_local_get(uint32_t key, void* (*make)(), void (*destroy)(void*)) {
  rt::UltDesc* self = rt::current_ult();
  if (self == nullptr) {
    for (auto& s : thread_locals.slots)
      if (s.key == key) return s.value;
    // make() first (it may add slots itself); no reference into the vector
    // is held across it.
    void* value = make();
    thread_locals.slots.push_back(rt::LocalSlot{key, value, destroy});
    return value;
  }
  for (uint32_t i = 0; i < self->locals_count; ++i)
    if (self->locals[i].key == key) return self->locals[i].value;
  // make() runs user code: a T whose constructor uses another UltLocal adds
  // a slot (and may grow the array) before we store ours, and it may park.
  // So make the value first, then check the room for it: nothing read from
  // `self->locals` before make() is used after it.
  void* value = make();
  if (self->locals_count == self->locals_capacity) {
    uint32_t cap = self->locals_capacity == 0 ? 4 : self->locals_capacity * 2;
    auto* grown = static_cast<rt::LocalSlot*>(realloc(self->locals, cap * sizeof(rt::LocalSlot)));
    if (grown == nullptr) {
      sys::raw_logf("weft: out of memory for ULT-local storage");
      abort();
    }
    self->locals = grown;
    self->locals_capacity = cap;
  }
  WEFT_DCHECK(self->locals_count < self->locals_capacity, "ULT-local slot array full (%u)", self->locals_count);
  self->locals[self->locals_count++] = rt::LocalSlot{key, value, destroy};
  return value;
}

}  // namespace detail

}  // namespace weft
