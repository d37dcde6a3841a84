// io/socket_ops.cc — the socket calls beyond accept/connect/recv/send:
// datagrams and messages (sendto, recvfrom, sendmsg, recvmsg), socket
// options, splice and sendfile, and io::Acceptor with its multishot accept
// (io/acceptor.h has the protocol). Normalising as in ops.cc: lengths
// clamped to kMaxRwCount, MSG_NOSIGNAL added to sends.
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <ctime>
#include <memory>

#include "io/acceptor.h"
#include "runtime/debug_info.h"
#include "io/backend.h"
#include "io/engine.h"
#include "io/ops_common.h"
#include "io/uring_engine.h"
#include "weft/io.h"

namespace weft::io {

using io_internal::AcceptWaiter;
using io_internal::arg;
using io_internal::Backend;
using io_internal::clamp_len;
using io_internal::dispatch;
using io_internal::MultishotAccept;
using io_internal::sys;

// --- datagrams and messages ------------------------------------------------------------

int64_t sendmsg(int fd, const msghdr* msg, int flags, Deadline d) {
  return dispatch(&Backend::sendmsg, fd, msg, flags | MSG_NOSIGNAL, d);
}

int64_t recvmsg(int fd, msghdr* msg, int flags, Deadline d) { return dispatch(&Backend::recvmsg, fd, msg, flags, d); }

int64_t sendto(int fd, const void* buf, size_t n, int flags, const sockaddr* to, socklen_t tolen, Deadline d) {
  iovec v{const_cast<void*>(buf), clamp_len(n)};
  msghdr m{};
  m.msg_name = const_cast<sockaddr*>(to);
  m.msg_namelen = to != nullptr ? tolen : 0;
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  return sendmsg(fd, &m, flags, d);
}

int64_t recvfrom(int fd, void* buf, size_t n, int flags, sockaddr* from, socklen_t* fromlen, Deadline d) {
  iovec v{buf, clamp_len(n)};
  msghdr m{};
  if (from != nullptr && fromlen != nullptr) {
    m.msg_name = from;
    m.msg_namelen = *fromlen;
  }
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  int64_t r = recvmsg(fd, &m, flags, d);
  if (r >= 0 && from != nullptr && fromlen != nullptr) *fromlen = m.msg_namelen;
  return r;
}

int64_t sendto(int fd, const void* buf, size_t n, const Address& to, int flags, Deadline d) {
  return sendto(fd, buf, n, flags, to.get(), to.len, d);
}

int64_t recvfrom(int fd, void* buf, size_t n, Address* from, int flags, Deadline d) {
  if (from == nullptr) return recvfrom(fd, buf, n, flags, nullptr, nullptr, d);
  from->len = sizeof from->storage;
  return recvfrom(fd, buf, n, flags, reinterpret_cast<sockaddr*>(&from->storage), &from->len, d);
}

// --- socket options -----------------------------------------------------------------------

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
  return static_cast<int>(sys(SYS_setsockopt, fd, level, name, arg(value), len));
}

int getsockopt(int fd, int level, int name, void* value, socklen_t* len) {
  return static_cast<int>(sys(SYS_getsockopt, fd, level, name, arg(value), arg(len)));
}

int set_nodelay(int fd, bool on) {
  int v = on ? 1 : 0;
  return io::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v);
}

// --- splice and sendfile -----------------------------------------------------------------

namespace {

// After EAGAIN from a splice: waits (io::poll, within d) for the end that
// is not ready: the input if it has nothing to read, else the output.
// 0, or -errno / -ETIMEDOUT.
int wait_splice_ends(int fd_in, int fd_out, Deadline d) {
  pollfd p[2] = {{fd_in, POLLIN, 0}, {fd_out, POLLOUT, 0}};
  sys(SYS_poll, arg(p), 2, 0);
  bool in_ready = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  bool out_ready = (p[1].revents & (POLLOUT | POLLHUP | POLLERR)) != 0;
  if (in_ready && out_ready) {
    // Both say ready and the splice still said EAGAIN (not seen; a guard
    // against a hot loop): try again in a millisecond, within d.
    if (!d.is_none() && rt::monotonic_ns() >= d.ns()) return -ETIMEDOUT;
    if (this_ult::in_ult()) {
      this_ult::sleep_for(std::chrono::milliseconds(1));
    } else {
      timespec ts{0, 1000 * 1000};
      sys(SYS_nanosleep, arg(&ts), 0);
    }
    return 0;
  }
  int w = in_ready ? io::poll(fd_out, POLLOUT, d) : io::poll(fd_in, POLLIN, d);
  return w < 0 ? w : 0;
}

// One splice where no ring does it (epoll, threads, a degraded worker):
// the call with SPLICE_F_NONBLOCK as a blocking region (a file end may
// read from disk), waiting for readiness on EAGAIN unless the caller asked
// for SPLICE_F_NONBLOCK itself.
int64_t splice_without_ring(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len, unsigned flags,
                            Deadline d) {
  for (;;) {
    int64_t r = weft::blocking(
        [&] { return sys(SYS_splice, fd_in, arg(off_in), fd_out, arg(off_out), static_cast<long>(len),
                         flags | SPLICE_F_NONBLOCK); });
    if (r != -EAGAIN || (flags & SPLICE_F_NONBLOCK)) return r;
    if (int w = wait_splice_ends(fd_in, fd_out, d); w < 0) return w;
  }
}

}  // namespace

