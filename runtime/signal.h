// runtime/signal.h — per-ULT signal state: what the scheduler and spawn
// need from runtime/signal.cc (the design is at the top of that file).
#pragma once

#include <signal.h>

#include <atomic>
#include <cstdint>

#include "runtime/ult.h"

namespace weft::rt::sig {

// Bit of signal s (1..64) in a 64-bit set.
constexpr uint64_t bit(int s) { return uint64_t{1} << (s - 1); }

// Signals pending for the process in weft's table (none in a SignalSet's
// queue): a ULT that does not block one takes it at its next safe point.
extern std::atomic<uint64_t> g_process_pending;

// Whether u has a signal to take now: ULT-directed or process-pending, not
// blocked by its mask. Two loads and an and: the switch path calls it at
// every switch-in.
inline bool deliverable(const UltDesc* u) {
  uint64_t p = u->sig_pending.load(std::memory_order_relaxed) | g_process_pending.load(std::memory_order_relaxed);
  return (p & ~u->sig_mask.load(std::memory_order_relaxed)) != 0;
}

// Takes and acts on every deliverable signal of `self`, the calling ULT
// (handlers run here, on its stack). Call only where the ULT holds no
// weft lock (a safe point: switch-in, the end of a blocking region, a mask
// change).
void deliver(UltDesc* self);

// The mask a ULT spawned now inherits: the calling ULT's, or the calling
// thread's (as pthread_create does).
uint64_t mask_for_spawn();

// A ULT (`self`, or one being spawned: null) now blocks the signals in
// `mask`: weft manages those it did not yet (its handler in the kernel),
// so that they wait for a ULT instead of taking their default action.
// Nothing to do, and no lock, in the common case.
void note_blocked(uint64_t mask, UltDesc* self);

// The kernel mask of every weft KLT that runs ULTs (workers of all kinds):
// every asynchronous signal blocked (the signal KLT receives those),
// except the ones the kernel sends to the thread that caused them (faults,
// SIGPIPE, SIGXFSZ, SIGSYS), weft's doorbell and sys/'s all-KLTs signal.
void worker_kernel_mask(sigset_t* out);

// A runtime that stops, once all its ULTs have exited and before it frees
// its workers: waits until the signal KLT holds no pointer into them (a
// scan that saw one of its ULTs alive may still be reading its worker).
void forget_workers();

// Once per process (and again in a forked child): the signal table, the
// handlers of the signals weft manages, and the signal KLT. Called when a
// runtime starts. Returns false (with *what set) if the KLT cannot start.
bool start(const char** what);

// In the atfork child, before the pool is rebuilt: the table is empty
// (POSIX: a child has no pending signals), its lock free, and the signal
// KLT is gone (start() makes a new one). `self`, the ULT that forked (or
// null), gets its mask as the child's kernel mask, so that what the child
// execs sees the mask the ULT had.
void after_fork_child(UltDesc* self);

}  // namespace weft::rt::sig
