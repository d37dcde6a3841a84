// hook/rw.cc — read, write, readv, writev, pread, pwrite (and their 64
// names, and glibc's _FORTIFY_SOURCE entry points __read_chk,
// __pread_chk, __pread64_chk): on a ULT, a try that does not wait, then
// weft::io when the call has to wait.
//
// The path of a read on a ULT:
//   0. A descriptor known to be a socket (hook.cc's per-fd bits, learnt by
//      one fstat per descriptor number): recvfrom(MSG_DONTWAIT) instead of
//      1 (preadv2 costs 10-30% more than read(2) in the kernel; recvfrom
//      does not). ENOTSOCK: the number was reused, forget it, go on at 1.
//   1. preadv2(fd, iov, 1, -1, RWF_NOWAIT): one system call, the fast path
//      (data ready in a pipe or socket, pages in the page cache). Its result
//      is the call's unless it is EAGAIN, or a short count from a regular
//      file (see 3), or EOPNOTSUPP/EINVAL (the file refuses RWF_NOWAIT:
//      ttys, eventfd, timerfd...: straight to weft::io, 4).
//   2. EAGAIN: the descriptor's own O_NONBLOCK (F_GETFL) decides, as the
//      kernel would: set on a pipe, socket or device -> EAGAIN now; set on
//      a regular file (where the flag means nothing) or clear -> wait (4).
//   3. A short count: for pipes, sockets and devices it is the answer
//      (cached per fd, hook_internal.h); for a regular file RWF_NOWAIT
//      stopped at the first page not in the page cache, where read(2)
//      would have waited for the disk: the rest is read through weft::io
//      (4), unless the file position is at the end of the file.
//   4. weft::io::read: io_uring (or the epoll backend's readiness wait) with
//      SO_RCVTIMEO as the deadline for sockets; the ULT parks.
// Writes go the same way; a blocking descriptor's short write goes on
// until everything is written (as write(2) blocks until then), a
// non-blocking one's is returned. A pipe write of at most PIPE_BUF bytes
// stays atomic: RWF_NOWAIT refuses it whole (EAGAIN) rather than split it.
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include "hook/hook_internal.h"
#include "runtime/park.h"

