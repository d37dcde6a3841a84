// io/epoll_engine.h — the fallback: one epoll instance per worker.
//
// Used where io_uring is missing or forbidden, or with WEFT_IO=epoll. An
// operation tries the non-blocking system call; on EAGAIN the ULT registers
// interest in the fd on its worker's epoll (EPOLLONESHOT), pins itself to
// the worker (the registration is the worker's own state) and parks until
// the fd is ready, its deadline passes (-ETIMEDOUT) or io::close cancels it
// (-ECANCELED); then it tries again. The worker polls its epoll at each
// scheduler pass while anybody waits on it, and sleeps in epoll_wait when
// idle, with its next timer as the timeout. Wake-ups from other threads
// come through an eventfd in the epoll set, written only when the worker
// has said it sleeps (FutexPoller's word protocol).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "io/engine.h"

namespace weft::io_internal {

class EpollEngine final : public Engine {
 public:
  EpollEngine();
  ~EpollEngine() override;

  void wait(int64_t deadline_ns) override;
  void wake() override;
  void poll() override;
  void close_after_fork() override;

  // Owner only, from a ULT: waits until fd is ready for `events` (EPOLLIN
  // and/or EPOLLOUT). 0 when ready (or in error/hang-up: the caller's retry
  // reports it), -ETIMEDOUT, -ECANCELED (io::close), or -errno from
  // epoll_ctl (-EPERM for a regular file: always ready).
  int wait_ready(int fd, uint32_t events, int64_t deadline_ns);

 private:
  struct Waiter {
    rt::Ult* ult;
    uint32_t events;
    int result = 1;  // 1 waiting, 0 ready, -ECANCELED
  };
  struct FdState {
    int fd = -1;
    bool registered = false;
    uint32_t armed = 0;            // events armed in epoll (0: disarmed)
    std::vector<Waiter*> waiters;
  };

  bool ready();
  void dispatch(int timeout_ms);
  void rearm(FdState* st);
  void process_requests();

  enum class State { kNew, kReady, kFailed } state_ = State::kNew;
  int epfd_ = -1;
  int eventfd_ = -1;
  std::atomic<uint32_t> word_{0};
  std::unordered_map<int, FdState> fds_;   // owner only
  uint32_t waiting_ = 0;                   // waiters across fds_
};

}  // namespace weft::io_internal
