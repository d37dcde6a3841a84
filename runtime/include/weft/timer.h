// weft/timer.h — one-shot timers and periodic tickers for ULTs and threads
// (Go's time.Timer and time.Ticker), usable alone (wait()) or as cases of
// weft::select (weft/select.h: timer_case, tick_case).
//
// Both measure CLOCK_MONOTONIC (std::chrono::steady_clock). A ULT that
// waits parks on its worker's timer heap (its worker runs other ULTs); a
// foreign thread sleeps on a futex. Neither needs a background thread or
// allocates.
//
// Thread safety: like most C++ objects, a Timer or Ticker is used by one
// ULT or thread at a time (wait, reset, stop and select must not race on
// one object); give each waiter its own. Not copyable or movable (a select
// may hold its address).
#pragma once

#include <chrono>
#include <cstdint>
#include <stop_token>

#include "absl/status/status.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace weft {

// A one-shot timer: it fires once, `d` after it was started or reset.
// Each firing is delivered once: to one wait() or one select that names it.
class Timer : detail::Pinned {
 public:
  // A timer that fires `d` from now (d <= 0: at once; a duration too large
  // for the clock never fires).
  template <class Rep, class Period>
  explicit Timer(const std::chrono::duration<Rep, Period>& d) : deadline_ns_(detail::to_deadline(d)) {}
  // A stopped timer (reset() starts it).
  Timer() = default;

  // Waits until the timer fires and consumes the firing: OK. Returns at
  // once if it has fired already and nobody consumed that yet.
  // FailedPrecondition if the timer is stopped or its firing was consumed
  // (waiting would last forever). Parks a ULT / blocks a thread; costs one
  // timer-heap insertion on a ULT.
  absl::Status wait();
  // As wait(), and Cancelled if `stop` has (or gets) its stop requested
  // first; the firing is then not consumed.
  absl::Status wait(std::stop_token stop);

  // Re-arms the timer to fire `d` from now, forgetting any unconsumed
  // firing (Go 1.23 semantics). Returns true if the timer was armed and had
  // not fired yet. Never blocks.
  template <class Rep, class Period>
  bool reset(const std::chrono::duration<Rep, Period>& d) {
    return reset_deadline(detail::to_deadline(d));
  }
  // Disarms the timer, forgetting any unconsumed firing. Returns true if it
  // was armed and had not fired yet (the call prevented the firing).
  bool stop();

  // True while armed and not yet fired.
  bool pending() const;
  // True when a firing is waiting to be consumed (armed, deadline passed).
  bool fired() const;
  // The CLOCK_MONOTONIC deadline in ns, or -1 when stopped or consumed.
  int64_t deadline_ns() const { return deadline_ns_; }

  // For weft/select.h: the firing was delivered through a select.
  void consume() { deadline_ns_ = -1; }

 private:
  bool reset_deadline(int64_t deadline_ns);
  int64_t deadline_ns_ = -1;  // -1: stopped or firing consumed
};

// A periodic ticker: ticks at start + k * period (k = 1, 2, ...). Like Go's
// Ticker with its one-tick buffer, a waiter that falls behind gets one
// overdue tick at once and the other missed ticks are dropped: wait()
// never returns twice for one grid point, and after an overdue tick the
// next one is the next grid point after now.
class Ticker : detail::Pinned {
 public:
  // Starts ticking every `period` (a period <= 0 counts as 1 ns).
  template <class Rep, class Period>
  explicit Ticker(const std::chrono::duration<Rep, Period>& period) {
    start(detail::saturating_ns(period).count());
  }

  // Waits for the next tick (returns at once if one is overdue): OK.
  // FailedPrecondition once stopped. Parks a ULT / blocks a thread.
  absl::Status wait();
  // As wait(), and Cancelled if `stop` has (or gets) its stop requested
  // first (no tick consumed).
  absl::Status wait(std::stop_token stop);

  // Restarts with a new period: the next tick is `period` from now.
  template <class Rep, class Period>
  void reset(const std::chrono::duration<Rep, Period>& period) {
    start(detail::saturating_ns(period).count());
  }
  // Stops ticking; wait() fails from now on. reset() starts it again.
  void stop() { next_ns_ = -1; }

  // The CLOCK_MONOTONIC time of the next tick in ns, or -1 when stopped.
  int64_t next_ns() const { return next_ns_; }
  int64_t period_ns() const { return period_ns_; }

  // For weft/select.h: a tick was delivered through a select at `now_ns`:
  // the next tick is the first grid point after it.
  void consume(int64_t now_ns);

 private:
  void start(int64_t period_ns);
  absl::Status wait_impl(const std::stop_token* stop);
  int64_t period_ns_ = 1;
  int64_t next_ns_ = -1;  // -1: stopped
};

}  // namespace weft
