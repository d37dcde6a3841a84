#include "io/epoll_engine.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>

#include "runtime/log.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "weft/runtime.h"

namespace weft::io_internal {
#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441  // Linux 5.11; glibc's headers may predate it
#endif

namespace {
constexpr uint64_t kEventfdKey = ~uint64_t{0};  // epoll data of the wake-up eventfd
constexpr int kMaxEvents = 64;
constexpr int64_t kRetryMinNs = 1000 * 1000;         // setup retries: 1 ms,
constexpr int64_t kRetryMaxNs = 1000 * 1000 * 1000;  // doubling up to 1 s

// 1: epoll_pwait2 works, 0: it does not (ENOSYS, or EPERM from a seccomp
// profile that predates it), -1: not tried yet. Process-wide.
std::atomic<int> have_pwait2{-1};

// epoll_wait with a timeout in nanoseconds (-1: none).
long epoll_wait_ns(int epfd, epoll_event* events, int max, int64_t timeout_ns) {
  if (have_pwait2.load(std::memory_order_relaxed) != 0) {
    timespec ts{};  // the kernel's __kernel_timespec on x86_64
    if (timeout_ns >= 0) {
      ts.tv_sec = timeout_ns / 1000000000LL;
      ts.tv_nsec = timeout_ns % 1000000000LL;
    }
    long n = sys::raw_syscall(SYS_epoll_pwait2, epfd, reinterpret_cast<long>(events), max,
                              timeout_ns >= 0 ? reinterpret_cast<long>(&ts) : 0, 0, 0);
    if (n != -ENOSYS && n != -EPERM) {
      have_pwait2.store(1, std::memory_order_relaxed);
      return n;
    }
    have_pwait2.store(0, std::memory_order_relaxed);
  }
  // Milliseconds, rounded up (never wake before the deadline), clamped.
  int ms = -1;
  if (timeout_ns >= 0) {
    int64_t m = timeout_ns / 1000000 + (timeout_ns % 1000000 != 0 ? 1 : 0);
    ms = m > INT32_MAX ? INT32_MAX : static_cast<int>(m);
  }
  return sys::raw_syscall(SYS_epoll_wait, epfd, reinterpret_cast<long>(events), max, ms);
}
}  // namespace

EpollEngine::EpollEngine() : Engine(Kind::kEpoll) {}

EpollEngine::~EpollEngine() {
  unregister_engine(this);  // first: nobody may post to or wake us from here on
  if (epfd_ >= 0) sys::raw_syscall(SYS_close, epfd_);
  if (int efd = eventfd_.load(std::memory_order_relaxed); efd >= 0) sys::raw_syscall(SYS_close, efd);
}

bool EpollEngine::ready() {
  if (state_ == State::kReady) return true;
  if (state_ == State::kFailed && rt::monotonic_ns() < retry_at_ns_) return false;
  long ep = sys::raw_syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
  long ev = sys::is_error(ep) ? 0 : sys::raw_syscall(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sys::is_error(ep) || sys::is_error(ev)) {
    if (!sys::is_error(ep)) sys::raw_syscall(SYS_close, ep);
    int err = static_cast<int>(sys::is_error(ep) ? -ep : -ev);
    // Not for good: log the first failure of a run and retry after a
    // backoff (the worker's io runs as blocking calls meanwhile).
    state_ = State::kFailed;
    backoff_ns_ = backoff_ns_ == 0 ? kRetryMinNs : std::min(backoff_ns_ * 2, kRetryMaxNs);
    retry_at_ns_ = rt::monotonic_ns() + backoff_ns_;
    if (failures_++ == 0) {
      sys::raw_logf("weft: epoll/eventfd setup failed on a worker (%s); its io runs as blocking calls until a "
                    "retry succeeds (retried at its next io, backing off up to 1 s)",
                    strerror(err));
    }
    return false;
  }
  if (failures_ != 0) {
    sys::raw_logf("weft: epoll setup succeeded on a worker after %u failed attempts; its io uses epoll again",
                  failures_);
  }
  failures_ = 0;
  backoff_ns_ = 0;
  epfd_ = static_cast<int>(ep);
  eventfd_.store(static_cast<int>(ev), std::memory_order_relaxed);
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = kEventfdKey;
  sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_ADD, ev, reinterpret_cast<long>(&e));
  state_ = State::kReady;
  register_engine(this);
  return true;
}

