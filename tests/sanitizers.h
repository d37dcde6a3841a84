// tests/sanitizers.h — what a test must know about the sanitizer it is built
// with (tests/run-all.sh runs the suite under ASan+UBSan and under TSan).
//
// A test case that cannot mean anything under a sanitizer skips itself with
// WEFT_SKIP_UNDER_ASAN / WEFT_SKIP_UNDER_TSAN and a reason, so the run shows
// "SKIPPED ... under AddressSanitizer: <why>" instead of silently passing;
// a single assertion that a sanitizer distorts (RSS, mapping counts) is
// guarded with kUnderAsan and says why next to it. tests/run-all.sh lists
// every case that skips itself.
#pragma once

#include <signal.h>

#include <gtest/gtest.h>

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_TEST_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_TEST_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_TEST_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WEFT_TEST_TSAN 1
#endif
#endif

#if WEFT_TEST_ASAN
#include <sanitizer/lsan_interface.h>
#endif

#if WEFT_TEST_ASAN
inline constexpr bool kUnderAsan = true;
#else
inline constexpr bool kUnderAsan = false;
#endif
#if WEFT_TEST_TSAN
inline constexpr bool kUnderTsan = true;
#else
inline constexpr bool kUnderTsan = false;
#endif

// Skips the running test case when built with AddressSanitizer (or
// ThreadSanitizer), saying why. Use at the top of a TEST body.
#define WEFT_SKIP_UNDER_ASAN(why) \
  if (kUnderAsan) GTEST_SKIP() << "not run under AddressSanitizer: " << why
#define WEFT_SKIP_UNDER_TSAN(why) \
  if (kUnderTsan) GTEST_SKIP() << "not run under ThreadSanitizer: " << why

// For a child process that must die of a plain SIGSEGV (a guard page, a
// wild pointer): restores the default action. Without a sanitizer it is
// already the default; ASan and TSan install a SIGSEGV handler of their own
// that prints a report and exits or aborts instead. Installing weft's
// overflow handler later still works (it chains to this default).
inline void UseDefaultSegvAction() {
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGSEGV, &dfl, nullptr);
}

// A heap object a test leaks on purpose (a runtime whose ULTs never return,
// a Mutex locked by a thread that is gone): LeakSanitizer does not report
// it, nor what it reaches. No-op without ASan.
inline void LeakedOnPurpose(const void* p) {
#if WEFT_TEST_ASAN
  __lsan_ignore_object(p);
#else
  (void)p;
#endif
}

// While one is alive, the calling thread's allocations are not reported as
// leaks (for objects only a parked ULT's stack refers to: LeakSanitizer
// does not scan ULT stacks). No-op without ASan.
struct [[maybe_unused]] LeaksOnPurpose {
#if WEFT_TEST_ASAN
  LeaksOnPurpose() { __lsan_disable(); }
  ~LeaksOnPurpose() { __lsan_enable(); }
#endif
#if !WEFT_TEST_ASAN
  LeaksOnPurpose() = default;
#endif
  LeaksOnPurpose(const LeaksOnPurpose&) = delete;
  LeaksOnPurpose& operator=(const LeaksOnPurpose&) = delete;
};
