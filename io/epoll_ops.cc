// io/epoll_ops.cc — the epoll backend: weft::io operations tried without
// waiting, with waits for readiness on the worker's epoll in between.
//
// An attempt says "do not wait" per call (MSG_DONTWAIT, RWF_NOWAIT); on
// EAGAIN the ULT waits in EpollEngine::wait_ready (which pins it to the
// worker whose epoll holds the registration) and tries again. Regular
// files and what epoll cannot watch run as weft::blocking() regions, as do
// the file operations inherited from the blocking backend (pread, pwrite,
// openat, close, fsync, statx).
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>

#include <cerrno>

#include "io/backend.h"
#include "io/epoll_engine.h"
#include "io/ops_common.h"
#include "sys/raw_log.h"

namespace weft::io_internal {

using io::Deadline;

namespace {

// The route's engine: the caller's, ready (it has not parked since the
// choice; wait_ready pins it to this worker while it waits).
EpollEngine* engine(const Route& r) {
  WEFT_DCHECK(r.engine != nullptr && r.engine->kind() == EpollEngine::kKind, "epoll backend without its engine");
  return static_cast<EpollEngine*>(r.engine);
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
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode)) return weft::blocking(plain);
  const uint32_t ev = write ? EPOLLOUT : EPOLLIN;
  const long nowait_nr = write ? SYS_pwritev2 : SYS_preadv2;
  int64_t r = epoll_op(e, fd, ev, d, [&] { return sys(nowait_nr, fd, arg(iov), cnt, -1, 0, RWF_NOWAIT); }, plain);
  if (r != -EOPNOTSUPP && r != -ENOSYS) return r;
  // e is this worker's engine, and the end of a blocking region may move
  // the ULT to another worker (weft::blocking): stay here for the loop.
  Pin pin;
  for (;;) {
    int w = e->wait_ready(fd, ev, d.ns());
    if (w < 0 && w != -EPERM) return w;
    r = weft::blocking(plain);
    if (r != -EAGAIN || w == -EPERM) return r;  // EAGAIN: the fd is non-blocking and was raced
  }
}

class EpollBackend final : public BlockingBackend {
 public:
  const char* name() const override { return "epoll"; }

  int64_t read(const Route& r, int fd, void* buf, size_t n, Deadline d) const override {
    iovec v{buf, n};
    return rw_epoll(engine(r), fd, false, &v, 1, d);
  }

  int64_t write(const Route& r, int fd, const void* buf, size_t n, Deadline d) const override {
    iovec v{const_cast<void*>(buf), n};
    return rw_epoll(engine(r), fd, true, &v, 1, d);
  }

  int64_t readv(const Route& r, int fd, const iovec* iov, int cnt, Deadline d) const override {
    return rw_epoll(engine(r), fd, false, iov, cnt, d);
  }

  int64_t writev(const Route& r, int fd, const iovec* iov, int cnt, Deadline d) const override {
    return rw_epoll(engine(r), fd, true, iov, cnt, d);
  }

  int poll(const Route& r, int fd, short events, Deadline d) const override {
    EpollEngine* e = engine(r);
    pollfd p{fd, events, 0};
    for (;;) {
      long r = sys(SYS_poll, arg(&p), 1, 0);
      if (r < 0) return static_cast<int>(r);
      if (r > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
      // poll's and epoll's event bits are the same numbers; until issue 15
      // only POLLIN and POLLOUT were passed on, so a wait for POLLPRI,
      // POLLRDHUP or no event at all (POLLHUP/POLLERR only) ran into its
      // deadline (IoOps.PollForOtherEventsWaitsForThem).
      constexpr uint32_t kAsked = POLLIN | POLLPRI | POLLOUT | POLLRDNORM | POLLRDBAND | POLLWRNORM | POLLWRBAND | POLLRDHUP;
      uint32_t ev = static_cast<uint16_t>(events) & kAsked;
      int w = e->wait_ready(fd, ev, d.ns(), Interrupt::kAlways);
      if (w == -EPERM) continue;
      if (w < 0) return w;
    }
  }

  // Sockets weft makes here are non-blocking: their attempts never wait.

  int accept(const Route& r, int fd, sockaddr* addr, socklen_t* len, Deadline d) const override {
    EpollEngine* e = engine(r);
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
    return static_cast<int>(weft::blocking(call));
  }

  int connect(const Route& r, int fd, const sockaddr* addr, socklen_t len, Deadline d) const override {
    EpollEngine* e = engine(r);
    return connect_without_ring(fd, addr, len, d, [&] { return e->wait_ready(fd, EPOLLOUT, d.ns()); });
  }

  int64_t recv(const Route& r, int fd, void* buf, size_t n, int flags, Deadline d) const override {
    auto call = [&] { return sys(SYS_recvfrom, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0); };
    return epoll_op(engine(r), fd, EPOLLIN, d, call, call);
  }

  int64_t send(const Route& r, int fd, const void* buf, size_t n, int flags, Deadline d) const override {
    auto call = [&] { return sys(SYS_sendto, fd, arg(buf), static_cast<long>(n), flags | MSG_DONTWAIT, 0, 0); };
    return epoll_op(engine(r), fd, EPOLLOUT, d, call, call);
  }

  int64_t sendmsg(const Route& r, int fd, const msghdr* msg, int flags, Deadline d) const override {
    auto call = [&] { return sys(SYS_sendmsg, fd, arg(msg), flags | MSG_DONTWAIT); };
    return epoll_op(engine(r), fd, EPOLLOUT, d, call, call);
  }

  int64_t recvmsg(const Route& r, int fd, msghdr* msg, int flags, Deadline d) const override {
    auto call = [&] { return sys(SYS_recvmsg, fd, arg(msg), flags | MSG_DONTWAIT); };
    return epoll_op(engine(r), fd, EPOLLIN, d, call, call);
  }
};

}  // namespace

const Backend& epoll_backend() {
  static const EpollBackend b;
  return b;
}

}  // namespace weft::io_internal
