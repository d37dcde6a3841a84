/* sys/context_layout.h — the switch frame, shared by context_x86_64.S and C++.
 *
 * A suspended context is just a stack pointer. At that address lies the
 * frame weft_context_switch pushed (lowest address first):
 *
 *   sp+0   MXCSR (4 bytes), x87 control word (2 bytes), 2 bytes unused
 *   sp+8   r15
 *   sp+16  r14
 *   sp+24  r13
 *   sp+32  r12
 *   sp+40  rbx
 *   sp+48  rbp
 *   sp+56  return address (where the context resumes)
 *
 * Every suspended context has this exact layout, so the CFI that describes
 * it stays true across the stack switch inside the routine.
 */
#ifndef WEFT_SYS_CONTEXT_LAYOUT_H_
#define WEFT_SYS_CONTEXT_LAYOUT_H_

#define WEFT_CTX_MXCSR 0
#define WEFT_CTX_X87CW 4
#define WEFT_CTX_R15 8
#define WEFT_CTX_R14 16
#define WEFT_CTX_R13 24
#define WEFT_CTX_R12 32
#define WEFT_CTX_RBX 40
#define WEFT_CTX_RBP 48
#define WEFT_CTX_RIP 56
#define WEFT_CTX_FRAME_SIZE 64

#endif
