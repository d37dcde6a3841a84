// hook/hook_internal.h — what the interposers of libweft-hook share: the
// decision "route through weft or forward to glibc", the next (glibc's)
// definition of each symbol, the errno store, raw system calls, deadlines
// from SO_RCVTIMEO/SO_SNDTIMEO, and the per-fd "not a regular file" cache.
//
// Layering: hook/ sits above io/ and runtime/ (DESIGN.md). It uses their
// public headers, plus runtime/park.h (the runtime's documented interface
// for the layers above it) for the waits that POSIX lets a signal end
// (nanosleep, poll): io/ and runtime/ never include anything from here.
//
// The one rule every interposer keeps (the errno hazard, runtime/HACKING.md
// section 4): a call that may park reads nothing of errno before it, and
// stores errno only after it, through set_errno() — a noinline function,
// so that the address of errno is computed on the kernel thread the ULT
// runs on at that moment, never one cached from before a migration.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sys/raw_syscall.h"
#include "weft/io.h"
#include "weft/runtime.h"

// Visibility of the interposers (the library is built with hidden
// visibility; only these and weft::hook's public functions are exported).
#define WEFT_HOOK_EXPORT __attribute__((visibility("default")))

namespace weft::hook_internal {

// False when the environment said WEFT_HOOK=off (read once, at load).
extern bool g_enabled;

// True when the calling context is a ULT and the hook is enabled: route the
// call through weft::io. False on a foreign thread, a worker's own
// scheduler code, inside a weft::blocking() region (weft::this_ult::in_ult()
// is false there) and before any runtime exists: forward to glibc.
inline bool on_ult() { return __builtin_expect(g_enabled, 1) && weft::this_ult::in_ult(); }

// dlsym(RTLD_NEXT, name): the definition after libweft-hook's (glibc's, or
// a sanitizer's interceptor's next). Aborts with a message if there is
// none. The result is cached by the caller (HOOK_NEXT below) in an atomic
// pointer: no guard variable, so the forwarding path stays async-signal-
// safe once resolved (every pointer is resolved eagerly at load, see
// hook.cc; dlsym itself is not async-signal-safe).
void* next_symbol(const char* name);

template <class F>
inline F next_fn(std::atomic<void*>& slot, const char* name) {
  void* p = slot.load(std::memory_order_relaxed);
  if (__builtin_expect(p == nullptr, 0)) {
    p = next_symbol(name);
    slot.store(p, std::memory_order_relaxed);
  }
  return reinterpret_cast<F>(p);
}

// Declares the slot of glibc's `name` (at namespace scope in one .cc).
#define HOOK_DECLARE_NEXT(name) std::atomic<void*> next_##name##_slot{nullptr}
// glibc's `name`, typed as ::name.
#define HOOK_NEXT(name) (::weft::hook_internal::next_fn<decltype(&::name)>(next_##name##_slot, #name))

// Stores errno on the kernel thread running the caller now (see the rule
// at the top). Returns -1, so `return fail(e);` is the libc convention.
__attribute__((noinline)) int fail(int e);
// The libc convention for a weft::io result: r >= 0 is returned, r < 0
// stores -r in errno and returns -1.
inline long from_result(long r) { return r >= 0 ? r : fail(static_cast<int>(-r)); }

// A raw system call: -errno on failure, errno untouched (io/ and runtime/
// make theirs through sys/raw_syscall.h, a header-only inline `syscall`
// instruction; so do we). Never libc's syscall(): it stores errno.
inline long sys(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) {
  return weft::sys::raw_syscall(nr, a1, a2, a3, a4, a5, a6);
}
template <class T>
inline long arg(T* p) {
  return reinterpret_cast<long>(p);
}

// The descriptor's file status flags (F_GETFL), or -errno.
inline long fd_flags(int fd) { return sys(SYS_fcntl, fd, F_GETFL); }

// The deadline of a socket's SO_RCVTIMEO (receive = true) or SO_SNDTIMEO
// (false), counted from now; none() for a zero timeout or a descriptor
// that is not a socket (getsockopt: ENOTSOCK). One system call: made only
// on the slow path (the call has to wait).
weft::io::Deadline socket_deadline(int fd, bool receive);

// Whether a weft::io result -ETIMEDOUT came from the deadline `d` (passed
// now) rather than from the socket itself (a TCP timeout is ETIMEDOUT too).
bool deadline_passed(weft::io::Deadline d);

// Descriptors known not to be regular files or block devices (pipes,
// sockets, character devices): one bit per fd below kFdCacheSize. Only
// that fact is cached, never "regular": a stale bit (an fd number reused
// behind the hook's back, e.g. by stdio's internal close and open) can only
// make a read of a regular file return what a non-blocking attempt got (a
// short count), never make a read of a pipe wait for more.
inline constexpr int kFdCacheSize = 65536;
// True if fd is not a regular file or block device (cached, else fstat).
// st_size_out (optional) gets the size when fd is a regular file (false).
bool is_stream(int fd, off_t* st_size_out = nullptr);
// Forgets what the cache knows of fd (closed, or a new descriptor).
void forget_fd(int fd);
// Records that fd is a stream (a new socket, an accepted connection).
void remember_stream(int fd);
// Sockets, cached the same way (set by is_stream's fstat and by accept):
// a read or write of a known socket is tried with recvfrom/sendto and
// MSG_DONTWAIT, which costs what read(2) costs, where preadv2/pwritev2
// with RWF_NOWAIT costs 10-30% more (measured here). A stale bit (the
// number now names a pipe or a file) is found at once: ENOTSOCK, and the
// caller forgets it and goes the general way.
bool known_socket(int fd);
// One fstat per descriptor number (until forget_fd): learns whether it is a
// socket or a stream, so that the next calls take the cheapest fast path.
void learn_fd(int fd);
void remember_socket(int fd);
void forget_socket(int fd);

// The iovecs of (iov, cnt) after their first `skip` bytes, into *out.
void advance_iov(const iovec* iov, int cnt, size_t skip, std::vector<iovec>* out);
size_t iov_total(const iovec* iov, int cnt);

// Multi-descriptor wait (poll.cc): parks the calling ULT until one of
// fds[0..n) may be ready for its events, the deadline passes (-ETIMEDOUT),
// a signal handler runs on the ULT since `mark` (-EINTR), or the ULT is
// asked to stop (-ECANCELED). 0 when something may be ready (the caller
// asks the kernel what, with a zero timeout). n == 0: a pure sleep.
// `mark` is rt::handler_mark() taken by the caller before its first check.
int wait_any(const struct pollfd* fds, size_t n, int64_t deadline_ns, uint64_t mark);

// Deadline arithmetic on CLOCK_MONOTONIC nanoseconds (-1: none).
int64_t now_ns();
int64_t deadline_after_ns(int64_t rel_ns);

}  // namespace weft::hook_internal
