// hook/poll.cc — poll, ppoll, select, pselect, epoll_wait, epoll_pwait on a
// ULT, and the multi-descriptor wait they share (wait_any).
//
// The answer always comes from the kernel: each round asks it with a zero
// timeout (ppoll, pselect6, epoll_pwait), which gives exactly what the
// call would return (revents, the three sets, the events, EBADF/POLLNVAL,
// EINVAL, EFAULT). Only when nothing is ready yet does the ULT park, in
// wait_any, until something may be: then it asks again. So the hook never
// has to translate readiness itself; a wake-up that finds nothing (another
// reader took the data) just waits again.
//
// wait_any, how a ULT waits for one of several descriptors with weft::io's
// single-descriptor io::poll (weft::io has no multi-descriptor wait):
//   - one descriptor: io::poll on the calling ULT itself (one io_uring
//     POLL_ADD, or the epoll backend's readiness wait);
//   - n > 1: n helper ULTs, one io::poll each, spawned with every signal
//     blocked (so a process signal is taken by the caller, as on a thread,
//     never by a helper); the first to see its descriptor ready sets a flag
//     and unparks the caller. The caller parks (rt::park_current_until)
//     until the flag, the deadline, a signal handler that ran on it (EINTR),
//     or a stop request (ECANCELED); then it asks every helper to stop
//     (their io::poll is cancelled: -ECANCELED) and returns without
//     waiting for them (a helper's cancel may need a busy worker's next
//     scheduler pass); they end on their own, holding only the shared
//     state (AnyWait's handshake keeps them from waking a caller that has
//     left). Cost: a spawn and a poll operation per descriptor per wait
//     that parks
//     (benchmarks/hook_bench measures it); a poll that finds something
//     ready at once (the zero-timeout round) costs one system call.
// Limit: the epoll backend's readiness wait knows POLLIN and POLLOUT only;
// a descriptor polled there for POLLPRI alone (out-of-band data, select's
// exceptfds) wakes the caller only for errors and hang-ups or when the
// timeout expires (io_uring waits for any event).
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>

#include <cstring>
#include <memory>

#include "hook/hook_internal.h"
#include "runtime/park.h"

