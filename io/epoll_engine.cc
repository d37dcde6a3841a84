// io/epoll_engine.cc — a worker's epoll instance: setup, readiness waits
// for ULTs, cancels, and idle waits (see epoll_engine.h).
#include "io/epoll_engine.h"

#include <sys/epoll.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>

#include "runtime/debug_info.h"
#include "runtime/trace.h"
#include "runtime/log.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "weft/runtime.h"

namespace weft::io_internal {
#ifndef SYS_epoll_pwait2
#define SYS_epoll_pwait2 441  // Linux 5.11; glibc's headers may predate it
#endif

namespace {
constexpr uint64_t kEventfdKey = ~uint64_t{0};  // epoll data of the wake-up eventfd
// In FdState::armed: the descriptor is armed (its events may be none at
// all). A bit no waiter asks for: waiters' events are poll/epoll bits.
constexpr uint32_t kArmed = EPOLLONESHOT;
constexpr int kMaxEvents = 64;

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

EpollEngine::EpollEngine() : Engine(kKind) {}

EpollEngine::~EpollEngine() {
  unregister_engine(this);  // first: nobody may post to or wake us from here on
  if (epfd_ >= 0) sys::raw_syscall(SYS_close, epfd_);
  // ~Engine closes the eventfd.
}

bool EpollEngine::setup() {
  long ep = sys::raw_syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
  long ev = sys::is_error(ep) ? 0 : open_eventfd();
  if (sys::is_error(ep) || sys::is_error(ev)) {
    if (!sys::is_error(ep)) sys::raw_syscall(SYS_close, ep);
    return setup_failed("epoll/eventfd setup", static_cast<int>(sys::is_error(ep) ? -ep : -ev));
  }
  epfd_ = static_cast<int>(ep);
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = kEventfdKey;
  sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_ADD, ev, reinterpret_cast<long>(&e));
  return setup_succeeded("epoll setup", "epoll");
}

void EpollEngine::rearm(FdState* st) {
  uint32_t want = 0;
  for (Waiter* w : st->waiters) want |= w->events;
  if (st->waiters.empty()) {
    st->armed = 0;  // ONESHOT already disarmed it
    return;
  }
  // Waiters for no event at all wait for EPOLLERR/EPOLLHUP, which epoll
  // reports whatever is asked: armed with `want` 0 (kArmed says it is).
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
    rt::bump(counters_.submitted);
    st->registered = true;
    st->armed = want | kArmed;
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

int EpollEngine::wait_ready(int fd, uint32_t events, int64_t deadline_ns, Interrupt in) {
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
  if (!(st.armed & kArmed) || (st.armed & events) != events) rearm(&st);
  if (st.waiters.empty()) fds_.erase(fd);  // rearm failed and released us already
  uint64_t mark = in == Interrupt::kNever ? 0 : rt::handler_mark(self);
  if (me.result == 1 && rt::stop_requested(self)) me.result = -ECANCELED;  // asked before the wait began
  const char* what = (events & EPOLLOUT) ? ((events & EPOLLIN) ? "poll" : "wait writable") : "wait readable";
  rt::WaitNote note(self, what, nullptr, fd);
  rt::trace::IoSpan span(self, what, fd, 0, &me.result);  // done: 0 ready, or -errno
  while (me.result == 1) {
    if (deadline_ns < 0) {
      rt::park_current(self);
    } else if (!rt::park_current_until(self, deadline_ns) || rt::monotonic_ns() >= deadline_ns) {
      if (me.result == 1) me.result = -ETIMEDOUT;
    }
    // A signal handler ran on this ULT and ends the wait (engine.h,
    // Interrupt); we are on the owner (pinned), so leaving is local.
    if (me.result == 1 && in != Interrupt::kNever &&
        rt::handler_interrupts(self, mark, in == Interrupt::kUnlessRestart))
      me.result = -EINTR;
    // A stop request (park.h) ends the wait: nothing was done yet.
    if (me.result == 1 && rt::stop_requested(self)) me.result = -ECANCELED;
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
  rt::bump(counters_.enters);
  if (n <= 0) return;
  rt::bump_by(counters_.completed, static_cast<uint64_t>(n));
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
  // An epoll waiter is pinned to its engine and stops its wait itself.
  std::vector<void*> stray = take_op_cancels();
  WEFT_DCHECK(stray.empty(), "an operation cancel posted to an epoll engine");
  for (CloseRequest* r : take_requests()) {
    cancel_now(r->fd);
    close_request_ack(r);
  }
}

void EpollEngine::poll() {
  if (has_requests()) process_requests();
  if (state_ == State::kReady && waiting_ != 0) dispatch(0);
}

void EpollEngine::sleep_until(int64_t deadline_ns) {
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
  epfd_ = -1;
  close_eventfd_after_fork();
  fail_for_good();  // never used again: the worker gets a new engine
}

}  // namespace weft::io_internal
