// io/engine.h — the per-worker io engine: a runtime Poller that also does io.
//
// Each worker's Poller is an Engine (registered by io/register.cc): a
// UringEngine (one io_uring per worker) or an EpollEngine (one epoll
// instance per worker). The runtime only sees the Poller interface; io ops
// find the calling ULT's worker's engine through current_engine().
//
// Ownership: an engine is used by its worker's KLT only (the ring is
// SINGLE_ISSUER), except wake() and post_cancel(), which any thread calls.
// "Its worker's KLT" includes that KLT inside a weft::blocking() region:
// a handoff moves a blocked worker's queues and timers, never its engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/locks.h"
#include "runtime/park.h"
#include "runtime/poller.h"
#include "sys/raw_log.h"
#include "weft/io.h"
#include "weft/sync.h"

#include <signal.h>

namespace weft::io_internal {

// io::close's request to the engines that had operations in flight when it
// looked: cancel everything in flight on fd, then acknowledge. Heap-allocated
// and reference counted (the closer and each engine it was posted to hold
// one reference), because the closer may stop waiting before every engine
// has answered (close.cc, "Closing"). Created and posted by close.cc;
// acknowledged with close_request_ack() by each engine, exactly once.
struct alignas(8) CloseRequest {  // 8-aligned: a tagged io_uring user_data
  explicit CloseRequest(int f) : fd(f) {}
  const int fd;
  // The state word: the number of engines that have not acknowledged yet
  // (low bits) and kAbandoned once the closer stopped waiting. Whoever
  // makes the word exactly kAbandoned (count zero, flag set) closes fd, and
  // so does the closer if it finds the count zero:
  //   closer, on timeout:  prev = fetch_or(kAbandoned)
  //                        count(prev) == 0: every engine answered in the
  //                        meantime, the closer closes fd itself;
  //                        else: the engine that answers last closes it.
  //   engine, on ack:      prev = fetch_sub(1)
  //                        prev == kAbandoned|1: last, and the closer is
  //                        gone: this engine closes fd.
  // Both are read-modify-writes of one word, so they are totally ordered:
  // exactly one party closes fd. The closer adds one to the count before
  // it posts to an engine, so the count cannot reach zero while it still
  // posts.
  static constexpr uint32_t kAbandoned = 1u << 31;
  std::atomic<uint32_t> state{0};
  WaitGroup acked{0};                  // counted down by every acknowledgement
  std::atomic<uint32_t> refs{1};   // the closer's
};

// Whether a signal handler that runs on the waiting ULT ends the operation
// with EINTR, as it would end the system call (signal(7), "Interruption of
// system calls and library functions by signal handlers"):
//  kNever         file operations (pread, pwrite, openat, close, fsync,
//                 statx) and waitid: weft lets them finish (a disk is not a
//                 slow device; close and waitid keep their simplest contract);
//  kUnlessRestart read, write, readv, writev, recv, send, accept, connect:
//                 slow-device calls, which a handler installed with
//                 SA_RESTART restarts (here: the wait simply goes on);
//  kAlways        poll: never restarted.
enum class Interrupt { kNever, kUnlessRestart, kAlways };

// Takes a reference for an engine (before posting r to it).
inline void close_request_ref(CloseRequest* r) { r->refs.fetch_add(1, std::memory_order_relaxed); }
// Drops a reference; the last one frees r.
void close_request_unref(CloseRequest* r);
// An engine has cancelled what it had in flight on r->fd: acknowledges
// (closing fd if it is the last engine and the closer has given up
// waiting) and drops the engine's reference. Any thread.
void close_request_ack(CloseRequest* r);

// What both engines share: the setup state machine (kNew -> kReady, or
// kFailed with a backoff and a retry; its logging), the wake word and its
// eventfd, wait()'s prologue, and the cross-worker cancel queue. A derived
// engine supplies setup(), sleep_until() and process_requests().
class Engine : public rt::Poller {
 public:
  enum class Kind { kUring, kEpoll };
  explicit Engine(Kind k) : kind_(k) { layer_object_ = static_cast<Engine*>(this); }
  // Acknowledges the requests still queued (an engine that goes away has
  // nothing in flight: its worker never exits with operations in flight)
  // and closes the wake-up eventfd. Derived destructors unregister first,
  // so that nobody posts to or wakes a half-destroyed engine.
  ~Engine() override;
  Kind kind() const { return kind_; }

