// sys/klt.h — kernel-level threads (KLTs) that weft creates itself.
//
// Two backends behind one interface, chosen at build time (meson option
// klt_backend):
//   clone   (default, the product) raw clone3/clone with a glibc-compatible
//           TCB from sys/tls.h: glibc and libstdc++ work on the thread, but
//           glibc does not know it exists (no pthread_join, pthread_cancel,
//           pthread_exit or pthread_getattr_np on it).
//   pthread for ASan/TSan builds, which do not know raw threads.
//
// A KLT runs `fn(arg)` with the signal mask the options give, on a guarded
// stack of its own, with its own sigaltstack (if asked), and exits when `fn`
// returns: thread_local and pthread-key destructors run, then the thread
// ends. klt_join waits for the end and frees everything. Every KLT must be
// joined exactly once. All calls return 0 or -errno; none touches errno.
#pragma once

#include <signal.h>

#include <cstddef>

namespace weft::sys {

struct Klt;  // opaque handle

using KltMain = void (*)(void* arg);

struct KltOptions {
  size_t stack_size = 256 * 1024;   // usable bytes, rounded up to pages; lazily committed
  size_t guard_size = 4096;         // guard below the stack
  size_t altstack_size = 64 * 1024; // 0: no sigaltstack on this KLT
  const char* name = nullptr;       // thread name (truncated to 15 bytes), or null
  const sigset_t* sigmask = nullptr;// mask the KLT starts with; null: the creator's mask
};

// Creates a KLT running fn(arg). On success stores its handle in *out and
// returns 0. Errors: -ENOTSUP (the glibc on this system is not one the
// clone backend understands; *what says why), -ENOMEM (stack, TLS or
// signal-stack memory), -EAGAIN (RLIMIT_NPROC, threads-max, or
// pthread_create's EAGAIN), or another clone error. On failure nothing is
// left allocated and the process is unaffected. `what` (may be null)
// receives a static message naming the failed step. Thread-safe; may be
// called on any KLT, including one made here.
int klt_create(KltMain fn, void* arg, const KltOptions& opts, Klt** out, const char** what = nullptr);

// Waits until the KLT has exited (blocking the calling KLT on a futex) and
// frees it. Must be called exactly once per KLT, never by the KLT itself.
// Returns 0.
int klt_join(Klt* k);

// The KLT's kernel thread id; 0 once it has exited. Valid until klt_join.
int klt_tid(Klt* k);

// "clone" or "pthread".
const char* klt_backend_name();

// Prepares the backend (for clone: validates glibc's thread layout and makes
// glibc multi-threaded, which creates and joins one pthread). Idempotent.
// Returns 0; -ENOTSUP with *what set when this glibc is not supported; or a
// transient thread-creation error (-EAGAIN, -ENOMEM) that a later call may
// not repeat.
int klt_backend_init(const char** what = nullptr);

// Fork support, for the runtime's pthread_atfork handlers (runtime/fork.cc).
// klt_atfork_prepare takes the backend's internal locks (its stack cache,
// the TLS heritage pool, tls_init's flag), so that no other thread holds one
// at the instant of the fork; klt_atfork_parent releases them;
// klt_atfork_child resets them (in the child their holders do not exist).
// Between prepare and parent/child the caller must not create or join KLTs.
void klt_atfork_prepare();
void klt_atfork_parent();
void klt_atfork_child();

// In a forked child only: frees what a KLT of the parent held (its stack,
// signal stack, TLS block and handle) without waiting for it to exit — it
// does not exist in the child. `k` must not be the calling KLT's own handle
// (that KLT is the child's thread). Returns 0.
int klt_forget_after_fork(Klt* k);

}  // namespace weft::sys
