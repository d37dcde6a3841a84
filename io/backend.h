// io/backend.h — the internal interface behind weft::io's operations: one
// Backend per way of doing io (io_uring, epoll, the blocking call), and the
// choice of one for the calling context.
//
// The choice (route_for_caller):
//   a ULT on a worker with a ready io_uring  -> uring_backend()  (uring_ops.cc)
//   a ULT on a worker with a ready epoll     -> epoll_backend()  (epoll_ops.cc)
//   anything else (a foreign thread, a weft::blocking() region, a worker
//   whose ring or epoll is not set up yet)   -> blocking_backend() (thread_ops.cc)
// "Ready" may set the engine up (Engine::ready()). The choice is valid for
// one operation, made right before it, and only until the operation parks:
// a ULT may resume on another worker after any park. So the choice hands
// the backend the engine it was made for (Route), and the io_uring backend
// uses it only before parking; the epoll backend pins the ULT while it waits on its
// worker's epoll (EpollEngine::wait_ready).
//
// Backends are stateless singletons. Their arguments are already
// normalised by the public functions (ops.cc): lengths clamped to
// kMaxRwCount, O_CLOEXEC, SOCK_CLOEXEC and MSG_NOSIGNAL added. Results are
// those of weft/io.h: >= 0, or -errno.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "runtime/park.h"
#include "weft/io.h"

namespace weft::io_internal {

class Backend;
class Engine;

// One operation's route, chosen once by route_for_caller() right before
// it: the backend, and for the io_uring and epoll backends the calling ULT
// and its worker's engine, ready (both null for the blocking backend). Valid
// only until the operation parks (see above); backends take the engine
// from here instead of looking it up again.
struct Route {
  const Backend* backend;
  rt::UltDesc* ult = nullptr;
  Engine* engine = nullptr;
};

class Backend {
 public:
  // What io::backend() reports: "io_uring", "epoll" or "blocking".
  virtual const char* name() const = 0;

  virtual int64_t read(const Route& r, int fd, void* buf, size_t n, io::Deadline d) const = 0;
  virtual int64_t write(const Route& r, int fd, const void* buf, size_t n, io::Deadline d) const = 0;
  virtual int64_t pread(const Route& r, int fd, void* buf, size_t n, off_t off, io::Deadline d) const = 0;
  virtual int64_t pwrite(const Route& r, int fd, const void* buf, size_t n, off_t off, io::Deadline d) const = 0;
  virtual int64_t readv(const Route& r, int fd, const iovec* iov, int cnt, io::Deadline d) const = 0;
  virtual int64_t writev(const Route& r, int fd, const iovec* iov, int cnt, io::Deadline d) const = 0;
  virtual int openat(const Route& r, int dirfd, const char* path, int flags, mode_t mode, io::Deadline d) const = 0;
  // The close itself, once io::close has cancelled what was in flight on fd
  // (close.cc).
  virtual int close(const Route& r, int fd) const = 0;
  virtual int fsync(const Route& r, int fd, io::Deadline d) const = 0;
  virtual int statx(const Route& r, int dirfd, const char* path, int flags, unsigned mask, struct statx* out,
                    io::Deadline d) const = 0;
  virtual int poll(const Route& r, int fd, short events, io::Deadline d) const = 0;

  virtual int accept(const Route& r, int fd, sockaddr* addr, socklen_t* len, io::Deadline d) const = 0;
  virtual int connect(const Route& r, int fd, const sockaddr* addr, socklen_t len, io::Deadline d) const = 0;
  virtual int64_t recv(const Route& r, int fd, void* buf, size_t n, int flags, io::Deadline d) const = 0;
  virtual int64_t send(const Route& r, int fd, const void* buf, size_t n, int flags, io::Deadline d) const = 0;
  // sendmsg/recvmsg (socket_ops.cc builds sendto/recvfrom on them).
  virtual int64_t sendmsg(const Route& r, int fd, const msghdr* msg, int flags, io::Deadline d) const = 0;
  virtual int64_t recvmsg(const Route& r, int fd, msghdr* msg, int flags, io::Deadline d) const = 0;

 protected:
  ~Backend() = default;
};

// The blocking backend: the plain system call, as a weft::blocking()
// region in a ULT; readiness waits with ppoll (thread_ops.cc). The epoll
// backend extends it: what epoll cannot wait for (pread, pwrite, openat,
// close, fsync, statx) runs the same way there.
class BlockingBackend : public Backend {
 public:
  const char* name() const override { return "blocking"; }
  int64_t read(const Route& r, int fd, void* buf, size_t n, io::Deadline d) const override;
  int64_t write(const Route& r, int fd, const void* buf, size_t n, io::Deadline d) const override;
  int64_t pread(const Route& r, int fd, void* buf, size_t n, off_t off, io::Deadline d) const override;
  int64_t pwrite(const Route& r, int fd, const void* buf, size_t n, off_t off, io::Deadline d) const override;
  int64_t readv(const Route& r, int fd, const iovec* iov, int cnt, io::Deadline d) const override;
  int64_t writev(const Route& r, int fd, const iovec* iov, int cnt, io::Deadline d) const override;
  int openat(const Route& r, int dirfd, const char* path, int flags, mode_t mode, io::Deadline d) const override;
  int close(const Route& r, int fd) const override;
  int fsync(const Route& r, int fd, io::Deadline d) const override;
  int statx(const Route& r, int dirfd, const char* path, int flags, unsigned mask, struct statx* out, io::Deadline d) const override;
  int poll(const Route& r, int fd, short events, io::Deadline d) const override;
  int accept(const Route& r, int fd, sockaddr* addr, socklen_t* len, io::Deadline d) const override;
  int connect(const Route& r, int fd, const sockaddr* addr, socklen_t len, io::Deadline d) const override;
  int64_t recv(const Route& r, int fd, void* buf, size_t n, int flags, io::Deadline d) const override;
  int64_t send(const Route& r, int fd, const void* buf, size_t n, int flags, io::Deadline d) const override;
  int64_t sendmsg(const Route& r, int fd, const msghdr* msg, int flags, io::Deadline d) const override;
  int64_t recvmsg(const Route& r, int fd, msghdr* msg, int flags, io::Deadline d) const override;
};

const Backend& uring_backend();
const Backend& epoll_backend();
const Backend& blocking_backend();

// The route for an operation made now by the caller (see above).
Route route_for_caller();

// Routes one operation and calls the backend's member `op` for it.
template <class Op, class... Args>
auto dispatch(Op op, Args... args) {
  Route r = route_for_caller();
  return (r.backend->*op)(r, args...);
}

// IORING_OP_SPLICE on the calling ULT's ring (uring_ops.cc): the bytes
// moved or -errno, as io::splice (offsets by value: -1 is "the file
// position"). -ENOSYS when the caller is not a ULT on an io_uring worker
// (the caller then splices another way).
int64_t uring_splice(int fd_in, int64_t off_in, int fd_out, int64_t off_out, unsigned len, unsigned flags,
                     io::Deadline d);

}  // namespace weft::io_internal
