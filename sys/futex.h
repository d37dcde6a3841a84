// sys/futex.h — futex(2) wait and wake, results as values.
//
// All calls take the address of a 32-bit futex word. The *private* variants
// (the default) are for words that only this process touches; the *shared*
// variants are for words the kernel itself writes or wakes with a shared wake,
// such as the CLONE_CHILD_CLEARTID word of a KLT (notes/raw-klt.md: a private
// wait can miss that wake).
//
// Return values: wait calls return 0 when woken (possibly spuriously: callers
// must re-check their condition), -EAGAIN when the word did not hold
// `expected` at the time of the call, -ETIMEDOUT when the timeout passed, and
// -EINTR when a signal handler ran. Wake calls return the number of waiters
// woken (>= 0) or -errno. Nothing touches errno. All functions are
// async-signal-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>

namespace weft::sys {

// Which clock an absolute deadline is measured against.
enum class FutexClock { kMonotonic, kRealtime };

// Matches any bitset in futex_wait_bitset / futex_wake_bitset.
inline constexpr uint32_t kFutexBitsetAll = 0xffffffffu;

// Waits while `*word == expected`, with no timeout. (Under ThreadSanitizer,
// on a thread that is not a weft KLT, at most 10 ms: see futex.cc.)
int futex_wait(const std::atomic<uint32_t>* word, uint32_t expected);

#if defined(__SANITIZE_THREAD__)
// Called by every weft KLT as it starts (klt_pthread.cc): its untimed waits
// are not bounded. weft's KLTs keep asynchronous signals blocked, so TSan
// never defers a handler on them, and an idle worker that woke every 10 ms
// would find work the monitor must be the one to move.
void futex_unbounded_waits_on_this_thread();
#endif

// Waits while `*word == expected` for at most `rel` (a relative duration).
// A null `rel` waits forever.
int futex_wait_for(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel);

// Waits while `*word == expected` until the absolute time `abs` on `clock`.
// A null `abs` waits forever.
int futex_wait_until(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* abs,
                     FutexClock clock = FutexClock::kMonotonic);

// Wakes at most `count` waiters on `word` (the kernel treats 0 as 1).
// Returns how many were woken.
int futex_wake(const std::atomic<uint32_t>* word, int count);

// Bitset wait: like futex_wait_until, but only wakes with an overlapping
// bitset wake this waiter. `bitset` must be non-zero.
int futex_wait_bitset(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* abs,
                      uint32_t bitset, FutexClock clock = FutexClock::kMonotonic);

// Wakes at most `count` waiters whose bitset overlaps `bitset`.
int futex_wake_bitset(const std::atomic<uint32_t>* word, int count, uint32_t bitset);

// Shared (inter-process / kernel-written) variants of wait and wake.
int futex_wait_shared(const std::atomic<uint32_t>* word, uint32_t expected, const timespec* rel);
int futex_wake_shared(const std::atomic<uint32_t>* word, int count);

}  // namespace weft::sys
