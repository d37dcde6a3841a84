// weft/hook.h — libweft-hook: blocking C library calls that park a ULT
// instead of blocking its worker.
//
// NAME
//   libweft-hook — interposed read, write, recv, send, accept, connect,
//   poll, select, nanosleep, ... for code that does not know weft.
//
// SYNOPSIS
//   c++ app.cc $(pkg-config --cflags --libs weft-hook)     # links libweft.so too
//   LD_PRELOAD=libweft-hook.so ./app                        # app linked with libweft.so
//
//   #include <weft/hook.h>
//   if (!weft::hook::active()) { ... }                      // interposers not in place
//
// DESCRIPTION
//   A synchronous library (a database client, libcurl's easy API, code
//   written for threads) called in a ULT makes blocking system calls through
//   the C library; without this library each of them holds the ULT's worker
//   (kernel thread) until it returns, and every ULT queued there waits.
//   libweft-hook exports the C library's blocking entry points. Called in a
//   ULT, each one tries the operation without waiting; if it would have to
//   wait, the ULT parks in weft::io (the worker's io_uring, or the epoll
//   backend; weft/io.h) and the worker runs other ULTs meanwhile. Called
//   anywhere else — a foreign thread (main(), a pthread), a worker's own
//   scheduler code, inside weft::blocking(), before any Runtime exists —
//   each one is glibc's own function, unchanged (found once with
//   dlsym(RTLD_NEXT)).
//
// ENABLING
//   Link it (pkg-config weft-hook, which also links libweft.so), or preload
//   it into a program linked with libweft.so. It must come before libc in
//   the program's symbol lookup order (both ways do). With
//   -Wl,--as-needed (meson's default) a program that names no symbol of the
//   library loses it at link time: call weft::hook::active() somewhere, or
//   link with -Wl,--no-as-needed.
//   It works only with weft's SHARED library: a program linked with
//   libweft.a and libweft-hook.so has two copies of weft (two schedulers,
//   two sets of globals) and breaks. Static programs cannot be
//   interposed at all.
//   WEFT_HOOK=off in the environment (read once, at load) makes every
//   interposer forward to glibc, for comparisons.
//
// COVERED CALLS AND THEIR BEHAVIOUR ON A ULT
//   Everywhere: the return values and errno of glibc's function. errno is
//   set on the kernel thread the ULT runs on when the call returns, so
//   `if (n < 0 && errno == EAGAIN)` after a call that parked and moved the
//   ULT to another worker reads the right value (also at -O2 in code that
//   does not include weft's headers). The descriptor's own mode is obeyed:
//   one the application made O_NONBLOCK (or a call with MSG_DONTWAIT)
//   returns EAGAIN at once. weft never changes a descriptor's O_NONBLOCK.
//
//   read, readv, pread, pread64 (and _FORTIFY_SOURCE's __read_chk,
//   __pread_chk, __pread64_chk)
//     One system call first that does not wait: recvfrom(MSG_DONTWAIT) on
//     a descriptor known to be a socket (learnt with one fstat per
//     descriptor number), preadv2(RWF_NOWAIT) on anything else: data ready
//     (socket, pipe, page cache) is returned at that cost (measured here
//     against glibc's read with 64 bytes ready: socket 0.9-1.0x, pipe
//     1.3-1.4x, most of it the kernel's preadv2 path; benchmarks/hook_bench). Would block: O_NONBLOCK gives
//     EAGAIN; otherwise the ULT parks in weft::io::read. A regular file
//     whose pages are partly cached is read to the end of the request (or
//     of the file), as read(2) does. Sockets: SO_RCVTIMEO is the deadline;
//     when it expires the call fails with EAGAIN.
//   write, writev, pwrite, pwrite64
//     sendto(MSG_DONTWAIT) on a known socket, else pwritev2(RWF_NOWAIT), first; a blocking descriptor then writes
//     everything (parking while the pipe or socket is full), as write(2)
//     does; a non-blocking one returns the short count or EAGAIN. Sockets:
//     SO_SNDTIMEO (expiry: the bytes written so far, or EAGAIN). A pipe
//     or socket whose reader is gone: EPIPE, and SIGPIPE raised on the
//     calling ULT, also after a wait (it waits for room with
//     weft::io::poll and writes itself, so that the kernel's SIGPIPE
//     reaches it).
//   recv, recvfrom, recvmsg (and __recv_chk, __recvfrom_chk)
//   send, sendto, sendmsg
//     The call with MSG_DONTWAIT added first; then as read/write, through
//     weft::io. MSG_WAITALL on a blocking stream socket (recv, recvfrom)
//     waits for the whole buffer. SIGPIPE: raised on the calling ULT as the
//     kernel would, unless MSG_NOSIGNAL.
//   accept, accept4, connect
//     Non-blocking socket: the plain call. Blocking: weft::io::accept /
//     connect (the accepted socket gets exactly the flags asked for).
//     SO_RCVTIMEO bounds accept (EAGAIN), SO_SNDTIMEO bounds connect
//     (EINPROGRESS, as the kernel).
//   poll, ppoll, select, pselect, epoll_wait, epoll_pwait (and __poll_chk,
//   __ppoll_chk)
//     The kernel's answer with a zero timeout; if nothing is ready, the
//     ULT parks until a descriptor may be ready (one weft::io::poll per
//     descriptor; several descriptors: one helper ULT each), then asks the
//     kernel again. Timeouts are kept; select writes the time not slept
//     into *timeout (Linux). ppoll/pselect/epoll_pwait's mask is the ULT's
//     signal mask during the call. A zero timeout is glibc's call.
//   nanosleep, clock_nanosleep (CLOCK_MONOTONIC, CLOCK_REALTIME,
//   CLOCK_TAI, CLOCK_BOOTTIME; relative or TIMER_ABSTIME), usleep, sleep
//     The ULT parks on its worker's timer. A zero duration yields.
//     Other clocks (CPU-time clocks) are glibc's call.
//   open, open64, openat, openat64
//     weft::io::openat (O_CLOEXEC as asked).
//   close
//     weft::io::close: weft::io operations in flight on fd (other ULTs'
//     reads, polls) are cancelled first (they fail with ECANCELED).
//   fsync, fdatasync
//     weft::io::fsync (a full fsync for both).
//   getaddrinfo
//     glibc's own inside weft::blocking(): a lookup slower than
//     Options::blocking_handoff gets the worker's other ULTs handed to a
//     spare kernel thread.
//
//   Signals: a signal handler that runs on the waiting ULT ends the wait
//   as it would end the system call: EINTR for reads, writes, accept,
//   connect unless the handler was installed with SA_RESTART (then the
//   wait goes on); always for poll, select, epoll_wait and the sleeps
//   (nanosleep writes the time left into *rem). Bytes already moved are
//   returned, not lost.
//
//   Cancellation (weft/runtime.h): a ULT asked to stop while it waits in a
//   hooked call (or that makes one after the request, if it has to wait)
//   gets -1 with errno ECANCELED, from every covered call; nanosleep
//   writes *rem, sleep returns the seconds left, clock_nanosleep returns
//   ECANCELED. A call that can complete without waiting still completes.
//
// NOT COVERED
//   - raw system calls (syscall(SYS_read, ...), inline assembly): they
//     block the worker (the monitor's blocked-worker detection, a separate
//     mechanism, covers them);
//   - calls glibc makes to its own internal aliases: stdio (fread, fgets,
//     printf to a pipe), std::ifstream, getaddrinfo's DNS queries,
//     system(), and so on never reach an interposer;
//   - programs linked statically, and libweft.a (see ENABLING);
//   - calls not in the list above: ioctl, fcntl(F_SETLKW), flock, lockf,
//     waitpid (weft's own, libweft.so), msgrcv, mq_receive, futex-based
//     pthread waits (weft interposes pthread locks itself), read on a
//     descriptor a sanitizer (or another interposer loaded before this one)
//     handles itself;
//   - fcntl/ioctl(FIONBIO) need no bookkeeping: the mode is read from the
//     descriptor (F_GETFL) when a call would wait, never cached.
//   - epoll backend: a poll for POLLPRI alone (select's exceptfds) wakes
//     the ULT only for errors, hang-ups or at the timeout.
//   - a signal handler running on a ULT may call these (they are safe to
//     call there when they do not wait); one that has to wait parks the
//     ULT inside the handler, as weft::io does.
#pragma once

namespace weft::hook {

// True when the interposers are in place and enabled: this library's read,
// poll, nanosleep and connect are the definitions the program's calls reach
// (first in the global lookup order, or behind a sanitizer's interceptors,
// which forward to them), and WEFT_HOOK=off was not set. False if the
// library was loaded after the C library (dlopen) or disabled.
bool active();

// False when WEFT_HOOK=off (or 0, no, false) was in the environment when
// the library was loaded: every interposer then forwards to glibc.
bool enabled();

}  // namespace weft::hook
