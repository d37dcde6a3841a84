// io/ops.cc — weft::io operations: io_uring, epoll, or the plain syscall.
//
// Each operation picks its path from the calling context:
//   a ULT on a worker with a ready io_uring  -> uring_op (uring_engine.h)
//   a ULT on a worker with a ready epoll     -> an attempt that does not
//                                               wait (MSG_DONTWAIT,
//                                               RWF_NOWAIT), then epoll_op's
//                                               wait_ready loop; regular
//                                               files: a blocking region
//   anything else (a foreign thread, a weft::blocking() region, a worker
//   whose ring or epoll is not set up yet)   -> the blocking system call
// All system calls go through sys::raw_syscall: results are -errno values
// and errno is never touched. Byte counts are clamped to what the kernel
// moves in one call (kMaxRwCount) before they reach a 32-bit SQE field.
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
#include "io/uring_defs.h"
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

using io_internal::CloseRequest;
using io_internal::Completion;
using io_internal::Engine;
using io_internal::EpollEngine;
using io_internal::UringEngine;

int64_t Deadline::now_ns() { return rt::monotonic_ns(); }

Deadline Deadline::after_ns(int64_t rel) {
  int64_t now = now_ns();
  if (rel <= 0) return Deadline(now);  // passed: do not wait
  return Deadline(rel > INT64_MAX - now ? INT64_MAX : now + rel);
}

namespace {

constexpr uint64_t kTagTimeout = 1;  // must match uring_engine.cc

// The most bytes the kernel moves in one read/write-type call
// (MAX_RW_COUNT: INT_MAX rounded down to a page). Larger requests are
// clamped to it, as the kernel clamps them: a short count, which callers
// handle anyway. Without this an io_uring SQE's 32-bit length would
// truncate 4 GiB to 0 (a read that looks like end of file, a send_all
// that never progresses).
constexpr size_t kMaxRwCount = static_cast<size_t>(INT32_MAX) & ~size_t{4095};
size_t clamp_len(size_t n) { return n < kMaxRwCount ? n : kMaxRwCount; }

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

// The engine to use, if it is an epoll that is (or can be made) ready.
EpollEngine* epoll() {
  Engine* e = io_internal::current_engine();
  if (e == nullptr || e->kind() != Engine::Kind::kEpoll) return nullptr;
  auto* ep = static_cast<EpollEngine*>(e);
  return ep->ready() ? ep : nullptr;
}

// Submits one operation (plus a linked timeout for a deadline) on the
// calling ULT's worker's ring and parks until its last CQE (see
// uring_engine.h for the protocol).
template <class Prep>
int64_t uring_op(UringEngine* e, int fd, Deadline d, Prep prep) {
  rt::UltDesc* self = rt::caller().ult;
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

// Attempts that do not wait, with epoll readiness waits in between.
// `attempt` returns the syscall's result; EAGAIN means: wait for `events`.
// An fd epoll cannot watch (EPERM) gets its call as a blocking region
// (`blocking`) instead of a retry loop.
template <class Attempt, class Blocking>
int64_t epoll_op(EpollEngine* e, int fd, uint32_t events, Deadline d, Attempt attempt, Blocking blocking) {
  for (;;) {
    int64_t r = attempt();
    if (r != -EAGAIN) return r;
    int w = e->wait_ready(fd, events, d.ns());
    if (w == -EPERM) return weft::blocking(blocking);
    if (w < 0) return w;
  }
}

// A blocking call as a blocking region when in a ULT (the worker may be
// handed off), or plainly on a thread.
template <class F>
int64_t blocking_call(F f) {
  return weft::blocking(f);
}

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
    long r = blocking_call([&] { return sys(SYS_ppoll, arg(&p), 1, d.is_none() ? 0 : arg(&ts), 0, 0); });
    if (r == -EINTR) continue;
    if (r < 0) return static_cast<int>(r);
    if (r == 0) return -ETIMEDOUT;
    return (p.revents & POLLNVAL) ? -EBADF : p.revents;
  }
}

// The calling-thread path of a readiness-based operation (a foreign thread,
// a weft::blocking() region, a worker without a ring): with a deadline,
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
    int64_t r = blocking_call(attempt);
    if (r != -EAGAIN) return r;
    int w = poll_until(fd, events, d);
    if (w < 0) return w;
  }
}

