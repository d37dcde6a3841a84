// weft/select.h — weft::select: wait for the first of several channel
// operations, deadlines, timers and stop requests (Go's select statement).
//
//   std::optional<Request> req;
//   switch (weft::select(weft::recv_case(requests, &req),     // 0
//                        weft::send_case(results, std::move(r)),  // 1
//                        weft::after(10ms),                   // 2
//                        weft::stopped(token))) {             // 3
//     case 0: if (!req) { /* requests is closed and drained */ } ... break;
//     case 1: /* r was sent (moved from) */ break;
//     case 2: /* 10 ms passed, nothing else happened */ break;
//     case 3: /* stop requested */ break;
//   }
//
// select() returns the index (0-based, in argument order) of the one case
// that fired; exactly that case's effect happened: one value received, or
// one value sent, never both, never a value lost. Semantics are Go's:
//  - If several cases can proceed at once, one is chosen uniformly at
//    random (no case starves).
//  - Otherwise the caller waits on all of them at once (a ULT parks, a
//    thread blocks on a futex) until one can proceed; a receive and a send
//    on an unbuffered channel rendezvous whether either side is a select or
//    a plain send()/recv().
//  - default_case() makes the select non-blocking: it fires when no other
//    case can proceed right now.
//  - A select whose cases can never fire (none at all, only null channels,
//    stopped timers) and no default waits forever, as Go's `select {}`;
//    add a stopped(token) case to be able to end it.
//
// Cases (each is a temporary that lives until select returns):
//  recv_case(ch, &opt)     receive into std::optional<T> opt: a value, or
//                          std::nullopt when ch is closed and drained
//  recv_case(ch, &v, &ok)  receive into T v, ok = true; closed: ok = false,
//                          v untouched
//  recv_case(ch)           receive and discard the value
//  send_case(ch, T&& v)    send v, moved from only if this case fires
//  send_case(ch, const T& v)  send a copy of v (made when the case is built)
//  A closed channel makes its receive case fire (closed) and its send case
//  fire too: then the value is not sent and closed(...) is reported through
//  send_case(ch, v, &closed). A null channel pointer (recv_case(nullptr...))
//  never fires.
//  after(d), at(time_point)  a deadline; several: the earliest counts
//  timer_case(timer)       a weft::Timer's firing (consumed if it fires)
//  tick_case(ticker)       a weft::Ticker's next tick (consumed if it fires)
//  stopped(token)          a std::stop_token's stop request
//  default_case()          nothing else ready (at most one)
//
// Cost: the channels named are locked together (in address order) for the
// readiness check, a few ns each; a select that waits queues one record
// per channel case on its stack. No allocation up to 4 cases (and 2 stop
// cases); larger selects allocate a few small arrays. Every channel named
// must outlive the select call.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <optional>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "weft/channel.h"
#include "weft/time.h"
#include "weft/timer.h"

namespace weft {

// ---------------------------------------------------------------------------
// Cases. Build them only as arguments of select().

template <class T>
class RecvCase {
 public:
  // Receives into *opt (nullopt: closed and drained).
  RecvCase(Channel<T>* ch, std::optional<T>* opt) : ch_(ch), opt_(opt) {}
  // Receives into *v and sets *ok (false: closed and drained, v untouched).
  RecvCase(Channel<T>* ch, T* v, bool* ok) : ch_(ch), v_(v), ok_(ok) {}
  RecvCase(const RecvCase&) = delete;
  RecvCase& operator=(const RecvCase&) = delete;
  // Used by select() only.
  detail::SelCase to_case() {
    detail::SelCase c;
    c.kind = detail::SelCase::kRecv;
    c.ch = ch_ != nullptr ? detail_core(*ch_) : nullptr;
    c.val = buf_;
    return c;
  }
  void finish(const detail::SelCase& c, bool fired) {
    if (!fired) return;
    if (c.closed) {
      if (opt_ != nullptr) opt_->reset();
      if (ok_ != nullptr) *ok_ = false;
      return;
    }
    T* p = std::launder(reinterpret_cast<T*>(buf_));
    if (opt_ != nullptr) {
      opt_->emplace(std::move(*p));
    } else if (v_ != nullptr) {
      *v_ = std::move(*p);
    }
    if (ok_ != nullptr) *ok_ = true;
    p->~T();
  }

 private:
  Channel<T>* ch_;
  std::optional<T>* opt_ = nullptr;
  T* v_ = nullptr;
  bool* ok_ = nullptr;
  alignas(T) unsigned char buf_[sizeof(T)];
};

template <class T>
class SendCase {
 public:
  SendCase(Channel<T>* ch, T* v, bool* closed) : ch_(ch), v_(v), closed_(closed) {}
  SendCase(Channel<T>* ch, const T& v, bool* closed) : ch_(ch), copy_(v), closed_(closed) { v_ = &*copy_; }
  SendCase(const SendCase&) = delete;
  SendCase& operator=(const SendCase&) = delete;
  // Used by select() only.
  detail::SelCase to_case() {
    detail::SelCase c;
    c.kind = detail::SelCase::kSend;
    c.ch = ch_ != nullptr ? detail_core(*ch_) : nullptr;
    c.val = v_;
    return c;
  }
  void finish(const detail::SelCase& c, bool fired) {
    if (fired && closed_ != nullptr) *closed_ = c.closed;
  }

 private:
  Channel<T>* ch_;
  T* v_ = nullptr;
  std::optional<T> copy_;
  bool* closed_ = nullptr;
};

class DeadlineCase {
 public:
  explicit DeadlineCase(int64_t deadline_ns) : deadline_ns_(deadline_ns) {}
  detail::SelCase to_case() const {
    detail::SelCase c;
    c.kind = detail::SelCase::kDeadline;
    c.deadline = deadline_ns_;
    return c;
  }
  void finish(const detail::SelCase&, bool) {}

 private:
  int64_t deadline_ns_;
};

class TimerCase {
 public:
  explicit TimerCase(Timer& t) : t_(t) {}
  detail::SelCase to_case() const {
    detail::SelCase c;
    c.kind = t_.deadline_ns() >= 0 ? detail::SelCase::kDeadline : detail::SelCase::kNever;
    c.deadline = t_.deadline_ns();
    return c;
  }
  void finish(const detail::SelCase&, bool fired) {
    if (fired) t_.consume();
  }

 private:
  Timer& t_;
};

class TickCase {
 public:
  explicit TickCase(Ticker& t) : t_(t) {}
  detail::SelCase to_case() const {
    detail::SelCase c;
    c.kind = t_.next_ns() >= 0 ? detail::SelCase::kDeadline : detail::SelCase::kNever;
    c.deadline = t_.next_ns();
    return c;
  }
  void finish(const detail::SelCase&, bool fired) {
    if (fired) t_.consume(detail::monotonic_now_ns());
  }

 private:
  Ticker& t_;
};

class StopCase {
 public:
  explicit StopCase(std::stop_token t) : t_(std::move(t)) {}
  detail::SelCase to_case() const {
    detail::SelCase c;
    c.kind = detail::SelCase::kStop;
    c.stop = &t_;
    return c;
  }
  void finish(const detail::SelCase&, bool) {}

 private:
  std::stop_token t_;
};

class DefaultCase {
 public:
  detail::SelCase to_case() const {
    detail::SelCase c;
    c.kind = detail::SelCase::kDefault;
    return c;
  }
  void finish(const detail::SelCase&, bool) {}
};

// Receive from ch (a null ch never fires): the value, or nullopt if ch is
// closed and drained, lands in *out.
template <class T>
RecvCase<T> recv_case(Channel<T>& ch, std::optional<T>* out) {
  return RecvCase<T>(&ch, out);
}
template <class T>
RecvCase<T> recv_case(Channel<T>* ch, std::optional<T>* out) {
  return RecvCase<T>(ch, out);
}
// Receive into *out (move-assigned) and set *ok; closed: *ok = false.
template <class T>
RecvCase<T> recv_case(Channel<T>& ch, T* out, bool* ok) {
  return RecvCase<T>(&ch, out, ok);
}
// Receive and discard the value.
template <class T>
RecvCase<T> recv_case(Channel<T>& ch) {
  return RecvCase<T>(&ch, static_cast<std::optional<T>*>(nullptr));
}

// Send `v` (moved from only if this case fires). If ch is closed the case
// fires without sending: *closed (if given) says so.
template <class T>
SendCase<T> send_case(Channel<T>& ch, std::type_identity_t<T>&& v, bool* closed = nullptr) {
  return SendCase<T>(&ch, &v, closed);
}
// Send a copy of `v`, made now.
template <class T>
SendCase<T> send_case(Channel<T>& ch, const std::type_identity_t<T>& v, bool* closed = nullptr) {
  return SendCase<T>(&ch, v, closed);
}

// Fires `d` after the case is built (d <= 0: ready at once).
template <class Rep, class Period>
DeadlineCase after(const std::chrono::duration<Rep, Period>& d) {
  return DeadlineCase(detail::to_deadline(d));
}
// Fires at `t`, a time point of any clock (converted to steady time now).
template <class Clock, class Duration>
DeadlineCase at(const std::chrono::time_point<Clock, Duration>& t) {
  return DeadlineCase(detail::to_deadline(t));
}
// Fires when `t` fires (and consumes the firing); a stopped or consumed
// timer never fires.
inline TimerCase timer_case(Timer& t) { return TimerCase(t); }
// Fires at `t`'s next tick (and consumes it); a stopped ticker never fires.
inline TickCase tick_case(Ticker& t) { return TickCase(t); }
// Fires when a stop is requested on `t` (a token that can never be
// stopped never fires).
inline StopCase stopped(std::stop_token t) { return StopCase(std::move(t)); }
// Fires when no other case can proceed right now.
inline DefaultCase default_case() { return DefaultCase(); }

namespace detail {
template <class... Cases, size_t... I>
void finish_cases(const SelCase* c, int fired, std::index_sequence<I...>, Cases&... cases) {
  (cases.finish(c[I], fired == static_cast<int>(I)), ...);
}
template <class C>
inline constexpr bool kIsDefault = std::is_same_v<std::remove_cvref_t<C>, DefaultCase>;
}  // namespace detail

// Waits for the first case that can proceed, performs it, and returns its
// index (see the top of this header). Blocking: parks a ULT / blocks a
// thread until a case fires; never blocks with a default_case(). Values
// move outside every lock. From any ULT or thread.
template <class... Cases>
int select(Cases&&... cases) {
  static_assert((0 + ... + (detail::kIsDefault<Cases> ? 1 : 0)) <= 1, "select: at most one default_case()");
  constexpr int n = static_cast<int>(sizeof...(Cases));
  if constexpr (n == 0) {
    detail::SelCase none;
    return detail::select_cases(&none, 0);
  } else {
    detail::SelCase c[n] = {cases.to_case()...};
    const int fired = detail::select_cases(c, n);
    detail::finish_cases(c, fired, std::index_sequence_for<Cases...>(), cases...);
    return fired;
  }
}

}  // namespace weft
