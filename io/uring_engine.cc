// io/uring_engine.cc — a worker's io_uring: setup, submission and reaping,
// cancels, and idle waits with wake-ups through the ring (see uring_engine.h).
#include "io/uring_engine.h"

#include <cerrno>
#include <cstring>

#include "io/uring_defs.h"
#include "runtime/log.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"

namespace weft::io_internal {
namespace {

// 8-byte aligned like every user_data pointer: the tag lives in the low bits.
struct alignas(8) CancelHere {
  bool done = false;
};

std::atomic<unsigned> sq_entries_for_test{0};

const char* flag_name(unsigned f) {
  switch (f) {
    case IORING_SETUP_DEFER_TASKRUN: return "DEFER_TASKRUN";
    case IORING_SETUP_SINGLE_ISSUER: return "SINGLE_ISSUER";
    case IORING_SETUP_TASKRUN_FLAG: return "TASKRUN_FLAG";
    case IORING_SETUP_COOP_TASKRUN: return "COOP_TASKRUN";
    case IORING_SETUP_SUBMIT_ALL: return "SUBMIT_ALL";
  }
  return "?";
}

}  // namespace

void UringEngine::set_sq_entries_for_test(unsigned n) { sq_entries_for_test.store(n, std::memory_order_relaxed); }

UringEngine::UringEngine() : Engine(kKind) {}

UringEngine::~UringEngine() {
  unregister_engine(this);  // first: nobody may post to or wake us from here on
  if (state_ == State::kReady) io_uring_queue_exit(&ring_);
  // ~Engine closes the eventfd.
}

bool UringEngine::setup() {
  unsigned entries = sq_entries_for_test.load(std::memory_order_relaxed);
  if (entries == 0) entries = kSqEntries;
  // Dropped in this order on EINVAL: DEFER_TASKRUN requires SINGLE_ISSUER.
  static constexpr unsigned kDroppable[] = {IORING_SETUP_DEFER_TASKRUN, IORING_SETUP_SINGLE_ISSUER,
                                            IORING_SETUP_TASKRUN_FLAG, IORING_SETUP_COOP_TASKRUN,
                                            IORING_SETUP_SUBMIT_ALL};
  unsigned flags = IORING_SETUP_CQSIZE;
  for (unsigned f : kDroppable) flags |= f;
  int r = 0;
  for (size_t drop = 0;; ++drop) {
    io_uring_params p{};
    p.flags = flags;
    p.cq_entries = entries * kCqFactor;
    r = io_uring_queue_init_params(entries, &ring_, &p);
    if (r == 0) break;
    if (r != -EINVAL || drop == sizeof kDroppable / sizeof kDroppable[0]) break;
    rt::log().debug("io_uring_setup: EINVAL, retrying without {}", flag_name(kDroppable[drop]));
    flags &= ~kDroppable[drop];
  }
  if (r != 0) return setup_failed("io_uring setup", -r);
  setup_flags_ = flags;
  io_uring_ring_dontfork(&ring_);  // a forked child must never touch this ring

  if (io_uring_probe* probe = io_uring_get_probe_ring(&ring_)) {
    use_futex_op_ = io_uring_opcode_supported(probe, kOpFutexWait);
    has_waitid_op_ = io_uring_opcode_supported(probe, kOpWaitid);
    io_uring_free_probe(probe);
  }
  if (!use_futex_op_) {
    if (long fd = open_eventfd(); sys::is_error(fd)) {
      io_uring_queue_exit(&ring_);
      ring_ = io_uring{};
      return setup_failed("eventfd for io_uring wake-ups", static_cast<int>(-fd));
    }
  }
  hints_.flags = ring_.sq.kflags;
  hints_.flags_mask = IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW;
  hints_.produced = ring_.cq.ktail;
  hints_.consumed = ring_.cq.khead;
  setup_succeeded("io_uring setup", "the ring");
  rt::log().debug("io_uring ready: {} SQ entries, flags {:#x}, wake-ups by {}", entries, flags,
                  use_futex_op_ ? "FUTEX_WAIT" : "eventfd");
  return true;
}

io_uring_sqe* UringEngine::get_sqes(unsigned n) {
  for (;;) {
    if (io_uring_sq_space_left(&ring_) >= n) return io_uring_get_sqe(&ring_);
    // Back-pressure: push what is queued, take in what completed, retry.
    submit();
    reap();
  }
}

void UringEngine::counted_enter(int r) {
  rt::bump(counters_.enters);
  if (r > 0) rt::bump_by(counters_.submitted, static_cast<uint64_t>(r));
}

void UringEngine::submit() {
  int r = io_uring_submit_and_get_events(&ring_);
  counted_enter(r);
  // -EBUSY/-EAGAIN: the CQ overflowed or the kernel is short of memory;
  // reaping makes room and the SQEs stay queued for the next try.
  pending_ = (r < 0 || io_uring_sq_ready(&ring_) != 0) ? 1 : 0;
}

void UringEngine::reap() {
  unsigned head;
  unsigned n = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(&ring_, head, cqe) {
    handle(cqe);
    ++n;
  }
  io_uring_cq_advance(&ring_, n);
  rt::bump_by(counters_.completed, static_cast<uint64_t>(n));
}

void UringEngine::handle(const io_uring_cqe* cqe) {
  uint64_t ud = cqe->user_data;
  if (ud == kWakeData) {
    wake_armed_ = false;
    return;
  }
  switch (ud & kTagMask) {
    case kTagOp:
    case kTagTimeout:
    case kTagInterrupt: {
      auto* c = reinterpret_cast<Completion*>(ud & ~kTagMask);
      if ((ud & kTagMask) == kTagOp) {
        c->res = cqe->res;
      } else if ((ud & kTagMask) == kTagInterrupt) {
        // The cancel's own CQE: 0 (it cancelled the op), -EALREADY (running
        // in io-wq, interrupted there: the op ends with -EINTR or its own
        // result) or -ENOENT (the op had finished).
        c->interrupt_hit = cqe->res == 0 || cqe->res == -EALREADY;
      } else if (cqe->res != -ECANCELED) {
        // A linked timeout that fired (-ECANCELED: the op finished first and
        // cancelled it): -ETIME when it cancelled the op; -EALREADY or
        // -ENOENT when the op was already running in io-wq (e.g. a send
        // waiting for space on a blocking socket, seen here) and could only
        // be interrupted: the op then ends with -EINTR.
        c->timed_out = true;
      }
      rt::UltDesc* u = c->ult;  // read before the decrement: c may vanish after it
      int fd = c->fd;
      if (c->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        in_flight.fetch_sub(1, std::memory_order_acq_rel);
        fd_ops_add(fd, -1);
        ++unparked_;
        rt::unpark(u);
      }
      return;
    }
    case kTagMultishot:
      multishot_accept_cqe(this, reinterpret_cast<MultishotAccept*>(ud & ~kTagMask), cqe->res, cqe->flags);
      return;
    case kTagMultishotCancel:
      multishot_cancel_cqe(reinterpret_cast<MultishotAccept*>(ud & ~kTagMask));
      return;
    case kTagCancel:
      close_request_ack(reinterpret_cast<CloseRequest*>(ud & ~kTagMask));
      return;
    case kTagCancelHere:
      reinterpret_cast<CancelHere*>(ud & ~kTagMask)->done = true;
      return;
    default:
      WEFT_DCHECK(false, "a CQE with an unknown tag: user_data %llx", static_cast<unsigned long long>(ud));
  }
}

void UringEngine::process_requests() {
  for (void* op : take_op_cancels()) {
    if (reinterpret_cast<uintptr_t>(op) & 1) {
      // An Acceptor's armed accept (post_multishot_cancel): keyed by its
      // user_data; if it has ended already the cancel finds nothing
      // (-ENOENT). The cancel's CQE drops the reference the poster took.
      auto* m = reinterpret_cast<MultishotAccept*>(reinterpret_cast<uintptr_t>(op) & ~uintptr_t{1});
      io_uring_sqe* sqe = get_sqes(1);
      io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(m) | kTagMultishot, 0);
      io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(m) | kTagMultishotCancel);
      note_prepared();
      continue;
    }
    auto* c = static_cast<Completion*>(op);
    WEFT_DCHECK(c->engine == this, "an interrupt posted to an engine that does not have the operation");
    // The operation is in flight here, so the ring is set up. The cancel
    // follows the op's SQE if that is still unsubmitted: the kernel sees
    // the op first.
    io_uring_sqe* sqe = get_sqes(1);
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(c) | kTagOp, 0);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(c) | kTagInterrupt);
    note_prepared();
  }
  for (CloseRequest* r : take_requests()) {
    if (state_ != State::kReady) {
      close_request_ack(r);  // no ring, nothing in flight here
      continue;
    }
    // Behind every SQE already taken for fd: those go to the kernel first
    // (the SQ is consumed in order) and resolve fd while it still names the
    // file they were meant for; this cancel then finds them.
    io_uring_sqe* sqe = get_sqes(1);
    io_uring_prep_cancel_fd(sqe, r->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(r) | kTagCancel);
    note_prepared();
  }
}

void UringEngine::cancel_now(int fd) {
  if (state_ != State::kReady) return;  // no ring: nothing in flight here
  WEFT_DCHECK(rt::caller().poller == this,
              "cancel_now on an engine that is not the calling KLT's own");
  CancelHere here;
  io_uring_sqe* sqe = get_sqes(1);
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&here) | kTagCancelHere);
  note_prepared();
  // The kernel executes an async cancel as it consumes the SQE and posts
  // its CQE then (operations it cancels post theirs no later): this wait
  // ends at once, it does not wait for io. Other CQEs reaped here unpark
  // their ULTs as at a scheduler pass (from a blocking region they go to
  // the global queue or, if pinned, to this worker's inbox: scheduler.cc).
  while (!here.done) {
    int r = io_uring_submit_and_wait(&ring_, 1);
    counted_enter(r);
    pending_ = r < 0 || io_uring_sq_ready(&ring_) != 0 ? 1 : 0;
    reap();
    // -EBUSY/-EAGAIN (CQ overflow, kernel short of memory): reaping made
    // room, try again; -EINTR: a signal. Anything else is a broken ring,
    // and `here` must not be left behind in it (its CQE would write into
    // a dead frame).
    WEFT_CHECK(r >= 0 || r == -EINTR || r == -EBUSY || r == -EAGAIN || r == -ETIME || here.done,
               "io_uring_enter for a cancel on fd %d failed: %s", fd, strerror(-r));
  }
}

void UringEngine::arm_multishot_accept(MultishotAccept* m) {
  WEFT_DCHECK(state_ == State::kReady && rt::caller().poller == this, "arming an accept on a ring not our own");
  io_uring_sqe* sqe = get_sqes(1);
  // No address buffer: one would be shared by every CQE (io.h, Acceptor).
  io_uring_prep_multishot_accept(sqe, m->fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(m) | kTagMultishot);
  in_flight.fetch_add(1, std::memory_order_acq_rel);
  fd_ops_add(m->fd, 1);
  note_prepared();
}

void UringEngine::poll() {
  if (has_requests()) process_requests();
  if (state_ != State::kReady) return;
  if (pending_ != 0 || (*ring_.sq.kflags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0) submit();
  reap();
}

void UringEngine::arm_wake() {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  if (wake_armed_) return;
  io_uring_sqe* sqe = get_sqes(1);
  if (use_futex_op_) {
    prep_futex_wait(sqe, reinterpret_cast<const uint32_t*>(&word_), 2);
  } else {
    io_uring_prep_read(sqe, eventfd_.load(std::memory_order_relaxed), &eventfd_buf_, sizeof eventfd_buf_, 0);
  }
  io_uring_sqe_set_data64(sqe, kWakeData);
  wake_armed_ = true;
  note_prepared();
}

void UringEngine::sleep_until(int64_t deadline_ns) {
  // Taking SQEs below may have to flush and reap a full SQ, which can make
  // ULTs runnable here: then do not sleep (the worker never sleeps while
  // its queues hold a ULT), just submit and go back to the scheduler loop.
  const uint64_t unparked_before = unparked_;
  if (has_requests()) process_requests();
  arm_wake();
  if (unparked_ != unparked_before) {
    submit();
    word_.exchange(0, std::memory_order_acq_rel);
    reap();
    return;
  }
  __kernel_timespec ts{};
  __kernel_timespec* tsp = nullptr;
  if (deadline_ns >= 0) {
    int64_t rel = deadline_ns - rt::monotonic_ns();
    if (rel < 0) rel = 0;
    ts.tv_sec = rel / 1000000000LL;
    ts.tv_nsec = rel % 1000000000LL;
    tsp = &ts;
  }
  io_uring_cqe* cqe = nullptr;
  int r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
  counted_enter(r);
  pending_ = (r < 0 && r != -ETIME && r != -EINTR) || io_uring_sq_ready(&ring_) != 0 ? 1 : 0;
  // Reset before reaping: the exchange orders the caller's queue re-checks
  // after it (see FutexPoller).
  word_.exchange(0, std::memory_order_acq_rel);
  reap();
}

void UringEngine::close_after_fork() {
  // The ring's memory is MADV_DONTFORK: not mapped here. Close its fd and
  // the eventfd, touch nothing else, and never again (state kNew: the
  // destructor skips io_uring_queue_exit).
  if (state_ == State::kReady) sys::raw_syscall(SYS_close, ring_.ring_fd);
  close_eventfd_after_fork();
  state_ = State::kNew;
  hints_ = PollHints{};
}

}  // namespace weft::io_internal