// read/write/readv/writev on the epoll backend. weft never sets O_NONBLOCK
// on a descriptor it did not create: the file description is shared (with
// a parent shell, children, dups), and the flag would change their reads
// too. So the attempt itself says "do not wait":
//  - regular files, block devices and directories never wait for
//    readiness (epoll refuses them) but may block on the disk: the call
//    runs as a weft::blocking() region, as io.h promises;
//  - everything else (pipes, FIFOs, sockets, character devices) is tried
//    with preadv2/pwritev2(offset -1: the file position, as read/write)
//    and RWF_NOWAIT, which pipes and sockets honour (Linux >= 5.x; checked
//    on this project's kernels: an empty pipe or socket gives EAGAIN);
//  - where the kernel refuses RWF_NOWAIT for that file (EOPNOTSUPP: ttys,
//    ptys, some character devices; ENOSYS before preadv2), wait for
//    readiness through epoll, then make the plain call as a blocking
//    region (it normally returns at once; if another reader took the data
//    first, the region lets the monitor hand the worker off).
int64_t rw_epoll(EpollEngine* e, int fd, bool write, const iovec* iov, int cnt, Deadline d) {
  struct stat st {};
  if (long r = sys(SYS_fstat, fd, arg(&st)); r < 0) return r;
  const long plain_nr = write ? SYS_writev : SYS_readv;
  auto plain = [&] { return sys(plain_nr, fd, arg(iov), cnt); };
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode)) return blocking_call(plain);
  const uint32_t ev = write ? EPOLLOUT : EPOLLIN;
  const long nowait_nr = write ? SYS_pwritev2 : SYS_preadv2;
  int64_t r = epoll_op(e, fd, ev, d, [&] { return sys(nowait_nr, fd, arg(iov), cnt, -1, 0, RWF_NOWAIT); }, plain);
  if (r != -EOPNOTSUPP && r != -ENOSYS) return r;
  for (;;) {
    int w = e->wait_ready(fd, ev, d.ns());
    if (w < 0 && w != -EPERM) return w;
    r = blocking_call(plain);
    if (r != -EAGAIN || w == -EPERM) return r;  // EAGAIN: the fd is non-blocking and was raced
  }
}

// connect() without waiting, then a wait for its result within `d`
// (through e's epoll in a ULT, else ppoll). A socket in blocking mode gets
// O_NONBLOCK for the duration of the call, restored after: with a deadline
// nothing else can bound a blocking connect (the one place weft changes
// the flag of a descriptor it may not have made; io.h says so).
int connect_with_flag_flip(int fd, const sockaddr* addr, socklen_t len, Deadline d, EpollEngine* e) {
  long fl = sys(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return static_cast<int>(fl);
  if (!(fl & O_NONBLOCK)) sys(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
  long r = sys(SYS_connect, fd, arg(addr), len);
  if (r == -EINPROGRESS) {
    int w = e != nullptr ? e->wait_ready(fd, EPOLLOUT, d.ns()) : poll_until(fd, POLLOUT, d);
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

}  // namespace

// --- files and generic descriptors ------------------------------------------------

int64_t read(int fd, void* buf, size_t n, Deadline d) {
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), -1); });
  if (EpollEngine* e = epoll()) {
    iovec v{buf, n};
    return rw_epoll(e, fd, false, &v, 1, d);
  }
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_read, fd, arg(buf), static_cast<long>(n)); });
}

int64_t write(int fd, const void* buf, size_t n, Deadline d) {
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), -1); });
  if (EpollEngine* e = epoll()) {
    iovec v{const_cast<void*>(buf), n};
    return rw_epoll(e, fd, true, &v, 1, d);
  }
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_write, fd, arg(buf), static_cast<long>(n)); });
}

int64_t pread(int fd, void* buf, size_t n, off_t off, Deadline d) {
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  return blocking_call([&] { return sys(SYS_pread64, fd, arg(buf), static_cast<long>(n), off); });
}

int64_t pwrite(int fd, const void* buf, size_t n, off_t off, Deadline d) {
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  return blocking_call([&] { return sys(SYS_pwrite64, fd, arg(buf), static_cast<long>(n), off); });
}

// readv/writev need no clamp: the kernel clamps the total of the iovecs
// itself (their lengths reach it unchanged, as size_t).
int64_t readv(int fd, const iovec* iov, int cnt, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_readv(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, false, iov, cnt, d);
  return thread_op(fd, POLLIN, d, [&] { return sys(SYS_readv, fd, arg(iov), cnt); });
}

