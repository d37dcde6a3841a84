// runtime/stop.cc — cancellation: stop requests to ULTs, the ULT's
// std::stop_source, and shutdown with a deadline.
//
// A stop request is a flag in the ULT (UltDesc::stop) plus an unpark. The
// flag is set by the requester under the ULT's join_lock, after checking
// the id's generation (so the descriptor is that ULT's and is not released
// meanwhile: release needs the generation advanced, which needs the lock);
// the unpark is made under the same lock, for the same reason. A parked
// ULT wakes (a spurious wake-up for waits that are not cancellable: they
// park again) and its cancellable waits see the flag after the park and
// end: sleeps, join, weft::io (which cancels the operation on its ring),
// and the waits given a std::stop_token. One that is running or runnable
// keeps a wake permit: its next park returns at once and looks.
//
//   requester (under join_lock)           the ULT (this_ult::stop_token)
//   stop.exchange(true)   (seq_cst)       src = new stop_source
//   copy = *stop_source   (seq_cst load)  CAS stop_source null -> src (seq_cst)
//   unpark(u); unlock                     if stop (seq_cst load): src->request_stop()
//   copy.request_stop()  (if it existed)
// One of the two seq_cst pairs sees the other's store, so the source's
// stop is requested at least once (request_stop is idempotent), and the
// callbacks registered on it (user code) run outside any weft lock.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/scheduler.h"
#include "runtime/ult.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "weft/runtime.h"

namespace weft::rt {

namespace {

// Under u->join_lock, with u live: flags u, copies its source, unparks it.
// Returns whether this was the first request, and the copy in *src.
bool request_locked(UltDesc* u, std::stop_source* src) {
  bool first = !u->stop.exchange(true, std::memory_order_seq_cst);
  if (!first) return false;  // asked before: already woken
  if (std::stop_source* s = u->stop_source.load(std::memory_order_seq_cst)) *src = *s;
  unpark(u);
  return first;
}

// The ULT's own source, made on first use.
std::stop_source* own_source(UltDesc* self) {
  std::stop_source* s = self->stop_source.load(std::memory_order_acquire);
  if (s != nullptr) return s;
  auto* made = new std::stop_source();
  std::stop_source* expected = nullptr;
  if (!self->stop_source.compare_exchange_strong(expected, made, std::memory_order_seq_cst)) {
    delete made;  // only the ULT itself installs one: cannot happen, but harmless
    return expected;
  }
  if (self->stop.load(std::memory_order_seq_cst)) made->request_stop();
  return made;
}

}  // namespace

void exception_text(const std::exception_ptr& e, char* out, size_t size) {
  snprintf(out, size, "%s", "not a std::exception");
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    snprintf(out, size, "%s", x.what());
  } catch (...) {
  }
}

bool stop_requested(const UltDesc* self) {
  return self != nullptr && self->stop.load(std::memory_order_acquire);
}

bool request_stop(UltId id) {
  UltDesc* u = id.valid() ? ult_table::lookup(id.value()) : nullptr;
  if (u == nullptr) return false;
  std::stop_source src(std::nostopstate);
  bool first = false;
  u->join_lock.lock();
  if (u->generation.load(std::memory_order_relaxed) == id.generation() && !u->exited) first = request_locked(u, &src);
  u->join_lock.unlock();
  if (src.stop_possible()) src.request_stop();
  return first;
}

// Calls f(u) for every ULT live in s, under its join_lock (f must not
// block). A walk of the ULT table: O(descriptors ever made). A descriptor
// released and reused by a new ULT of the same runtime while the walk
// looks at it may be seen as either; both are live ULTs of s.
template <class F>
void for_each_live(Scheduler* s, F f) {
  uint64_t n = ult_table::size();
  for (uint64_t i = 0; i < n; ++i) {
    UltDesc* u = ult_table::lookup(i);
    if (u == nullptr || u->live_in.load(std::memory_order_acquire) != s) continue;
    u->join_lock.lock();
    if (u->live_in.load(std::memory_order_relaxed) == s && !u->exited) f(u);
    u->join_lock.unlock();
  }
}

std::vector<UltInfo> live_ults_of(Scheduler* s) {
  std::vector<UltInfo> out;
  for_each_live(s, [&](UltDesc* u) { out.push_back(UltInfo{UltId::FromValue(u->id_value()), u->name}); });
  return out;
}

