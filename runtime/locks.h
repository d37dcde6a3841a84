// runtime/locks.h — the runtime's own internal locks.
//
// These block (spin, then sleep) the *kernel thread*, not a ULT: use them
// only for the scheduler's short critical sections (queues, caches, the
// idle set), never around user code or anything that can park a ULT.
// weft::Mutex (runtime/sync) is the lock for ULT code.
#pragma once

#include <atomic>
#include <cstdint>

#include "sys/futex.h"
#include "sys/raw_syscall.h"
#include "sys/spin.h"

namespace weft::rt {

inline void cpu_relax() { __builtin_ia32_pause(); }

// The spinlock for critical sections of a few loads and stores: sys/'s
// SpinFlag (spin with `pause`, then yield the CPU; sys/spin.h).
using SpinLock = sys::SpinFlag;

// A futex mutex (Drepper's three-state lock) for critical sections that may
// be longer or contended by many KLTs: sys/'s (sys/spin.h), the same lock
// the KLT registry uses. Word: 0 unlocked, 1 locked, 2 locked with
// (possible) sleepers; the unlocker wakes one sleeper iff it saw 2.
using KltMutex = sys::SysMutex;

// Holds a lock for a scope (sys/'s guard; works with any of the above).
template <class L>
using LockGuard = sys::SysLockGuard<L>;

// A full memory barrier that is cheaper than mfence on x86: a locked RMW on
// the stack (what Linux's smp_mb does). Orders every earlier store before
// every later load, which is what the wake-up handshakes need.
//
// ThreadSanitizer does not see inline assembly, so TSan builds use the
// standard fence instead: TSan then knows a fence is there (it does not
// model fences' ordering — GCC warns so with -Wtsan, silenced here — and
// takes its happens-before edges from the atomics around them). Normal
// builds keep the locked RMW: it is on the measured wake-up paths.
#if defined(__SANITIZE_THREAD__)
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
inline void full_fence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }  // std::atomic_thread_fence(seq_cst)
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#else
inline void full_fence() {
  __asm__ volatile("lock; orq $0, (%%rsp)" ::: "memory", "cc");
}
#endif

}  // namespace weft::rt