void EpollEngine::rearm(FdState* st) {
  uint32_t want = 0;
  for (Waiter* w : st->waiters) want |= w->events;
  if (want == 0) {
    st->armed = 0;  // ONESHOT already disarmed it
    return;
  }
  epoll_event e{};
  // RDHUP (the peer shut its side down) releases readers only: asked for
  // with writers alone, it would report at once, every time, while the
  // writer still waits for buffer space (a busy loop).
  e.events = want | EPOLLONESHOT | ((want & EPOLLIN) ? EPOLLRDHUP : 0u);
  e.data.u64 = static_cast<uint64_t>(static_cast<uint32_t>(st->fd));
  // `registered` is a hint: entries are dropped when they have no waiters,
  // and fds are closed and reused behind our back. Fall back either way.
  int op = st->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  long r = sys::raw_syscall(SYS_epoll_ctl, epfd_, op, st->fd, reinterpret_cast<long>(&e));
  if (r == -ENOENT && op == EPOLL_CTL_MOD) {
    r = sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_ADD, st->fd, reinterpret_cast<long>(&e));
  } else if (r == -EEXIST && op == EPOLL_CTL_ADD) {
    r = sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_MOD, st->fd, reinterpret_cast<long>(&e));
  }
  if (r == 0) {
    st->registered = true;
    st->armed = want;
  } else {
    // Cannot watch it (EPERM: a regular file, always ready; EBADF: closed):
    // let every waiter retry its call, which reports the real state.
    for (Waiter* w : st->waiters) {
      w->result = r == -EPERM ? 0 : static_cast<int>(r);
      rt::unpark(w->ult);
    }
    waiting_ -= static_cast<uint32_t>(st->waiters.size());
    st->waiters.clear();
    st->armed = 0;
  }
}

int EpollEngine::wait_ready(int fd, uint32_t events, int64_t deadline_ns) {
  if (!ready()) return -ENOSYS;
  rt::UltDesc* self = rt::caller().ult;
  // The registration lives in this worker's state: resume here.
  Pin pin;
  FdState& st = fds_[fd];  // node-based: stays valid while other fds come and go
  st.fd = fd;
  Waiter me{self, events};
  st.waiters.push_back(&me);
  ++waiting_;
  in_flight.fetch_add(1, std::memory_order_acq_rel);  // io::close must find us
  fd_ops_add(fd, 1);
  struct Done {
    EpollEngine* e;
    int fd;
    ~Done() {
      fd_ops_add(fd, -1);
      e->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    }
  } done{this, fd};
  if ((st.armed & events) != events) rearm(&st);
  if (st.waiters.empty()) fds_.erase(fd);  // rearm failed and released us already
  while (me.result == 1) {
    if (deadline_ns < 0) {
      rt::park_current(self);
    } else if (!rt::park_current_until(self, deadline_ns) || rt::monotonic_ns() >= deadline_ns) {
      if (me.result == 1) me.result = -ETIMEDOUT;
    }
  }
  // Still listed if we timed out: take ourselves out (we are on the owner).
  auto it = fds_.find(fd);
  if (it != fds_.end()) {
    auto& v = it->second.waiters;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] == &me) {
        v.erase(v.begin() + static_cast<long>(i));
        --waiting_;
        break;
      }
    }
    if (v.empty()) fds_.erase(it);
  }
  return me.result;
}

