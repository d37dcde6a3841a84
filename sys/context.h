// sys/context.h — user-level execution contexts and the switch between them.
//
// A Context is a suspended flow of control: a stack pointer into a stack
// whose top holds the switch frame of sys/context_layout.h. Switching costs
// one call: the callee-saved registers (rbx, rbp, r12-r15), MXCSR and the x87
// control word are pushed, the stack pointer is exchanged, and the other
// context's frame is popped. As in the ABI, only MXCSR's control bits
// (rounding, exception masks, FTZ/DAZ) and the x87 control word are
// per-context; MXCSR's sticky status flags are caller-saved and not switched.
// Nothing else is saved: signal masks, errno and the C++ exception globals
// are policy and belong to runtime/.
//
// A value (`transfer`) travels with every switch: context_switch() returns
// the value that was passed by whichever switch resumed this context, and a
// fresh context's entry function receives it as its first argument. The
// runtime uses it to tell the resumed side what to do with the context it
// just left (requeue it, release it) once that context is truly off-CPU.
//
// Unwinding: the switch routine carries CFI for its frame and the first-entry
// trampoline marks the return address undefined, so gdb backtraces and
// _Unwind_Backtrace from inside a context stop cleanly at its entry function,
// and C++ exceptions thrown and caught on a context's stack work.
//
// Sanitizers: in ASan/TSan builds each Context also carries the fiber
// bookkeeping those tools need (see context.cc); callers see no difference,
// except that an entry function must call context_entered() first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "sys/context_layout.h"

#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif

extern "C" {
void* weft_context_switch(void** save_sp, void* load_sp, void* transfer);
// Runs fn(arg) on a stack whose switch frame is at frame_sp, as if that
// frame's weft_context_switch had called it (context_x86_64.S): for taking
// the backtrace of a copy of a switched-out context. fn ends with
// weft_run_on_frame_return(*back_sp), never by returning.
void weft_run_on_frame(void* frame_sp, void (*fn)(void*), void* arg, void** back_sp);
[[noreturn]] void weft_run_on_frame_return(void* back_sp);
void weft_context_trampoline();
}

namespace weft::sys {

// The frame at a suspended context's stack pointer. Must match
// context_layout.h and the assembly; checked below.
struct SwitchFrame {
  uint32_t mxcsr;
  uint16_t x87cw;
  uint16_t unused;
  uint64_t r15, r14, r13, r12, rbx, rbp;
  void* rip;
};
static_assert(offsetof(SwitchFrame, mxcsr) == WEFT_CTX_MXCSR);
static_assert(offsetof(SwitchFrame, x87cw) == WEFT_CTX_X87CW);
static_assert(offsetof(SwitchFrame, r15) == WEFT_CTX_R15);
static_assert(offsetof(SwitchFrame, r14) == WEFT_CTX_R14);
static_assert(offsetof(SwitchFrame, r13) == WEFT_CTX_R13);
static_assert(offsetof(SwitchFrame, r12) == WEFT_CTX_R12);
static_assert(offsetof(SwitchFrame, rbx) == WEFT_CTX_RBX);
static_assert(offsetof(SwitchFrame, rbp) == WEFT_CTX_RBP);
static_assert(offsetof(SwitchFrame, rip) == WEFT_CTX_RIP);
static_assert(sizeof(SwitchFrame) == WEFT_CTX_FRAME_SIZE);

// The entry function of a fresh context. `transfer` is the value of the
// switch that first entered it; `arg` the value given to context_init. It
// must never return: it ends by switching away for good (context_exit_to).
using ContextEntry = void (*)(void* transfer, void* arg);

struct Context {
  // Valid only while the context is suspended. Other threads may read it
  // (runtime/dump.cc, relaxed): C++ writes it with relaxed atomic stores.
  void* sp = nullptr;
#if WEFT_ASAN || WEFT_TSAN
  const void* stack_lo = nullptr;   // bounds of the stack this context runs on
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;  // ASan's fake-stack handle while suspended
  void* tsan_fiber = nullptr;       // TSan's fiber for this context
  bool owns_stack = false;          // made by context_init, not a thread's native stack
#endif
};

// Prepares `ctx` to run `entry(transfer, arg)` on the stack [lo, lo+size)
// at its first switch. The stack's top 16-byte-aligned address is the
// entry function's frame base. MXCSR and the x87 control word start as the
// calling thread's (as with pthread_create).
void context_init(Context* ctx, void* lo, size_t size, ContextEntry entry, void* arg);

// Makes `ctx` describe the calling thread's own (native) stack, so that it
// can be switched away from and back to. Only sanitizer builds need the
// bounds; elsewhere this just clears `ctx`.
void context_init_native(Context* ctx);

// Releases what context_init acquired (sanitizer bookkeeping only). The
// context must not be running.
void context_destroy(Context* ctx);

#if WEFT_ASAN || WEFT_TSAN
void* context_switch_sanitized(Context* from, Context* to, void* transfer, bool final);
void context_entered_sanitized();
#endif

// Suspends the running context into `from` and resumes `to`. Returns the
// transfer value of the switch that later resumes `from`. `from` must be the
// running context; `to` must be suspended (or fresh).
inline void* context_switch(Context* from, Context* to, void* transfer) {
#if WEFT_ASAN || WEFT_TSAN
  return context_switch_sanitized(from, to, transfer, false);
#else
  return weft_context_switch(&from->sp, to->sp, transfer);
#endif
}

// Like context_switch, for the last switch away from a context that will
// never be resumed (its stack may be reused once the switch is done).
[[noreturn]] inline void context_exit_to(Context* from, Context* to, void* transfer) {
#if WEFT_ASAN || WEFT_TSAN
  context_switch_sanitized(from, to, transfer, true);
#else
  weft_context_switch(&from->sp, to->sp, transfer);
#endif
  __builtin_unreachable();
}

// Must be the first call in every ContextEntry (a no-op without sanitizers).
inline void context_entered() {
#if WEFT_ASAN || WEFT_TSAN
  context_entered_sanitized();
#endif
}

}  // namespace weft::sys
