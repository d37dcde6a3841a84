// io/ops.cc — weft::io operations: io_uring, epoll, or the plain syscall.
//
// Each operation picks its path from the calling context:
//   a ULT on a worker with a ready io_uring  -> uring_op (uring_engine.h)
//   a ULT on a worker with epoll             -> a non-blocking attempt, then
//                                               epoll_op's wait_ready loop
//   anything else (a foreign thread, a weft::blocking() region, a worker
//   whose ring could not be set up)          -> the blocking system call
// All system calls go through sys::raw_syscall: results are -errno values
// and errno is never touched.
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "io/epoll_engine.h"
#include "io/uring_engine.h"
#include "sys/raw_syscall.h"
#include "weft/io.h"

namespace weft::io_internal {
void register_engines();
namespace {
// Linked in with any io operation: from then on every new Runtime's workers
// get io engines as their pollers.
const bool registered = (register_engines(), true);
}  // namespace
}  // namespace weft::io_internal

namespace weft::io {

using io_internal::CancelRequest;
using io_internal::Completion;
using io_internal::Engine;
using io_internal::EpollEngine;
using io_internal::UringEngine;

int64_t Deadline::now_ns() { return rt::monotonic_ns(); }

namespace {

constexpr uint64_t kTagTimeout = 1;  // must match uring_engine.cc

long sys(long nr, long a1 = 0, long a2 = 0, long a3 = 0, long a4 = 0, long a5 = 0, long a6 = 0) {
  return weft::sys::raw_syscall(nr, a1, a2, a3, a4, a5, a6);
}
template <class T>
long arg(T* p) {
  return reinterpret_cast<long>(p);
}

// The engine to use, if it is an io_uring that is (or can be made) ready.
UringEngine* uring() {
  Engine* e = io_internal::current_engine();
  if (e == nullptr || e->kind() != Engine::Kind::kUring) return nullptr;
  auto* u = static_cast<UringEngine*>(e);
  return u->ready() ? u : nullptr;
}

EpollEngine* epoll() {
  Engine* e = io_internal::current_engine();
  return e != nullptr && e->kind() == Engine::Kind::kEpoll ? static_cast<EpollEngine*>(e) : nullptr;
}

// Submits one operation (plus a linked timeout for a deadline) on the
// calling ULT's worker's ring and parks until its last CQE (see
// uring_engine.h for the protocol).
template <class Prep>
int64_t uring_op(UringEngine* e, int fd, Deadline d, Prep prep) {
  rt::Ult* self = rt::current_ult();
  Completion c;
  c.ult = self;
  c.fd = fd;
  bool timed = !d.is_none();
  c.remaining.store(timed ? 2 : 1, std::memory_order_relaxed);
  io_uring_sqe* sqe = e->get_sqes(timed ? 2 : 1);
  prep(sqe);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&c));
  if (timed) {
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* t = e->get_sqes(1);  // room was reserved: the pair is contiguous
    c.ts.tv_sec = d.ns() / 1000000000LL;
    c.ts.tv_nsec = d.ns() % 1000000000LL;
    io_uring_prep_link_timeout(t, &c.ts, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(t, reinterpret_cast<uint64_t>(&c) | kTagTimeout);
  }
  e->in_flight.fetch_add(1, std::memory_order_acq_rel);
  io_internal::fd_ops_add(fd, 1);
  e->note_prepared();
  while (c.remaining.load(std::memory_order_acquire) != 0) rt::park_current(self);
  // The linked timeout cancelled the operation: -ECANCELED, or -EINTR when
  // the kernel had handed it to an io-wq worker (a send waiting for buffer
  // space on a blocking socket) and interrupted that. Either is our timeout;
  // a partial result (bytes moved before the cancel) is returned as it is.
  if (c.timed_out && (c.res == -ECANCELED || c.res == -EINTR)) return -ETIMEDOUT;
  return c.res;
}

// Non-blocking attempts with epoll readiness waits in between. `attempt`
// returns the syscall's result; EAGAIN means: wait for `events`.
template <class Attempt>
int64_t epoll_op(EpollEngine* e, int fd, uint32_t events, Deadline d, Attempt attempt) {
  for (;;) {
    int64_t r = attempt();
    if (r != -EAGAIN) return r;
    int w = e->wait_ready(fd, events, d.ns());
    if (w == -EPERM) continue;  // not pollable (a regular file): just retry
    if (w < 0) return w;
  }
}

// Makes fd non-blocking for the epoll path (a socket or pipe the caller
// made). One fcntl pair the first time; a cheap F_GETFL after that.
int ensure_nonblocking(int fd) {
  long fl = sys(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return static_cast<int>(fl);
  if (!(fl & O_NONBLOCK)) {
    long r = sys(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
    if (r < 0) return static_cast<int>(r);
  }
  return 0;
}

// A blocking call as a blocking region when in a ULT (the worker may be
// handed off), or plainly on a thread.
template <class F>
int64_t blocking_call(F f) {
  return weft::blocking(f);
}

// poll(2) for one fd with the time left until `d` (-1: none). Ready
// events, -ETIMEDOUT, or -errno; POLLNVAL is -EBADF.
int poll_until(int fd, short events, Deadline d) {
  pollfd p{fd, events, 0};
  for (;;) {
    int timeout = -1;
    if (!d.is_none()) {
      int64_t rel = d.ns() - rt::monotonic_ns();
      timeout = rel <= 0 ? 0 : static_cast<int>((rel + 999999) / 1000000);
    }
    long r = blocking_call([&] { return sys(SYS_poll, arg(&p), 1, timeout); });
    if (r == -EINTR) continue;
    if (r < 0) return static_cast<int>(r);
    if (r == 0) return -ETIMEDOUT;
    return (p.revents & POLLNVAL) ? -EBADF : p.revents;
  }
}

// The calling-thread path of a readiness-based operation (a foreign thread,
// a weft::blocking() region, a worker without a ring): with a deadline,
// wait for readiness within it first; retry on EAGAIN (the fd may be
// non-blocking: the epoll backend makes the fds it serves so).
template <class Attempt>
int64_t thread_op(int fd, short events, Deadline d, Attempt attempt) {
  for (;;) {
    if (!d.is_none()) {
      int w = poll_until(fd, events, d);
      if (w < 0) return w;
    }
    int64_t r = blocking_call(attempt);
    if (r != -EAGAIN) return r;
    int w = poll_until(fd, events, d);
    if (w < 0) return w;
  }
}

int64_t rw_epoll(EpollEngine* e, int fd, uint32_t ev, Deadline d, long nr, long a2, long a3, long a4 = 0) {
  if (int r = ensure_nonblocking(fd); r < 0) return r;
  return epoll_op(e, fd, ev, d, [&] { return sys(nr, fd, a2, a3, a4); });
}

}  // namespace

// --- files and generic descriptors ------------------------------------------------

int64_t read(int fd, void* buf, size_t n, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, EPOLLIN, d, SYS_read, arg(buf), static_cast<long>(n));
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_read, fd, arg(buf), static_cast<long>(n)); });
}

int64_t write(int fd, const void* buf, size_t n, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, EPOLLOUT, d, SYS_write, arg(buf), static_cast<long>(n));
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_write, fd, arg(buf), static_cast<long>(n)); });
}

int64_t pread(int fd, void* buf, size_t n, off_t off, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  return blocking_call([&] { return sys(SYS_pread64, fd, arg(buf), static_cast<long>(n), off); });
}

int64_t pwrite(int fd, const void* buf, size_t n, off_t off, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  return blocking_call([&] { return sys(SYS_pwrite64, fd, arg(buf), static_cast<long>(n), off); });
}

int64_t readv(int fd, const iovec* iov, int cnt, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_readv(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, EPOLLIN, d, SYS_readv, arg(iov), cnt);
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_readv, fd, arg(iov), cnt); });
}

int64_t writev(int fd, const iovec* iov, int cnt, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_writev(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, EPOLLOUT, d, SYS_writev, arg(iov), cnt);
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_writev, fd, arg(iov), cnt); });
}

int openat(int dirfd, const char* path, int flags, mode_t mode, Deadline d) {
  flags |= O_CLOEXEC;
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, -1, d, [&](io_uring_sqe* s) { io_uring_prep_openat(s, dirfd, path, flags, mode); }));
  return static_cast<int>(blocking_call([&] { return sys(SYS_openat, dirfd, arg(path), flags, mode); }));
}

int close(int fd) {
  if (fd < 0) return -EBADF;
  if (io_internal::fd_maybe_busy(fd)) {
    // Cancel what any engine has in flight on fd, and wait until it has.
    std::vector<CancelRequest> reqs;
    {
      std::vector<Engine*> busy;
      io_internal::for_each_busy_engine([&](Engine* e) { busy.push_back(e); });
      reqs.resize(busy.size());
      Latch done(busy.size());
      for (size_t i = 0; i < busy.size(); ++i) {
        reqs[i].fd = fd;
        reqs[i].done = &done;
        busy[i]->post_cancel(&reqs[i]);
      }
      done.wait();
    }
  }
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, -1, Deadline(), [&](io_uring_sqe* s) { io_uring_prep_close(s, fd); }));
  return static_cast<int>(sys(SYS_close, fd));
}

int fsync(int fd, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); }));
  return static_cast<int>(blocking_call([&] { return sys(SYS_fsync, fd); }));
}

int statx(int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(
        uring_op(e, -1, d, [&](io_uring_sqe* s) { io_uring_prep_statx(s, dirfd, path, flags, mask, out); }));
  return static_cast<int>(blocking_call([&] { return sys(SYS_statx, dirfd, arg(path), flags, mask, arg(out)); }));
}

int poll(int fd, short events, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_poll_add(s, fd, static_cast<unsigned>(events)); }));
  if (EpollEngine* e = epoll()) {
    pollfd p{fd, events, 0};
    for (;;) {
      long r = sys(SYS_poll, arg(&p), 1, 0);
      if (r < 0) return static_cast<int>(r);
      if (r > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
      uint32_t ev = ((events & POLLIN) ? uint32_t{EPOLLIN} : 0u) | ((events & POLLOUT) ? uint32_t{EPOLLOUT} : 0u);
      int w = e->wait_ready(fd, ev, d.ns());
      if (w == -EPERM) continue;
      if (w < 0) return w;
    }
  }
  return poll_until(fd, events, d);
}

// --- sockets -------------------------------------------------------------------------

int socket(int domain, int type, int protocol) {
  type |= SOCK_CLOEXEC;
  if (epoll() != nullptr) type |= SOCK_NONBLOCK;
  return static_cast<int>(sys(SYS_socket, domain, type, protocol));
}

int bind(int fd, const sockaddr* addr, socklen_t len) { return static_cast<int>(sys(SYS_bind, fd, arg(addr), len)); }

int listen(int fd, int backlog) { return static_cast<int>(sys(SYS_listen, fd, backlog)); }

int accept(int fd, sockaddr* addr, socklen_t* len, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_accept(s, fd, addr, len, SOCK_CLOEXEC); }));
  if (EpollEngine* e = epoll()) {
    if (int r = ensure_nonblocking(fd); r < 0) return r;
    return static_cast<int>(epoll_op(e, fd, EPOLLIN, d, [&] {
      return sys(SYS_accept4, fd, arg(addr), arg(len), SOCK_CLOEXEC | SOCK_NONBLOCK);
    }));
  }
  return static_cast<int>(
      thread_op(fd, POLLIN, d, [&] { return sys(SYS_accept4, fd, arg(addr), arg(len), SOCK_CLOEXEC); }));
}

int connect(int fd, const sockaddr* addr, socklen_t len, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_connect(s, fd, addr, len); }));
  if (EpollEngine* e = epoll()) {
    if (int r = ensure_nonblocking(fd); r < 0) return r;
    long r = sys(SYS_connect, fd, arg(addr), len);
    if (r != -EINPROGRESS) return static_cast<int>(r);
    int w = e->wait_ready(fd, EPOLLOUT, d.ns());
    if (w < 0 && w != -EPERM) return w;
    int err = 0;
    socklen_t elen = sizeof err;
    r = sys(SYS_getsockopt, fd, SOL_SOCKET, SO_ERROR, arg(&err), arg(&elen));
    return r < 0 ? static_cast<int>(r) : -err;
  }
  if (d.is_none()) return static_cast<int>(blocking_call([&] { return sys(SYS_connect, fd, arg(addr), len); }));
  // With a deadline: a non-blocking connect, then wait for it within the
  // deadline; the fd's blocking mode is restored either way.
  long fl = sys(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return static_cast<int>(fl);
  if (!(fl & O_NONBLOCK)) sys(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
  long r = sys(SYS_connect, fd, arg(addr), len);
  if (r == -EINPROGRESS) {
    int w = poll_until(fd, POLLOUT, d);
    if (w < 0) {
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

int64_t recv(int fd, void* buf, size_t n, int flags, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_recv(s, fd, buf, n, flags);
      // Arm the poll at once instead of trying a receive that, for a ULT
      // that had to wait, usually finds nothing yet.
      s->ioprio |= IORING_RECVSEND_POLL_FIRST;
    });
  if (EpollEngine* e = epoll())
    return epoll_op(e, fd, EPOLLIN, d, [&] {
      return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0);
    });
  return thread_op(fd, POLLIN, d, [&] {
    return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | (d.is_none() ? 0 : MSG_DONTWAIT), 0, 0);
  });
}

int64_t send(int fd, const void* buf, size_t n, int flags, Deadline d) {
  flags |= MSG_NOSIGNAL;
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_send(s, fd, buf, n, flags); });
  if (EpollEngine* e = epoll())
    return epoll_op(e, fd, EPOLLOUT, d, [&] {
      return sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0);
    });
  return thread_op(fd, POLLOUT, d, [&] {
    return sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | (d.is_none() ? 0 : MSG_DONTWAIT), 0, 0);
  });
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

int local_port(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  long r = sys(SYS_getsockname, fd, arg(&ss), arg(&len));
  if (r < 0) return static_cast<int>(r);
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return -EAFNOSUPPORT;
}

namespace {
// A numeric address for host:port, or false.
bool numeric_address(std::string_view host, uint16_t port, Address* out) {
  std::string h(host.empty() ? "0.0.0.0" : host);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->storage);
  if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->len = sizeof *v4;
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->storage);
  if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->len = sizeof *v6;
    return true;
  }
  return false;
}
}  // namespace

int listen_tcp(std::string_view host, uint16_t port, int backlog) {
  Address a;
  if (!numeric_address(host, port, &a)) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port);
    if (!r.ok() || r->empty()) return -EADDRNOTAVAIL;
    a = r->front();
  }
  int fd = io::socket(a.storage.ss_family, SOCK_STREAM, 0);
  if (fd < 0) return fd;
  int one = 1;
  sys(SYS_setsockopt, fd, SOL_SOCKET, SO_REUSEADDR, arg(&one), sizeof one);
  int r = io::bind(fd, a.get(), a.len);
  if (r == 0) r = io::listen(fd, backlog);
  if (r < 0) {
    sys(SYS_close, fd);
    return r;
  }
  return fd;
}

int connect_tcp(std::string_view host, uint16_t port, Deadline d) {
  std::vector<Address> addrs(1);
  if (!numeric_address(host, port, &addrs[0])) {
    absl::StatusOr<std::vector<Address>> r = resolve(host, port);
    if (!r.ok()) return absl::IsNotFound(r.status()) ? -EHOSTUNREACH : -EAGAIN;
    addrs = std::move(*r);
  }
  int last = -EHOSTUNREACH;
  for (const Address& a : addrs) {
    int fd = io::socket(a.storage.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return fd;
    int r = io::connect(fd, a.get(), a.len, d);
    if (r == 0) return fd;
    sys(SYS_close, fd);
    last = r;
    if (r == -ETIMEDOUT) break;
  }
  return last;
}

std::string Address::ToString() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (storage.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    return absl::StrCat(buf, ":", ntohs(v4->sin_port));
  }
  if (storage.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&storage);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    return absl::StrCat("[", buf, "]:", ntohs(v6->sin6_port));
  }
  return "?";
}

const char* backend() {
  Engine* e = io_internal::current_engine();
  if (e == nullptr) return "none";
  if (e->kind() == Engine::Kind::kUring) return uring() != nullptr ? "io_uring" : "blocking";
  return "epoll";
}

}  // namespace weft::io