void EpollEngine::dispatch(int64_t timeout_ns) {
  epoll_event events[kMaxEvents];
  long n = epoll_wait_ns(epfd_, events, kMaxEvents, timeout_ns);
  if (n <= 0) return;
  for (long i = 0; i < n; ++i) {
    if (events[i].data.u64 == kEventfdKey) {
      uint64_t v;
      sys::raw_syscall(SYS_read, eventfd_.load(std::memory_order_relaxed), reinterpret_cast<long>(&v), sizeof v);
      continue;
    }
    int fd = static_cast<int>(events[i].data.u64);
    auto it = fds_.find(fd);
    if (it == fds_.end()) continue;
    FdState& st = it->second;
    st.armed = 0;  // ONESHOT
    uint32_t ev = events[i].events;
    bool err = ev & (EPOLLERR | EPOLLHUP);
    for (size_t k = 0; k < st.waiters.size();) {
      Waiter* w = st.waiters[k];
      bool go = err || (ev & w->events) || ((w->events & EPOLLIN) && (ev & EPOLLRDHUP));
      if (go) {
        w->result = 0;
        rt::unpark(w->ult);
        st.waiters.erase(st.waiters.begin() + static_cast<long>(k));
        --waiting_;
      } else {
        ++k;
      }
    }
    rearm(&st);
    if (st.waiters.empty()) fds_.erase(it);  // still registered (disarmed) in epoll
  }
}

void EpollEngine::cancel_now(int fd) {
  auto it = fds_.find(fd);
  if (it == fds_.end()) return;
  for (Waiter* w : it->second.waiters) {
    w->result = -ECANCELED;
    rt::unpark(w->ult);
  }
  waiting_ -= static_cast<uint32_t>(it->second.waiters.size());
  if (it->second.registered) sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_DEL, fd, 0);
  fds_.erase(it);
}

void EpollEngine::process_requests() {
  for (CloseRequest* r : take_requests()) {
    cancel_now(r->fd);
    close_request_ack(r);
  }
}

void EpollEngine::poll() {
  if (has_requests()) process_requests();
  if (state_ == State::kReady && waiting_ != 0) dispatch(0);
}

void EpollEngine::wait(int64_t deadline_ns) {
  if (!ready()) {
    rt::futex_word_wait(&word_, deadline_ns);
    if (has_requests()) process_requests();
    return;
  }
  if (word_.exchange(2, std::memory_order_acq_rel) == 1) {
    word_.exchange(0, std::memory_order_acq_rel);
    poll();
    return;
  }
  if (has_requests()) process_requests();
  int64_t timeout_ns = -1;
  if (deadline_ns >= 0) {
    int64_t rel = deadline_ns - rt::monotonic_ns();
    timeout_ns = rel <= 0 ? 0 : rel;
  }
  dispatch(timeout_ns);
  word_.exchange(0, std::memory_order_acq_rel);
  if (has_requests()) process_requests();
}

void EpollEngine::close_after_fork() {
  // The epoll instance and eventfd are shared with the parent's copy of
  // this worker: closing our descriptors leaves the parent's untouched;
  // epoll_ctl or a read would change the parent's.
  if (epfd_ >= 0) sys::raw_syscall(SYS_close, epfd_);
  if (eventfd_ >= 0) sys::raw_syscall(SYS_close, eventfd_);
  epfd_ = eventfd_ = -1;
  state_ = State::kFailed;  // never used again: the worker gets a new engine
  retry_at_ns_ = INT64_MAX;
}

void EpollEngine::wake() {
  if (word_.exchange(1, std::memory_order_acq_rel) != 2) return;
  if (int efd = eventfd_.load(std::memory_order_relaxed); efd >= 0) {
    uint64_t one = 1;
    sys::raw_syscall(SYS_write, efd, reinterpret_cast<long>(&one), sizeof one);
  } else {
    sys::futex_wake(&word_, 1);
  }
}

}  // namespace weft::io_internal