  // Owner only: whether the engine is set up (its ring or epoll instance
  // exists), trying to set it up if it is not and no retry is pending.
  // While false, operations run as plain blocking calls. Retry policy:
  // after a failed setup, the next attempt comes kRetryMinNs later, each
  // further one twice as late, at most kRetryMaxNs apart (setup_failed).
  bool ready() {
    if (state_ == State::kReady) return true;
    if (state_ == State::kFailed && rt::monotonic_ns() < retry_at_ns_) return false;
    return setup();
  }

  // rt::Poller. wait(): while the engine is not set up, sleeps on word_
  // like FutexPoller; once it is, announces the sleep on word_ (returning
  // at once, after a poll(), if a wake is pending) and lets the derived
  // engine sleep in its ring or epoll (sleep_until).
  void wait(int64_t deadline_ns) final;
  // Any thread: FutexPoller's word protocol (runtime/poller.h). A system
  // call only when the owner has said it sleeps (word_ == 2): an eventfd
  // write where the engine has one (an epoll engine, a ring without
  // IORING_OP_FUTEX_WAIT), else a futex wake, which reaches the ring's
  // armed FUTEX_WAIT or a plain futex_word_wait.
  void wake() final;

  // Owner only — a ULT running on this engine's worker, or that worker's
  // own KLT inside a weft::blocking() region (it is still the ring's only
  // issuer; the monitor moves a blocked worker's queues, never its
  // engine): cancels every operation in flight on fd here, and returns
  // once they have been cancelled. Does not park.
  virtual void cancel_now(int fd) = 0;

  // Any thread: queues r for the owner, which cancels what it has in
  // flight on r->fd and then calls close_request_ack(r). The owner is
  // woken. The caller has taken a reference for this engine.
  void post_cancel(CloseRequest* r);

  // Any thread: queues `op` (the backend's own record of one operation in
  // flight here) for the owner, which cancels that operation at its next
  // pass (process_requests). The owner is woken. For a ULT whose wait a
  // signal handler interrupted on another worker (uring_ops.cc).
  void post_op_cancel(void* op);

  // Operations this engine has in flight (read by io::close on any thread).
  std::atomic<int64_t> in_flight{0};

  // Fork (engine.cc's hooks, under the registry lock): the request queue is
  // locked across the fork so that it is consistent in the child, where the
  // kept worker's engine acknowledges what it holds when it is replaced.
  void fork_lock_requests() { req_lock_.lock(); }
  void fork_unlock_requests() { req_lock_.unlock(); }
  void fork_reset_request_lock() { req_lock_.reset_after_fork(); }

 protected:
  // Setup retries after a failure: the first after kRetryMinNs, each next
  // one twice as late, at most kRetryMaxNs apart.
  static constexpr int64_t kRetryMinNs = 1000 * 1000;
  static constexpr int64_t kRetryMaxNs = 1000 * 1000 * 1000;

  //   kNew    -> kReady   setup() succeeded (setup_succeeded)
  //   kNew    -> kFailed  setup() failed (setup_failed): retry_at_ns_ set
  //   kFailed -> kReady   a retry after retry_at_ns_ succeeded
  //   kFailed -> kFailed  a retry failed: the backoff doubles
  //   any     -> kNew or kFailed for good: close_after_fork in a child
  enum class State { kNew, kReady, kFailed };

  // Owner only: makes the ring or epoll instance (and the eventfd, if the
  // engine needs one); returns setup_succeeded(...) or setup_failed(...).
  virtual bool setup() = 0;
  // Owner only, from wait() once the engine is set up and word_ is 2 (the
  // sleep is announced): sleeps in the ring or epoll until a wake, a
  // completion or the deadline, and resets word_ to 0 before reaping (the
  // exchange orders the caller's queue re-checks after it, as in
  // FutexPoller).
  virtual void sleep_until(int64_t deadline_ns) = 0;
  // Owner only: handles the requests posted since the last call.
  virtual void process_requests() = 0;

  // A failed setup: state kFailed; logs the first failure of a run (and
  // says that the worker keeps trying; `what` names the step, e.g. "io_uring
  // setup"), schedules the next attempt. Returns false.
  bool setup_failed(const char* what, int err);
  // A setup that worked: state kReady; logs the recovery if attempts had
  // failed ("<what> succeeded ...; its io uses <again> again"), resets the
  // backoff, registers the engine for io::close. Returns true.
  bool setup_succeeded(const char* what, const char* again);
  // In a forked child: the engine is never set up again (ready() stays false).
  void fail_for_good() {
    state_ = State::kFailed;
    retry_at_ns_ = INT64_MAX;
  }
  // Makes the wake-up eventfd (non-blocking, close-on-exec) and publishes
  // it for wake(): its fd, or -errno.
  long open_eventfd();
  // In a forked child (async-signal-safe): closes the eventfd, unused.
  void close_eventfd_after_fork();

