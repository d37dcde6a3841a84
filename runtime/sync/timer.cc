// runtime/sync/timer.cc — weft::Timer and weft::Ticker (weft/timer.h).
//
// Neither has a background thread or a queue of its own: a timer is a
// deadline, and waiting for it is a select of one deadline case (plus a
// stop case), which parks a ULT with park_current_until on its worker's
// timer heap or futex-waits a thread with an absolute timeout
// (runtime/sync/select.cc). A select naming a timer does the same with the
// earliest deadline among its cases.
#include "weft/timer.h"

#include <stop_token>

#include "runtime/park.h"
#include "weft/channel.h"

namespace weft {

namespace {
// Waits until `deadline_ns` (or the stop). True if the deadline was reached.
bool wait_deadline(int64_t deadline_ns, const std::stop_token* stop) {
  detail::SelCase cases[2];
  int n = 0;
  cases[n].kind = detail::SelCase::kDeadline;
  cases[n++].deadline = deadline_ns;
  if (stop != nullptr && stop->stop_possible()) {
    cases[n].kind = detail::SelCase::kStop;
    cases[n++].stop = stop;
  }
  return detail::select_cases(cases, n) == 0;
}
}  // namespace

// ---------------------------------------------------------------------------
// Timer

absl::Status Timer::wait() {
  if (deadline_ns_ < 0) return absl::FailedPreconditionError("timer stopped or already fired");
  wait_deadline(deadline_ns_, nullptr);
  deadline_ns_ = -1;
  return absl::OkStatus();
}

absl::Status Timer::wait(std::stop_token stop) {
  if (deadline_ns_ < 0) return absl::FailedPreconditionError("timer stopped or already fired");
  if (!wait_deadline(deadline_ns_, &stop)) return absl::CancelledError("timer wait cancelled");
  deadline_ns_ = -1;
  return absl::OkStatus();
}

bool Timer::pending() const { return deadline_ns_ >= 0 && rt::monotonic_ns() < deadline_ns_; }

bool Timer::fired() const { return deadline_ns_ >= 0 && rt::monotonic_ns() >= deadline_ns_; }

bool Timer::reset_deadline(int64_t deadline_ns) {
  bool was = pending();
  deadline_ns_ = deadline_ns;
  return was;
}

bool Timer::stop() {
  bool was = pending();
  deadline_ns_ = -1;
  return was;
}

// ---------------------------------------------------------------------------
// Ticker

void Ticker::start(int64_t period_ns) {
  period_ns_ = period_ns > 0 ? period_ns : 1;
  next_ns_ = detail::deadline_after(rt::monotonic_ns(), period_ns_);
}

void Ticker::consume(int64_t now_ns) {
  if (next_ns_ < 0) return;
  // The next grid point strictly after now (the missed ones are dropped).
  if (next_ns_ > now_ns) {
    next_ns_ = detail::deadline_after(next_ns_, period_ns_);  // consumed early (select raced the clock)
    return;
  }
  int64_t behind = now_ns - next_ns_;
  int64_t k = behind / period_ns_ + 1;
  if (k > (detail::kForeverNs - next_ns_) / period_ns_) {
    next_ns_ = detail::kForeverNs;
  } else {
    next_ns_ += k * period_ns_;
  }
}

absl::Status Ticker::wait_impl(const std::stop_token* stop) {
  if (next_ns_ < 0) return absl::FailedPreconditionError("ticker stopped");
  if (!wait_deadline(next_ns_, stop)) return absl::CancelledError("ticker wait cancelled");
  consume(rt::monotonic_ns());
  return absl::OkStatus();
}

absl::Status Ticker::wait() { return wait_impl(nullptr); }

absl::Status Ticker::wait(std::stop_token stop) { return wait_impl(&stop); }

}  // namespace weft