namespace weft::hook_internal {

namespace {

HOOK_DECLARE_NEXT(poll);
HOOK_DECLARE_NEXT(ppoll);
HOOK_DECLARE_NEXT(select);
HOOK_DECLARE_NEXT(pselect);
HOOK_DECLARE_NEXT(epoll_wait);
HOOK_DECLARE_NEXT(epoll_pwait);

__attribute__((constructor)) void resolve_poll() {
  (void)HOOK_NEXT(poll);
  (void)HOOK_NEXT(ppoll);
  (void)HOOK_NEXT(select);
  (void)HOOK_NEXT(pselect);
  (void)HOOK_NEXT(epoll_wait);
  (void)HOOK_NEXT(epoll_pwait);
}

weft::io::Deadline to_deadline(int64_t dl) {
  if (dl < 0) return weft::io::Deadline::none();
  return weft::io::Deadline::at(std::chrono::steady_clock::time_point(std::chrono::nanoseconds(dl)));
}

// The shared state of a multi-descriptor wait, shared (shared_ptr) by the
// caller and its helpers: the caller does not wait for the helpers to end
// (their cancellation may need a busy worker's next scheduler pass), so
// the helpers may outlive the call.
//
// The handshake that keeps a helper from waking a caller that has left
// (whose descriptor may be recycled by then):
//   helper (its io::poll returned)           caller (leaving)
//   CAS state 0 -> kWaking                   CAS state 0 -> kLeft
//     won: rt::unpark(waiter);                 won: no helper will touch
//          state = kWoken (release)                 the waiter any more
//     lost: the caller left, or another        lost: a helper is waking us:
//           helper woke it: nothing                  wait (yield) until
//                                                    state == kWoken
// Only one party wins the CAS from 0, so exactly one of "a helper unparks
// the waiter while it is still inside wait_any" or "no helper unparks it"
// happens.
struct AnyWait {
  static constexpr int kWaiting = 0, kWaking = 1, kWoken = 2, kLeft = 3;
  std::atomic<int> state{kWaiting};
  rt::UltDesc* waiter = nullptr;
};

// Parks `self` until *state leaves kWaiting, the deadline, a handler since
// `mark`, or a stop request (see wait_any).
int park_for(rt::UltDesc* self, const std::atomic<int>* state, int64_t dl, uint64_t mark) {
  for (;;) {
    if (state != nullptr && state->load(std::memory_order_acquire) != AnyWait::kWaiting) return 0;
    if (rt::stop_requested(self)) return -ECANCELED;
    if (rt::handler_interrupts(self, mark, /*restartable=*/false)) return -EINTR;
    if (dl >= 0) {
      if (now_ns() >= dl) return -ETIMEDOUT;
      (void)rt::park_current_until(self, dl);
    } else {
      rt::park_current(self);
    }
  }
}

}  // namespace

int wait_any(const pollfd* fds, size_t n, int64_t dl, uint64_t mark) {
  rt::UltDesc* self = rt::caller().ult;
  size_t live = 0, last = 0;
  for (size_t i = 0; i < n; ++i) {
    if (fds[i].fd >= 0) {
      ++live;
      last = i;
    }
  }
  if (live == 0) return park_for(self, nullptr, dl, mark);  // a sleep
  if (live == 1) {
    // A handler that ran before io::poll takes its own mark is ours to see.
    if (rt::stop_requested(self)) return -ECANCELED;
    if (rt::handler_interrupts(self, mark, false)) return -EINTR;
    int r = weft::io::poll(fds[last].fd, fds[last].events, to_deadline(dl));
    if (r == -ETIMEDOUT || r == -EINTR || r == -ECANCELED) return r;
    if (rt::handler_interrupts(self, mark, false)) return -EINTR;
    return 0;  // ready, or an error the kernel's own poll will report
  }
  auto st = std::make_shared<AnyWait>();
  st->waiter = self;
  std::vector<weft::JoinHandle<void>> helpers;
  helpers.reserve(live);
  sigset_t all, old;
  sigfillset(&all);
  // Helpers inherit the spawner's mask: block everything around the
  // spawns (two stores in a ULT), so no helper ever takes a signal.
  pthread_sigmask(SIG_SETMASK, &all, &old);
  bool spawn_failed = false;
  for (size_t i = 0; i < n; ++i) {
    if (fds[i].fd < 0) continue;
    int fd = fds[i].fd;
    short ev = fds[i].events;
    helpers.push_back(weft::spawn([st, fd, ev] {
      int r = weft::io::poll(fd, ev);
      if (r == -ECANCELED && weft::this_ult::stop_requested()) return;  // the caller is done
      int expected = AnyWait::kWaiting;
      if (st->state.compare_exchange_strong(expected, AnyWait::kWaking, std::memory_order_acq_rel)) {
        rt::unpark(st->waiter);
        st->state.store(AnyWait::kWoken, std::memory_order_release);
      }
    }));
    if (!helpers.back().status().ok()) {
      spawn_failed = true;
      break;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  int r = spawn_failed ? -ENOMEM : park_for(self, &st->state, dl, mark);
  // Leave (the handshake at AnyWait): after this no helper touches us.
  int expected = AnyWait::kWaiting;
  if (!st->state.compare_exchange_strong(expected, AnyWait::kLeft, std::memory_order_acq_rel)) {
    while (st->state.load(std::memory_order_acquire) != AnyWait::kWoken) weft::this_ult::yield();
    if (r != -EINTR && r != -ECANCELED) r = 0;  // something may be ready: the caller looks
  }
  // The helpers are asked to stop (their io::poll is cancelled) and left
  // to end on their own: waiting for them could mean waiting for a busy
  // worker's next pass. Each holds the shared state until it ends.
  for (auto& h : helpers) {
    (void)h.request_stop();
    if (h.joinable()) (void)h.detach();
  }
  return r;
}

namespace {

// One round: the kernel's answer with a zero timeout.
long poll_now(pollfd* fds, nfds_t n) {
  timespec zero{0, 0};
  return sys(SYS_ppoll, arg(fds), static_cast<long>(n), arg(&zero), 0, 8);
}

// The common loop of poll/ppoll/select/pselect/epoll_wait: `now()` asks the
// kernel with a zero timeout; wait on `wait_fds` between rounds until the
// deadline `dl` (-1: none). `mask` (ppoll, pselect, epoll_pwait): the
// calling ULT's signal mask during the call.
template <class Now>
long wait_loop(Now now, const pollfd* wait_fds, size_t n, int64_t dl, const sigset_t* mask) {
  rt::UltDesc* self = rt::caller().ult;
  uint64_t mark = rt::handler_mark(self);
  sigset_t old;
  if (mask != nullptr) pthread_sigmask(SIG_SETMASK, mask, &old);
  long r;
  int idle_wakeups = 0;
  for (;;) {
    r = now();
    if (r != 0) break;
    if (dl >= 0 && now_ns() >= dl) break;
    int w = wait_any(wait_fds, n, dl, mark);
    if (w == -EINTR || w == -ECANCELED || w == -ENOMEM) {
      r = w;
      break;
    }
    if (w == -ETIMEDOUT) {
      r = now();
      break;
    }
    // Woken, but the kernel may still say "nothing" (another reader was
    // faster, or a wait that cannot tell this event: see the top). Wait
    // again; after many such rounds in a row, yield between them so that a
    // descriptor the engine keeps calling ready cannot make this spin.
    if (++idle_wakeups > 64) weft::this_ult::yield();
  }
  if (mask != nullptr) pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return r;
}

long poll_on_ult(pollfd* fds, nfds_t n, int64_t dl, const sigset_t* mask) {
  return wait_loop([&] { return poll_now(fds, n); }, fds, n, dl, mask);
}

// select/pselect: the sets as the kernel takes them (nfds bits, in longs).
long select_on_ult(int nfds, fd_set* rs, fd_set* ws, fd_set* es, int64_t dl, const sigset_t* mask) {
  if (nfds < 0) return -EINVAL;
  const size_t words = (static_cast<size_t>(nfds) + 63) / 64;
  const size_t bytes = words * sizeof(unsigned long);
  std::vector<unsigned long> in(words * 3, 0), out(words * 3, 0);
  fd_set* user[3] = {rs, ws, es};
  for (int k = 0; k < 3; ++k)
    if (user[k] != nullptr && bytes > 0) memcpy(&in[k * words], user[k], bytes);
  std::vector<pollfd> pfds;
  for (int fd = 0; fd < nfds; ++fd) {
    short ev = 0;
    auto has = [&](int k) { return (in[k * words + fd / 64] >> (fd % 64)) & 1UL; };
    if (user[0] && has(0)) ev |= POLLIN;
    if (user[1] && has(1)) ev |= POLLOUT;
    if (user[2] && has(2)) ev |= POLLPRI;
    if (ev != 0) pfds.push_back(pollfd{fd, ev, 0});
  }
  auto now = [&]() -> long {
    out = in;
    timespec zero{0, 0};
    unsigned long* base = out.data();  // null when nfds == 0 (no sets to pass)
    return sys(SYS_pselect6, nfds, user[0] && base ? arg(base) : 0, user[1] && base ? arg(base + words) : 0,
               user[2] && base ? arg(base + 2 * words) : 0, arg(&zero), 0);
  };
  long r = wait_loop(now, pfds.data(), pfds.size(), dl, mask);
  // As the kernel: the sets are written on success (0 included), left as
  // they were on an error.
  if (r >= 0) {
    for (int k = 0; k < 3; ++k)
      if (user[k] != nullptr && bytes > 0) memcpy(user[k], &out[k * words], bytes);
  }
  return r;
}

long epoll_on_ult(int epfd, epoll_event* ev, int max, int64_t dl, const sigset_t* mask) {
  pollfd p{epfd, POLLIN, 0};
  auto now = [&] { return sys(SYS_epoll_pwait, epfd, arg(ev), max, 0, 0, 8); };
  return wait_loop(now, &p, 1, dl, mask);
}

// poll's timeout in ms: < 0 none.
inline int64_t ms_deadline(int timeout) {
  return timeout < 0 ? -1 : deadline_after_ns(static_cast<int64_t>(timeout) * 1000000);
}

// A timespec deadline (null: none), or -EINVAL.
inline int64_t ts_deadline(const timespec* ts) {
  if (ts == nullptr) return -1;
  if (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L) return -2;
  if (ts->tv_sec > INT64_MAX / 1000000000LL - 1) return INT64_MAX;
  return deadline_after_ns(static_cast<int64_t>(ts->tv_sec) * 1000000000LL + ts->tv_nsec);
}

}  // namespace
}  // namespace weft::hook_internal

using namespace weft::hook_internal;

extern "C" {

[[noreturn]] void __chk_fail(void);

WEFT_HOOK_EXPORT int poll(struct pollfd* fds, nfds_t n, int timeout) {
  if (!on_ult() || timeout == 0) return HOOK_NEXT(poll)(fds, n, timeout);
  return static_cast<int>(from_result(poll_on_ult(fds, n, ms_deadline(timeout), nullptr)));
}

WEFT_HOOK_EXPORT int ppoll(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask) {
  if (!on_ult()) return HOOK_NEXT(ppoll)(fds, n, ts, mask);
  int64_t dl = ts_deadline(ts);
  if (dl == -2) return fail(EINVAL);
  return static_cast<int>(from_result(poll_on_ult(fds, n, dl, mask)));
}

WEFT_HOOK_EXPORT int select(int nfds, fd_set* rs, fd_set* ws, fd_set* es, struct timeval* tv) {
  if (!on_ult() || (tv != nullptr && tv->tv_sec == 0 && tv->tv_usec == 0))
    return HOOK_NEXT(select)(nfds, rs, ws, es, tv);
  int64_t dl = -1;
  if (tv != nullptr) {
    if (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000) return fail(EINVAL);
    dl = tv->tv_sec > INT64_MAX / 1000000000LL - 1
             ? INT64_MAX
             : deadline_after_ns(static_cast<int64_t>(tv->tv_sec) * 1000000000LL + tv->tv_usec * 1000LL);
  }
  long r = select_on_ult(nfds, rs, ws, es, dl, nullptr);
  // Linux writes the time not slept into *tv (select(2), "Linux").
  if (tv != nullptr && dl != INT64_MAX) {
    int64_t left = dl - now_ns();
    if (left < 0) left = 0;
    tv->tv_sec = left / 1000000000LL;
    tv->tv_usec = (left % 1000000000LL) / 1000;
  }
  return static_cast<int>(from_result(r));
}

WEFT_HOOK_EXPORT int pselect(int nfds, fd_set* rs, fd_set* ws, fd_set* es, const struct timespec* ts,
                             const sigset_t* mask) {
  if (!on_ult()) return HOOK_NEXT(pselect)(nfds, rs, ws, es, ts, mask);
  int64_t dl = ts_deadline(ts);
  if (dl == -2) return fail(EINVAL);
  return static_cast<int>(from_result(select_on_ult(nfds, rs, ws, es, dl, mask)));
}

WEFT_HOOK_EXPORT int epoll_wait(int epfd, struct epoll_event* ev, int max, int timeout) {
  if (!on_ult() || timeout == 0) return HOOK_NEXT(epoll_wait)(epfd, ev, max, timeout);
  return static_cast<int>(from_result(epoll_on_ult(epfd, ev, max, ms_deadline(timeout), nullptr)));
}

WEFT_HOOK_EXPORT int epoll_pwait(int epfd, struct epoll_event* ev, int max, int timeout, const sigset_t* mask) {
  if (!on_ult() || timeout == 0) return HOOK_NEXT(epoll_pwait)(epfd, ev, max, timeout, mask);
  return static_cast<int>(from_result(epoll_on_ult(epfd, ev, max, ms_deadline(timeout), mask)));
}

WEFT_HOOK_EXPORT int __poll_chk(struct pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return poll(fds, n, timeout);
}

WEFT_HOOK_EXPORT int __ppoll_chk(struct pollfd* fds, nfds_t n, const struct timespec* ts, const sigset_t* mask,
                                 size_t fdslen) {
  if (fdslen / sizeof(*fds) < n) __chk_fail();
  return ppoll(fds, n, ts, mask);
}

}  // extern "C"
