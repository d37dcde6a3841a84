// io/uring_ops.cc — the io_uring backend: weft::io operations as SQEs on the
// calling worker's ring, the ULT parked until their last CQE.
//
// Every operation goes through uring_op (the protocol is in
// uring_engine.h). The engine is used only before the ULT parks: once
// parked, it may resume on any worker, and its Completion (on its own
// stack) is all the ring's owner touches.
#include <poll.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "io/backend.h"
#include "runtime/debug_info.h"
#include "runtime/trace.h"
#include "io/ops_common.h"
#include "io/uring_defs.h"
#include "io/uring_engine.h"
#include "sys/raw_log.h"

namespace weft::io_internal {

using io::Deadline;

namespace {

// The route's engine: the caller's, ready (it has not parked since the
// choice).
UringEngine* engine(const Route& r) {
  WEFT_DCHECK(r.engine != nullptr && r.engine->kind() == UringEngine::kKind, "io_uring backend without its engine");
  return static_cast<UringEngine*>(r.engine);
}

// Regular files, block devices and directories: a read or write there is
// not a slow-device call, and a signal does not interrupt it (signal(7)).
// A system call, made only when a handler would interrupt the operation.
bool on_disk(int fd) {
  struct stat st {};
  if (sys(SYS_fstat, fd, arg(&st)) < 0) return false;
  return S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode);
}

// The name a dump gives an operation (the ULT's wait note, debug_info.h).
const char* op_name(uint8_t opcode) {
  switch (opcode) {
    case IORING_OP_READ: case IORING_OP_READV: case IORING_OP_READ_FIXED: return "read";
    case IORING_OP_WRITE: case IORING_OP_WRITEV: case IORING_OP_WRITE_FIXED: return "write";
    case IORING_OP_RECV: case IORING_OP_RECVMSG: return "recv";
    case IORING_OP_SEND: case IORING_OP_SENDMSG: return "send";
    case IORING_OP_ACCEPT: return "accept";
    case IORING_OP_CONNECT: return "connect";
    case IORING_OP_POLL_ADD: return "poll";
    case IORING_OP_FSYNC: return "fsync";
    case IORING_OP_OPENAT: return "openat";
    case IORING_OP_CLOSE: return "close";
    case IORING_OP_SPLICE: return "splice";
    default: return "io";
  }
}

// Submits one operation (plus a linked timeout for a deadline) on the
// calling ULT's worker's ring and parks until its last CQE (see
// uring_engine.h for the protocol).
// stoppable: a stop request of the ULT cancels the operation (all but close).
template <class Prep>
int64_t uring_op(UringEngine* e, rt::UltDesc* self, int fd, Deadline d, Interrupt in, Prep prep, bool stoppable = true) {
  Completion c;
  c.ult = self;
  c.fd = fd;
  c.engine = e;
  bool timed = !d.is_none();
  c.remaining.store(timed ? 2 : 1, std::memory_order_relaxed);
  io_uring_sqe* sqe = e->get_sqes(timed ? 2 : 1);
  prep(sqe);
  rt::WaitNote note(self, op_name(sqe->opcode), nullptr, fd);
  rt::trace::IoSpan span(self, op_name(sqe->opcode), fd, sqe->len, &c.res);  // done: the CQE's result
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&c) | kTagOp);
  if (timed) {
    sqe->flags |= IOSQE_IO_LINK;
    io_uring_sqe* t = e->get_sqes(1);  // room was reserved: the pair is contiguous
    c.ts.tv_sec = d.ns() / 1000000000LL;
    c.ts.tv_nsec = d.ns() % 1000000000LL;
    io_uring_prep_link_timeout(t, &c.ts, IORING_TIMEOUT_ABS);
    io_uring_sqe_set_data64(t, reinterpret_cast<uint64_t>(&c) | kTagTimeout);
  }
  e->in_flight.fetch_add(1, std::memory_order_acq_rel);
  fd_ops_add(fd, 1);
  e->note_prepared();
  // From here on `e` is not ours: the ULT may resume on another worker
  // (only its thread-safe post_op_cancel may be called).
  uint64_t mark = in == Interrupt::kNever ? 0 : rt::handler_mark(self);
  bool interrupted = false;
  bool stopped = false;            // cancelled because the ULT was asked to stop
  bool not_interruptible = false;  // a file on disk (on_disk), found when a handler would interrupt
  while (c.remaining.load(std::memory_order_acquire) != 0) {
    // A stop request (park.h: the requester unparks us after setting the
    // flag) cancels the operation the way an interrupting handler does
    // (one cancel per operation at most: the two share interrupt_hit).
    // Checked before the first park too: a ULT asked before it started
    // the operation has it cancelled at once (unless it completes first).
    if (stoppable && !interrupted && !stopped && rt::stop_requested(self)) {
      int n = c.remaining.load(std::memory_order_acquire);
      while (n != 0 && !c.remaining.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) {
      }
      if (n == 0) break;  // it completed meanwhile: its result stands
      stopped = true;
      e->post_op_cancel(&c);
    }
    // A signal handler that ran on this ULT since the submission ends the
    // operation as it would end the system call (park.h): cancel it on its
    // engine (Completion's comment has the protocol). Checked before every
    // park: a handler run by a doorbell just before the park leaves a wake
    // permit (signal.cc, leave_permit), so the park returns and we get here.
    if (in != Interrupt::kNever && !interrupted && !stopped && !not_interruptible &&
        rt::handler_interrupts(self, mark, in == Interrupt::kUnlessRestart)) {
      if (on_disk(fd)) {
        not_interruptible = true;
      } else {
        int n = c.remaining.load(std::memory_order_acquire);
        while (n != 0 && !c.remaining.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel)) {
        }
        if (n == 0) break;  // it completed meanwhile: its result stands
        interrupted = true;
        e->post_op_cancel(&c);
      }
    }
    rt::park_current(self);
  }
  // The linked timeout cancelled the operation: -ECANCELED, or -EINTR when
  // the kernel had handed it to an io-wq worker (a send waiting for buffer
  // space on a blocking socket) and interrupted that. Either is our timeout;
  // a partial result (bytes moved before the cancel) is returned as it is.
  if (c.timed_out && (c.res == -ECANCELED || c.res == -EINTR)) return -ETIMEDOUT;
  // Interrupted: what the operation did before the cancel stands (bytes
  // moved, a connection accepted); if it did nothing, EINTR.
  if (interrupted && c.interrupt_hit && (c.res == -ECANCELED || c.res == -EINTR)) return -EINTR;
  // Stopped: likewise, but -ECANCELED.
  if (stopped && c.interrupt_hit && (c.res == -ECANCELED || c.res == -EINTR)) return -ECANCELED;
  return c.res;
}

template <class Prep>
int64_t uring_op(const Route& r, int fd, Deadline d, Prep prep) {
  return uring_op(engine(r), r.ult, fd, d, Interrupt::kNever, prep);
}

// A slow-device operation (Interrupt::kUnlessRestart).
template <class Prep>
int64_t uring_slow_op(const Route& r, int fd, Deadline d, Prep prep) {
  return uring_op(engine(r), r.ult, fd, d, Interrupt::kUnlessRestart, prep);
}

class UringBackend final : public Backend {
 public:
  const char* name() const override { return "io_uring"; }

  int64_t read(const Route& r, int fd, void* buf, size_t n, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), -1); });
  }

  int64_t write(const Route& r, int fd, const void* buf, size_t n, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), -1); });
  }

  int64_t pread(const Route& r, int fd, void* buf, size_t n, off_t off, Deadline d) const override {
    return uring_op(r, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_read(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  }

  int64_t pwrite(const Route& r, int fd, const void* buf, size_t n, off_t off, Deadline d) const override {
    return uring_op(r, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_write(s, fd, buf, static_cast<unsigned>(n), static_cast<uint64_t>(off));
    });
  }

  int64_t readv(const Route& r, int fd, const iovec* iov, int cnt, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_readv(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  }

  int64_t writev(const Route& r, int fd, const iovec* iov, int cnt, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_writev(s, fd, iov, static_cast<unsigned>(cnt), -1); });
  }

  int openat(const Route& r, int dirfd, const char* path, int flags, mode_t mode, Deadline d) const override {
    return static_cast<int>(uring_op(r, -1, d, [&](io_uring_sqe* s) { io_uring_prep_openat(s, dirfd, path, flags, mode); }));
  }

  int close(const Route& r, int fd) const override {
    return static_cast<int>(uring_op(
        engine(r), r.ult, -1, Deadline(), Interrupt::kNever, [&](io_uring_sqe* s) { io_uring_prep_close(s, fd); },
        /*stoppable=*/false));
  }

  int fsync(const Route& r, int fd, Deadline d) const override {
    return static_cast<int>(uring_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_fsync(s, fd, 0); }));
  }

  int statx(const Route& r, int dirfd, const char* path, int flags, unsigned mask, struct statx* out, Deadline d) const override {
    return static_cast<int>(
        uring_op(r, -1, d, [&](io_uring_sqe* s) { io_uring_prep_statx(s, dirfd, path, flags, mask, out); }));
  }

  int poll(const Route& r, int fd, short events, Deadline d) const override {
    unsigned asked = static_cast<uint16_t>(events);
    if (!(asked & POLLPRI)) {
      return static_cast<int>(uring_op(engine(r), r.ult, fd, d, Interrupt::kAlways,
                                       [&](io_uring_sqe* s) { io_uring_prep_poll_add(s, fd, asked); }));
    }
    // POLLPRI: a poll request for it alone never completed when TCP urgent
    // data arrived (kernel 6.18 here; poll(2) and epoll see it), one that
    // also asks for POLLRDBAND does (IoOps.PollForOtherEventsWaitsForThem).
    // So POLLRDBAND is added, and poll(2) with a zero timeout says what of
    // the events asked for is ready; nothing: wait again. (A file whose
    // poll reported POLLRDBAND without POLLPRI would send this round
    // without waiting, each time through the ring.)
    for (;;) {
      int res = static_cast<int>(uring_op(engine(r), r.ult, fd, d, Interrupt::kAlways, [&](io_uring_sqe* s) {
        io_uring_prep_poll_add(s, fd, asked | POLLRDBAND);
      }));
      if (res < 0) return res;
      pollfd p{fd, events, 0};
      long n = sys(SYS_poll, arg(&p), 1, 0);
      if (n < 0) return static_cast<int>(n);
      if (n > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
    }
  }


  int accept(const Route& r, int fd, sockaddr* addr, socklen_t* len, Deadline d) const override {
    return static_cast<int>(
        uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_accept(s, fd, addr, len, SOCK_CLOEXEC); }));
  }

  int connect(const Route& r, int fd, const sockaddr* addr, socklen_t len, Deadline d) const override {
    return static_cast<int>(uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_connect(s, fd, addr, len); }));
  }

  int64_t recv(const Route& r, int fd, void* buf, size_t n, int flags, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_recv(s, fd, buf, n, flags);
      // Arm the poll at once instead of trying a receive that, for a ULT
      // that had to wait, usually finds nothing yet.
      s->ioprio |= IORING_RECVSEND_POLL_FIRST;
    });
  }

  int64_t send(const Route& r, int fd, const void* buf, size_t n, int flags, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) { io_uring_prep_send(s, fd, buf, n, flags); });
  }

  // The kernel copies the msghdr (and its iovec array) when it prepares
  // the request, and writes msg_flags, msg_namelen and msg_controllen back
  // at completion, as recvmsg(2) does: all of it on this ULT's stack or
  // the caller's, which outlive the operation (uring_op returns after the
  // last CQE).
  int64_t sendmsg(const Route& r, int fd, const msghdr* msg, int flags, Deadline d) const override {
    return uring_slow_op(r, fd, d,
                         [&](io_uring_sqe* s) { io_uring_prep_sendmsg(s, fd, msg, static_cast<unsigned>(flags)); });
  }

  int64_t recvmsg(const Route& r, int fd, msghdr* msg, int flags, Deadline d) const override {
    return uring_slow_op(r, fd, d, [&](io_uring_sqe* s) {
      io_uring_prep_recvmsg(s, fd, msg, static_cast<unsigned>(flags));
      s->ioprio |= IORING_RECVSEND_POLL_FIRST;  // as recv
    });
  }
};

}  // namespace

const Backend& uring_backend() {
  static const UringBackend b;
  return b;
}

int64_t uring_splice(int fd_in, int64_t off_in, int fd_out, int64_t off_out, unsigned len, unsigned flags,
                     io::Deadline d) {
  Route r = route_for_caller();
  if (r.backend != &uring_backend()) return -ENOSYS;
  // The request's file is fd_out (io::close(fd_out) finds and cancels it);
  // fd_in travels in the SQE. A slow-device call, as read and write.
  return uring_slow_op(r, fd_out, d, [&](io_uring_sqe* s) {
    io_uring_prep_splice(s, fd_in, off_in, fd_out, off_out, len, flags);
  });
}

int uring_waitid(int idtype, int id, siginfo_t* info, int options, io::Deadline d) {
  Route r = route_for_caller();
  if (r.backend != &uring_backend() || !engine(r)->has_waitid()) return -ENOSYS;
  memset(info, 0, sizeof *info);
  return static_cast<int>(uring_op(r, -1, d, [&](io_uring_sqe* s) { prep_waitid(s, idtype, id, info, options); }));
}

}  // namespace weft::io_internal
