/* timer64: HLT woken by timer interrupts. Remaps the 8259 PIC to vectors 0x20-0x2f,
 * programs PIT channel 0 at ~1 kHz (mode 2), installs an IDT whose vector 0x20 handler
 * counts ticks and sends EOI, then halts with IF=1 until 5 ticks arrived.
 * Prints "timer ok" and exits with 0x13 (39). */
#include "common64.h"
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    cli
    /* IDT entry 0x20 -> tick (64-bit interrupt gate, present, DPL 0). */
    lea idt(%rip), %rdi
    lea tick(%rip), %rax
    mov %cs, %cx
    add $(0x20 * 16), %rdi
    mov %ax, (%rdi)             /* offset 15:0 */
    mov %cx, 2(%rdi)            /* selector */
    movw $0x8e00, 4(%rdi)       /* type: interrupt gate, present */
    shr $16, %rax
    mov %ax, 6(%rdi)            /* offset 31:16 */
    shr $16, %rax
    mov %eax, 8(%rdi)           /* offset 63:32 */
    movl $0, 12(%rdi)
    lea idt(%rip), %rax
    mov %rax, idtr_base(%rip)
    lidt idtr(%rip)
    /* PIC: ICW1..ICW4, master at 0x20, slave at 0x28, only IRQ0 unmasked. */
    mov $0x11, %al
    out %al, $0x20
    out %al, $0xa0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xa1
    mov $0x04, %al
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al
    out %al, $0x21
    out %al, $0xa1
    mov $0xfe, %al
    out %al, $0x21
    mov $0xff, %al
    out %al, $0xa1
    /* PIT channel 0, lobyte/hibyte, mode 2, divisor 1193 (~1 kHz). */
    mov $0x34, %al
    out %al, $0x43
    mov $0xa9, %al
    out %al, $0x40
    mov $0x04, %al
    out %al, $0x40
1:  sti
    hlt
    cli
    cmpl $5, ticks(%rip)
    jb 1b
    PUTS ok
    EXIT 0x13

tick:
    push %rax
    incl ticks(%rip)
    mov $0x20, %al
    out %al, $0x20              /* non-specific EOI */
    pop %rax
    iretq
    DEFINE_PUTS

    .section .rodata
ok: .asciz "timer ok\n"

    .data
    .balign 8
ticks:  .long 0
idtr:   .word 256 * 16 - 1
idtr_base: .quad 0

    .bss
    .balign 16
idt:    .skip 256 * 16
    .skip 4096
stack_top:
