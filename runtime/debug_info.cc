// runtime/debug_info.cc — the layout record for debuggers and the wait
// note (design: debug_info.h).
#include "runtime/debug_info.h"

#include <cstddef>

#include "runtime/globals.h"
#include "runtime/scheduler.h"
#include "runtime/ult.h"
#include "sys/context_layout.h"

// offsetof on the descriptor and worker, which hold atomics and are not
// standard-layout in the language's strict sense; GCC and Clang give the
// byte offsets a debugger needs.
#pragma GCC diagnostic ignored "-Winvalid-offsetof"

namespace weft::rt {

WaitNote::WaitNote(UltDesc* self, const char* what, const void* obj, int64_t arg) : self_(self) {
  if (self_ == nullptr) return;
  self_->wait_obj.store(obj, std::memory_order_relaxed);
  self_->wait_arg.store(arg, std::memory_order_relaxed);
  self_->wait_what.store(what, std::memory_order_relaxed);
}

WaitNote::~WaitNote() {
  if (self_ == nullptr) return;
  self_->wait_what.store(nullptr, std::memory_order_relaxed);
}

}  // namespace weft::rt

using weft::rt::Globals;
using weft::rt::UltDesc;
using weft::rt::Worker;

// Declared extern "C" in debug_info.h: the definition keeps that linkage.

__attribute__((visibility("default"), used)) WeftDebugInfo weft_debug_info = {
    .magic = kWeftDebugMagic,
    .version = 1,
    .chunks = 0,   // set when the table is made (globals.cc)
    .created = 0,
    .chunk_bits = Globals::Table::kChunkBits,
    .max_chunks = Globals::Table::kMaxChunks,
    .desc_size = sizeof(UltDesc),
    .ult_sp = offsetof(UltDesc, ctx) + offsetof(weft::sys::Context, sp),
    .ult_state = offsetof(UltDesc, state),
    .ult_index = offsetof(UltDesc, index),
    .ult_generation = offsetof(UltDesc, generation),
    .ult_name = offsetof(UltDesc, name),
    .ult_name_len = sizeof(UltDesc::name),
    .ult_worker = offsetof(UltDesc, worker),
    .ult_live_in = offsetof(UltDesc, live_in),
    .ult_eff_prio = offsetof(UltDesc, eff_prio),
    .ult_wait_what = offsetof(UltDesc, wait_what),
    .ult_wait_obj = offsetof(UltDesc, wait_obj),
    .ult_wait_arg = offsetof(UltDesc, wait_arg),
    .ult_bound = offsetof(UltDesc, bound),
    .worker_index = offsetof(Worker, index),
    .worker_tid = offsetof(Worker, tid),
    .worker_current = offsetof(Worker, current),
    .ctx_frame_size = WEFT_CTX_FRAME_SIZE,
    .ctx_rip = WEFT_CTX_RIP,
    .ctx_rbp = WEFT_CTX_RBP,
    .ctx_rbx = WEFT_CTX_RBX,
    .ctx_r12 = WEFT_CTX_R12,
    .ctx_r13 = WEFT_CTX_R13,
    .ctx_r14 = WEFT_CTX_R14,
    .ctx_r15 = WEFT_CTX_R15,
    .ult_stack_base = offsetof(UltDesc, stack) + offsetof(weft::sys::Stack, base),
    .ult_stack_size = offsetof(UltDesc, stack) + offsetof(weft::sys::Stack, map_size),
};
