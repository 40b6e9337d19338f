/* reset64: prints "resetting", then pulses the reset line through the i8042 (command
 * 0xfe on port 0x64). wirt reports a guest reset (status 2). */
#include "common64.h"
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    PUTS msg
    mov $0xfe, %al
    out %al, $0x64
1:  hlt
    jmp 1b
    DEFINE_PUTS
    .section .rodata
msg: .asciz "resetting\n"
    .bss
    .balign 16
    .skip 4096
stack_top:
