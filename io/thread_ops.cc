// io/thread_ops.cc — the blocking backend: weft::io operations as plain
// system calls, for foreign threads, weft::blocking() regions and workers
// whose io engine is not set up.
//
// A call that may block runs as a weft::blocking() region when the caller
// is a ULT (its worker may be handed off meanwhile), plainly on a thread.
// A deadline bounds the wait for readiness (ppoll) of the readiness-based
// operations only (reads, writes, receives, sends, accepts, connects); file
// operations ignore it here (weft/io.h).
#include <poll.h>
#include <sys/stat.h>

#include <cerrno>
#include <ctime>

#include "io/backend.h"
#include "io/ops_common.h"
#include "runtime/park.h"

namespace weft::io_internal {

using io::Deadline;

namespace {

// ppoll(2) for one fd with the time left until `d` (none: no timeout).
// Ready events, -ETIMEDOUT, or -errno; POLLNVAL is -EBADF.
int poll_until(int fd, short events, Deadline d) {
  pollfd p{fd, events, 0};
  for (;;) {
    timespec ts{};
    if (!d.is_none()) {
      int64_t rel = d.ns() - rt::monotonic_ns();
      if (rel < 0) rel = 0;
      ts.tv_sec = rel / 1000000000LL;
      ts.tv_nsec = rel % 1000000000LL;
    }
    long r = weft::blocking([&] { return sys(SYS_ppoll, arg(&p), 1, d.is_none() ? 0 : arg(&ts), 0, 0); });
    if (r == -EINTR) continue;
    if (r < 0) return static_cast<int>(r);
    if (r == 0) return -ETIMEDOUT;
    return (p.revents & POLLNVAL) ? -EBADF : p.revents;
  }
}

// The calling-thread path of a readiness-based operation: with a deadline,
// wait for readiness within it first; retry on EAGAIN (the fd may be
// non-blocking: the caller's choice, or a socket weft made with the epoll
// backend).
template <class Attempt>
int64_t thread_op(int fd, short events, Deadline d, Attempt attempt) {
  for (;;) {
    if (!d.is_none()) {
      int w = poll_until(fd, events, d);
      if (w < 0) return w;
    }
    int64_t r = weft::blocking(attempt);
    if (r != -EAGAIN) return r;
    int w = poll_until(fd, events, d);
    if (w < 0) return w;
  }
}

}  // namespace

const Backend& blocking_backend() {
  static const BlockingBackend b;
  return b;
}

// --- readiness-based operations: the epoll backend overrides these --------------

int64_t BlockingBackend::read(const Route&, int fd, void* buf, size_t n, Deadline d) const {
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_read, fd, arg(buf), static_cast<long>(n)); });
}

int64_t BlockingBackend::write(const Route&, int fd, const void* buf, size_t n, Deadline d) const {
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_write, fd, arg(buf), static_cast<long>(n)); });
}

int64_t BlockingBackend::readv(const Route&, int fd, const iovec* iov, int cnt, Deadline d) const {
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_readv, fd, arg(iov), cnt); });
}

int64_t BlockingBackend::writev(const Route&, int fd, const iovec* iov, int cnt, Deadline d) const {
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_writev, fd, arg(iov), cnt); });
}

int BlockingBackend::poll(const Route&, int fd, short events, Deadline d) const { return poll_until(fd, events, d); }

int BlockingBackend::accept(const Route&, int fd, sockaddr* addr, socklen_t* len, Deadline d) const {
  return static_cast<int>(
      thread_op(fd, POLLIN, d, [&] { return sys(SYS_accept4, fd, arg(addr), arg(len), SOCK_CLOEXEC); }));
}

int BlockingBackend::connect(const Route&, int fd, const sockaddr* addr, socklen_t len, Deadline d) const {
  return connect_without_ring(fd, addr, len, d, [&] { return poll_until(fd, POLLOUT, d); });
}

// With a deadline the attempt does not wait (MSG_DONTWAIT): thread_op
// waited for readiness within the deadline first.
int64_t BlockingBackend::recv(const Route&, int fd, void* buf, size_t n, int flags, Deadline d) const {
  return thread_op(fd, POLLIN, d, [&] {
    return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | (d.is_none() ? 0 : MSG_DONTWAIT), 0, 0);
  });
}

int64_t BlockingBackend::send(const Route&, int fd, const void* buf, size_t n, int flags, Deadline d) const {
  return thread_op(fd, POLLOUT, d, [&] {
    return sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | (d.is_none() ? 0 : MSG_DONTWAIT), 0, 0);
  });
}

int64_t BlockingBackend::sendmsg(const Route&, int fd, const msghdr* msg, int flags, Deadline d) const {
  return thread_op(fd, POLLOUT, d,
                   [&] { return sys(SYS_sendmsg, fd, arg(msg), flags | (d.is_none() ? 0 : MSG_DONTWAIT)); });
}

int64_t BlockingBackend::recvmsg(const Route&, int fd, msghdr* msg, int flags, Deadline d) const {
  return thread_op(fd, POLLIN, d,
                   [&] { return sys(SYS_recvmsg, fd, arg(msg), flags | (d.is_none() ? 0 : MSG_DONTWAIT)); });
}

// --- file operations: the same on the epoll backend ------------------------------

int64_t BlockingBackend::pread(const Route&, int fd, void* buf, size_t n, off_t off, Deadline) const {
  return weft::blocking([&] { return sys(SYS_pread64, fd, arg(buf), static_cast<long>(n), off); });
}

int64_t BlockingBackend::pwrite(const Route&, int fd, const void* buf, size_t n, off_t off, Deadline) const {
  return weft::blocking([&] { return sys(SYS_pwrite64, fd, arg(buf), static_cast<long>(n), off); });
}

int BlockingBackend::openat(const Route&, int dirfd, const char* path, int flags, mode_t mode, Deadline) const {
  return static_cast<int>(weft::blocking([&] { return sys(SYS_openat, dirfd, arg(path), flags, mode); }));
}

int BlockingBackend::close(const Route&, int fd) const { return static_cast<int>(sys(SYS_close, fd)); }

int BlockingBackend::fsync(const Route&, int fd, Deadline) const {
  return static_cast<int>(weft::blocking([&] { return sys(SYS_fsync, fd); }));
}

int BlockingBackend::statx(const Route&, int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline) const {
  return static_cast<int>(weft::blocking([&] { return sys(SYS_statx, dirfd, arg(path), flags, mask, arg(out)); }));
}

}  // namespace weft::io_internal