int64_t writev(int fd, const iovec* iov, int cnt, Deadline d) {
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_writev(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  if (EpollEngine* e = epoll()) return rw_epoll(e, fd, true, iov, cnt, d);
  return thread_op(fd, POLLOUT, d, [&] { return sys(SYS_writev, fd, arg(iov), cnt); });
}

int openat(int dirfd, const char* path, int flags, mode_t mode, Deadline d) {
  flags |= O_CLOEXEC;
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, -1, d, [&](io_uring_sqe* s) { io_uring_prep_openat(s, dirfd, path, flags, mode); }));
  return static_cast<int>(blocking_call([&] { return sys(SYS_openat, dirfd, arg(path), flags, mode); }));
}

// Closing. io::close(fd) must cancel the operations in flight on fd on
// every engine, and fd's number must not be freed while any of them could
// still act on it: an SQE that a ULT prepared on another worker's ring and
// that this worker has not submitted yet names fd by number, which the
// kernel resolves only at submission; an epoll waiter retries its call on
// the number when woken. Each engine is served by its own KLT only (the
// ring is SINGLE_ISSUER), so:
//
//  - the calling KLT's own engine (a ULT's worker, or the worker whose ULT
//    is inside a weft::blocking() region here: that KLT is still the
//    ring's owner, and a handoff never moves an engine) cancels on the
//    spot: Engine::cancel_now. Posting to it and waiting would wait for
//    ourselves (issue 9 #4: a close inside weft::blocking() hung);
//  - every other engine with operations in flight gets a CloseRequest
//    (engine.h) and cancels at its next scheduler pass, acknowledging
//    after its cancel (whose SQE follows any SQE for fd it still had
//    queued). We wait for the acknowledgements for at most kCloseWaitNs.
//    An engine that does not answer in time is one whose KLT is busy: a
//    ULT that does not yield, or a long weft::blocking() region (its ring
//    is then served by nobody until the region ends). Waiting for it could
//    last forever; closing anyway could let its queued SQE act on a new
//    file that reuses the number. So the close is handed over: this call
//    returns 0, fd stays open (its number taken, naming the same file)
//    and the last engine to acknowledge closes it (close_request_ack).
//    The operations still end with -ECANCELED (or their own result if
//    they completed first); they just end after close returned.
//
// kCloseWaitNs is long enough that an engine whose worker is merely
// running other ULTs (it reaches a scheduler pass within microseconds, a
// few milliseconds when the machine is overloaded) answers in time, so
// the documented behaviour (cancelled before close returns) is the normal
// one, and short enough that a closer is never held for long by a busy
// worker. A closer in a ULT parks meanwhile; on a thread it blocks.
constexpr int64_t kCloseWaitNs = 50 * 1000 * 1000;

namespace {

// Cancels what every engine has in flight on fd (see "Closing"). True if
// fd may be closed now; false if an engine that did not answer in time
// will close it.
bool cancel_everywhere(int fd) {
  auto* req = new CloseRequest(fd);
  uint32_t posted = 0;
  {
    // Keeps a ULT on this worker until cancel_now has run (nothing here
    // parks, but own_engine() must stay the engine of the KLT we run on).
    Pin pin;
    Engine* own = io_internal::own_engine();
    io_internal::for_each_busy_engine([&](Engine* e) {
      if (e == own) return;
      // Count the engine before posting: the count must not reach zero
      // while we still post (CloseRequest's state word).
      req->state.fetch_add(1, std::memory_order_relaxed);
      req->acked.add(1);
      io_internal::close_request_ref(req);
      e->post_cancel(req);
      ++posted;
    });
    if (own != nullptr && own->in_flight.load(std::memory_order_acquire) > 0) own->cancel_now(fd);
  }
  bool close_now = true;
  if (posted != 0 && !req->acked.wait_for(std::chrono::nanoseconds(kCloseWaitNs))) {
    // Not every engine answered. Hand the close over, unless the last one
    // answered just now (the count is zero) or fd is not open at all
    // (nothing of ours to keep: then no engine may close the number,
    // and neither do we; the leftover acknowledgements just count down).
    if (sys(SYS_fcntl, fd, F_GETFD) >= 0) {
      uint32_t prev = req->state.fetch_or(CloseRequest::kAbandoned, std::memory_order_acq_rel);
      close_now = (prev & ~CloseRequest::kAbandoned) == 0;
    }
  }
  io_internal::close_request_unref(req);
  return close_now;
}

}  // namespace

int close(int fd) {
  if (fd < 0) return -EBADF;
  if (io_internal::fd_maybe_busy(fd) && !cancel_everywhere(fd)) return 0;  // an engine closes it (see "Closing")
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
    // The accepted socket is weft's own: it may be non-blocking.
    auto call = [&] { return sys(SYS_accept4, fd, arg(addr), arg(len), SOCK_CLOEXEC | SOCK_NONBLOCK); };
    long fl = sys(SYS_fcntl, fd, F_GETFL);
    if (fl < 0) return static_cast<int>(fl);
    if (fl & O_NONBLOCK) return static_cast<int>(epoll_op(e, fd, EPOLLIN, d, call, call));
    // A listener in blocking mode that weft did not make: accept has no
    // per-call "do not wait" flag. Wait until a connection is pending,
    // then accept as a blocking region (it returns at once unless another
    // thread or process took the connection first).
    int w = e->wait_ready(fd, EPOLLIN, d.ns());
    if (w < 0 && w != -EPERM) return w;
    return static_cast<int>(blocking_call(call));
  }
  return static_cast<int>(
      thread_op(fd, POLLIN, d, [&] { return sys(SYS_accept4, fd, arg(addr), arg(len), SOCK_CLOEXEC); }));
}

int connect(int fd, const sockaddr* addr, socklen_t len, Deadline d) {
  if (UringEngine* e = uring())
    return static_cast<int>(uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_connect(s, fd, addr, len); }));
  long fl = sys(SYS_fcntl, fd, F_GETFL);
  if (fl < 0) return static_cast<int>(fl);
  // A non-blocking socket (nothing to flip), or a deadline to keep: connect
  // without waiting, then wait for the result (through epoll in a ULT).
  if ((fl & O_NONBLOCK) || !d.is_none()) return connect_with_flag_flip(fd, addr, len, d, epoll());
  // A socket in blocking mode and no deadline: the plain call as a
  // blocking region.
  return static_cast<int>(blocking_call([&] { return sys(SYS_connect, fd, arg(addr), len); }));
}

int64_t recv(int fd, void* buf, size_t n, int flags, Deadline d) {
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_recv(s, fd, buf, n, flags);
      // Arm the poll at once instead of trying a receive that, for a ULT
      // that had to wait, usually finds nothing yet.
      s->ioprio |= IORING_RECVSEND_POLL_FIRST;
    });
  if (EpollEngine* e = epoll()) {
    auto call = [&] { return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0); };
    return epoll_op(e, fd, EPOLLIN, d, call, call);
  }
  return thread_op(fd, POLLIN, d, [&] {
    return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | (d.is_none() ? 0 : MSG_DONTWAIT), 0, 0);
  });
}

int64_t send(int fd, const void* buf, size_t n, int flags, Deadline d) {
  flags |= MSG_NOSIGNAL;
  n = clamp_len(n);
  if (UringEngine* e = uring())
    return uring_op(e, fd, d, [&](io_uring_sqe* s) { io_uring_prep_send(s, fd, buf, n, flags); });
  if (EpollEngine* e = epoll()) {
    auto call = [&] { return sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0); };
    return epoll_op(e, fd, EPOLLOUT, d, call, call);
  }
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
    absl::StatusOr<std::vector<Address>> r = resolve(host, port, d);
    if (!r.ok()) {
      if (absl::IsNotFound(r.status())) return -EHOSTUNREACH;
      if (absl::IsDeadlineExceeded(r.status())) return -ETIMEDOUT;
      return -EAGAIN;
    }
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
  return epoll() != nullptr ? "epoll" : "blocking";
}

}  // namespace weft::io

namespace weft::io_internal {

int uring_waitid(int idtype, int id, siginfo_t* info, int options, io::Deadline d) {
  io::UringEngine* e = io::uring();
  if (e == nullptr || !e->has_waitid()) return -ENOSYS;
  memset(info, 0, sizeof *info);
  return static_cast<int>(io::uring_op(e, -1, d, [&](io_uring_sqe* s) { prep_waitid(s, idtype, id, info, options); }));
}

}  // namespace weft::io_internal