size_t request_stop_all(Scheduler* s) {
  s->stop_all.store(true, std::memory_order_seq_cst);
  std::vector<std::stop_source> sources;
  size_t n = 0;
  for_each_live(s, [&](UltDesc* u) {
    std::stop_source src(std::nostopstate);
    request_locked(u, &src);
    if (src.stop_possible()) sources.push_back(std::move(src));
    ++n;
  });
  for (auto& src : sources) src.request_stop();
  return n;
}

}  // namespace weft::rt

namespace weft {

namespace detail {

bool request_stop_of(UltId id) { return rt::request_stop(id); }

void note_destructor_join(UltId id, bool unwinding) {
#if WEFT_DCHECK_ENABLED
  if (unwinding) {
    rt::UltDesc* u = rt::ult_table::lookup(id.value());
    sys::raw_logf("weft: a JoinHandle destroyed during stack unwinding joins ULT %s \"%s\" (asked to stop "
                  "first); the unwinding waits until it has ended",
                  id.ToString().c_str(), u != nullptr ? u->name : "?");
  }
#else
  (void)id;
  (void)unwinding;
#endif
}

void lost_exception(UltId id, const std::exception_ptr& e, const char* how, bool unwinding) {
  char what[200];
  rt::exception_text(e, what, sizeof what);
  if (unwinding) {
    sys::raw_logf("weft: exception escaped ULT %s and was dropped (%s, while another exception unwinds): %s",
                  id.ToString().c_str(), how, what);
    return;
  }
  sys::raw_logf("weft: exception escaped ULT %s and nobody will see it (%s): %s", id.ToString().c_str(), how, what);
  abort();
}

}  // namespace detail

namespace this_ult {

bool stop_requested() { return rt::stop_requested(rt::current_ult()); }

std::stop_token stop_token() {
  rt::UltDesc* self = rt::current_ult();
  if (self == nullptr) return std::stop_token();
  return rt::own_source(self)->get_token();
}

}  // namespace this_ult

}  // namespace weft

namespace weft::rt {

absl::Status Scheduler::shutdown_within(int64_t timeout_ns) {
  if (Worker* w = current_worker(); w != nullptr && w->sched == this)
    return absl::FailedPreconditionError(
        "shutdown() called from a ULT of the runtime it would wait for (also inside weft::blocking())");
  if (stopped.load(std::memory_order_acquire)) return absl::OkStatus();
  int64_t start = monotonic_ns();
  int64_t deadline = timeout_ns <= 0 ? start : detail::deadline_after(start, timeout_ns);
  // Exits signal exit_signal from here on (exit_current).
  shutting_down.store(true, std::memory_order_seq_cst);
  request_stop_all(this);
  int64_t walked = start;
  for (;;) {
    uint32_t seen = exit_signal.load(std::memory_order_acquire);
    if (live_ults() == 0) return shutdown();
    int64_t now = monotonic_ns();
    if (now >= deadline) break;
    // Again every 10 ms: a spawn racing the first walk (its live_in store
    // still in its store buffer while it read stop_all as false: a
    // store-buffer race neither side fences, to keep spawn cheap) is
    // caught by a later one. ULTs already asked are skipped.
    if (now - walked >= 10 * 1000 * 1000) {
      request_stop_all(this);
      walked = now;
    }
    int64_t wait = std::min<int64_t>(deadline - now, 2 * 1000 * 1000);
    timespec ts{0, static_cast<long>(wait)};
    sys::futex_wait_for(&exit_signal, seen, &ts);
  }
  std::vector<UltInfo> alive = live_ults_of(this);
  if (alive.empty()) return shutdown();  // the last one returned just now
  std::string names;
  for (size_t i = 0; i < alive.size() && i < 32; ++i) {
    absl::StrAppend(&names, i == 0 ? "" : ", ", alive[i].id.ToString(), " \"", alive[i].name, "\"");
  }
  if (alive.size() > 32) absl::StrAppend(&names, ", ...");
  return absl::DeadlineExceededError(absl::StrCat(alive.size(), " ULT", alive.size() == 1 ? " is" : "s are",
                                                  " still running ", (monotonic_ns() - start) / 1000000,
                                                  " ms after the stop request: ", names));
}

}  // namespace weft::rt
