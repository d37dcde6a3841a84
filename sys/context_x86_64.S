/* sys/context_x86_64.S — user-level context switch for x86_64 (System V).
 *
 * void* weft_context_switch(void** save_sp, void* load_sp, void* transfer)
 *   Pushes the callee-saved registers, MXCSR and the x87 control word on the
 *   current stack, stores the stack pointer in *save_sp, switches to load_sp,
 *   pops the same frame from there and jumps into the other context, where
 *   this call (or the trampoline, on first entry) returns `transfer`.
 *   Caller-saved registers need no saving: the switch is an ordinary call.
 *   Of MXCSR only the control bits are switched (see below).
 *
 * weft_context_trampoline
 *   First entry of a fresh context (context.cc builds its frame): calls
 *   r12(transfer, r13) and never returns. Its return address is undefined in
 *   the CFI, so unwinders (gdb, _Unwind_Backtrace, C++ exceptions) stop here.
 */
#include "sys/context_layout.h"

.macro  PUSH_SWITCH_FRAME
        /* The switch frame (context_layout.h), its CFI, and the MXCSR/x87
         * slot reserved (not filled). */
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
.endm


        .text
        .globl  weft_context_switch
        .hidden weft_context_switch
        .type   weft_context_switch,@function
        .p2align 4
weft_context_switch:
        .cfi_startproc
        PUSH_SWITCH_FRAME
        stmxcsr WEFT_CTX_MXCSR(%rsp)
        /* Here the whole switch frame is pushed (CFA = rsp + 64): a return
         * address equal to this label unwinds, through the CFI above, into
         * the context that saved the frame at rsp (weft_run_on_frame). */
        .globl  weft_context_switch_saved
        .hidden weft_context_switch_saved
weft_context_switch_saved:
        fnstcw  WEFT_CTX_X87CW(%rsp)

        movl    WEFT_CTX_MXCSR(%rsp), %r8d   /* this context's MXCSR and x87 CW */
        movzwl  WEFT_CTX_X87CW(%rsp), %r9d
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp      /* now on the other context's identical frame */

        /* ldmxcsr and fldcw stall the pipeline; skip them when the control
         * bits already match. The ABI makes only MXCSR's control bits
         * (bits 6-15) and the x87 control word callee-saved; MXCSR's status
         * flags (bits 0-5) are caller-saved and are not switched. */
        movl    WEFT_CTX_MXCSR(%rsp), %eax
        xorl    %r8d, %eax
        testl   $0xffc0, %eax
        jz      1f
        ldmxcsr WEFT_CTX_MXCSR(%rsp)
1:      cmpw    WEFT_CTX_X87CW(%rsp), %r9w
        je      2f
        fldcw   WEFT_CTX_X87CW(%rsp)
2:      addq    $8, %rsp
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
        /* pop + jmp rather than ret: the return-stack predictor expects
         * `ret` to go back to this context's caller and mispredicts every
         * switch (about 9 ns here); an indirect jump is predicted from its
         * own history. */
        popq    %r8
        .cfi_adjust_cfa_offset -8
        .cfi_register rip, r8
        movq    %rdx, %rax
        jmpq    *%r8
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

/* void weft_run_on_frame(void* frame_sp, void (*fn)(void*), void* arg,
 *                        void** back_sp)
 *   Calls fn(arg) on another stack as if weft_context_switch, having saved
 *   the switch frame at frame_sp (sys/context_layout.h), had called it: the
 *   return address fn sees is weft_context_switch_saved, so an unwinder
 *   started in fn walks into the context that frame describes. Used on a
 *   copy of a switched-out ULT's stack to take its backtrace without
 *   touching the ULT (runtime/dump.cc). fn must not return: it ends with
 *   weft_run_on_frame_return(*back_sp), which resumes the caller of
 *   weft_run_on_frame (callee-saved registers restored) as if it returned.
 *   frame_sp must be 16-byte aligned, with room below it for fn's frames
 *   and for any signal handler that runs meanwhile. */
        .globl  weft_run_on_frame
        .hidden weft_run_on_frame
        .type   weft_run_on_frame,@function
        .p2align 4
weft_run_on_frame:
        .cfi_startproc
        PUSH_SWITCH_FRAME       /* keeps the 16-byte alignment of the caller's frame */
        movq    %rsp, (%rcx)
        movq    %rdi, %rsp
        leaq    weft_context_switch_saved(%rip), %rax
        pushq   %rax
        movq    %rdx, %rdi
        jmpq    *%rsi
        .cfi_endproc
        .size   weft_run_on_frame, .-weft_run_on_frame

/* void weft_run_on_frame_return(void* back_sp): see weft_run_on_frame. */
        .globl  weft_run_on_frame_return
        .hidden weft_run_on_frame_return
        .type   weft_run_on_frame_return,@function
        .p2align 4
weft_run_on_frame_return:
        .cfi_startproc
        .cfi_undefined rip
        movq    %rdi, %rsp
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   weft_run_on_frame_return, .-weft_run_on_frame_return

        .section .note.GNU-stack,"",@progbits
