// sys/signal_chain.h — installing weft's signal handlers in front of the
// application's, and passing a signal on to the handler weft replaced.
#pragma once

#include <signal.h>

#include <cstring>

// glibc's sigaction under its other public name: libweft exports
// `sigaction` itself (runtime/signal.cc keeps the application's
// dispositions and refuses weft's reserved signals), and weft's own
// handlers must reach the kernel.
extern "C" int __sigaction(int sig, const struct sigaction* act, struct sigaction* old);

namespace weft::sys {

// Calls the handler `prev` describes — the one installed before weft
// installed its own (sigaction's old action) — and returns true; false if
// `prev` is SIG_DFL or SIG_IGN, for the caller to apply that disposition.
// Async-signal-safe (it only calls the handler).
inline bool call_previous_handler(const struct sigaction& prev, int sig, siginfo_t* si, void* uctx) {
  if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, si, uctx);
    return true;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler != nullptr) {
    prev.sa_handler(sig);
    return true;
  }
  return false;
}

// Installs fn as the SA_SIGINFO handler of sig with `flags` added, all
// signals blocked while it runs if block_all (else none), and stores the
// action it replaces in *previous (for call_previous_handler). Returns
// sigaction's result.
inline int install_handler_before(int sig, void (*fn)(int, siginfo_t*, void*), int flags, bool block_all,
                                  struct sigaction* previous) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = fn;
  sa.sa_flags = SA_SIGINFO | flags;
  if (block_all) sigfillset(&sa.sa_mask); else sigemptyset(&sa.sa_mask);
  return __sigaction(sig, &sa, previous);
}

}  // namespace weft::sys
