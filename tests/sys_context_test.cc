// Tests for sys/context.h and sys/context_x86_64.S: what the switch keeps,
// what a fresh context starts with, and that unwinding works on and stops at
// the bottom of a context's stack.
#include "sys/context.h"

#include <gtest/gtest.h>
#include <unwind.h>
#include <xmmintrin.h>

#include <sys/mman.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sys/raw_syscall.h"
#include "sys/stack.h"

namespace weft::sys {
namespace {

// ---------------------------------------------------------------------------
// Helpers

// A guarded stack that is released at scope exit.
struct TestStack {
  explicit TestStack(size_t size = 64 * 1024) {
    int r = stack_allocate(size, page_size(), &s);
    if (r != 0) ADD_FAILURE() << "stack_allocate: " << r;
  }
  ~TestStack() { stack_release(&s); }
  TestStack(const TestStack&) = delete;
  TestStack& operator=(const TestStack&) = delete;
  Stack s;
};

uint32_t GetMxcsr() {
  uint32_t v;
  __asm__ volatile("stmxcsr %0" : "=m"(v) : : "memory");
  return v;
}
void SetMxcsr(uint32_t v) { __asm__ volatile("ldmxcsr %0" : : "m"(v) : "memory"); }
uint16_t GetX87Cw() {
  uint16_t v;
  __asm__ volatile("fnstcw %0" : "=m"(v) : : "memory");
  return v;
}
void SetX87Cw(uint16_t v) { __asm__ volatile("fldcw %0" : : "m"(v) : "memory"); }

// MXCSR bits 0-5 are sticky exception flags that any FP operation may set;
// only the control bits (masks, rounding, FTZ, DAZ) are state we compare.
constexpr uint32_t kMxcsrControl = ~uint32_t{0x3f};

// Distinctive control values: never the defaults (MXCSR 0x1f80, x87 CW 0x037f)
// and never equal between the two sides of a switch.
//   MXCSR: all exceptions masked; bits 13-14 rounding, 15 FTZ, 6 DAZ.
constexpr uint32_t kMxcsrA[2] = {0x1f80 | 0x6000 | 0x8000 | 0x0040,   // toward zero, FTZ, DAZ
                                 0x1f80 | 0x4000 | 0x8000};           // up, FTZ
constexpr uint32_t kMxcsrB[2] = {0x1f80 | 0x2000,                     // down
                                 0x1f80 | 0x0040};                    // nearest, DAZ
//   x87 CW: exceptions masked; bits 8-9 precision, 10-11 rounding.
constexpr uint16_t kX87CwA[2] = {0x0c7f,   // single precision, toward zero
                                 0x087f};  // single precision, up
constexpr uint16_t kX87CwB[2] = {0x067f,   // double precision, down
                                 0x027f};  // double precision, nearest

}  // namespace
}  // namespace weft::sys

// ---------------------------------------------------------------------------
// Register-preservation harness.
//
// void* weft_test_switch_with_regs(void** save_sp, void* load_sp, void* transfer,
//                                  const RegSet* in, RegSet* out)
// Saves the caller's callee-saved registers, MXCSR and x87 CW; loads rbx, rbp,
// r12-r15, MXCSR and the x87 CW from *in; calls weft_context_switch directly
// (no compiled code in between that could save/restore a register itself and
// so hide a bug); stores the same registers, as found after the switch
// returned, into *out; restores the caller's state and returns the switch's
// result.
struct RegSet {
  uint64_t rbx, rbp, r12, r13, r14, r15;  // offsets 0..40
  uint32_t mxcsr;                         // 48
  uint16_t x87cw;                         // 52
  uint16_t pad;
};
static_assert(offsetof(RegSet, mxcsr) == 48 && offsetof(RegSet, x87cw) == 52);

extern "C" void* weft_test_switch_with_regs(void** save_sp, void* load_sp, void* transfer,
                                            const RegSet* in, RegSet* out);

asm(R"(
        .text
        .globl  weft_test_switch_with_regs
        .type   weft_test_switch_with_regs,@function
        .p2align 4
weft_test_switch_with_regs:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r15, 0
        subq    $24, %rsp            /* rsp is now 16-aligned for the call */
        .cfi_adjust_cfa_offset 24
        stmxcsr 0(%rsp)              /* caller's MXCSR and CW, restored at the end */
        fnstcw  4(%rsp)
        movq    %r8, 8(%rsp)         /* out */
        ldmxcsr 48(%rcx)
        fldcw   52(%rcx)
        movq    0(%rcx), %rbx
        movq    8(%rcx), %rbp
        movq    16(%rcx), %r12
        movq    24(%rcx), %r13
        movq    32(%rcx), %r14
        movq    40(%rcx), %r15
        call    weft_context_switch@PLT   /* rdi, rsi, rdx: as we were called */
        movq    8(%rsp), %r8
        movq    %rbx, 0(%r8)
        movq    %rbp, 8(%r8)
        movq    %r12, 16(%r8)
        movq    %r13, 24(%r8)
        movq    %r14, 32(%r8)
        movq    %r15, 40(%r8)
        stmxcsr 48(%r8)
        fnstcw  52(%r8)
        ldmxcsr 0(%rsp)
        fldcw   4(%rsp)
        addq    $24, %rsp
        .cfi_adjust_cfa_offset -24
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore %rbp
        ret                          /* rax: weft_context_switch's result */
        .cfi_endproc
        .size   weft_test_switch_with_regs, .-weft_test_switch_with_regs
        .section .note.GNU-stack,"",@progbits
        .text
)");

