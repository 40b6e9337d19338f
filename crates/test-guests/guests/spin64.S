/* spin64: prints "spinning" and then loops forever, writing the POST-code port every
 * 65536 iterations (so both engines see regular I/O). Ends only when stopped from outside
 * or asked to shut down. */
#include "common64.h"
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    PUTS msg
    xor %ecx, %ecx
1:  inc %ecx
    test $0xffff, %ecx
    jnz 1b
    mov %cl, %al
    out %al, $0x80
    jmp 1b
    DEFINE_PUTS
    .section .rodata
msg: .asciz "spinning\n"
    .bss
    .balign 16
    .skip 4096
stack_top:
