/* hello64: entered in 64-bit mode by the Linux 64-bit boot protocol (RSI = boot_params).
 * Prints a greeting and the kernel command line, then exits via debug-exit with 0x10
 * (wirt's status 33). */
#include "common64.h"
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    mov %rsi, %rbx              /* boot_params */
    PUTS hello
    PUTS cmdline_is
    mov 0x228(%rbx), %esi       /* boot_params.hdr.cmd_line_ptr */
    test %esi, %esi
    jz 1f
    call puts
1:  PUTS newline
    EXIT 0x10
    DEFINE_PUTS

    .section .rodata
hello:      .asciz "hello from a 64-bit guest\n"
cmdline_is: .asciz "cmdline: "
newline:    .asciz "\n"

    .bss
    .balign 16
    .skip 4096
stack_top:
