// sys/klt.h — kernel-level threads (KLTs) that weft creates itself.
//
// Two backends behind one interface, chosen at build time (meson option
// klt_backend):
//   clone   (default, the product) raw clone3/clone with a glibc-compatible
//           TCB from sys/tls.h: glibc and libstdc++ work on the thread, but
//           glibc does not know it exists (no pthread_join, pthread_cancel
//           or pthread_exit on it; pthread_getattr_np and glibc's alloca
//           limit see its stack, sys/thread_stack.h).
//   pthread for ASan/TSan builds, which do not know raw threads.
//
// A KLT runs `fn(arg)` with the signal mask the options give, on a guarded
// stack of its own, with its own sigaltstack (if asked), and exits when `fn`
// returns: thread_local and pthread-key destructors run, then the thread
// ends. klt_join waits for the end and frees everything. Every KLT must be
// joined exactly once. All calls return 0 or -errno; none touches errno.
//
// The registry of live KLTs (both backends). weft keeps a list of the KLTs
// it made, with their tids and TCBs, for the work that must reach every
// thread of the process and that glibc does only for the threads it made
// itself: initialising the static TLS of a library dlopen'ed after the KLTs
// started (sys/dl_tls.cc, clone backend), and broadcasting credential changes
// (setuid & co., later). Its contract:
//   - a KLT is in the registry from before its `fn` starts until its last
//     user code has returned (fn, then its thread_local and pthread-key
//     destructors on the clone backend; fn on the pthread backend, where
//     glibc runs the destructors afterwards);
//   - adding (klt_create on the clone backend, the new thread itself on the
//     pthread backend, before fn) and removing (the KLT itself) take the
//     registry lock; while a caller holds it (KltRegistryLock), no KLT is
//     added and none leaves, so a walk under the lock sees each KLT that
//     runs or may still run user code exactly once, with its tid (never 0:
//     the thread exists until it has removed itself) and its TCB;
//   - a KLT waiting to remove itself waits in FUTEX_WAIT with the signal mask
//     it ran fn with, so signals the lock holder sends it are still
//     delivered (the holder may wait for their handlers to run);
//   - the registry lock is a leaf for weft, but it is held across glibc's
//     TLS allocation in klt_create (which takes glibc's loader locks): never
//     call dlopen, klt_create or klt_join while holding it (klt_join waits
//     for a KLT that needs the lock to leave);
//   - in the child of fork() the registry holds only the forking thread (if
//     it is a KLT) and the lock is free.
//
// dlopen after KLTs exist (clone backend, sys/dl_tls.cc). libweft exports
// dlopen, dlmopen and dlclose; after glibc's dlopen returns, the initial
// image of every object that got a static TLS block (initial-exec TLS) is
// copied into each registered KLT's block, as glibc does for its own
// threads. Limits: constructors of the new library that run on a KLT during
// the dlopen see that KLT's copy uninitialised, and what they store there is
// replaced by the initial image when dlopen returns; with the static
// library, calls made by shared libraries reach weft's dlopen only if the
// executable exports it. General-dynamic TLS needs none of this (glibc
// allocates it per thread on first use).
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

// True when glibc itself knows the KLTs (the pthread backend): its setuid
// broadcast and its static-TLS initialisation at dlopen reach them, and
// the registry is informative only. False for raw-clone KLTs.
bool klt_glibc_knows_threads();

// Clone backend: whether klt_create still uses clone3; false once clone3
// answered ENOSYS or EPERM (an old kernel, or a seccomp profile that
// forbids it) and clone worked instead. Always false on the pthread backend.
bool klt_uses_clone3();

// A registered KLT, as seen under the registry lock.
struct KltInfo {
  Klt* klt;   // the handle (valid while the lock is held)
  int tid;    // its kernel thread id, > 0
  void* tp;   // its thread pointer (%fs base, the TCB); pthread_self() on it
};

// Holds the registry lock for its scope (see the contract above). Blocks
// the calling KLT (FUTEX_WAIT) while another holder has it. Not recursive.
class KltRegistryLock {
 public:
  KltRegistryLock();
  ~KltRegistryLock();
  KltRegistryLock(const KltRegistryLock&) = delete;
  KltRegistryLock& operator=(const KltRegistryLock&) = delete;
};

// Calls fn(info, arg) for every registered KLT, oldest first. The caller
// holds a KltRegistryLock. fn must not take the registry lock, create, join
// or wait for the exit of a KLT.
void klt_for_each_locked(void (*fn)(const KltInfo& info, void* arg), void* arg);

// Registered KLTs; the caller holds a KltRegistryLock.
int klt_count_locked();

// Prepares the backend (for clone: validates glibc's thread layout and makes
// glibc multi-threaded, which creates and joins one pthread; for both:
// finds where glibc keeps a thread's stack, sys/thread_stack.h, with one
// more pthread). Idempotent.
// Returns 0; -ENOTSUP with *what set when this glibc is not supported; or a
// transient thread-creation error (-EAGAIN, -ENOMEM) that a later call may
// not repeat.
int klt_backend_init(const char** what = nullptr);

// The signal weft reserves for making every KLT run a system call (the
// credential broadcast, klt_syscall_all_locked). Every KLT starts with it
// unblocked; code on a KLT must not block it or change its disposition.
inline const int kAllKltsSignal = SIGRTMAX;

// Why klt_syscall_all_locked failed on some KLT.
struct KltSyscallFailure {
  int tid = 0;        // the first KLT whose result differed (0: none)
  long result = 0;    // its result (-errno), or -ETIMEDOUT if it never answered
  int failed = 0;     // how many KLTs failed or did not answer
};

// Makes every registered KLT except the calling thread run the raw system
// call nr(args...) on itself, in a handler of kAllKltsSignal (tgkill), and
// waits until each has — or until `timeout_ms` passed, for a KLT that
// blocks the signal. For per-thread kernel state that must be the same on
// every thread (credentials: the kernel keeps them per thread, and glibc's
// own broadcast reaches only the threads glibc made). The caller holds a
// KltRegistryLock (no KLT starts or leaves meanwhile). Returns 0 when every
// KLT's result was 0; otherwise -1 with *f filled. A no-op returning 0 on
// the pthread backend, whose KLTs glibc reaches itself. The first call
// installs the signal's handler (chaining to a handler the application
// installed before, for signals that are not weft's).
int klt_syscall_all_locked(long nr, const long (&args)[6], int timeout_ms, KltSyscallFailure* f);

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
