// sys/raw_syscall.h — raw Linux system calls that report errors as values.
//
// Every function here issues the `syscall` instruction directly and returns
// the kernel's result: a non-negative value on success, `-errno` on failure.
// None of them reads or writes `errno` (glibc's `syscall(2)` wrapper does, and
// weft must not clobber the caller's errno), none of them allocates, and all of
// them are async-signal-safe. They may be called on a half-initialised thread
// (before its TLS is set up), which is why the clone child path uses them.
#pragma once

#include <sys/syscall.h>

#include <cstdint>

namespace weft::sys {

// Raw system call with up to six arguments. Returns the kernel's result
// (negative errno on failure).
inline long raw_syscall(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0,
                        long a5 = 0, long a6 = 0) {
  long ret;
  register long r10 __asm__("r10") = a4;
  register long r8 __asm__("r8") = a5;
  register long r9 __asm__("r9") = a6;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

// True when a raw result is an error (the kernel returns -4095..-1).
inline bool is_error(long r) { return static_cast<unsigned long>(r) > -4096UL; }

// The calling thread's kernel thread id.
inline int gettid() { return static_cast<int>(raw_syscall(SYS_gettid)); }

// The process id.
inline int getpid() { return static_cast<int>(raw_syscall(SYS_getpid)); }

// Sends `sig` to thread `tid` of thread group `tgid`. Returns 0 or -errno.
inline int tgkill(int tgid, int tid, int sig) {
  return static_cast<int>(raw_syscall(SYS_tgkill, tgid, tid, sig));
}

// rt_sigprocmask on the calling KLT with the kernel's sigset size (8 bytes).
// `set` and `old` may be null. Returns 0 or -errno.
inline int sigprocmask(int how, const void* set, void* old) {
  return static_cast<int>(raw_syscall(SYS_rt_sigprocmask, how, reinterpret_cast<long>(set),
                                      reinterpret_cast<long>(old), 8));
}

// Exits the calling thread only (not the process). Never returns.
[[noreturn]] inline void exit_thread(int code) {
  for (;;) raw_syscall(SYS_exit, code);
}

// Closes descriptor `fd`. Returns 0 or -errno.
inline int close_fd(int fd) { return static_cast<int>(raw_syscall(SYS_close, fd)); }

// Yields the CPU to another runnable kernel thread. Returns 0.
inline int sched_yield() { return static_cast<int>(raw_syscall(SYS_sched_yield)); }

}  // namespace weft::sys
