//! System-level tests: small guest programs exercising mode switches, paging and page
//! faults, the IDT, privilege changes, SYSCALL/SYSRET, hardware interrupts and HLT,
//! self-modifying code and triple faults.

mod common;

use common::*;
use emu::{Cpu, CpuRegs, Exit};
use iced_x86::code_asm::*;

fn outs(p: &TestPlatform, port: u16) -> Vec<u32> {
    p.outs.iter().filter(|(q, _)| *q == port).map(|(_, v)| *v).collect()
}

#[test]
fn protected_mode_to_long_mode() {
    let m = memory();
    setup_long_mode(&m);
    let code64 = CODE + 0x100;
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(eax, cr4).unwrap();
    a.or(eax, 0x20).unwrap();
    a.mov(cr4, eax).unwrap();
    a.mov(eax, PML4 as u32).unwrap();
    a.mov(cr3, eax).unwrap();
    a.mov(ecx, 0xc000_0080u32).unwrap();
    a.rdmsr().unwrap();
    a.or(eax, 0x100).unwrap();
    a.wrmsr().unwrap();
    a.mov(eax, cr0).unwrap();
    a.or(eax, 0x8000_0001u32 as i32).unwrap();
    a.mov(cr0, eax).unwrap();
    // ljmp KCODE:code64
    let mut far = vec![0xea];
    far.extend_from_slice(&(code64 as u32).to_le_bytes());
    far.extend_from_slice(&KCODE.to_le_bytes());
    a.db(&far).unwrap();
    load(&m, CODE, &a.assemble(CODE).unwrap());
    load(
        &m,
        code64,
        &asm64(code64, |a| {
            a.mov(rax, 0x1122_3344_5566_7788u64).unwrap();
            a.shr(rax, 32).unwrap();
            a.out(0xf1, eax).unwrap();
            a.mov(ecx, 0xc000_0080u32).unwrap();
            a.rdmsr().unwrap();
            a.out(0xf2, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut r = CpuRegs::reset();
    r.cs = seg(CODE32, 0xb, 0, false, true);
    let d = seg(KDATA, 3, 0, false, true);
    r.ds = d;
    r.es = d;
    r.ss = d;
    r.gdt = emu::TableState { base: GDT, limit: 0x47 };
    r.cr0 = 0x11;
    r.rip = CODE;
    r.gpr[4] = KSTACK_TOP;
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xf1), vec![0x1122_3344]);
    assert_eq!(outs(&p, 0xf2), vec![0x500], "EFER.LME|LMA");
    let regs = cpu.regs();
    assert_eq!(regs.cs.selector, KCODE);
    assert!(regs.cs.l);
}

#[test]
fn page_faults_report_error_code_and_cr2_then_retry() {
    let m = memory();
    setup_long_mode(&m);
    const PT: u64 = 0x50000;
    // 0x200000..0x400000 through a 4K page table with nothing present.
    w64(&m, PD + 8, PT | 7);
    for i in 0..512 {
        w64(&m, PT + i * 8, 0);
    }
    w64(&m, 0x60000 + 0x120, 0xdead_beef);
    let handler = HANDLERS + 0x1000;
    load(
        &m,
        handler,
        &asm64(handler, |a| {
            a.pop(rax).unwrap(); // error code
            a.out(0xf3, eax).unwrap();
            a.mov(rax, cr2).unwrap();
            a.out(0xf4, eax).unwrap();
            // Map the faulting page writable: PT[idx] = 0x60000 + idx*4K | P|W.
            a.mov(rdx, rax).unwrap();
            a.shr(rdx, 12).unwrap();
            a.and(edx, 0x1ff).unwrap();
            a.mov(rcx, rdx).unwrap();
            a.shl(rcx, 12).unwrap();
            a.add(rcx, 0x60003).unwrap();
            a.mov(qword_ptr(rdx * 8 + PT as i32), rcx).unwrap();
            a.invlpg(byte_ptr(rax)).unwrap();
            a.iretq().unwrap();
        }),
    );
    set_gate(&m, 14, handler, 0, 0);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(rax, qword_ptr(0x200120)).unwrap();
            a.out(0xf5, eax).unwrap();
            // Read-only page: a write faults with P|W.
            a.mov(rax, 0x61001u64).unwrap();
            a.mov(qword_ptr(PT as i32 + 8), rax).unwrap();
            a.mov(dword_ptr(0x201008), 0x77).unwrap();
            a.mov(eax, dword_ptr(0x201008)).unwrap();
            a.out(0xf5, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xf3), vec![0, 3], "error codes");
    assert_eq!(outs(&p, 0xf4), vec![0x200120, 0x201008], "CR2");
    assert_eq!(outs(&p, 0xf5), vec![0xdead_beef, 0x77]);
    assert!(vectors(&p).is_empty());
    // Accessed and dirty bits were set by the walker.
    assert_eq!(r64(&m, PT + 8) & 0x60, 0x60);
}

#[test]
fn syscall_sysret_round_trip_and_gp_at_cpl3() {
    let m = memory();
    setup_long_mode(&m);
    let kentry = CODE + 0x200;
    let user = CODE + 0x400;
    let gp_handler = HANDLERS + 0x1000;
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            // STAR: SYSCALL CS=0x08, SYSRET base 0x18.
            a.mov(ecx, 0xc000_0081u32).unwrap();
            a.xor(eax, eax).unwrap();
            a.mov(edx, (0x18 << 16) | 0x08).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0xc000_0082u32).unwrap();
            a.mov(eax, kentry as u32).unwrap();
            a.xor(edx, edx).unwrap();
            a.wrmsr().unwrap();
            a.mov(ecx, 0xc000_0084u32).unwrap();
            a.mov(eax, 0x200).unwrap();
            a.wrmsr().unwrap();
            a.mov(rcx, user).unwrap();
            a.mov(r11, 0x202u64).unwrap();
            a.sysretq().unwrap();
        }),
    );
    load(
        &m,
        kentry,
        &asm64(kentry, |a| {
            a.out(0xf6, eax).unwrap(); // syscall number
            a.mov(eax, ebx).unwrap();
            a.out(0xf6, eax).unwrap(); // user's CS
            a.mov(rax, cs).unwrap();
            a.out(0xf6, eax).unwrap(); // kernel CS
            a.mov(rax, r11).unwrap();
            a.out(0xf6, eax).unwrap(); // user RFLAGS
            a.sysretq().unwrap();
        }),
    );
    load(
        &m,
        user,
        &asm64(user, |a| {
            a.mov(rsp, USTACK_TOP).unwrap();
            a.mov(rbx, cs).unwrap();
            a.mov(eax, 7).unwrap();
            a.syscall().unwrap();
            a.cli().unwrap(); // privileged at CPL3 with IOPL 0: #GP(0)
            a.hlt().unwrap();
        }),
    );
    load(
        &m,
        gp_handler,
        &asm64(gp_handler, |a| {
            a.pop(rax).unwrap();
            a.out(0xf7, eax).unwrap(); // error code
            a.mov(rax, qword_ptr(rsp + 8)).unwrap();
            a.out(0xf7, eax).unwrap(); // CS of the faulting code
            a.mov(rax, rsp).unwrap();
            a.out(0xf7, eax).unwrap(); // stack switched to RSP0
            a.hlt().unwrap();
        }),
    );
    set_gate(&m, 13, gp_handler, 0, 0);
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xf6), vec![7, 0x2b, 0x08, 0x202]);
    assert_eq!(outs(&p, 0xf7), vec![0, 0x2b, (KSTACK_TOP - 40) as u32]);
}

