// sys/tls.h — glibc thread control blocks for raw-clone KLTs.
//
// A thread made by raw clone() is invisible to glibc: everything glibc keeps
// per thread must be given to it here (DESIGN.md "Raw KLTs and glibc";
// notes/raw-klt.md has what was observed field by field). This module owns the
// glibc-specific knowledge; klt_clone.cc owns the thread's life cycle.
//
// Life of a TCB:
//   creator:  tls_allocate()        TCB + static TLS + DTV from glibc's own
//                                   allocator, header fields filled in
//   clone(CLONE_SETTLS=tp)          the new KLT runs with %fs = tp
//   new KLT:  tls_thread_start()    rseq, robust list, ctype, resolver, errno
//   new KLT:  ... user code ...
//   new KLT:  tls_thread_finish()   thread_local and pthread-key destructors
//   new KLT:  SYS_exit              kernel clears the tid word and wakes it
//   reaper:   tls_release()         only after the tid word reads 0
//
// Heritage: glibc frees a thread's malloc cache (tcache) and arena attachment
// only on its own exit path, which raw KLTs cannot take; every raw exit would
// leak them (about 22 KB each here). Instead, tls_release() keeps a copy of the
// dead thread's libc TLS block (144 bytes on glibc 2.36: malloc's tcache and
// thread_arena pointers, dlerror and strerror buffers, ...) and the next
// tls_allocate() gives it to the new thread, which adopts the dead thread's
// malloc cache. Per-thread values that must start fresh are reset by
// tls_thread_start (errno, h_errno, ctype tables, resolver state) and
// tls_thread_finish (locale, dlerror state; the thread_local destructor list
// is empty by then). At most kHeritageCap copies are kept; beyond
// that a dead thread's malloc cache is leaked and counted.
//
// Every glibc-internal offset used here is discovered at run time (glibc's
// _thread_db_* descriptors, get_robust_list, dl_iterate_phdr) and validated
// against the calling thread in tls_init(); if glibc does not look as
// expected, tls_init() fails with a message and no KLT is ever created.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace weft::sys {

// Discovers and validates glibc's thread layout (once; the answer is
// cached), then makes glibc multi-threaded with one pthread_create + join
// (until that has succeeded once). Idempotent and thread-safe. Returns 0;
// -ENOTSUP with `*what` naming the check that failed; or pthread_create's
// error (-EAGAIN, -ENOMEM), which a later call may not repeat.
int tls_init(const char** what);

// Allocates a TCB with its static TLS block and DTV and fills in the header
// (self pointers, stack and pointer guards, list node, pthread-key blocks,
// robust-list head). Returns the thread pointer (the value for CLONE_SETTLS),
// or nullptr when memory is exhausted. Requires tls_init() == 0.
void* tls_allocate();

// The tid word inside the TCB: the kernel writes it (CLONE_PARENT_SETTID) and
// clears it and futex-wakes it (CLONE_CHILD_CLEARTID) when the thread exits.
std::atomic<uint32_t>* tls_tid_word(void* tp);

// Runs first on the new KLT: registers rseq, the robust list, ctype tables and
// a private resolver state (`res` must be a zeroed struct __res_state that
// lives as long as the thread), and clears errno.
void tls_thread_start(void* tp, void* res);

// Runs last on the KLT, with all signals blocked: thread_local destructors,
// pthread-key destructors, locale reset, resolver state close.
void tls_thread_finish(void* tp, void* res);

// Frees a TCB whose thread has exited (tid word == 0), or one that never ran,
// keeping its libc block for the next tls_allocate (a never-run block is as
// good as a fresh one).
void tls_release(void* tp);

// The calling thread's thread pointer (%fs:0, its TCB).
inline void* tls_self() {
  void* tp;
  __asm__("movq %%fs:0, %0" : "=r"(tp));
  return tp;
}

// Objects whose static TLS block dl_tls.cc initialised in the live KLTs
// after a dlopen (for tests and diagnostics).
uint64_t dl_tls_modules_initialised();

// The spinlocks of the clone backend (heritage pool here, KLT stack cache
// in klt_clone.cc), for tests that check that a waiter yields the CPU.
class SpinFlag;
SpinFlag& tls_heritage_lock_for_test();
SpinFlag& klt_stack_cache_lock_for_test();

// Counters for tests and diagnostics.
struct TlsStats {
  uint64_t inherited;  // new TCBs that adopted a dead thread's libc block
  uint64_t dropped;    // dead threads whose libc block (malloc cache) was leaked
};
TlsStats tls_stats();

// For a loaded object's struct link_map: its TLS module id and, when its
// TLS block lives in the static TLS area (initial-exec TLS, or a module
// glibc placed there), the block's offset below the thread pointer (the
// block of thread T is at T's tp - *offset). Returns false (with *modid 0
// for an object without TLS) when the object has no static TLS block, and
// before tls_init() has succeeded (no KLT can exist then).
bool tls_module_static_offset(const void* link_map, size_t* modid, long* offset);

// Runs user-visible per-thread destructors on the calling KLT: thread_local
// destructors and pthread-key destructors, as glibc does at thread exit,
// until none is left. Called before the KLT leaves the registry, with the
// signal mask fn ran with; tls_thread_finish repeats it (a no-op by then).
void tls_thread_run_destructors(void* tp);

// The size of struct __res_state, for callers that allocate it.
size_t tls_resolver_state_size();

// Fork support (klt_atfork_*, sys/klt.h): take this module's locks before
// fork, release them in the parent, reset them in the child.
void tls_atfork_prepare();
// The interposed dlopen's lock (dl_tls.cc): taken before the registry's.
void dl_atfork_prepare();
void dl_atfork_parent();
void dl_atfork_child();
void tls_atfork_parent();
void tls_atfork_child();

}  // namespace weft::sys
