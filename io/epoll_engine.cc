#include "io/epoll_engine.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <cstring>

#include "runtime/log.h"
#include "sys/futex.h"
#include "sys/raw_log.h"
#include "sys/raw_syscall.h"
#include "weft/runtime.h"

namespace weft::io_internal {
namespace {
constexpr uint64_t kEventfdKey = ~uint64_t{0};  // epoll data of the wake-up eventfd
constexpr int kMaxEvents = 64;
}  // namespace

EpollEngine::EpollEngine() : Engine(Kind::kEpoll) {}

EpollEngine::~EpollEngine() {
  if (epfd_ >= 0) sys::raw_syscall(SYS_close, epfd_);
  if (eventfd_ >= 0) sys::raw_syscall(SYS_close, eventfd_);
}

bool EpollEngine::ready() {
  if (state_ != State::kNew) return state_ == State::kReady;
  long ep = sys::raw_syscall(SYS_epoll_create1, EPOLL_CLOEXEC);
  long ev = sys::raw_syscall(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (sys::is_error(ep) || sys::is_error(ev)) {
    if (!sys::is_error(ep)) sys::raw_syscall(SYS_close, ep);
    if (!sys::is_error(ev)) sys::raw_syscall(SYS_close, ev);
    state_ = State::kFailed;
    sys::raw_logf("weft: epoll/eventfd setup failed on a worker; its io runs as blocking calls");
    return false;
  }
  epfd_ = static_cast<int>(ep);
  eventfd_ = static_cast<int>(ev);
  epoll_event e{};
  e.events = EPOLLIN;
  e.data.u64 = kEventfdKey;
  sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_ADD, eventfd_, reinterpret_cast<long>(&e));
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
  rt::Ult* self = rt::current_ult();
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

void EpollEngine::dispatch(int timeout_ms) {
  epoll_event events[kMaxEvents];
  long n = sys::raw_syscall(SYS_epoll_wait, epfd_, reinterpret_cast<long>(events), kMaxEvents, timeout_ms);
  if (n <= 0) return;
  for (long i = 0; i < n; ++i) {
    if (events[i].data.u64 == kEventfdKey) {
      uint64_t v;
      sys::raw_syscall(SYS_read, eventfd_, reinterpret_cast<long>(&v), sizeof v);
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

void EpollEngine::process_requests() {
  for (CancelRequest* r = take_requests(); r != nullptr;) {
    CancelRequest* next = r->next;
    auto it = fds_.find(r->fd);
    if (it != fds_.end()) {
      for (Waiter* w : it->second.waiters) {
        w->result = -ECANCELED;
        rt::unpark(w->ult);
      }
      waiting_ -= static_cast<uint32_t>(it->second.waiters.size());
      if (it->second.registered) sys::raw_syscall(SYS_epoll_ctl, epfd_, EPOLL_CTL_DEL, r->fd, 0);
      fds_.erase(it);
    }
    r->done->count_down();
    r = next;
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
  int timeout_ms = -1;
  if (deadline_ns >= 0) {
    int64_t rel = deadline_ns - rt::monotonic_ns();
    timeout_ms = rel <= 0 ? 0 : static_cast<int>((rel + 999999) / 1000000);
  }
  dispatch(timeout_ms);
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
}

void EpollEngine::wake() {
  if (word_.exchange(1, std::memory_order_acq_rel) != 2) return;
  if (eventfd_ >= 0) {
    uint64_t one = 1;
    sys::raw_syscall(SYS_write, eventfd_, reinterpret_cast<long>(&one), sizeof one);
  } else {
    sys::futex_wake(&word_, 1);
  }
}

}  // namespace weft::io_internal