#[test]
fn hardware_interrupt_wakes_hlt() {
    let m = memory();
    setup_long_mode(&m);
    let handler = HANDLERS + 0x1000;
    load(
        &m,
        handler,
        &asm64(handler, |a| {
            a.mov(eax, 0x40).unwrap();
            a.out(0xf8, eax).unwrap();
            a.iretq().unwrap();
        }),
    );
    set_gate(&m, 0x40, handler, 0, 1);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.sti().unwrap();
            a.hlt().unwrap();
            a.mov(eax, 1).unwrap();
            a.out(0xf9, eax).unwrap();
            a.cli().unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(cpu.run(&mut p, 1000), Exit::Halted);
    assert!(cpu.is_halted());
    // Still halted with nothing pending.
    assert_eq!(cpu.run(&mut p, 1000), Exit::Halted);
    assert!(p.outs.is_empty());
    p.pending.push(0x40);
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(p.outs, vec![(0xf8, 0x40), (0xf9, 1)]);
}

#[test]
fn self_modifying_code_is_seen() {
    let m = memory();
    setup_long_mode(&m);
    let mut a = CodeAssembler::new(64).unwrap();
    let mut l = a.create_label();
    let mut l2 = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut l).unwrap();
    a.mov(eax, 1).unwrap(); // imm at l+1
    a.out(0xfa, eax).unwrap();
    a.cmp(byte_ptr(CODE as i32 + 1), 2).unwrap();
    a.je(done).unwrap();
    a.mov(byte_ptr(CODE as i32 + 1), 2).unwrap();
    a.jmp(l).unwrap();
    a.set_label(&mut done).unwrap();
    // Patch the very next instruction (same block).
    a.mov(byte_ptr(l2), 5).unwrap();
    a.set_label(&mut l2).unwrap();
    a.db(&[0xb8, 3, 0, 0, 0]).unwrap(); // mov eax, 3 (imm byte patched to 5)
    a.out(0xfa, eax).unwrap();
    a.hlt().unwrap();
    // Patching needs the label address: assemble, then fix the displacement by hand.
    let code = a.assemble(CODE).unwrap();
    load(&m, CODE, &code);
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xfa), vec![1, 2, 5]);
}

