// io/ops_common.h — helpers that several io backends share: the system call
// wrapper, the byte-count clamp, and connect's flag flip. (A blocking call
// is made with weft::blocking(): a region in a ULT, plain on a thread.)
//
// All system calls of weft::io go through sys::raw_syscall: results are
// -errno values and errno is never touched.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "sys/raw_syscall.h"
#include "weft/io.h"
#include "weft/runtime.h"

namespace weft::io_internal {

// The most bytes the kernel moves in one read/write-type call
// (MAX_RW_COUNT: INT_MAX rounded down to a page). Larger requests are
// clamped to it, as the kernel clamps them: a short count, which callers
// handle anyway. Without this an io_uring SQE's 32-bit length would
// truncate 4 GiB to 0 (a read that looks like end of file, a send_all
// that never progresses). The public functions (ops.cc) clamp before any
// backend sees a length.
inline constexpr size_t kMaxRwCount = static_cast<size_t>(INT32_MAX) & ~size_t{4095};
inline size_t clamp_len(size_t n) { return n < kMaxRwCount ? n : kMaxRwCount; }

inline long sys(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) {
  return weft::sys::raw_syscall(nr, a1, a2, a3, a4, a5, a6);
}
template <class T>
long arg(T* p) {
  return reinterpret_cast<long>(p);
}

// connect() without waiting (the socket's file status flags `fl` were
// just read with F_GETFL), then a wait for its result within `d`
// (`wait_writable()`: through the worker's epoll in a ULT, else ppoll; 0
// or ready events when writable, -errno; -EPERM counts as writable). A
// socket in blocking mode gets O_NONBLOCK for the duration of the call,
// restored after: with a deadline nothing else can bound a blocking
// connect (the one place weft changes the flag of a descriptor it may not
// have made; io.h says so).
template <class WaitWritable>
int connect_with_flag_flip(int fd, long fl, const sockaddr* addr, socklen_t len, WaitWritable wait_writable) {
  if (!(fl & O_NONBLOCK)) sys(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
  long r = sys(SYS_connect, fd, arg(addr), len);
  if (r == -EINPROGRESS) {
    int w = wait_writable();
    if (w < 0 && w != -EPERM) {
      r = w;
    } else {
      int err = 0;
      socklen_t elen = sizeof err;
      r = sys(SYS_getsockopt, fd, SOL_SOCKET, SO_ERROR, arg(&err), arg(&elen));
      if (r == 0) r = -err;
    }
  }
  if (!(fl & O_NONBLOCK)) sys(SYS_fcntl, fd, F_SETFL, fl);
  return static_cast<int>(r);
}

// connect() where no ring does it (the epoll and blocking backends).
template <class WaitWritable>
int connect_without_ring(int fd, const sockaddr* addr, socklen_t len, io::Deadline d, WaitWritable wait_writable) {
  long fl = sys(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return static_cast<int>(fl);
  // A non-blocking socket (nothing to flip), or a deadline to keep: connect
  // without waiting, then wait for the result.
  if ((fl & O_NONBLOCK) || !d.is_none()) return connect_with_flag_flip(fd, fl, addr, len, wait_writable);
  // A socket in blocking mode and no deadline: the plain call as a
  // blocking region.
  return static_cast<int>(weft::blocking([&] { return sys(SYS_connect, fd, arg(addr), len); }));
}

}  // namespace weft::io_internal
