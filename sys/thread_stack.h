// sys/thread_stack.h — what glibc believes the calling thread's stack is.
//
// glibc keeps each thread's stack in its struct pthread (`stackblock`,
// `stackblock_size`) and reads it in __libc_alloca_cutoff — the limit many
// libc functions use to choose between alloca and malloc: a quarter of the
// stack, at most 64 KiB, and 64 KiB when the size is 0 — and in
// pthread_getattr_np. A raw KLT's TCB has 0 there, and a ULT runs on a
// stack that glibc knows nothing about, so on a 64 KiB ULT stack glibc
// allowed 64 KiB of alloca (issue 9 #2). The runtime stores the running
// ULT's stack in the calling KLT's TCB at every switch (thread_stack_set):
// two stores; then the cutoff is a quarter of the ULT's stack and
// pthread_getattr_np in a ULT reports the ULT's stack. While the KLT runs
// its own scheduler loop the fields keep the last ULT's stack (a smaller
// cutoff than the KLT's own stack would allow, never a larger one).
//
// The fields are not described by glibc's _thread_db_* symbols. They are
// found at start (thread_stack_init) by creating one pthread on a stack of
// known address and size (pthread_attr_setstack: glibc stores exactly that
// pair) and locating the pair inside its struct pthread; the result is
// validated with pthread_getattr_np and __libc_alloca_cutoff. Works on both
// KLT backends (on the pthread backend glibc sets the KLT's own stack; ULT
// stacks still need the switch-time store).
#pragma once

#include <cstddef>

namespace weft::sys {

// Finds and validates the offsets (once; later calls return the cached
// answer). Returns 0, or -ENOTSUP with *what saying which check failed (the
// runtime then runs without this: glibc's cutoffs stay those of the KLT),
// or a transient pthread_create error (-EAGAIN, -ENOMEM) that a later call
// may not repeat. Thread-safe.
int thread_stack_init(const char** what = nullptr);

// True once thread_stack_init succeeded.
bool thread_stack_known();

// Offset of `stackblock` in struct pthread (stackblock_size follows it);
// valid when thread_stack_known().
long thread_stack_offset();

// Makes glibc believe the calling thread's stack is [lo, lo + size): two
// %fs-relative stores, no call. Async-signal-safe. A no-op unless
// thread_stack_known().
inline void thread_stack_set(void* lo, size_t size) {
  long off = thread_stack_offset();
  if (off == 0) return;
  __asm__ volatile("movq %0, %%fs:(%2)\n\tmovq %1, %%fs:8(%2)" ::"r"(lo), "r"(size), "r"(off) : "memory");
}

// Sets the stack of the thread whose TCB is at `tp` (before it runs).
void thread_stack_set_for(void* tp, void* lo, size_t size);

// The calling thread's stack as glibc believes it ({nullptr, 0} if unknown).
void thread_stack_get(void** lo, size_t* size);

}  // namespace weft::sys
