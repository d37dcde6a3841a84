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
// Not yet kept: SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGTRAP dispositions set after
// a runtime started replace weft's stack-overflow reporter; per-ULT
// sigaltstack; real-time signals sent to one ULT coalesce.
#pragma once

#include <signal.h>

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

}  // namespace weft
