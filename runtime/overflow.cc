// runtime/overflow.cc — reporting stack overflows in ULTs.
//
// A ULT that runs off the bottom of its stack touches the guard region
// below it and takes a SIGSEGV (or a SIGBUS). weft's handler for the
// synchronous signals (runtime/signal.cc, on_sync) runs on the KLT's
// sigaltstack (every weft KLT has one, sys/klt.h), because the faulting
// stack is full, and asks report_if_overflow first: it reports "weft: stack
// overflow in ULT <id> "<name>"" with the stack's range, then aborts. Any
// other fault keeps its meaning: on_sync runs the application's disposition.
//
// Signal-handler rules apply here (HACKING.md): only raw_logf, no locks, no
// allocation, no spdlog.
#include <signal.h>
#include <ucontext.h>

#include <cstdlib>

#include "runtime/scheduler.h"
#include "sys/raw_log.h"

namespace weft::rt {

void report_if_overflow(const UltDesc* u, const siginfo_t* si, const void* uctx) {
  auto* uc = static_cast<const ucontext_t*>(uctx);
  auto* sp = reinterpret_cast<const char*>(uc->uc_mcontext.gregs[REG_RSP]);
  const char* addr = static_cast<const char*>(si->si_addr);
  // In the guard, or the stack pointer itself already below the stack (a
  // frame larger than the guard jumped over it).
  bool in_guard = u->stack.in_guard(addr);
  bool sp_below = sp < u->stack.lo() && sp >= u->stack.lo() - (1 << 20);
  if (!in_guard && !sp_below) return;
  sys::raw_logf(
      "weft: stack overflow in ULT %u.%u \"%s\": fault at %p, stack pointer %p; "
      "stack [%p, %p) (%zu bytes), guard [%p, %p). Give it a larger "
      "SpawnOptions::stack_size or Options::stack_size.",
      u->index, u->generation.load(std::memory_order_relaxed), u->name, si->si_addr, sp, u->stack.lo(),
      u->stack.hi(), u->stack.size(), u->stack.base, u->stack.lo());
  abort();
}

}  // namespace weft::rt
