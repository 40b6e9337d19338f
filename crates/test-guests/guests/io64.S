/* io64: port and MMIO accesses. Reads the CMOS RTC status register A (a port read the
 * RTC answers), writes and reads an MMIO address no device claims (reads return all ones),
 * and reports "mmio-unclaimed ok" when the read gave 0xffffffff. Exits with 0x11 (35). */
#include "common64.h"
#define UNCLAIMED_MMIO 0xd8000000
    .text
    .globl _start
_start:
    lea stack_top(%rip), %rsp
    mov $0x0a, %al
    out %al, $0x70
    in $0x71, %al               /* RTC register A */
    mov $UNCLAIMED_MMIO, %rdi
    movl $0x12345678, (%rdi)
    mov (%rdi), %eax
    cmp $0xffffffff, %eax
    jne 1f
    PUTS ok
    EXIT 0x11
1:  PUTS bad
    EXIT 0x12
    DEFINE_PUTS

    .section .rodata
ok:  .asciz "mmio-unclaimed ok\n"
bad: .asciz "mmio-unclaimed BAD\n"

    .bss
    .balign 16
    .skip 4096
stack_top:
