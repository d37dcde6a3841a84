// runtime/park.h — the runtime's interface for the layers above it: park
// the calling ULT until woken, wake a parked ULT, and find the calling
// context's poller. io/ uses only this (and poller.h, locks.h, fork.h, log.h, and
// debug_info.h's WaitNote)
// of the runtime's internals; so will the hook library and signals. Nothing
// here exposes the scheduler's structures: a ULT is an opaque UltDesc*.
//
// The protocol (a wake-up is never lost, a park may return spuriously):
//
//   waiter (a ULT)                         waker (any thread)
//   self = rt::caller().ult                store the result / flag
//   publish self where the waker finds it  rt::unpark(self)
//   while (!done) rt::park_current(self)
//
// An unpark that comes before the park is kept as a permit: the next park
// returns at once. The waiter must re-check its condition after every park.
// A ULT may resume on another worker after any park: re-read caller()
// afterwards, never keep its poller across a park.
#pragma once

#include <cstdint>

namespace weft::rt {

struct UltDesc;
class Poller;

// The calling context, in one call.
struct Caller {
  // The ULT running on this KLT; null on a foreign thread and inside a
  // weft::blocking() region (weft calls made there act as on a thread).
  UltDesc* ult = nullptr;
  // The poller of this KLT's worker; null on a foreign thread. Set inside a
  // blocking region too: the KLT still owns its worker's poller (a handoff
  // moves queues and timers, never the poller).
  Poller* poller = nullptr;
};
Caller caller();

// Parks the calling ULT `self` until unparked (a pending permit makes it
// return at once); may return spuriously.
void park_current(UltDesc* self);
// Parks until unparked or until deadline_ns (CLOCK_MONOTONIC). Returns false
// if the deadline passed (the timer won), true otherwise (possibly spurious).
bool park_current_until(UltDesc* self, int64_t deadline_ns);
// Makes a parked ULT runnable, or leaves it a permit. Any thread, including
// a worker's scheduler loop (io completions): then the ULT is queued on
// that worker.
void unpark(UltDesc* u);
// As unpark, but a ULT woken from outside its runtime's workers is queued
// where a worker takes it at its next switch (an inbox) rather than at the
// back of the shared queue: for signal delivery, whose latency a busy
// runtime would otherwise add (runtime/signal.cc).
void unpark_urgent(UltDesc* u);

// Signal handlers that end a wait (runtime/signal.cc), for the waits that
// POSIX lets a signal interrupt: take a mark before the wait; after each
// park, handler_interrupts() says whether a handler ran on the ULT since the
// mark that ends this wait as POSIX would end the corresponding call: any
// handler for a call that never restarts (poll: restartable false), one
// installed without SA_RESTART for a call that does (read, write, accept:
// restartable true). The wait then stops and reports EINTR.
uint64_t handler_mark(const UltDesc* self);
bool handler_interrupts(const UltDesc* self, uint64_t mark, bool restartable);

// Whether `self` was asked to stop (weft::this_ult::stop_requested; a
// JoinHandle's request_stop, a task group, Runtime::shutdown with a
// deadline). The requester unparks the ULT after setting it, so a
// cancellable wait checks it after every park and ends (weft::io cancels
// its operation and returns -ECANCELED). Set for good: never cleared
// while the ULT lives. False for null.
bool stop_requested(const UltDesc* self);

// Monotonic clock in nanoseconds (vDSO; never touches errno).
int64_t monotonic_ns();

}  // namespace weft::rt