// On io_uring the splice always runs on one of the kernel's io-wq threads,
// and there (seen on Linux 6.18) a splice that sleeps on a pipe (empty
// input, full output) or on a blocking socket's send buffer is NOT ended
// by the linked timeout's cancel, nor by io::close's: it would hold the
// ULT past its deadline, and the worker with an operation in flight. So
// the ring gets SPLICE_F_NONBLOCK too (the pipe ends never sleep; nor
// does a socket input, which honours the flag) and readiness waits go
// through io::poll (a ring poll: deadline and close both end it). A
// blocking-mode socket output still sleeps in io-wq (io.h says so).
int64_t splice(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len, unsigned flags, Deadline d) {
  len = clamp_len(len);
  for (;;) {
    int64_t r = io_internal::uring_splice(fd_in, off_in != nullptr ? *off_in : -1, fd_out,
                                          off_out != nullptr ? *off_out : -1, static_cast<unsigned>(len),
                                          flags | SPLICE_F_NONBLOCK, d);
    if (r == -ENOSYS) return splice_without_ring(fd_in, off_in, fd_out, off_out, len, flags, d);
    if (r > 0) {
      // IORING_OP_SPLICE takes offsets by value: advance them as splice(2) would.
      if (off_in != nullptr) *off_in += r;
      if (off_out != nullptr) *off_out += r;
    }
    // An end in non-blocking mode that was not ready: wait for it, try again.
    if (r != -EAGAIN || (flags & SPLICE_F_NONBLOCK)) return r;
    if (int w = wait_splice_ends(fd_in, fd_out, d); w < 0) return w;
  }
}

namespace {

// sendfile(2) as a blocking region, waiting for POLLOUT (io::poll, within
// d) on EAGAIN: for an out_fd in non-blocking mode, where the call never
// waits for the socket (only, perhaps, for the disk).
int64_t sendfile_nonblocking(int out_fd, int in_fd, off_t* offset, size_t count, Deadline d) {
  for (;;) {
    int64_t r = weft::blocking([&] { return sys(SYS_sendfile, out_fd, in_fd, arg(offset), static_cast<long>(count)); });
    if (r != -EAGAIN) return r;
    if (int w = io::poll(out_fd, POLLOUT, d); w < 0) return w;
  }
}

constexpr size_t kSendfileChunk = 64 * 1024;

// The copy path: pread into a buffer, then send (a socket) or write
// (anything else) with the deadline, 64 KiB at a time. The offset (or
// the file position) advances by the bytes that reached out_fd only.
int64_t sendfile_by_copy(int out_fd, int in_fd, off_t* offset, size_t count, Deadline d) {
  off_t pos = offset != nullptr ? *offset : static_cast<off_t>(sys(SYS_lseek, in_fd, 0, SEEK_CUR));
  if (pos < 0) return pos;  // -ESPIPE: in_fd cannot be positioned (sendfile(2) would say EINVAL or ESPIPE too)
  int type = 0;
  socklen_t tlen = sizeof type;
  const bool is_socket = io::getsockopt(out_fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0;
  std::unique_ptr<char[]> buf(new char[kSendfileChunk]);
  int64_t sent = 0;
  int64_t err = 0;
  while (static_cast<size_t>(sent) < count) {
    size_t want = count - static_cast<size_t>(sent);
    if (want > kSendfileChunk) want = kSendfileChunk;
    int64_t in = io::pread(in_fd, buf.get(), want, pos + sent, d);
    if (in <= 0) {
      err = in;  // 0: end of file
      break;
    }
    int64_t done = 0;
    while (done < in) {
      int64_t out = is_socket ? io::send(out_fd, buf.get() + done, static_cast<size_t>(in - done), 0, d)
                              : io::write(out_fd, buf.get() + done, static_cast<size_t>(in - done), d);
      if (out <= 0) {
        err = out == 0 ? -EIO : out;
        break;
      }
      done += out;
    }
    sent += done;
    if (err != 0) break;
  }
  if (offset != nullptr) {
    *offset = pos + sent;
  } else if (sent > 0) {
    sys(SYS_lseek, in_fd, pos + sent, SEEK_SET);
  }
  return sent > 0 ? sent : err;
}

}  // namespace

// How sendfile waits (io.h): sendfile(2) has no io_uring opcode and no
// per-call "do not wait" flag, so what it may do depends on out_fd's mode.
//  - Non-blocking out_fd (sockets weft makes for epoll workers, or the
//    caller's): sendfile(2) itself, zero-copy; it never waits for the
//    socket, and on EAGAIN the ULT waits for POLLOUT through its worker's
//    ring or epoll.
//  - Blocking-mode out_fd in a ULT on io_uring (the sockets weft makes
//    there), or anywhere with a deadline: sendfile(2) would wait inside the
//    kernel, holding the worker, past any deadline and deaf to io::close.
//    A splice pair through a pipe (IORING_OP_SPLICE) was the first plan,
//    but the kernel (6.18 here) does not interrupt an io-wq splice into a
//    socket at a linked timeout's cancel: it waits until the peer reads.
//    So the bytes go through a 64 KiB buffer instead: io::pread, then
//    io::send (a socket) or io::write, each parking the ULT and keeping
//    the deadline and io::close. One copy, no stalled worker.
//  - Blocking-mode out_fd without a deadline outside io_uring (threads,
//    epoll workers with the caller's own socket): sendfile(2) as a
//    blocking region, as the system call would behave.
int64_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count, Deadline d) {
  count = clamp_len(count);
  long fl = sys(SYS_fcntl, out_fd, F_GETFL);
  if (fl < 0) return fl;
  if (fl & O_NONBLOCK) return sendfile_nonblocking(out_fd, in_fd, offset, count, d);
  if (io_internal::route_for_caller().backend == &io_internal::uring_backend() || !d.is_none())
    return sendfile_by_copy(out_fd, in_fd, offset, count, d);
  return weft::blocking([&] { return sys(SYS_sendfile, out_fd, in_fd, arg(offset), static_cast<long>(count)); });
}

}  // namespace weft::io

// --- Acceptor ------------------------------------------------------------------------------

namespace weft::io_internal {

void multishot_unref(MultishotAccept* m) {
  if (m->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  for (int fd : m->ready) sys(SYS_close, fd);  // accepted, never returned: nothing in flight on them
  delete m;
}

namespace {
// Gives `res` to the first waiter (its `done` set under mu; woken while we
// still hold mu, so it cannot have left). False if nobody waits.
bool hand_to_waiter(MultishotAccept* m, int res) {
  if (m->waiters.empty()) return false;
  AcceptWaiter* w = m->waiters.front();
  m->waiters.pop_front();
  w->result = res;
  w->done = true;
  rt::unpark(w->ult);
  return true;
}
}  // namespace

void multishot_accept_cqe(UringEngine* e, MultishotAccept* m, int res, uint32_t flags) {
  const bool more = (flags & IORING_CQE_F_MORE) != 0;
  bool post_cancel = false;
  {
    rt::LockGuard<rt::KltMutex> g(m->mu);
    if (res >= 0) {
      if (!hand_to_waiter(m, res)) {
        if (m->closing) {
          sys(SYS_close, res);  // the Acceptor is going: nobody will take it
        } else {
          m->ready.push_back(res);
          // Enough accepted ahead of the callers: stop (the backlog holds
          // the rest) until a caller re-arms.
          if (more && m->ready.size() >= io::kAcceptorMaxQueued && !m->cancel_posted) {
            m->cancel_posted = true;
            post_cancel = true;
            m->refs.fetch_add(1, std::memory_order_relaxed);  // the cancel's
          }
        }
      }
    } else if (more) {
      hand_to_waiter(m, res);  // an error that did not end the multishot: one caller's
    }
    if (!more) {
      m->armed = false;
      bool own_cancel = res == -ECANCELED && m->cancel_posted && !m->closing;
      m->cancel_posted = false;
      if (res < 0 && !own_cancel) {
        // The armed accept failed (io::close: -ECANCELED; EBADF, EMFILE,
        // ...): every caller waiting on it gets the error.
        while (hand_to_waiter(m, res)) {
        }
      } else if (!m->waiters.empty()) {
        // It ended without an error for the callers: the first one arms it
        // again (on its own worker).
        AcceptWaiter* w = m->waiters.front();
        m->waiters.pop_front();
        w->result = MultishotAccept::kRearm;
        w->done = true;
        rt::unpark(w->ult);
      }
    }
  }
  if (post_cancel) e->post_multishot_cancel(m);
  if (!more) {
    e->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    fd_ops_add(m->fd, -1);
    m->idle.count_down();
    multishot_unref(m);  // the armed accept's reference
  }
}

namespace {

// Acceptor::accept on an io_uring worker (io.h).
int multishot_accept(MultishotAccept* m, Route r, io::Deadline d) {
  rt::UltDesc* self = r.ult;
  const uint64_t mark = rt::handler_mark(self);
  for (;;) {
    AcceptWaiter me;
    me.ult = self;
    bool arm = false;
    {
      rt::LockGuard<rt::KltMutex> g(m->mu);
      if (!m->ready.empty()) {
        int fd = m->ready.front();
        m->ready.pop_front();
        return fd;
      }
      bool stop = rt::stop_requested(self);  // asked to stop: leave as at a deadline
      if (stop || (!d.is_none() && rt::monotonic_ns() >= d.ns())) {
        // Leaving: if we were sent back to arm (kRearm), hand that to the
        // next waiter, or nobody would.
        if (!m->armed && !m->waiters.empty()) {
          AcceptWaiter* w = m->waiters.front();
          m->waiters.pop_front();
          w->result = MultishotAccept::kRearm;
          w->done = true;
          rt::unpark(w->ult);
        }
        return stop ? -ECANCELED : -ETIMEDOUT;
      }
      m->waiters.push_back(&me);
      if (!m->armed) {
        m->armed = true;
        m->engine = static_cast<UringEngine*>(r.engine);
        m->refs.fetch_add(1, std::memory_order_relaxed);  // the armed accept's
        m->idle.add(1);
        arm = true;
      }
    }
    // Not under mu: taking an SQE may reap (acceptor.h). Still on r.engine's
    // worker: nothing parked since route_for_caller().
    if (arm) static_cast<UringEngine*>(r.engine)->arm_multishot_accept(m);
    bool timed_out = false;
    rt::WaitNote note(self, "accept", nullptr, m->fd);
    for (;;) {
      if (d.is_none()) {
        rt::park_current(self);
      } else if (!rt::park_current_until(self, d.ns()) || rt::monotonic_ns() >= d.ns()) {
        timed_out = true;
      }
      rt::LockGuard<rt::KltMutex> g(m->mu);
      if (me.done) break;
      bool interrupted = rt::handler_interrupts(self, mark, /*restartable=*/true);
      bool stopped = rt::stop_requested(self);  // the requester unparked us (park.h)
      if (timed_out || interrupted || stopped) {
        for (auto it = m->waiters.begin(); it != m->waiters.end(); ++it) {
          if (*it == &me) {
            m->waiters.erase(it);
            break;
          }
        }
        return stopped ? -ECANCELED : timed_out ? -ETIMEDOUT : -EINTR;
      }
    }
    if (me.result != MultishotAccept::kRearm) return me.result;
    // Arm again, on the worker we run on now (we may have migrated).
    r = route_for_caller();
    if (r.backend != &uring_backend()) return io::accept(m->fd, nullptr, nullptr, d);
  }
}

}  // namespace
}  // namespace weft::io_internal

namespace weft::io {

// The destructor's wait for the armed accept's final CQE (io.h), as long
// as io::close waits for other workers.
constexpr auto kAcceptorCancelWait = std::chrono::milliseconds(50);

Acceptor::Acceptor(int listen_fd) : fd_(listen_fd), m_(new MultishotAccept(listen_fd)) {}

Acceptor::~Acceptor() {
  io_internal::UringEngine* e = nullptr;
  {
    rt::LockGuard<rt::KltMutex> g(m_->mu);
    m_->closing = true;
    if (m_->armed) {
      e = m_->engine;
      m_->refs.fetch_add(1, std::memory_order_relaxed);  // the cancel's
    }
  }
  if (e != nullptr) {
    // Posted even when we run on e's worker: its next pass (while we park
    // below) cancels it. The engine is alive: an armed accept is in flight
    // on it, and a worker does not go away with operations in flight.
    e->post_multishot_cancel(m_);
    m_->idle.wait_for(kAcceptorCancelWait);  // else e's worker finishes it (io.h)
  }
  io_internal::multishot_unref(m_);
}

int Acceptor::accept(Deadline d) {
  io_internal::Route r = io_internal::route_for_caller();
  if (r.backend != &io_internal::uring_backend()) return io::accept(fd_, nullptr, nullptr, d);
  return io_internal::multishot_accept(m_, r, d);
}

}  // namespace weft::io
