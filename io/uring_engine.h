// io/uring_engine.h — one io_uring per worker.
//
// Setup (lazily, on the worker's own KLT, at its first use: its first idle
// wait or its first operation): SINGLE_ISSUER |
// DEFER_TASKRUN | COOP_TASKRUN | TASKRUN_FLAG | SUBMIT_ALL, dropping flags
// one by one (DEFER_TASKRUN first, as it needs SINGLE_ISSUER) on EINVAL;
// the CQ is kCqFactor times the SQ; no SQPOLL; the ring's memory is
// MADV_DONTFORK so a forked child never sees it. If setup fails (EMFILE,
// ENOMEM, ...), the failure is logged, the worker's io runs as blocking
// calls meanwhile, and setup is tried again at the worker's next io or
// idle wait once a backoff has passed (1 ms, doubling up to 1 s): a
// transient shortage never degrades a worker for good.
//
// An operation: the ULT takes SQEs on its current worker's ring (a full SQ
// is back-pressure: submit, reap, retry), points user_data at a Completion
// on its own stack, and parks. The worker goes on running what is runnable
// and submits the whole batch at its next scheduler pass (poll(): when it
// runs out of work, and at least every 61 switches), reaping completions
// there and in wait(); needs_poll() sends it to the scheduler pass early
// when completions are waiting (the TASKRUN flag or a non-empty CQ). A
// completion decrements Completion::remaining; the last one (an operation
// with a deadline has two CQEs: the op's and its linked timeout's) unparks
// the ULT — queued in completion order on this worker (scheduler.cc,
// make_runnable from the scheduler loop). So the ULT never resumes before
// its operation's final CQE, and only then can it be stolen (or, woken to
// take a signal, it runs its handler and parks again until that CQE).
//
// Cancelling (io::close, close.cc "Closing"): requests posted by other
// threads are turned into IORING_OP_ASYNC_CANCEL SQEs at the next
// scheduler pass, behind any SQE already taken, and acknowledged at their
// CQE; the owner's own KLT (a ULT of this worker, or this worker's KLT in a
// weft::blocking() region) cancels on the spot with cancel_now(), which
// submits and waits in io_uring_enter for that one CQE.
//
// Idle: wait() sleeps in io_uring_enter(GETEVENTS) with the runtime's next
// timer as the timeout. Other threads wake it through its ring: an
// IORING_OP_FUTEX_WAIT on the engine's wake word, armed before sleeping
// (kernels >= 6.7), or else a read armed on an eventfd. The word follows
// FutexPoller's protocol (runtime/poller.h), so wakers make a system call
// only when the worker has said it sleeps.
#pragma once

#include <liburing.h>

#include <atomic>
#include <cstdint>

#include "io/acceptor.h"
#include "io/engine.h"

