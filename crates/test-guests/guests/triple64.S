/* triple64: loads an empty IDT and executes ud2: #UD cannot be delivered, nor can the
 * double fault, so the CPU shuts down (triple fault; wirt status 4). */
#include "common64.h"
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    PUTS msg
    lidt empty_idt(%rip)
    ud2
    DEFINE_PUTS
    .section .rodata
msg: .asciz "faulting\n"
    .data
empty_idt: .word 0
           .quad 0
    .bss
    .balign 16
    .skip 4096
stack_top:
