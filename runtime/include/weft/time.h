// weft/time.h — saturating time arithmetic shared by weft's public headers.
//
// weft's waits take any std::chrono duration or time point and turn it into
// CLOCK_MONOTONIC nanoseconds (int64_t). A duration too large for that —
// std::chrono::hours::max(), nanoseconds::max() added to "now" — means
// "practically forever", never "already expired": every conversion here
// saturates instead of overflowing. INT64_MAX as a deadline is 292 years
// after boot; weft's waits treat it as "no deadline".
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace weft::detail {

inline constexpr int64_t kForeverNs = std::numeric_limits<int64_t>::max();

// d in nanoseconds, clamped to [nanoseconds::min(), nanoseconds::max()]
// (NaN counts as zero).
template <class Rep, class Period>
constexpr std::chrono::nanoseconds saturating_ns(const std::chrono::duration<Rep, Period>& d) {
  using std::chrono::nanoseconds;
  // long double holds every int64_t exactly, so the range check is exact
  // up to rounding on the safe side.
  long double ns = std::chrono::duration<long double, std::nano>(d).count();
  if (ns != ns) return nanoseconds::zero();
  if (ns >= 9223372036854775807.0L) return nanoseconds::max();
  if (ns <= -9223372036854775807.0L) return nanoseconds::min();
  if constexpr (std::is_floating_point_v<Rep>) {
    return nanoseconds(static_cast<int64_t>(ns));
  } else {
    return std::chrono::duration_cast<nanoseconds>(d);  // in range: exact integer arithmetic
  }
}

// now_ns + rel_ns, saturated at kForeverNs; a negative rel counts as 0.
constexpr int64_t deadline_after(int64_t now_ns, int64_t rel_ns) {
  if (rel_ns <= 0) return now_ns;
  if (rel_ns >= kForeverNs - now_ns) return kForeverNs;
  return now_ns + rel_ns;
}

// a - b for two nanosecond counts, saturated to the int64_t range.
constexpr int64_t saturating_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  return r;
}

// Deadlines are CLOCK_MONOTONIC nanoseconds; -1 means none.
int64_t monotonic_now_ns();

template <class Clock, class Duration>
int64_t to_deadline(const std::chrono::time_point<Clock, Duration>& t) {
  // Both sides in nanoseconds since the clock's epoch, each saturated, so
  // that time_point::max() is "forever" and time_point::min() "expired"
  // whatever the time point's resolution.
  int64_t at = saturating_ns(t.time_since_epoch()).count();
  int64_t now = saturating_ns(Clock::now().time_since_epoch()).count();
  return deadline_after(monotonic_now_ns(), saturating_sub(at, now));
}

template <class Rep, class Period>
int64_t to_deadline(const std::chrono::duration<Rep, Period>& d) {
  return deadline_after(monotonic_now_ns(), saturating_ns(d).count());
}

}  // namespace weft::detail