namespace weft::io_internal {

class UringEngine;

// user_data of an SQE: a Completion*, CloseRequest* or CancelHere*
// (8-byte aligned) with a tag in the low bits, or kWakeData for the armed
// wake-up. Set by uring_ops.cc (kTagOp, kTagTimeout) and uring_engine.cc.
inline constexpr uint64_t kWakeData = 1;
inline constexpr uint64_t kTagMask = 7;
inline constexpr uint64_t kTagOp = 0;
inline constexpr uint64_t kTagTimeout = 1;     // an operation's linked timeout
inline constexpr uint64_t kTagCancel = 2;      // a CloseRequest from another thread
inline constexpr uint64_t kTagCancelHere = 3;  // cancel_now's own cancel
inline constexpr uint64_t kTagInterrupt = 4;   // the cancel of an operation a signal interrupted
inline constexpr uint64_t kTagMultishot = 5;   // an Acceptor's armed multishot accept (io/acceptor.h)
inline constexpr uint64_t kTagMultishotCancel = 6;  // the cancel of one

// One operation's record, on the waiting ULT's stack.
//
// Interrupted by a signal handler (uring_ops.cc): the ULT, woken while
// `remaining` is not zero, adds one to it (unless it already reached zero:
// then the operation is over) and posts the Completion to the engine that
// has the operation (post_op_cancel: it may be another worker's); that
// engine submits IORING_OP_ASYNC_CANCEL for it (kTagInterrupt), whose CQE
// takes the added one off. So `remaining` still counts every CQE that will
// name this Completion, and the ULT leaves (its stack frame with it) only
// after the last one.
struct alignas(8) Completion {
  rt::UltDesc* ult = nullptr;
  int fd = -1;                    // the descriptor it works on (-1: none)
  std::atomic<int> remaining{0};  // CQEs still to come
  int32_t res = 0;                // the operation's result
  bool timed_out = false;         // its linked timeout fired
  __kernel_timespec ts{};         // the deadline (read by the kernel at submission)
  UringEngine* engine = nullptr;  // the engine it was submitted on (for an interrupt)
  bool interrupt_hit = false;     // the interrupt's cancel found the op (its CQE said 0)
};

class UringEngine final : public Engine {
 public:
  static constexpr Kind kKind = Kind::kUring;
  static constexpr unsigned kSqEntries = 256;
  static constexpr unsigned kCqFactor = 4;

  UringEngine();
  ~UringEngine() override;

  // rt::Poller (wait() and wake(): Engine)
  void poll() override;
  void close_after_fork() override;

  // Owner only (see Engine::cancel_now): submits IORING_OP_ASYNC_CANCEL
  // for every request on fd and waits in io_uring_enter for its CQE
  // (posted as the kernel processes the cancel, without waiting for io),
  // reaping other completions meanwhile.
  void cancel_now(int fd) override;
  // Owner only: `n` consecutive SQEs (n <= 2), flushing and reaping while
  // the SQ is full. Never fails once ready().
  io_uring_sqe* get_sqes(unsigned n);
  // Owner only: the SQEs just taken are complete; they go out at the next
  // scheduler pass.
  void note_prepared() { ++pending_; }
  // Owner only (a ULT of this worker, before it parks): arms m's multishot
  // accept on this ring (io/acceptor.h). The caller has set m->armed and
  // m->engine, taken the armed reference and added one to m->idle; the
  // final CQE gives them back. Counted in in_flight and fd_ops like any
  // operation, so io::close(m->fd) finds and cancels it.
  void arm_multishot_accept(MultishotAccept* m);
  // Any thread: the owner cancels m's armed accept at its next pass (the
  // caller has taken a reference for the cancel; its CQE drops it).
  void post_multishot_cancel(MultishotAccept* m) {
    post_op_cancel(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(m) | 1));
  }
  uint32_t unsubmitted() const { return pending_; }

  unsigned setup_flags() const { return setup_flags_; }
  // Owner only, after ready(): the ring takes IORING_OP_WAITID.
  bool has_waitid() const { return has_waitid_op_; }
  // For tests: shrink the SQ of engines created from now on.
  static void set_sq_entries_for_test(unsigned n);

 private:
  bool setup() override;
  void sleep_until(int64_t deadline_ns) override;
  void process_requests() override;
  void submit();
  // Counts one io_uring_enter call that returned r (>= 0: SQEs submitted).
  void counted_enter(int r);
  void reap();
  void handle(const io_uring_cqe* cqe);
  void arm_wake();

  io_uring ring_{};
  uint32_t pending_ = 0;  // SQEs prepared since the last submit
  uint64_t unparked_ = 0;  // ULTs made runnable by completions, ever (owner only)
  unsigned setup_flags_ = 0;
  bool use_futex_op_ = false;
  bool has_waitid_op_ = false;  // IORING_OP_WAITID (Linux 6.7)
  bool wake_armed_ = false;
  uint64_t eventfd_buf_ = 0;
};

}  // namespace weft::io_internal
