// runtime/overflow.cc — reporting stack overflows in ULTs.
//
// A ULT that runs off the bottom of its stack touches the guard region
// below it and takes a SIGSEGV. The handler runs on the KLT's sigaltstack
// (every weft KLT has one, sys/klt.h) because the faulting stack is full. It
// reports "weft: stack overflow in ULT <id> "<name>"" with the stack's
// range, then aborts. Any other SIGSEGV keeps its meaning: the handler that
// was installed before weft's is called, or the default action is restored
// and the fault re-executed.
//
// Signal-handler rules apply here (HACKING.md): only raw_logf, no locks, no
// allocation, no spdlog.
#include <signal.h>
#include <ucontext.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "runtime/scheduler.h"
#include "sys/raw_log.h"
#include "sys/signal_chain.h"

namespace weft::rt {
namespace {

struct sigaction previous;

void on_segv(int sig, siginfo_t* si, void* uctx) {
  Worker* w = current_worker();
  UltDesc* u = w != nullptr ? w->current.load(std::memory_order_relaxed) : nullptr;
  if (u == nullptr && w != nullptr) u = w->blocking_ult;  // inside weft::blocking()
  if (u != nullptr) {
    auto* uc = static_cast<ucontext_t*>(uctx);
    auto* sp = reinterpret_cast<const char*>(uc->uc_mcontext.gregs[REG_RSP]);
    const char* addr = static_cast<const char*>(si->si_addr);
    // In the guard, or the stack pointer itself already below the stack
    // (a frame larger than the guard jumped over it).
    bool in_guard = u->stack.in_guard(addr);
    bool sp_below = sp < u->stack.lo() && sp >= u->stack.lo() - (1 << 20);
    if (in_guard || sp_below) {
      sys::raw_logf(
          "weft: stack overflow in ULT %u.%u \"%s\": fault at %p, stack pointer %p; "
          "stack [%p, %p) (%zu bytes), guard [%p, %p). Give it a larger "
          "SpawnOptions::stack_size or Options::stack_size.",
          u->index, u->generation.load(std::memory_order_relaxed), u->name, si->si_addr, sp,
          u->stack.lo(), u->stack.hi(), u->stack.size(), u->stack.base, u->stack.lo());
      abort();
    }
  }
  // Not a ULT stack overflow: give the fault its usual meaning.
  if (sys::call_previous_handler(previous, sig, si, uctx)) return;
  // Default action: restore it and return; the faulting instruction runs
  // again and the kernel kills the process with SIGSEGV as usual.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGSEGV, &dfl, nullptr);
}

}  // namespace

void install_overflow_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    sys::install_handler_before(SIGSEGV, on_segv, SA_ONSTACK, /*block_all=*/false, &previous);
  });
}

}  // namespace weft::rt
