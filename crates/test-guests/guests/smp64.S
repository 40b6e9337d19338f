/* smp64: the BSP wakes the AP with APIC ID 1 by INIT and STARTUP IPIs through its local
 * APIC. The AP starts in real mode at 0x8000 (a trampoline copied there), writes "AP up"
 * to COM1 and sets a flag in memory; the BSP waits for the flag, prints "smp ok" and exits
 * with 0x14 (41). */
#include "common64.h"
#define LAPIC 0xfee00000
#define ICR_LO 0x300
#define ICR_HI 0x310
#define TRAMPOLINE 0x8000
#define FLAG 0x7000
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    movl $0, FLAG
    /* Copy the real-mode trampoline to 0x8000. */
    lea ap_start(%rip), %rsi
    mov $TRAMPOLINE, %rdi
    mov $(ap_end - ap_start), %rcx
    rep movsb
    mov $LAPIC, %rbx
    orl $0x100, 0xf0(%rbx)              /* SVR: APIC software enable */
    movl $(1 << 24), ICR_HI(%rbx)       /* destination APIC ID 1 */
    movl $0x4500, ICR_LO(%rbx)          /* INIT, assert */
    mov $100000, %ecx
1:  pause
    loop 1b
    movl $(1 << 24), ICR_HI(%rbx)
    movl $(0x4600 | (TRAMPOLINE >> 12)), ICR_LO(%rbx) /* STARTUP at 0x8000 */
    mov $2000000000, %rcx
2:  cmpl $0x55, FLAG
    je 3f
    pause
    dec %rcx
    jnz 2b
    PUTS bad
    EXIT 0x15
3:  PUTS ok
    EXIT 0x14
    DEFINE_PUTS

    /* Real-mode code, position independent within its segment (CS = 0x800, IP = 0). */
    .code16
ap_start:
    mov $'A', %al
    mov $COM1, %dx
    out %al, %dx
    xor %ax, %ax
    mov %ax, %ds
    movl $0x55, FLAG
4:  cli
    hlt
    jmp 4b
ap_end:
    .code64

    .section .rodata
ok:  .asciz "\nsmp ok\n"
bad: .asciz "\nsmp: AP did not start\n"
    .bss
    .balign 16
    .skip 4096
stack_top:
