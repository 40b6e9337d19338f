/* mb32: a Multiboot v1 guest, entered in 32-bit protected mode with paging off. Checks
 * the bootloader magic in EAX, prints a greeting and the command line from the Multiboot
 * information structure (EBX), exits with 0x16 (45); with a wrong magic, 0x17 (47). */
#define COM1 0x3f8
#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00000003         /* page-align modules, want memory info */
    .section .multiboot
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32
    .globl _start
_start:
    mov $stack_top, %esp
    cmp $0x2badb002, %eax
    jne bad_magic
    mov %ebx, %edi
    mov $hello, %esi
    call puts
    testl $4, (%edi)                /* flags: cmdline valid */
    jz 1f
    mov $cmdline_is, %esi
    call puts
    mov 16(%edi), %esi
    call puts
    mov $newline, %esi
    call puts
1:  mov $0x16, %al
    out %al, $0xf4
2:  hlt
    jmp 2b
bad_magic:
    mov $0x17, %al
    out %al, $0xf4
    jmp 2b

puts:
1:  movb (%esi), %al
    test %al, %al
    jz 3f
    mov %al, %ah
    mov $(COM1 + 5), %dx
2:  in %dx, %al
    test $0x20, %al
    jz 2b
    mov $COM1, %dx
    mov %ah, %al
    out %al, %dx
    inc %esi
    jmp 1b
3:  ret

    .section .rodata
hello:      .asciz "hello from a multiboot guest\n"
cmdline_is: .asciz "cmdline: "
newline:    .asciz "\n"
    .bss
    .balign 16
    .skip 4096
stack_top:
