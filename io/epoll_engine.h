// io/epoll_engine.h — the fallback: one epoll instance per worker.
//
// Used where io_uring is missing or forbidden, or with WEFT_IO=epoll. An
// operation tries the system call without waiting (per-call flags:
// MSG_DONTWAIT, RWF_NOWAIT; weft never sets O_NONBLOCK on a descriptor it
// did not create, see epoll_ops.cc); on EAGAIN the ULT registers
// interest in the fd on its worker's epoll (EPOLLONESHOT), pins itself to
// the worker (the registration is the worker's own state) and parks until
// the fd is ready, its deadline passes (-ETIMEDOUT) or io::close cancels it
// (-ECANCELED); then it tries again. The worker polls its epoll at each
// scheduler pass while anybody waits on it, and sleeps in epoll_wait when
// idle, with its next timer as the timeout (epoll_pwait2, nanoseconds,
// where the kernel has it — Linux 5.11 —, else epoll_wait, whose timeout is
// rounded up to whole milliseconds). Wake-ups from other threads
// come through an eventfd in the epoll set, written only when the worker
// has said it sleeps (FutexPoller's word protocol). The epoll instance and
// eventfd are made at the worker's first idle wait or io; if that fails
// (EMFILE, ...) it is logged, io runs as blocking calls meanwhile, and it
// is tried again after a backoff (1 ms, doubling up to 1 s).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "io/engine.h"

namespace weft::io_internal {

class EpollEngine final : public Engine {
 public:
  static constexpr Kind kKind = Kind::kEpoll;

  EpollEngine();
  ~EpollEngine() override;

  // rt::Poller (wait() and wake(): Engine)
  void poll() override;
  void close_after_fork() override;
  // Owner only: every waiter on fd returns -ECANCELED; fd leaves the epoll set.
  void cancel_now(int fd) override;

  // Owner only, from a ULT: waits until fd is ready for `events` (EPOLLIN
  // and/or EPOLLOUT). 0 when ready (or in error/hang-up: the caller's retry
  // reports it), -ETIMEDOUT, -ECANCELED (io::close), or -errno from
  // epoll_ctl (-EPERM for a regular file: always ready), or -EINTR when a
  // signal handler that ran on the ULT meanwhile ends the wait (`in`).
  int wait_ready(int fd, uint32_t events, int64_t deadline_ns, Interrupt in = Interrupt::kUnlessRestart);

 private:
  struct Waiter {
    rt::UltDesc* ult;
    uint32_t events;
    int result = 1;  // 1 waiting, 0 ready, -ECANCELED
  };
  struct FdState {
    int fd = -1;
    bool registered = false;
    uint32_t armed = 0;            // events armed in epoll | kArmed (0: disarmed)
    std::vector<Waiter*> waiters;
  };

  bool setup() override;
  void sleep_until(int64_t deadline_ns) override;
  void process_requests() override;
  void dispatch(int64_t timeout_ns);
  void rearm(FdState* st);

  int epfd_ = -1;
  std::unordered_map<int, FdState> fds_;   // owner only
  uint32_t waiting_ = 0;                   // waiters across fds_
};

}  // namespace weft::io_internal