namespace weft::hook_internal {
namespace {

using weft::io::Deadline;

HOOK_DECLARE_NEXT(read);
HOOK_DECLARE_NEXT(write);
HOOK_DECLARE_NEXT(readv);
HOOK_DECLARE_NEXT(writev);
HOOK_DECLARE_NEXT(pread);
HOOK_DECLARE_NEXT(pwrite);
HOOK_DECLARE_NEXT(pread64);
HOOK_DECLARE_NEXT(pwrite64);

__attribute__((constructor)) void resolve_rw() {
  (void)HOOK_NEXT(read);
  (void)HOOK_NEXT(write);
  (void)HOOK_NEXT(readv);
  (void)HOOK_NEXT(writev);
  (void)HOOK_NEXT(pread);
  (void)HOOK_NEXT(pwrite);
  (void)HOOK_NEXT(pread64);
  (void)HOOK_NEXT(pwrite64);
}

// The kernel refuses RWF_NOWAIT for this file: go to weft::io directly.
inline bool nowait_refused(long r) { return r == -EOPNOTSUPP || r == -EINVAL || r == -ENOSYS; }

// weft::io's result for a call that waited: -ETIMEDOUT from the socket
// timeout is EAGAIN, as the kernel reports an expired SO_RCVTIMEO /
// SO_SNDTIMEO; -ECANCELED (a stop request) stays ECANCELED (hook.h).
inline long map_waited(long r, Deadline d) {
  if (r == -ETIMEDOUT && deadline_passed(d)) return -EAGAIN;
  return r;
}

// The slow path of a read from the file position: the call must wait.
long read_wait(int fd, const iovec* iov, int cnt) {
  learn_fd(fd);  // whether fd is a socket (one fstat per fd), for the next fast path
  Deadline d = socket_deadline(fd, /*receive=*/true);
  long r = cnt == 1 ? weft::io::read(fd, iov[0].iov_base, iov[0].iov_len, d) : weft::io::readv(fd, iov, cnt, d);
  return map_waited(r, d);
}

// After a short read `got` of a regular file: the rest through weft::io,
// unless the position is at the end of the file.
long read_rest(int fd, const iovec* iov, int cnt, long got, off_t size) {
  long pos = sys(SYS_lseek, fd, 0, SEEK_CUR);
  if (pos < 0 || pos >= size) return got;
  std::vector<iovec> rest;
  advance_iov(iov, cnt, static_cast<size_t>(got), &rest);
  long r = rest.size() == 1 ? weft::io::read(fd, rest[0].iov_base, rest[0].iov_len)
                            : weft::io::readv(fd, rest.data(), static_cast<int>(rest.size()));
  return r > 0 ? got + r : got;  // an error after some bytes: the bytes (as read(2))
}

// read/readv on a ULT (the path at the top of this file). -errno or count.
long read_on_ult(int fd, const iovec* iov, int cnt) {
  long r;
  // A known socket: recvfrom with MSG_DONTWAIT, as cheap as read(2).
  if (cnt == 1 && known_socket(fd)) {
    r = sys(SYS_recvfrom, fd, arg(iov[0].iov_base), static_cast<long>(iov[0].iov_len), MSG_DONTWAIT, 0, 0);
    if (r != -ENOTSOCK) {
      if (r != -EAGAIN) return r;  // a socket's short count is the answer
      long fl = fd_flags(fd);
      if (fl < 0) return fl;
      if (fl & O_NONBLOCK) return -EAGAIN;
      return read_wait(fd, iov, cnt);
    }
    forget_socket(fd);  // the number names something else now
  }
  r = sys(SYS_preadv2, fd, arg(iov), cnt, -1, 0, RWF_NOWAIT);
  learn_fd(fd);  // once per descriptor: a socket takes the recvfrom path from the next call on
  if (r >= 0) {
    size_t want = cnt == 1 ? iov[0].iov_len : iov_total(iov, cnt);
    if (r == 0 || static_cast<size_t>(r) >= want) return r;
    off_t size = 0;
    if (is_stream(fd, &size)) return r;
    return read_rest(fd, iov, cnt, r, size);
  }
  if (r == -EAGAIN) {
    long fl = fd_flags(fd);
    if (fl < 0) return fl;
    if ((fl & O_NONBLOCK) && is_stream(fd)) return -EAGAIN;
    return read_wait(fd, iov, cnt);
  }
  if (nowait_refused(r)) {
    long fl = fd_flags(fd);
    if (fl < 0) return fl;
    // A non-blocking descriptor: the plain call answers at once.
    if (fl & O_NONBLOCK) return sys(SYS_readv, fd, arg(iov), cnt);
    return read_wait(fd, iov, cnt);
  }
  return r;
}

// write_wait for a pipe or a socket: wait for room with weft::io::poll and
// write from this ULT (pwritev2 RWF_NOWAIT). A write whose reader is gone
// makes the kernel send SIGPIPE to the thread in the call, so it reaches
// this ULT, as write(2)'s reaches the calling thread. Written through
// weft::io on io_uring, the write ran in task work on the worker's KLT
// whatever ULT ran there then (or none), and SIGPIPE went to that one
// (Hook.WriteWithoutReaderRaisesSigpipeOnTheWriter; the epoll backend
// writes in the ULT already). Room may be gone again when the ULT runs
// (another writer): EAGAIN waits again. A pipe write of at most PIPE_BUF
// bytes stays whole (RWF_NOWAIT refuses it rather than split it).
long write_wait_ready(int fd, const iovec* iov, int cnt, size_t done, Deadline d) {
  rt::UltDesc* self = rt::caller().ult;
  const uint64_t mark = rt::handler_mark(self);
  size_t want = iov_total(iov, cnt);
  std::vector<iovec> rest;
  while (done < want) {
    int p = weft::io::poll(fd, POLLOUT, d);
    // io::poll ends at any handler; write(2) only at one without SA_RESTART.
    if (p == -EINTR && !rt::handler_interrupts(self, mark, /*restartable=*/true)) continue;
    if (p < 0) return done > 0 ? static_cast<long>(done) : map_waited(p, d);
    advance_iov(iov, cnt, done, &rest);
    long r = sys(SYS_pwritev2, fd, arg(rest.data()), static_cast<long>(rest.size()), -1, 0, RWF_NOWAIT);
    if (r == -EAGAIN) continue;
    if (r < 0) return done > 0 ? static_cast<long>(done) : r;
    done += static_cast<size_t>(r);
  }
  return static_cast<long>(done);
}

// The slow path of a write from the file position, `done` bytes already
// written: through weft::io, as a blocking write(2) would wait.
long write_wait(int fd, const iovec* iov, int cnt, size_t done) {
  learn_fd(fd);  // as read_wait
  Deadline d = socket_deadline(fd, /*receive=*/false);
  // One fstat (this call waits anyway); the per-fd cache may be stale for
  // a number closed behind the hook's back (a raw close).
  if (struct stat st {}; sys(SYS_fstat, fd, arg(&st)) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
    return write_wait_ready(fd, iov, cnt, done, d);
  size_t want = iov_total(iov, cnt);
  std::vector<iovec> rest;
  while (done < want) {
    advance_iov(iov, cnt, done, &rest);
    long r = rest.size() == 1 ? weft::io::write(fd, rest[0].iov_base, rest[0].iov_len, d)
                              : weft::io::writev(fd, rest.data(), static_cast<int>(rest.size()), d);
    if (r < 0) return done > 0 ? static_cast<long>(done) : map_waited(r, d);
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<long>(done);
}

long write_on_ult(int fd, const iovec* iov, int cnt) {
  long r = -ENOTSOCK;
  // A known socket: sendto with MSG_DONTWAIT (no MSG_NOSIGNAL: SIGPIPE as
  // write(2) raises it).
  if (cnt == 1 && known_socket(fd)) {
    r = sys(SYS_sendto, fd, arg(iov[0].iov_base), static_cast<long>(iov[0].iov_len), MSG_DONTWAIT, 0, 0);
    if (r == -ENOTSOCK) forget_socket(fd);
  }
  if (r == -ENOTSOCK) {
    r = sys(SYS_pwritev2, fd, arg(iov), cnt, -1, 0, RWF_NOWAIT);
    learn_fd(fd);  // as in read_on_ult
  }
  size_t want = cnt == 1 ? iov[0].iov_len : iov_total(iov, cnt);
  if (r >= 0 && static_cast<size_t>(r) >= want) return r;
  if (r >= 0 || r == -EAGAIN) {
    long fl = fd_flags(fd);
    if (fl < 0) return r > 0 ? r : fl;
    if ((fl & O_NONBLOCK) && is_stream(fd)) return r >= 0 ? r : -EAGAIN;
    return write_wait(fd, iov, cnt, r > 0 ? static_cast<size_t>(r) : 0);
  }
  if (nowait_refused(r)) {
    long fl = fd_flags(fd);
    if (fl < 0) return fl;
    if (fl & O_NONBLOCK) return sys(SYS_writev, fd, arg(iov), cnt);
    return write_wait(fd, iov, cnt, 0);
  }
  return r;
}

// pread/pwrite on a ULT: positional, so a regular file is the usual case;
// pipes and sockets fail with ESPIPE in the first try.
long pread_on_ult(int fd, void* buf, size_t n, off_t off) {
  iovec v{buf, n};
  long r = sys(SYS_preadv2, fd, arg(&v), 1, static_cast<long>(off), 0, RWF_NOWAIT);
  if (r >= 0) {
    if (r == 0 || static_cast<size_t>(r) >= n) return r;
    off_t size = 0;
    if (is_stream(fd, &size) || off + r >= size) return r;
    long more = weft::io::pread(fd, static_cast<char*>(buf) + r, n - static_cast<size_t>(r), off + r);
    return more > 0 ? r + more : r;
  }
  if (r == -EAGAIN || nowait_refused(r)) return weft::io::pread(fd, buf, n, off);
  return r;
}

long pwrite_on_ult(int fd, const void* buf, size_t n, off_t off) {
  iovec v{const_cast<void*>(buf), n};
  long r = sys(SYS_pwritev2, fd, arg(&v), 1, static_cast<long>(off), 0, RWF_NOWAIT);
  if (r >= 0 && static_cast<size_t>(r) >= n) return r;
  if (r < 0 && r != -EAGAIN && !nowait_refused(r)) return r;
  size_t done = r > 0 ? static_cast<size_t>(r) : 0;
  while (done < n) {
    long w = weft::io::pwrite(fd, static_cast<const char*>(buf) + done, n - done, off + static_cast<off_t>(done));
    if (w < 0) return done > 0 ? static_cast<long>(done) : w;
    if (w == 0) break;
    done += static_cast<size_t>(w);
  }
  return static_cast<long>(done);
}

}  // namespace
}  // namespace weft::hook_internal

using namespace weft::hook_internal;

extern "C" {

WEFT_HOOK_EXPORT ssize_t read(int fd, void* buf, size_t n) {
  if (!on_ult()) return HOOK_NEXT(read)(fd, buf, n);
  iovec v{buf, n};
  return from_result(read_on_ult(fd, &v, 1));
}

WEFT_HOOK_EXPORT ssize_t write(int fd, const void* buf, size_t n) {
  if (!on_ult()) return HOOK_NEXT(write)(fd, buf, n);
  iovec v{const_cast<void*>(buf), n};
  return from_result(write_on_ult(fd, &v, 1));
}

WEFT_HOOK_EXPORT ssize_t readv(int fd, const struct iovec* iov, int cnt) {
  if (!on_ult()) return HOOK_NEXT(readv)(fd, iov, cnt);
  if (cnt < 0 || cnt > IOV_MAX) return fail(EINVAL);
  return from_result(read_on_ult(fd, iov, cnt));
}

WEFT_HOOK_EXPORT ssize_t writev(int fd, const struct iovec* iov, int cnt) {
  if (!on_ult()) return HOOK_NEXT(writev)(fd, iov, cnt);
  if (cnt < 0 || cnt > IOV_MAX) return fail(EINVAL);
  return from_result(write_on_ult(fd, iov, cnt));
}

WEFT_HOOK_EXPORT ssize_t pread(int fd, void* buf, size_t n, off_t off) {
  if (!on_ult()) return HOOK_NEXT(pread)(fd, buf, n, off);
  if (off < 0) return fail(EINVAL);
  return from_result(pread_on_ult(fd, buf, n, off));
}

WEFT_HOOK_EXPORT ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  if (!on_ult()) return HOOK_NEXT(pwrite)(fd, buf, n, off);
  if (off < 0) return fail(EINVAL);
  return from_result(pwrite_on_ult(fd, buf, n, off));
}

WEFT_HOOK_EXPORT ssize_t pread64(int fd, void* buf, size_t n, off64_t off) {
  if (!on_ult()) return HOOK_NEXT(pread64)(fd, buf, n, off);
  if (off < 0) return fail(EINVAL);
  return from_result(pread_on_ult(fd, buf, n, off));
}

WEFT_HOOK_EXPORT ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t off) {
  if (!on_ult()) return HOOK_NEXT(pwrite64)(fd, buf, n, off);
  if (off < 0) return fail(EINVAL);
  return from_result(pwrite_on_ult(fd, buf, n, off));
}

[[noreturn]] void __chk_fail(void);

// _FORTIFY_SOURCE: glibc's checked entry points call its internal __read
// and __pread64, which no interposer sees; these check the size as glibc
// does (a buffer overflow is fatal) and take the hooked paths.
WEFT_HOOK_EXPORT ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return read(fd, buf, n);
}
WEFT_HOOK_EXPORT ssize_t __pread_chk(int fd, void* buf, size_t n, off_t off, size_t buflen) {
  if (n > buflen) __chk_fail();
  return pread(fd, buf, n, off);
}
WEFT_HOOK_EXPORT ssize_t __pread64_chk(int fd, void* buf, size_t n, off64_t off, size_t buflen) {
  if (n > buflen) __chk_fail();
  return pread64(fd, buf, n, off);
}

}  // extern "C"
