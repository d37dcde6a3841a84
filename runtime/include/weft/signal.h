// weft/signal.h — signals for ULTs (issue 12, in progress).
//
// In a ULT, the POSIX signal calls act on the ULT as they would on a thread:
// pthread_sigmask/sigprocmask change the ULT's own mask (no system call; it
// moves with the ULT and a spawned ULT inherits it), raise and
// pthread_kill(pthread_self(), s) send to the calling ULT, sigwait,
// sigwaitinfo, sigtimedwait, sigsuspend and pause park the ULT, and a
// signal sent to the process is handled by one ULT that does not block it
// (or a thread of your own that does not). sigaction and signal keep your
// disposition; weft's own handler sits in the kernel. On other threads
// these calls are glibc's. weft reserves SIGRTMAX and SIGRTMAX-1 (sigaction
// on them fails with EINVAL; masks leave them out), besides glibc's own two.
// Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP) run the handler on the
// ULT that faulted, on its kernel thread's signal stack, after weft's
// stack-overflow check. Not yet kept: per-ULT
// sigaltstack; real-time signals sent to one ULT coalesce; EINTR from weft
// io calls.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "weft/runtime.h"

namespace weft {

// Sends `sig` to the ULT `id`, as pthread_kill does to a thread: pending on
// it until it does not block it; its handler (or default action) then runs
// on that ULT. SIGKILL and SIGSTOP act on the process. InvalidArgument for a
// number that is not a signal or is reserved; NotFound for an id that names
// no live ULT.
absl::Status signal(UltId id, int sig);

// A ULT's mask and the signals sent to it that it has not taken yet.
struct SignalState {
  sigset_t mask;
  sigset_t pending;
};
// NotFound for an id that names no ULT.
absl::StatusOr<SignalState> signal_state(UltId id);

// Signals as messages (the seeds' "signals as threads"): while a SignalSet
// exists, the signals it holds are its own — no handler runs for them, no
// ULT or thread takes them — and ULTs (or threads) receive them by calling
// wait(), which parks a ULT. Each signal sent is received once (standard
// signals sent while one is pending coalesce, real-time ones queue with
// their values). For servers: shut down on SIGTERM, reload on SIGHUP.
//
//   weft::SignalSet s({SIGINT, SIGTERM});
//   int sig = s.wait();   // in a ULT: other ULTs keep running
//
// Several ULTs may wait on one set; each signal wakes one. When two sets
// hold the same signal, the one made first receives it. Destroying a set
// hands signals still queued in it back to the process (handlers, waiting
// ULTs). A set made with an invalid or reserved signal, SIGKILL or SIGSTOP,
// or before any weft::Runtime exists, holds nothing: status() says why and
// wait() returns -1 at once.
class SignalSet {
 public:
  explicit SignalSet(std::initializer_list<int> signals);
  ~SignalSet();
  SignalSet(const SignalSet&) = delete;
  SignalSet& operator=(const SignalSet&) = delete;

  absl::Status status() const { return status_; }

  // Waits for one of the signals and returns its number (-1 if !ok()).
  int wait() { return wait_ns(-1, nullptr); }
  // As wait(), also filling *info (its si_code, si_pid, si_value...).
  int wait(siginfo_t* info) { return wait_ns(-1, info); }
  // Waits at most `d`; 0 when none came in time.
  template <class Rep, class Period>
  int wait_for(const std::chrono::duration<Rep, Period>& d) {
    return wait_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(), nullptr);
  }
  // A signal already received, or 0: never waits.
  int poll() { return wait_ns(0, nullptr); }

  struct State;

 private:
  int wait_ns(int64_t timeout_ns, siginfo_t* info);
  absl::Status status_;
  State* state_ = nullptr;
};

}  // namespace weft
