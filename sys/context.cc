// sys/context.cc — making, entering and destroying contexts (the switch
// itself is context_x86_64.S; the contract is context.h).
#include "sys/context.h"

#include <pthread.h>

#if WEFT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if WEFT_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace weft::sys {

void context_init(Context* ctx, void* lo, size_t size, ContextEntry entry, void* arg) {
#if WEFT_ASAN
  // A stack may be reused (a recycled ULT descriptor keeps its stack): the
  // frames of its previous context left ASan's redzone poison in the shadow
  // (a context that ends never returns through their epilogues). Start clean.
  __asan_unpoison_memory_region(lo, size);
#endif
  uintptr_t top = (reinterpret_cast<uintptr_t>(lo) + size) & ~uintptr_t{15};
  // After the switch's `ret` pops rip, rsp == top (16-aligned), so the
  // trampoline's call gives the entry function the ABI's entry alignment.
  auto* f = reinterpret_cast<SwitchFrame*>(top - sizeof(SwitchFrame));
  uint32_t mxcsr;
  uint16_t cw;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  *f = SwitchFrame{};
  f->mxcsr = mxcsr;
  f->x87cw = cw;
  f->r12 = reinterpret_cast<uint64_t>(entry);
  f->r13 = reinterpret_cast<uint64_t>(arg);
  f->rip = reinterpret_cast<void*>(&weft_context_trampoline);
  __atomic_store_n(&ctx->sp, static_cast<void*>(f), __ATOMIC_RELAXED);  // read by dumps on other threads (Context)
#if WEFT_ASAN || WEFT_TSAN
  ctx->stack_lo = lo;
  ctx->stack_size = size;
  ctx->asan_fake_stack = nullptr;
  ctx->owns_stack = true;
#endif
#if WEFT_TSAN
  ctx->tsan_fiber = __tsan_create_fiber(0);
#endif
}

void context_init_native(Context* ctx) {
  *ctx = Context{};
#if WEFT_ASAN || WEFT_TSAN
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* lo = nullptr;
    size_t size = 0;
    pthread_attr_getstack(&attr, &lo, &size);
    pthread_attr_destroy(&attr);
    ctx->stack_lo = lo;
    ctx->stack_size = size;
  }
#endif
#if WEFT_TSAN
  ctx->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void context_destroy(Context* ctx) {
#if WEFT_ASAN
  // The stack goes back to its owner (the runtime caches it for the next
  // ULT, which first writes its closure at the top, before context_init):
  // clear the redzone poison its frames left. Never for a native context,
  // whose stack is the running thread's own.
  if (ctx->owns_stack && ctx->stack_lo != nullptr)
    __asan_unpoison_memory_region(ctx->stack_lo, ctx->stack_size);
#endif
#if WEFT_TSAN
  if (ctx->owns_stack && ctx->tsan_fiber != nullptr) __tsan_destroy_fiber(ctx->tsan_fiber);
  ctx->tsan_fiber = nullptr;
#endif
#if WEFT_ASAN || WEFT_TSAN
  ctx->owns_stack = false;
#endif
  __atomic_store_n(&ctx->sp, nullptr, __ATOMIC_RELAXED);
}

#if WEFT_ASAN || WEFT_TSAN
void* context_switch_sanitized(Context* from, Context* to, void* transfer, bool final) {
#if WEFT_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &from->asan_fake_stack, to->stack_lo,
                                 to->stack_size);
#endif
#if WEFT_TSAN
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  void* r = weft_context_switch(&from->sp, to->sp, transfer);
#if WEFT_ASAN
  __sanitizer_finish_switch_fiber(from->asan_fake_stack, nullptr, nullptr);
#endif
  (void)final;
  return r;
}

void context_entered_sanitized() {
#if WEFT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}
#endif

}  // namespace weft::sys