namespace weft::sys {
namespace {

// Register values that differ per side and per iteration, so that neither the
// other side's values nor a stale value from an earlier round can pass.
RegSet SideRegs(bool side_a, uint64_t i) {
  uint64_t tag = side_a ? 0xa000000000000000ull : 0xb000000000000000ull;
  RegSet r{};
  r.rbx = tag | 0x0b0b000000000000ull | i;
  r.rbp = tag | 0x0b9b000000000000ull | i;
  r.r12 = tag | 0x0c12000000000000ull | i;
  r.r13 = tag | 0x0c13000000000000ull | i;
  r.r14 = tag | 0x0c14000000000000ull | i;
  r.r15 = tag | 0x0c15000000000000ull | i;
  r.mxcsr = side_a ? kMxcsrA[i & 1] : kMxcsrB[i & 1];
  r.x87cw = side_a ? kX87CwA[i & 1] : kX87CwB[i & 1];
  return r;
}

// Compares what came back with what was loaded; describes the first mismatch.
bool SameRegs(const RegSet& in, const RegSet& out, char* why, size_t n, const char* side,
              uint64_t i) {
  const char* bad = nullptr;
  uint64_t want = 0, got = 0;
  if (in.rbx != out.rbx) bad = "rbx", want = in.rbx, got = out.rbx;
  else if (in.rbp != out.rbp) bad = "rbp", want = in.rbp, got = out.rbp;
  else if (in.r12 != out.r12) bad = "r12", want = in.r12, got = out.r12;
  else if (in.r13 != out.r13) bad = "r13", want = in.r13, got = out.r13;
  else if (in.r14 != out.r14) bad = "r14", want = in.r14, got = out.r14;
  else if (in.r15 != out.r15) bad = "r15", want = in.r15, got = out.r15;
  else if ((in.mxcsr & kMxcsrControl) != (out.mxcsr & kMxcsrControl))
    bad = "mxcsr", want = in.mxcsr, got = out.mxcsr;
  else if (in.x87cw != out.x87cw) bad = "x87cw", want = in.x87cw, got = out.x87cw;
  if (bad == nullptr) return true;
  snprintf(why, n, "%s side, round %llu: %s = %#llx, expected %#llx", side,
           static_cast<unsigned long long>(i), bad, static_cast<unsigned long long>(got),
           static_cast<unsigned long long>(want));
  return false;
}

void* Tag(uint64_t side, uint64_t i) { return reinterpret_cast<void*>((side << 48) | i); }
constexpr uint64_t kFromA = 0xa, kFromB = 0xb, kDone = 0xd;

struct RegTest {
  Context a, b;  // a: the test's native context; b: the context on a weft stack
  uint64_t rounds = 0;
  uint64_t b_reg_failures = 0, b_transfer_failures = 0, b_rounds = 0;
  char b_first_failure[200] = "";
};

void RegTestEntry(void* transfer, void* arg) {
  context_entered();
  auto* t = static_cast<RegTest*>(arg);
  for (uint64_t i = 0;; ++i) {
    // The value that resumed us must be exactly what side A passed this round.
    if (transfer != Tag(kFromA, i) && transfer != Tag(kDone, 0) &&
        t->b_transfer_failures++ == 0 && t->b_first_failure[0] == '\0') {
      snprintf(t->b_first_failure, sizeof t->b_first_failure,
                 "B side, round %llu: transfer %p, expected %p",
                 static_cast<unsigned long long>(i), transfer, Tag(kFromA, i));
    }
    if (transfer == Tag(kDone, 0)) break;
    RegSet in = SideRegs(false, i), out{};
    transfer = weft_test_switch_with_regs(&t->b.sp, t->a.sp, Tag(kFromB, i), &in, &out);
    char why[200];
    if (!SameRegs(in, out, why, sizeof why, "B", i) && t->b_reg_failures++ == 0 &&
        t->b_first_failure[0] == '\0')
      memcpy(t->b_first_failure, why, sizeof why);
    t->b_rounds++;
  }
  // Leave through the harness too: compiled code must not run on registers
  // that a faulty switch left behind before the checks have been made.
  RegSet in = SideRegs(false, 0), out{};
  weft_test_switch_with_regs(&t->b.sp, t->a.sp, Tag(kDone, 1), &in, &out);
  __builtin_trap();  // never resumed
}

// 10^6 round trips (2*10^6 switches) between a native context and one on a
// weft stack: after every resume each side finds exactly the rbx, rbp,
// r12-r15, MXCSR and x87 control word it had loaded before switching away
// (the other side loads different values meanwhile), and context_switch
// returns exactly the transfer value the other side passed.
TEST(ContextSwitch, PreservesCalleeSavedRegistersMxcsrAndX87CwAndTransfer) {
#if WEFT_ASAN || WEFT_TSAN
  GTEST_SKIP() << "drives weft_context_switch directly from assembly, bypassing the sanitizer "
                  "fiber bookkeeping of context_switch_sanitized";
#endif
  constexpr uint64_t kRounds = 1'000'000;
  TestStack stack;
  RegTest t;
  context_init_native(&t.a);
  context_init(&t.b, stack.s.lo(), stack.s.size(), &RegTestEntry, &t);

  uint32_t mxcsr_before = GetMxcsr();
  uint16_t cw_before = GetX87Cw();
  uint64_t reg_failures = 0, transfer_failures = 0;
  std::string first_failure;
  for (uint64_t i = 0; i < kRounds; ++i) {
    RegSet in = SideRegs(true, i), out{};
    void* got = weft_test_switch_with_regs(&t.a.sp, t.b.sp, Tag(kFromA, i), &in, &out);
    char why[200];
    if (!SameRegs(in, out, why, sizeof why, "A", i) && reg_failures++ == 0) first_failure = why;
    if (got != Tag(kFromB, i) && transfer_failures++ == 0 && first_failure.empty()) {
      snprintf(why, sizeof why, "A side, round %llu: transfer %p, expected %p",
               static_cast<unsigned long long>(i), got, Tag(kFromB, i));
      first_failure = why;
    }
  }
  RegSet in = SideRegs(true, 0), out{};
  void* last = weft_test_switch_with_regs(&t.a.sp, t.b.sp, Tag(kDone, 0), &in, &out);
  EXPECT_EQ(last, Tag(kDone, 1));
  context_destroy(&t.b);

  EXPECT_EQ(reg_failures, 0u) << first_failure;
  EXPECT_EQ(transfer_failures, 0u) << first_failure;
  EXPECT_EQ(t.b_rounds, kRounds);
  EXPECT_EQ(t.b_reg_failures, 0u) << t.b_first_failure;
  EXPECT_EQ(t.b_transfer_failures, 0u) << t.b_first_failure;
  // The harness restored the test's own FP control state.
  EXPECT_EQ(GetMxcsr() & kMxcsrControl, mxcsr_before & kMxcsrControl);
  EXPECT_EQ(GetX87Cw(), cw_before);
}

// ---------------------------------------------------------------------------
// First entry: transfer value, argument, FP control state, stack alignment.

struct EntryProbe {
  Context main, ctx;
  void* transfer = nullptr;
  void* arg = nullptr;
  uint32_t mxcsr = 0;
  uint16_t x87cw = 0;
  uintptr_t cfa = 0, frame = 0, aligned_local = 0;
  char printed[64] = "";
};

void ProbeEntry(void* transfer, void* arg) {
  context_entered();
  // Read the FP control state before anything can change it.
  uint32_t mxcsr = GetMxcsr();
  uint16_t cw = GetX87Cw();
  auto* p = static_cast<EntryProbe*>(arg);
  p->mxcsr = mxcsr;
  p->x87cw = cw;
  SetMxcsr(0x1f80);  // run the rest of the entry with the ABI defaults
  SetX87Cw(0x037f);
  p->transfer = transfer;
  p->arg = arg;
  // The CFA is the caller's rsp before its call: the ABI wants it 16-aligned.
  // Launder the values so the compiler cannot assume their alignment.
  uintptr_t cfa = reinterpret_cast<uintptr_t>(__builtin_dwarf_cfa());
  uintptr_t frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  alignas(16) float v[4];
  uintptr_t local = reinterpret_cast<uintptr_t>(&v[0]);
  __asm__ volatile("" : "+r"(cfa), "+r"(frame), "+r"(local) : : "memory");
  p->cfa = cfa;
  p->frame = frame;
  p->aligned_local = local;
  // What a misaligned stack breaks in practice: movaps to an aligned local,
  // and glibc's printf of doubles (its prologue spills xmm registers with
  // movaps). Only tried when aligned, so that a bug fails the assertions
  // instead of crashing the test binary.
  if (cfa % 16 == 0 && local % 16 == 0) {
    _mm_store_ps(v, _mm_set_ps(4.f, 3.f, 2.f, 1.f));
    snprintf(p->printed, sizeof p->printed, "%.2f %.1f", 3.25, static_cast<double>(v[3]));
  }
  context_exit_to(&p->ctx, &p->main, nullptr);
}

// The entry function receives the transfer value of the switch that first
// entered the context, and the argument given to context_init.
TEST(ContextInit, FirstEntryReceivesTransferAndArg) {
  TestStack stack;
  EntryProbe p;
  context_init_native(&p.main);
  context_init(&p.ctx, stack.s.lo(), stack.s.size(), &ProbeEntry, &p);
  int token;
  context_switch(&p.main, &p.ctx, &token);
  EXPECT_EQ(p.transfer, &token);
  EXPECT_EQ(p.arg, &p);
  context_destroy(&p.ctx);
}

// A fresh context starts with the MXCSR and x87 control word its creator had
// when it called context_init (not the values at the first switch, not the
// defaults), and the creator gets its own back when the context leaves.
TEST(ContextInit, FreshContextInheritsCreatorsFpControlState) {
  TestStack stack;
  EntryProbe p;
  context_init_native(&p.main);
  uint32_t saved_mxcsr = GetMxcsr();
  uint16_t saved_cw = GetX87Cw();
  SetMxcsr(kMxcsrA[0]);
  SetX87Cw(kX87CwA[0]);
  context_init(&p.ctx, stack.s.lo(), stack.s.size(), &ProbeEntry, &p);
  SetMxcsr(kMxcsrB[0]);  // what the creator has at the first switch differs
  SetX87Cw(kX87CwB[0]);
  context_switch(&p.main, &p.ctx, nullptr);
  uint32_t after_mxcsr = GetMxcsr();
  uint16_t after_cw = GetX87Cw();
  SetMxcsr(saved_mxcsr);
  SetX87Cw(saved_cw);
  EXPECT_EQ(p.mxcsr & kMxcsrControl, kMxcsrA[0] & kMxcsrControl);
  EXPECT_EQ(p.x87cw, kX87CwA[0]);
  EXPECT_EQ(after_mxcsr & kMxcsrControl, kMxcsrB[0] & kMxcsrControl);
  EXPECT_EQ(after_cw, kX87CwB[0]);
  context_destroy(&p.ctx);
}

// On first entry the stack is aligned as the ABI requires at a call: the
// entry function's CFA is the top of the stack rounded down to 16 bytes,
// aligned locals are aligned, and movaps/printf of doubles work. Checked for
// stack ends at every offset modulo 16.
TEST(ContextInit, EntryFrameIsAbiAlignedForAnyStackEnd) {
  TestStack stack;
  for (size_t cut = 0; cut < 32; ++cut) {
    SCOPED_TRACE(testing::Message() << "stack size reduced by " << cut << " bytes");
    EntryProbe p;
    context_init_native(&p.main);
    size_t size = stack.s.size() - cut;
    context_init(&p.ctx, stack.s.lo(), size, &ProbeEntry, &p);
    context_switch(&p.main, &p.ctx, nullptr);
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack.s.lo()) + size) & ~uintptr_t{15};
    EXPECT_EQ(p.cfa, top);
    EXPECT_EQ(p.cfa % 16, 0u);
    EXPECT_EQ(p.frame % 16, 0u);  // rbp after push rbp; mov rsp, rbp
    EXPECT_EQ(p.aligned_local % 16, 0u);
    EXPECT_STREQ(p.printed, "3.25 4.0");
    context_destroy(&p.ctx);
  }
}

