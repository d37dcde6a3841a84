// io/ops.cc — the public weft::io operations: each normalises its arguments
// and hands the call to the backend for the calling context (backend.h).
//
// Normalising, here and nowhere else: byte counts are clamped to what the
// kernel moves in one call (kMaxRwCount) before they reach a 32-bit SQE
// field; openat adds O_CLOEXEC, socket SOCK_CLOEXEC, send MSG_NOSIGNAL.
// All system calls go through sys::raw_syscall: results are -errno values
// and errno is never touched.
#include <sys/socket.h>

#include <cerrno>

#include "io/backend.h"
#include "io/engine.h"
#include "io/ops_common.h"
#include "weft/io.h"

namespace weft::io_internal {
void register_engines();
namespace {
// Linked in with any io operation: from then on every new Runtime's workers
// get io engines as their pollers.
const bool registered = (register_engines(), true);
}  // namespace

Route route_for_caller() {
  rt::Caller c = rt::caller();
  Engine* e = c.ult != nullptr ? engine_of(c.poller) : nullptr;
  if (e == nullptr || !e->ready()) return Route{&blocking_backend()};
  return Route{e->kind() == Engine::Kind::kUring ? &uring_backend() : &epoll_backend(), c.ult, e};
}

}  // namespace weft::io_internal

namespace weft::io {

using io_internal::arg;
using io_internal::Backend;
using io_internal::dispatch;
using io_internal::clamp_len;
using io_internal::sys;

int64_t Deadline::now_ns() { return rt::monotonic_ns(); }

Deadline Deadline::after_ns(int64_t rel) {
  int64_t now = now_ns();
  if (rel <= 0) return Deadline(now);  // passed: do not wait
  return Deadline(rel > INT64_MAX - now ? INT64_MAX : now + rel);
}

// --- files and generic descriptors ------------------------------------------------

int64_t read(int fd, void* buf, size_t n, Deadline d) { return dispatch(&Backend::read, fd, buf, clamp_len(n), d); }

int64_t write(int fd, const void* buf, size_t n, Deadline d) {
  return dispatch(&Backend::write, fd, buf, clamp_len(n), d);
}

int64_t pread(int fd, void* buf, size_t n, off_t off, Deadline d) {
  return dispatch(&Backend::pread, fd, buf, clamp_len(n), off, d);
}

int64_t pwrite(int fd, const void* buf, size_t n, off_t off, Deadline d) {
  return dispatch(&Backend::pwrite, fd, buf, clamp_len(n), off, d);
}

// readv/writev need no clamp: the kernel clamps the total of the iovecs
// itself (their lengths reach it unchanged, as size_t).
int64_t readv(int fd, const iovec* iov, int cnt, Deadline d) { return dispatch(&Backend::readv, fd, iov, cnt, d); }

int64_t writev(int fd, const iovec* iov, int cnt, Deadline d) { return dispatch(&Backend::writev, fd, iov, cnt, d); }

int openat(int dirfd, const char* path, int flags, mode_t mode, Deadline d) {
  return dispatch(&Backend::openat, dirfd, path, flags | O_CLOEXEC, mode, d);
}

// close: close.cc.

int fsync(int fd, Deadline d) { return dispatch(&Backend::fsync, fd, d); }

int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline d) {
  return dispatch(&Backend::statx, dirfd, path, flags, mask, out, d);
}

int poll(int fd, short events, Deadline d) { return dispatch(&Backend::poll, fd, events, d); }

// --- sockets -------------------------------------------------------------------------

int socket(int domain, int type, int protocol) {
  // A socket weft makes for an epoll engine's ULT is non-blocking (epoll
  // waits by readiness). Only an epoll engine is asked whether it is ready:
  // making a socket never sets an io_uring up (a ring takes a descriptor).
  type |= SOCK_CLOEXEC;
  io_internal::Engine* e = io_internal::current_engine();
  if (e != nullptr && e->kind() == io_internal::Engine::Kind::kEpoll && e->ready()) type |= SOCK_NONBLOCK;
  return static_cast<int>(sys(SYS_socket, domain, type, protocol));
}

int bind(int fd, const sockaddr* addr, socklen_t len) { return static_cast<int>(sys(SYS_bind, fd, arg(addr), len)); }

int listen(int fd, int backlog) { return static_cast<int>(sys(SYS_listen, fd, backlog)); }

int accept(int fd, sockaddr* addr, socklen_t* len, Deadline d) { return dispatch(&Backend::accept, fd, addr, len, d); }

int connect(int fd, const sockaddr* addr, socklen_t len, Deadline d) {
  return dispatch(&Backend::connect, fd, addr, len, d);
}

int64_t recv(int fd, void* buf, size_t n, int flags, Deadline d) {
  return dispatch(&Backend::recv, fd, buf, clamp_len(n), flags, d);
}

int64_t send(int fd, const void* buf, size_t n, int flags, Deadline d) {
  return dispatch(&Backend::send, fd, buf, clamp_len(n), flags | MSG_NOSIGNAL, d);
}

int64_t send_all(int fd, const void* buf, size_t n, Deadline d) {
  size_t done = 0;
  while (done < n) {
    int64_t r = send(fd, static_cast<const char*>(buf) + done, n - done, 0, d);
    if (r < 0) return r;
    done += static_cast<size_t>(r);
  }
  return static_cast<int64_t>(n);
}

int shutdown(int fd, int how) { return static_cast<int>(sys(SYS_shutdown, fd, how)); }

// local_port, listen_tcp, connect_tcp, Address: address.cc.

const char* backend() {
  if (io_internal::current_engine() == nullptr) return "none";
  return io_internal::route_for_caller().backend->name();
}

}  // namespace weft::io
