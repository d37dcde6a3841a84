/* sys/clone_x86_64.S — start a raw KLT with clone3 or clone (x86_64).
 *
 * long weft_clone3(struct clone_args* args, size_t size, void (*fn)(void*), void* arg)
 * long weft_clone(unsigned long flags, void* stack_top, int* ptid, int* ctid,
 *                 void* tls, void (*fn)(void*), void* arg)
 *
 * In the parent both return the kernel's result (the child's tid, or -errno).
 * The child starts on its new stack with %fs already set (CLONE_SETTLS): it
 * calls fn(arg), which must not return; if it does the thread exits. The
 * child's frame has an undefined return address so that unwinders stop.
 * fn and arg reach the child in r12/r13, which the syscall preserves.
 */
#include <sys/syscall.h>

        .text
        .globl  weft_clone3
        .hidden weft_clone3
        .type   weft_clone3,@function
        .p2align 4
weft_clone3:
        .cfi_startproc
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        movq    %rdx, %r12
        movq    %rcx, %r13
        movl    $SYS_clone3, %eax
        syscall
        testq   %rax, %rax
        jz      weft_clone_child
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        ret
        .cfi_endproc
        .size   weft_clone3, .-weft_clone3

        .globl  weft_clone
        .hidden weft_clone
        .type   weft_clone,@function
        .p2align 4
weft_clone:
        .cfi_startproc
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %r13, 0
        movq    %r9, %r12               /* fn */
        movq    24(%rsp), %r13          /* arg: 7th argument, above the two pushes + ret */
        movq    %rcx, %r10              /* ctid: the kernel's 4th argument register */
        movl    $SYS_clone, %eax        /* rdi flags, rsi stack, rdx ptid, r10 ctid, r8 tls */
        syscall
        testq   %rax, %rax
        jz      weft_clone_child
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore %r12
        ret
        .cfi_endproc
        .size   weft_clone, .-weft_clone

        .type   weft_clone_child,@function
        .p2align 4
weft_clone_child:
        .cfi_startproc
        .cfi_undefined rip
        xorl    %ebp, %ebp
        andq    $-16, %rsp
        movq    %r13, %rdi
        callq   *%r12
        movl    $SYS_exit, %eax
        xorl    %edi, %edi
        syscall
        hlt
        .cfi_endproc
        .size   weft_clone_child, .-weft_clone_child

        .section .note.GNU-stack,"",@progbits