  // Owner: the requests posted since the last call, oldest first.
  std::vector<CloseRequest*> take_requests();
  // Owner: the operation cancels posted since the last call.
  std::vector<void*> take_op_cancels();
  bool has_requests() const { return has_requests_.load(std::memory_order_acquire); }

  State state_ = State::kNew;  // owner only
  std::atomic<uint32_t> word_{0};  // 0 idle, 1 wake pending, 2 asleep (runtime/poller.h)
  // The wake-up eventfd (-1: none; wake() then makes a futex wake).
  // Written once by the owner when the engine is set up (at its first io,
  // perhaps after failed attempts), read by wake() on any thread: atomic.
  // Relaxed is enough: a waker that saw word_ == 2 (acquire) sees at least
  // the value the sleeper armed with; a newer one means the sleeper is
  // already awake, and the extra eventfd write is a spurious wake-up.
  // Regression (issue 9, TSan gate): a plain int, its write at setup raced
  // with wake() from a spawning thread (io_fault_test
  // IoFault.EngineSetupUnderEmfileRecovers under TSan, on io_uring and on
  // epoll).
  std::atomic<int> eventfd_{-1};

 private:
  Kind kind_;
  int64_t retry_at_ns_ = 0;  // kFailed: no new attempt before this
  int64_t backoff_ns_ = 0;   // kFailed: the wait after the next failure
  uint32_t failures_ = 0;    // failed setups since the last success
  rt::KltMutex req_lock_;
  std::vector<CloseRequest*> requests_;  // guarded by req_lock_
  std::vector<void*> op_cancels_;        // guarded by req_lock_
  // has_requests_: true while either list may be non-empty (set under the
  // lock by a post; cleared under it when both lists are empty).
  std::atomic<bool> has_requests_{false};
};

// The engine behind a worker's poller (null: none, or not an io engine).
inline Engine* engine_of(rt::Poller* p) { return p != nullptr ? static_cast<Engine*>(p->layer_object()) : nullptr; }

// The engine of the calling ULT's worker, or null outside a ULT (and in a
// weft::blocking() region, which counts as outside).
inline Engine* current_engine() {
  rt::Caller c = rt::caller();
  return c.ult != nullptr ? engine_of(c.poller) : nullptr;
}

// The engine of the calling KLT's worker: a ULT's current worker, or the
// worker whose ULT runs a weft::blocking() region on this KLT. Null on a
// foreign thread.
inline Engine* own_engine() { return engine_of(rt::caller().poller); }

// Every live engine, for io::close's broadcast.
void register_engine(Engine* e);
void unregister_engine(Engine* e);
// Calls f(e) for every live engine with operations in flight, under the
// registry lock (f must not block; an engine stays alive while f runs,
// as engines unregister before they are destroyed).
template <class F>
void for_each_busy_engine(F f);

// Per-fd count of operations in flight in any engine (fds < kMaxTrackedFd;
// others are always treated as busy).
inline constexpr int kMaxTrackedFd = 1 << 20;
void fd_ops_add(int fd, int delta);
bool fd_maybe_busy(int fd);

// waitid(2) through the calling ULT's ring (IORING_OP_WAITID, Linux 6.7):
// parks the ULT until a child matching (idtype, id) changes state as
// `options` asks (WEXITED, WNOWAIT; never WNOHANG) or the deadline
// passes. 0 with *info filled, -ETIMEDOUT, -errno (-ECHILD: no such
// child), or -ENOSYS when the calling context has no ring that takes the
// opcode (a thread, the epoll backend, an older kernel): then the caller
// waits another way.
int uring_waitid(int idtype, int id, siginfo_t* info, int options, io::Deadline d);

// In a forked child: every fd counter to zero.
void fd_ops_reset_after_fork();

// Fork hooks of io/ (engine registry, resolver threads), registered with the
// runtime once (register.cc).
void register_fork_hooks();
void resolve_fork_prepare();
void resolve_fork_parent();
void resolve_fork_child();

// Engine construction for the runtime's poller factory.
std::unique_ptr<rt::Poller> make_uring_engine();
std::unique_ptr<rt::Poller> make_epoll_engine();

// Registry internals, for for_each_busy_engine.
rt::KltMutex& registry_lock();
std::vector<Engine*>& registry();

template <class F>
void for_each_busy_engine(F f) {
  rt::LockGuard<rt::KltMutex> g(registry_lock());
  for (Engine* e : registry())
    if (e->in_flight.load(std::memory_order_acquire) > 0) f(e);
}

}  // namespace weft::io_internal
