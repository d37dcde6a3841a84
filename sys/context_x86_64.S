/* sys/context_x86_64.S — user-level context switch for x86_64 (System V).
 *
 * void* weft_context_switch(void** save_sp, void* load_sp, void* transfer)
 *   Pushes the callee-saved registers, MXCSR and the x87 control word on the
 *   current stack, stores the stack pointer in *save_sp, switches to load_sp,
 *   pops the same frame from there and returns into the other context, where
 *   this call (or the trampoline, on first entry) returns `transfer`.
 *   Caller-saved registers need no saving: the switch is an ordinary call.
 *
 * weft_context_trampoline
 *   First entry of a fresh context (context.cc builds its frame): calls
 *   r12(transfer, r13) and never returns. Its return address is undefined in
 *   the CFI, so unwinders (gdb, _Unwind_Backtrace, C++ exceptions) stop here.
 */
#include "sys/context_layout.h"

        .text
        .globl  weft_context_switch
        .hidden weft_context_switch
        .type   weft_context_switch,@function
        .p2align 4
weft_context_switch:
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
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        stmxcsr WEFT_CTX_MXCSR(%rsp)
        fnstcw  WEFT_CTX_X87CW(%rsp)

        movq    %rsp, (%rdi)
        movq    %rsi, %rsp      /* now on the other context's identical frame */

        ldmxcsr WEFT_CTX_MXCSR(%rsp)
        fldcw   WEFT_CTX_X87CW(%rsp)
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
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
        movq    %rdx, %rax
        ret
        .cfi_endproc
        .size   weft_context_switch, .-weft_context_switch

        .globl  weft_context_trampoline
        .hidden weft_context_trampoline
        .type   weft_context_trampoline,@function
        .p2align 4
weft_context_trampoline:
        .cfi_startproc
        .cfi_undefined rip
        movq    %rax, %rdi      /* transfer value of the switch that entered us */
        movq    %r13, %rsi      /* the argument given to context_init */
        callq   *%r12
        ud2                     /* the entry function must never return */
        .cfi_endproc
        .size   weft_context_trampoline, .-weft_context_trampoline

        .section .note.GNU-stack,"",@progbits