#[test]
fn double_fault_escalates_to_shutdown() {
    let m = memory();
    setup_long_mode(&m);
    load(&m, CODE, &asm64(CODE, |a| a.ud2().unwrap()));
    let mut cpu = Cpu::new(&m);
    let mut r = long_mode_regs(CODE);
    r.idt.limit = 0;
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Shutdown);
}

#[test]
fn exceptions_are_delivered_with_vectors() {
    let m = memory();
    setup_long_mode(&m);
    let mut cpu = Cpu::new(&m);
    let cases: Vec<(u32, Vec<u8>)> = vec![
        (6, asm64(CODE, |a| a.ud2().unwrap())),
        (0, asm64(CODE, |a| {
            a.xor(ecx, ecx).unwrap();
            a.div(ecx).unwrap();
        })),
        (3, asm64(CODE, |a| a.int3().unwrap())),
        (0x80, asm64(CODE, |a| a.int(0x80).unwrap())),
        (13, asm64(CODE, |a| {
            a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
            a.mov(rax, qword_ptr(rax)).unwrap();
        })),
        (14, asm64(CODE, |a| {
            a.mov(rax, 0x1_0000_0000u64).unwrap();
            a.mov(rax, qword_ptr(rax)).unwrap();
        })),
    ];
    for (v, code) in cases {
        let mut prog = code.clone();
        prog.push(0xf4);
        load(&m, CODE, &prog);
        cpu.set_regs(&long_mode_regs(CODE));
        let mut p = TestPlatform::default();
        assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
        assert_eq!(vectors(&p), vec![v], "vector for {code:02x?}");
    }
}

#[test]
fn real_mode_software_interrupt_through_ivt() {
    let m = memory();
    let mut a = CodeAssembler::new(16).unwrap();
    a.int(0x10).unwrap();
    a.mov(al, 0x66).unwrap();
    a.out(0xfb, al).unwrap();
    a.hlt().unwrap();
    load(&m, 0x7c00, &a.assemble(0x7c00).unwrap());
    let mut h = CodeAssembler::new(16).unwrap();
    h.mov(al, 0x55).unwrap();
    h.out(0xfb, al).unwrap();
    h.iret().unwrap();
    load(&m, 0x7e00, &h.assemble(0x7e00).unwrap());
    // IVT[0x10] = 0000:7e00
    w64(&m, 0x40, 0x7e00);
    let mut r = CpuRegs::reset();
    r.cs.selector = 0;
    r.cs.base = 0;
    r.rip = 0x7c00;
    r.gpr[4] = 0x7000;
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xfb), vec![0x55, 0x66]);
}

#[test]
fn mmio_accesses_go_to_the_platform() {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(rbx, 0xfec0_0000u64).unwrap();
            a.mov(dword_ptr(rbx + 0x10), 0x1234).unwrap();
            a.mov(eax, dword_ptr(rbx)).unwrap();
            a.out(0xfc, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(p.mmio, vec![(0xfec0_0010, 0x1234)]);
    assert_eq!(outs(&p, 0xfc), vec![0xabab_abab]);
}

#[test]
fn string_ops_with_rep() {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.cld().unwrap();
            a.mov(rdi, DATA).unwrap();
            a.mov(eax, 0x41).unwrap();
            a.mov(ecx, 100).unwrap();
            a.rep().stosb().unwrap();
            a.mov(rsi, DATA).unwrap();
            a.mov(rdi, DATA + 0x1000).unwrap();
            a.mov(ecx, 25).unwrap();
            a.rep().movsd().unwrap();
            a.mov(rdi, DATA + 0x1000).unwrap();
            a.mov(ecx, 200).unwrap();
            a.mov(al, 0).unwrap();
            a.repne().scasb().unwrap();
            a.mov(eax, ecx).unwrap();
            a.out(0xfd, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    // 100 'A's then a zero: repne scasb stops after 101 bytes.
    assert_eq!(outs(&p, 0xfd), vec![99]);
    assert_eq!(r64(&m, DATA + 0x1000 + 96) & 0xffff_ffff, 0x4141_4141);
}
