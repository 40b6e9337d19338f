/* Helpers shared by the 64-bit test guests (GNU as, AT&T syntax). */
#define COM1 0x3f8
#define DEBUG_EXIT 0xf4

/* Ends the VM through the debug-exit port: wirt exits with status (v << 1) | 1. */
.macro EXIT v
    mov $\v, %al
    out %al, $DEBUG_EXIT
1:  hlt
    jmp 1b
.endm

/* Prints the NUL-terminated string at label s. */
.macro PUTS s
    lea \s(%rip), %rsi
    call puts
.endm

/* puts: prints the NUL-terminated string at %rsi on COM1 (polling the line status). */
.macro DEFINE_PUTS
puts:
    push %rax
    push %rdx
1:  movb (%rsi), %al
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
    inc %rsi
    jmp 1b
3:  pop %rdx
    pop %rax
    ret
.endm