// Fills the top kPoison bytes of `s` (above a context's top when it was made
// with size `s.size() - kPoison`) with return addresses into the trampoline.
// An unwinder that read anything beyond the trampoline's frame would find
// plausible frames there and keep going, instead of stopping.
constexpr size_t kPoison = 16 * 1024;
void PoisonAboveTop(const Stack& s, size_t below_end = 0) {
  auto* p = reinterpret_cast<uintptr_t*>(s.hi() - below_end - kPoison);
  for (size_t i = 0; i < kPoison / sizeof(uintptr_t); ++i)
    p[i] = reinterpret_cast<uintptr_t>(&weft_context_trampoline) + 4;
}


// ---------------------------------------------------------------------------
// C++ exceptions on a context's stack.

struct TestError {
  int value;
};

int g_destroyed = 0;
struct CountsDestruction {
  ~CountsDestruction() { ++g_destroyed; }
};

[[gnu::noinline]] void ThrowAtDepth(int depth, int value) {
  CountsDestruction guard;  // must be destroyed while unwinding
  if (depth == 0) throw TestError{value};
  ThrowAtDepth(depth - 1, value);
  __asm__ volatile("");  // no tail call
}

struct ExceptionTest {
  Context main, ctx;
  std::vector<int> caught;      // values seen by catch blocks on the context's stack
  int destroyed_after_first = -1;
  int wrong_handler = 0;
  int uncaught_at_end = -1;
  std::exception_ptr captured;  // thrown on the context, rethrown on the main stack
  void* resumed_with = nullptr;
};

void ExceptionEntry(void*, void* arg) {
  context_entered();
  auto* t = static_cast<ExceptionTest*>(arg);
  // 1. Throw through five frames with destructors; catch in the entry function.
  g_destroyed = 0;
  try {
    ThrowAtDepth(5, 1);
  } catch (const TestError& e) {
    t->caught.push_back(e.value);
  }
  t->destroyed_after_first = g_destroyed;
  // 2. Nested try blocks: a non-matching handler is skipped, a matching one
  //    rethrows the same object, an outer one catches it again.
  try {
    try {
      try {
        ThrowAtDepth(3, 2);
      } catch (const std::logic_error&) {
        t->wrong_handler++;
      }
      t->wrong_handler++;  // not reached
    } catch (TestError& e) {
      t->caught.push_back(e.value * 10);
      e.value = 3;
      throw;  // the same object, modified
    }
  } catch (const TestError& e) {
    t->caught.push_back(e.value * 100);
  }
  // 3. A standard exception thrown by the library, caught as its base.
  try {
    std::vector<int> v;
    (void)v.at(7);
  } catch (const std::exception&) {
    t->caught.push_back(4);
  }
  // Switch to the main stack (outside any catch block) and come back.
  t->resumed_with = context_switch(&t->ctx, &t->main, nullptr);
  // 4. Throw again after the main stack threw and caught meanwhile; capture
  //    the exception for the main stack to rethrow.
  try {
    ThrowAtDepth(2, 5);
  } catch (...) {
    t->captured = std::current_exception();
  }
  t->uncaught_at_end = std::uncaught_exceptions();
  context_exit_to(&t->ctx, &t->main, nullptr);
}

// Exceptions thrown and caught on a switched-to stack: through several
// frames (running their destructors), through nested handlers with a
// rethrow, from the standard library; interleaved with throws on the main
// stack; and an exception captured there can be rethrown on the main stack.
// Control switches back normally afterwards.
TEST(ContextExceptions, ThrowCatchAndRethrowOnContextStack) {
  TestStack stack(256 * 1024);
  ExceptionTest t;
  context_init_native(&t.main);
  context_init(&t.ctx, stack.s.lo(), stack.s.size(), &ExceptionEntry, &t);
  context_switch(&t.main, &t.ctx, nullptr);
  EXPECT_EQ(t.caught, (std::vector<int>{1, 20, 300, 4}));
  EXPECT_EQ(t.destroyed_after_first, 6);  // depths 5..0
  EXPECT_EQ(t.wrong_handler, 0);

  // The main stack throws and catches while the context is suspended.
  int main_caught = 0;
  try {
    ThrowAtDepth(4, 9);
  } catch (const TestError& e) {
    main_caught = e.value;
  }
  EXPECT_EQ(main_caught, 9);

  int token;
  context_switch(&t.main, &t.ctx, &token);
  EXPECT_EQ(t.resumed_with, &token);
  EXPECT_EQ(t.uncaught_at_end, 0);
  ASSERT_TRUE(t.captured != nullptr);
  int rethrown = 0;
  try {
    std::rethrow_exception(t.captured);
  } catch (const TestError& e) {
    rethrown = e.value;
  }
  EXPECT_EQ(rethrown, 5);
  EXPECT_EQ(std::uncaught_exceptions(), 0);
  context_destroy(&t.ctx);
}

void ThrowingEntry(void*, void*) {
  context_entered();
  ThrowAtDepth(3, 7);
}

void RunThrowingContext() {
  TestStack stack;
  Context main;
  Context ctx;
  context_init_native(&main);
  // Above the context's top: frames that look valid, then an inaccessible
  // page, so an unwinder that went past the trampoline would fault.
  size_t ps = page_size();
  if (mprotect(stack.s.hi() - ps, ps, PROT_NONE) != 0) _exit(2);
  context_init(&ctx, stack.s.lo(), stack.s.size() - kPoison - ps, &ThrowingEntry, nullptr);
  PoisonAboveTop(stack.s, ps);
  context_switch(&main, &ctx, nullptr);
  _exit(1);  // not reached
}

// An exception that escapes the entry function finds no handler: the
// unwinder stops at the trampoline (end of stack) and std::terminate runs,
// rather than the unwinder walking off the stack into garbage (which here
// would end in SIGSEGV on an inaccessible page above the stack's top).
TEST(ContextExceptionsDeathTest, UncaughtExceptionTerminatesCleanly) {
  EXPECT_EXIT(RunThrowingContext(), testing::KilledBySignal(SIGABRT),
              "terminate called after throwing an instance of");
}

// ---------------------------------------------------------------------------
// _Unwind_Backtrace from inside a context.

struct Backtrace {
  Context main, ctx;
  _Unwind_Reason_Code rc = _URC_NO_REASON;
  std::vector<uintptr_t> ips;  // one per frame, innermost first
};

_Unwind_Reason_Code CollectFrame(_Unwind_Context* uc, void* arg) {
  auto* ips = static_cast<std::vector<uintptr_t>*>(arg);
  ips->push_back(_Unwind_GetIP(uc));
  if (ips->size() > 1000) return _URC_END_OF_STACK;  // ran away: reported as a failure
  return _URC_NO_REASON;
}

[[gnu::noipa]] void BacktraceDepth(Backtrace* b, int depth) {
  if (depth == 0) {
    b->rc = _Unwind_Backtrace(&CollectFrame, &b->ips);
  } else {
    BacktraceDepth(b, depth - 1);
  }
  __asm__ volatile("");  // no tail call
}

extern "C" [[gnu::noipa]] void WeftTestBacktraceEntry(void*, void* arg) {
  context_entered();
  auto* b = static_cast<Backtrace*>(arg);
  b->ips.reserve(64);
  BacktraceDepth(b, 3);
  __asm__ volatile("");
  context_exit_to(&b->ctx, &b->main, nullptr);
}

void* FunctionOf(uintptr_t ip) {
  // Return addresses point after the call; look up the call itself.
  return ip == 0 ? nullptr : _Unwind_FindEnclosingFunction(reinterpret_cast<void*>(ip));
}

// _Unwind_Backtrace called on a context's stack ends with _URC_END_OF_STACK
// after a handful of frames: the callers inside the context, the entry
// function, and the trampoline as the outermost frame with a return address,
// even when the memory above the stack's top looks like more frames.
TEST(ContextUnwind, BacktraceStopsCleanlyAtEntry) {
  TestStack stack;
  Backtrace b;
  context_init_native(&b.main);
  context_init(&b.ctx, stack.s.lo(), stack.s.size() - kPoison, &WeftTestBacktraceEntry, &b);
  PoisonAboveTop(stack.s);
  context_switch(&b.main, &b.ctx, nullptr);
  context_destroy(&b.ctx);

  EXPECT_EQ(b.rc, _URC_END_OF_STACK);
  // BacktraceDepth x4, the entry function, the trampoline, and possibly a
  // last frame with ip 0 (libgcc reports the frame whose return address is
  // undefined).
  EXPECT_GE(b.ips.size(), 6u);
  EXPECT_LE(b.ips.size(), 8u);
  size_t entry_at = b.ips.size(), trampoline_at = b.ips.size(), last_nonzero = 0;
  for (size_t i = 0; i < b.ips.size(); ++i) {
    void* fn = FunctionOf(b.ips[i]);
    if (fn == reinterpret_cast<void*>(&WeftTestBacktraceEntry) && entry_at == b.ips.size())
      entry_at = i;
    if (fn == reinterpret_cast<void*>(&weft_context_trampoline)) trampoline_at = i;
    if (b.ips[i] != 0) last_nonzero = i;
  }
  ASSERT_LT(entry_at, b.ips.size()) << "entry function's frame missing from the backtrace";
  ASSERT_LT(trampoline_at, b.ips.size()) << "trampoline's frame missing from the backtrace";
  EXPECT_EQ(trampoline_at, entry_at + 1);
  EXPECT_EQ(last_nonzero, trampoline_at) << "frames reported beyond the trampoline";
  // Everything inside the context is BacktraceDepth.
  for (size_t i = 0; i < entry_at; ++i)
    EXPECT_EQ(FunctionOf(b.ips[i]), reinterpret_cast<void*>(&BacktraceDepth)) << "frame " << i;
}

// ---------------------------------------------------------------------------
// Migration: a context suspended on one thread resumes on another.

struct Migrate {
  Context home, ctx;
  int tid_first = 0, tid_second = 0;
};

void MigrateEntry(void*, void* arg) {
  context_entered();
  auto* m = static_cast<Migrate*>(arg);
  m->tid_first = gettid();
  context_switch(&m->ctx, &m->home, nullptr);  // `home` now belongs to another thread
  m->tid_second = gettid();
  context_exit_to(&m->ctx, &m->home, nullptr);
}

// The switch keeps no per-thread state: a context suspended by one thread can
// be resumed by another and runs there.
TEST(ContextSwitch, SuspendedContextResumesOnAnotherThread) {
  TestStack stack;
  Migrate m;
  context_init(&m.ctx, stack.s.lo(), stack.s.size(), &MigrateEntry, &m);
  int t1 = 0, t2 = 0;
  std::thread([&] {
    t1 = gettid();
    context_init_native(&m.home);
    context_switch(&m.home, &m.ctx, nullptr);
  }).join();
  std::thread([&] {
    t2 = gettid();
    context_init_native(&m.home);
    context_switch(&m.home, &m.ctx, nullptr);
  }).join();
  EXPECT_NE(t1, t2);
  EXPECT_EQ(m.tid_first, t1);
  EXPECT_EQ(m.tid_second, t2);
  context_destroy(&m.ctx);
}

}  // namespace
}  // namespace weft::sys
