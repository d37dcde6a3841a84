// sys/signal_chain.h — passing a signal on to the handler weft replaced.
#pragma once

#include <signal.h>

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

}  // namespace weft::sys
