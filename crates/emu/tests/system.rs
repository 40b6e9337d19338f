//! System-level tests: small guest programs exercising mode switches, paging and page
//! faults, the IDT, privilege changes, SYSCALL/SYSRET, hardware interrupts and HLT,
//! self-modifying code and triple faults.

mod common;

use common::*;
use emu::{Cpu, CpuRegs, Exit};
use iced_x86::code_asm::*;

fn outs(p: &TestPlatform, port: u16) -> Vec<u32> {
    p.outs
        .iter()
        .filter(|(q, _)| *q == port)
        .map(|(_, v)| *v)
        .collect()
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
    r.gdt = emu::TableState {
        base: GDT,
        limit: 0x47,
    };
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
        (
            0,
            asm64(CODE, |a| {
                a.xor(ecx, ecx).unwrap();
                a.div(ecx).unwrap();
            }),
        ),
        (3, asm64(CODE, |a| a.int3().unwrap())),
        (0x80, asm64(CODE, |a| a.int(0x80).unwrap())),
        (
            13,
            asm64(CODE, |a| {
                a.mov(rax, 0x8000_0000_0000_0000u64).unwrap();
                a.mov(rax, qword_ptr(rax)).unwrap();
            }),
        ),
        (
            14,
            asm64(CODE, |a| {
                a.mov(rax, 0x1_0000_0000u64).unwrap();
                a.mov(rax, qword_ptr(rax)).unwrap();
            }),
        ),
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

#[test]
fn rep_movsb_overlapping_forward_copy() {
    let m = memory();
    setup_long_mode(&m);
    let pattern: Vec<u8> = (0..64u8).collect();
    load(&m, DATA + 3719, &pattern);
    load(&m, CODE, &[0xf2, 0xa4, 0xf4]);
    let mut cpu = Cpu::new(&m);
    let mut r = long_mode_regs(CODE);
    r.gpr[6] = DATA + 3719;
    r.gpr[7] = DATA + 3725;
    r.gpr[1] = 54;
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    let mut out = vec![0u8; 60];
    vm_memory::Bytes::read_slice(&m, &mut out, vm_memory::GuestAddress(DATA + 3719)).unwrap();
    let expect: Vec<u8> = (0..60).map(|i| (i % 6) as u8).collect();
    assert_eq!(out, expect);
}

#[test]
fn cpu_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Cpu>();
}

#[test]
fn invlpg_inside_a_large_page_drops_the_whole_page() {
    let m = memory();
    setup_long_mode(&m);
    // 2 MiB page 2 (0x400000) initially maps 0x400000; the code remaps it to 0x600000.
    w64(&m, 0x400000 + 0x10, 0x1111);
    w64(&m, 0x600000 + 0x10, 0x2222);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(rax, qword_ptr(0x400010)).unwrap();
            a.out(0xe0, eax).unwrap();
            a.mov(rax, 0x600087u64).unwrap();
            a.mov(qword_ptr(PD as i32 + 16), rax).unwrap();
            a.invlpg(byte_ptr(0x4ff000)).unwrap(); // any address inside the large page
            a.mov(rax, qword_ptr(0x400010)).unwrap();
            a.out(0xe0, eax).unwrap();
            // LSL of the kernel data segment, and of a selector beyond the GDT.
            a.mov(ecx, KDATA as u32).unwrap();
            a.lsl(eax, ecx).unwrap();
            a.out(0xe1, eax).unwrap();
            a.mov(ecx, 0x1000).unwrap();
            a.lsl(eax, ecx).unwrap();
            a.setz(al).unwrap();
            a.out(0xe1, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe0), vec![0x1111, 0x2222]);
    assert_eq!(outs(&p, 0xe1), vec![0xffff_ffff, 0xffff_ff00]);
}

#[test]
fn shutdown_is_sticky_until_state_is_reloaded() {
    let m = memory();
    setup_long_mode(&m);
    load(&m, CODE, &asm64(CODE, |a| a.ud2().unwrap()));
    let mut cpu = Cpu::new(&m);
    let mut r = long_mode_regs(CODE);
    r.idt.limit = 0;
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(cpu.run(&mut p, 100), Exit::Shutdown);
    assert_eq!(cpu.run(&mut p, 100), Exit::Shutdown);
    load(&m, CODE, &[0xf4]);
    cpu.set_regs(&long_mode_regs(CODE));
    assert_eq!(cpu.run(&mut p, 100), Exit::Halted);
}

#[test]
fn application_processor_starts_at_sipi_vector() {
    let m = memory();
    let mut a = CodeAssembler::new(16).unwrap();
    a.mov(ax, cs).unwrap();
    a.out(0xe2, ax).unwrap();
    a.hlt().unwrap();
    load(&m, 0x9000, &a.assemble(0).unwrap());
    let mut cpu = Cpu::new(&m);
    cpu.set_apic_id(1);
    cpu.set_regs(&Cpu::sipi_state(9));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe2), vec![0x900]);
}

#[test]
fn x87_stack_loads_arithmetic_and_stores() {
    let m = memory();
    setup_long_mode(&m);
    w64(&m, DATA, 7);
    w64(&m, DATA + 8, 2.5f64.to_bits());
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.fninit().unwrap();
            a.fild(dword_ptr(DATA as i32)).unwrap();
            a.fld(qword_ptr(DATA as i32 + 8)).unwrap();
            a.fmulp(st1, st0).unwrap();
            a.fistp(dword_ptr(DATA as i32 + 16)).unwrap(); // 17.5 rounds to even: 18
            a.fld1().unwrap();
            a.fldz().unwrap();
            a.faddp(st1, st0).unwrap();
            a.fstp(qword_ptr(DATA as i32 + 24)).unwrap();
            a.fnstsw(ax).unwrap();
            a.out(0xe3, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(r64(&m, DATA + 16) & 0xffff_ffff, 18);
    assert_eq!(f64::from_bits(r64(&m, DATA + 24)), 1.0);
    assert_eq!(
        outs(&p, 0xe3),
        vec![0x20],
        "stack empty again (TOP = 0), PE from the inexact FISTP"
    );
}

#[test]
fn interrupts_wait_for_if_and_the_sti_shadow() {
    let m = memory();
    setup_long_mode(&m);
    let handler = HANDLERS + 0x1000;
    load(
        &m,
        handler,
        &asm64(handler, |a| {
            a.push(rax).unwrap();
            a.mov(eax, 0x41).unwrap();
            a.out(0xe4, eax).unwrap();
            a.pop(rax).unwrap();
            a.iretq().unwrap();
        }),
    );
    set_gate(&m, 0x41, handler, 0, 0);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            a.mov(eax, 1).unwrap();
            a.out(0xe4, eax).unwrap(); // IF=0: the pending interrupt must wait
            a.mov(eax, 2).unwrap();
            a.sti().unwrap();
            a.out(0xe4, eax).unwrap(); // runs inside the STI shadow, before the interrupt
            a.mov(eax, 3).unwrap();
            a.out(0xe4, eax).unwrap();
            a.cli().unwrap();
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    p.pending.push(0x41);
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    // The interrupt is taken right after the instruction in the STI shadow.
    assert_eq!(outs(&p, 0xe4), vec![1, 2, 0x41, 3]);
}

/// Random bytes executed as code (at CPL0 and CPL3, in 64-bit mode) must never panic or
/// hang the host: every outcome is a guest-visible exception, a halt or a shutdown.
#[test]
fn random_code_never_panics_the_host() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let seed: u64 = std::env::var("EMU_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let programs: usize = std::env::var("EMU_FUZZ_PROGRAMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut rng = StdRng::seed_from_u64(seed);
    let m = memory();
    let mut cpu = Cpu::new(&m);
    for i in 0..programs {
        if i % 200 == 0 {
            // Random code may have scribbled over the tables: rebuild them.
            setup_long_mode(&m);
        }
        let mut code = vec![0u8; 64];
        rng.fill(&mut code[..]);
        cpu.ram().write_phys(CODE, &code);
        let mut r = long_mode_regs(CODE);
        for g in r.gpr.iter_mut() {
            *g = if rng.gen_bool(0.5) {
                DATA + rng.gen_range(0..0x1000)
            } else {
                rng.gen()
            };
        }
        r.gpr[4] = KSTACK_TOP - 0x100;
        if rng.gen_bool(0.3) {
            r.cs = seg(UCODE | 3, 0xb, 3, true, false);
            r.ss = seg(UDATA | 3, 3, 3, false, true);
            r.gpr[4] = USTACK_TOP - 0x100;
        }
        cpu.set_regs(&r);
        let mut p = TestPlatform::default();
        let _ = cpu.run(&mut p, 300);
    }
}

/// Two vCPUs on two host threads increment one counter with `lock xadd`/`lock inc`: no
/// update may be lost.
#[test]
fn locked_increments_are_atomic_across_vcpus() {
    let m = memory();
    setup_long_mode(&m);
    const N: u32 = 200_000;
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            let mut top = a.create_label();
            a.mov(ecx, N).unwrap();
            a.mov(rbx, DATA).unwrap();
            a.set_label(&mut top).unwrap();
            a.lock().inc(qword_ptr(rbx)).unwrap();
            a.mov(eax, 1).unwrap();
            a.lock().xadd(qword_ptr(rbx + 8), rax).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        }),
    );
    let ram = emu::GuestRam::new(&m);
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let ram = ram.clone();
            std::thread::spawn(move || {
                let mut cpu = Cpu::with_ram(ram);
                cpu.set_apic_id(i);
                let mut r = long_mode_regs(CODE);
                r.gpr[4] = KSTACK_TOP - 0x1000 * i as u64;
                cpu.set_regs(&r);
                let mut p = TestPlatform::default();
                run_to_halt(&mut cpu, &mut p)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Exit::Halted);
    }
    assert_eq!(r64(&m, DATA), 2 * N as u64);
    assert_eq!(r64(&m, DATA + 8), 2 * N as u64);
}

/// Code patched by one vCPU is seen by another that has it cached (shared code versions).
#[test]
fn code_patched_by_another_vcpu_is_seen() {
    let m = memory();
    setup_long_mode(&m);
    let handler = HANDLERS + 0x1000;
    load(&m, handler, &asm64(handler, |a| a.iretq().unwrap()));
    set_gate(&m, 0x40, handler, 0, 0);
    // vCPU A: sti; L: mov eax, imm; out 0xe5, eax; hlt; jmp L   (imm patched by B)
    let mut asm = CodeAssembler::new(64).unwrap();
    let mut l = asm.create_label();
    asm.sti().unwrap();
    asm.set_label(&mut l).unwrap();
    asm.mov(eax, 1).unwrap();
    asm.out(0xe5, eax).unwrap();
    asm.hlt().unwrap();
    asm.jmp(l).unwrap();
    load(&m, CODE, &asm.assemble(CODE).unwrap());
    let patcher = CODE + 0x800;
    load(
        &m,
        patcher,
        &asm64(patcher, |a| {
            a.mov(byte_ptr(CODE as i32 + 2), 9).unwrap(); // imm8 of `mov eax, 1` at L
            a.hlt().unwrap();
        }),
    );
    let ram = emu::GuestRam::new(&m);
    let mut a = Cpu::with_ram(ram.clone());
    let mut b = Cpu::with_ram(ram);
    let mut pa = TestPlatform::default();
    let mut pb = TestPlatform::default();
    a.set_regs(&long_mode_regs(CODE));
    assert_eq!(run_to_halt(&mut a, &mut pa), Exit::Halted);
    b.set_regs(&long_mode_regs(patcher));
    assert_eq!(run_to_halt(&mut b, &mut pb), Exit::Halted);
    // Wake A: it returns from the interrupt, jumps back to its cached block, which must be
    // re-decoded because B wrote to the page.
    pa.pending.push(0x40);
    assert_eq!(run_to_halt(&mut a, &mut pa), Exit::Halted);
    assert_eq!(outs(&pa, 0xe5), vec![1, 9]);
}

/// The AP trampoline path: real mode (after SIPI) → LGDTL → CR0.PE → far jump into a
/// 32-bit code segment → segment loads → protected-mode code.
#[test]
fn real_mode_to_protected_mode_like_the_ap_trampoline() {
    let m = memory();
    setup_long_mode(&m); // GDT with a flat 32-bit code (0x40) and data (0x10) segment
    let base = 0x9000u64; // SIPI vector 9
    let gdtr_at = base + 0x100;
    // GDTR image: limit, 32-bit base.
    let mut gdtr = Vec::new();
    gdtr.extend_from_slice(&(0x47u16).to_le_bytes());
    gdtr.extend_from_slice(&(GDT as u32).to_le_bytes());
    load(&m, gdtr_at, &gdtr);
    let pm = base + 0x200;
    let mut a = CodeAssembler::new(16).unwrap();
    a.cli().unwrap();
    a.lgdt(dword_ptr(0x100)).unwrap(); // DS = CS = 0x900 after SIPI... set below
    a.mov(eax, 1).unwrap();
    a.mov(cr0, eax).unwrap();
    // ljmpl CODE32:pm (66 EA ptr16:32)
    let mut far = vec![0x66, 0xea];
    far.extend_from_slice(&(pm as u32).to_le_bytes());
    far.extend_from_slice(&CODE32.to_le_bytes());
    a.db(&far).unwrap();
    let mut code = vec![0x8c, 0xc8, 0x8e, 0xd8]; // mov ax, cs; mov ds, ax
    code.extend_from_slice(&a.assemble(0x4).unwrap());
    load(&m, base, &code);
    let mut b = CodeAssembler::new(32).unwrap();
    b.mov(ax, KDATA as u32).unwrap();
    b.mov(ds, ax).unwrap();
    b.mov(ss, ax).unwrap();
    b.mov(esp, 0x8000).unwrap();
    b.push(0x1234_5678).unwrap();
    b.pop(eax).unwrap();
    b.out(0xe6, eax).unwrap();
    b.mov(eax, cr0).unwrap();
    b.out(0xe6, eax).unwrap();
    b.hlt().unwrap();
    load(&m, pm, &b.assemble(pm).unwrap());
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&Cpu::sipi_state(9));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe6), vec![0x1234_5678, 0x11], "CR0 = PE | ET");
    let r = cpu.regs();
    assert_eq!(r.cs.selector, CODE32);
    assert!(r.cs.db);
}

#[test]
fn trap_flag_single_steps_with_db() {
    let m = memory();
    setup_long_mode(&m);
    let handler = HANDLERS + 0x1000;
    load(
        &m,
        handler,
        &asm64(handler, |a| {
            a.mov(rax, qword_ptr(rsp)).unwrap(); // return RIP
            a.out(0xe7, eax).unwrap();
            a.hlt().unwrap();
        }),
    );
    set_gate(&m, 1, handler, 0, 0);
    let code = asm64(CODE, |a| {
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), 0x100).unwrap();
        a.popfq().unwrap(); // TF set: the trap comes after the *next* instruction
        a.nop().unwrap();
        a.nop().unwrap();
        a.hlt().unwrap();
    });
    let first_nop = CODE + code.len() as u64 - 3;
    load(&m, CODE, &code);
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe7), vec![(first_nop + 1) as u32]);
    assert_ne!(cpu.regs().dr[6] & (1 << 14), 0, "DR6.BS");
}

/// Runs `user` code at CPL3 (RFLAGS.IOPL = `iopl`) with a TSS I/O permission bitmap that
/// allows only ports 0x80 and 0x440 and covers ports 0..0x800 (the TSS limit ends there).
/// A #GP handler reports its error code and the faulting RIP on port 0xf7, then halts.
/// Returns the platform and the faulting RIP's first code byte.
fn run_user_port_io(iopl: u64, user: impl FnOnce(&mut CodeAssembler)) -> (TestPlatform, u8) {
    let m = memory();
    setup_long_mode(&m);
    const IOMAP: u64 = 0x68;
    load(&m, TSS + 0x66, &(IOMAP as u16).to_le_bytes());
    let mut map = vec![0xffu8; 0x101]; // 256 bytes of bitmap + the trailing 0xff byte
    map[0x80 / 8] &= !(1 << (0x80 % 8));
    map[0x440 / 8] &= !(1 << (0x440 % 8));
    load(&m, TSS + IOMAP, &map);
    let gp_handler = HANDLERS + 0x1000;
    load(
        &m,
        gp_handler,
        &asm64(gp_handler, |a| {
            a.pop(rax).unwrap();
            a.out(0xf7, eax).unwrap(); // error code
            a.mov(rax, qword_ptr(rsp)).unwrap();
            a.out(0xf7, eax).unwrap(); // faulting RIP
            a.hlt().unwrap();
        }),
    );
    set_gate(&m, 13, gp_handler, 0, 0);
    let ucode = CODE + 0x400;
    let mut code = asm64(ucode, user);
    code.push(0xf4); // HLT: privileged at CPL3, so it ends the run through #GP as well
    load(&m, ucode, &code);
    let mut r = long_mode_regs(ucode);
    r.cs = seg(UCODE | 3, 0xb, 3, true, false);
    let udata = seg(UDATA | 3, 3, 3, false, true);
    r.ss = udata;
    r.ds = udata;
    r.es = udata;
    r.tr.limit = (IOMAP + 0x100) as u32;
    r.rflags = 2 | (iopl << 12);
    r.gpr[4] = USTACK_TOP;
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    let gp = outs(&p, 0xf7);
    assert_eq!(gp.len(), 2, "exactly one #GP");
    assert_eq!(gp[0], 0, "#GP(0)");
    let mut byte = [0u8];
    vm_memory::Bytes::read_slice(&m, &mut byte, vm_memory::GuestAddress(gp[1] as u64)).unwrap();
    (p, byte[0])
}

#[test]
fn io_bitmap_allows_cleared_ports_at_cpl3() {
    let (p, fault_byte) = run_user_port_io(0, |a| {
        a.mov(al, 0x11).unwrap();
        a.out(0x80, al).unwrap();
        a.mov(edx, 0x440).unwrap();
        a.mov(al, 0x22).unwrap();
        a.out(dx, al).unwrap(); // what /bin/wirt-boot-timer does after ioperm(0x440, 1, 1)
        a.mov(esi, DATA as u32).unwrap();
        a.outsb().unwrap();
    });
    assert_eq!(outs(&p, 0x80), vec![0x11]);
    assert_eq!(outs(&p, 0x440), vec![0x22, 0]);
    assert_eq!(fault_byte, 0xf4, "only the final HLT faults");
}

#[test]
fn io_bitmap_denies_set_bits_with_gp0() {
    // A port whose bit is set.
    let (p, fault_byte) = run_user_port_io(0, |a| {
        a.out(0x81, al).unwrap();
    });
    assert!(p.outs.iter().all(|(port, _)| *port == 0xf7));
    assert_eq!(fault_byte, 0xe6);
    // A word access whose second byte (0x441) is denied.
    let (p, fault_byte) = run_user_port_io(0, |a| {
        a.mov(edx, 0x440).unwrap();
        a.out(dx, ax).unwrap();
    });
    assert!(p.outs.iter().all(|(port, _)| *port == 0xf7));
    assert_eq!(fault_byte, 0x66);
    // A port beyond the TSS limit, and IN as well as OUTS.
    for (port, op) in [(0x900u32, 0xecu8), (0x81, 0x6e)] {
        let (p, fault_byte) = run_user_port_io(0, |a| {
            a.mov(edx, port).unwrap();
            if op == 0xec {
                a.in_(al, dx).unwrap();
            } else {
                a.mov(esi, DATA as u32).unwrap();
                a.outsb().unwrap();
            }
        });
        assert!(p.outs.iter().all(|(port, _)| *port == 0xf7));
        assert_eq!(fault_byte, op, "port {port:#x}");
    }
}

#[test]
fn iopl3_bypasses_the_io_bitmap() {
    let (p, fault_byte) = run_user_port_io(3, |a| {
        a.mov(al, 0x33).unwrap();
        a.out(0x81, al).unwrap();
        a.mov(edx, 0x900).unwrap();
        a.out(dx, al).unwrap();
    });
    assert_eq!(outs(&p, 0x81), vec![0x33]);
    assert_eq!(outs(&p, 0x900), vec![0x33]);
    assert_eq!(fault_byte, 0xf4);
}

#[test]
fn a_null_selector_in_fs_or_gs_clears_the_base() {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            // FS.base and GS.base set through their MSRs, then null selectors loaded.
            for msr in [0xc000_0100u32, 0xc000_0101] {
                a.mov(ecx, msr).unwrap();
                a.mov(eax, 0x1234_5000u32).unwrap();
                a.xor(edx, edx).unwrap();
                a.wrmsr().unwrap();
            }
            a.xor(eax, eax).unwrap();
            a.mov(fs, ax).unwrap();
            a.mov(gs, ax).unwrap();
            for msr in [0xc000_0100u32, 0xc000_0101] {
                a.mov(ecx, msr).unwrap();
                a.rdmsr().unwrap();
                a.out(0xe0, eax).unwrap();
            }
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(outs(&p, 0xe0), vec![0, 0]);
}

/// A #DB handler at HANDLERS + 0x1000 that reports the frame's RIP on port 0xe1 and DR6 on
/// port 0xe2, sets RF in the frame (to step over an instruction breakpoint) and returns.
fn install_db_recorder(m: &vm_memory::GuestMemoryMmap) {
    let h = HANDLERS + 0x1000;
    load(
        m,
        h,
        &asm64(h, |a| {
            a.push(rax).unwrap();
            a.mov(rax, qword_ptr(rsp + 8)).unwrap();
            a.out(0xe1, eax).unwrap();
            a.mov(rax, dr6).unwrap();
            a.out(0xe2, eax).unwrap();
            a.bts(qword_ptr(rsp + 24), 16).unwrap();
            a.pop(rax).unwrap();
            a.iretq().unwrap();
        }),
    );
    set_gate(m, 1, h, 0, 0);
}

/// Runs `body` (assembled at CODE, then HLT) with the #DB recorder; returns the reported
/// (RIP, DR6) pairs and the label addresses `body` returned.
fn run_debug_case(
    body: impl FnOnce(&mut CodeAssembler) -> Vec<CodeLabel>,
) -> (Vec<(u32, u32)>, Vec<u64>) {
    let m = memory();
    setup_long_mode(&m);
    install_db_recorder(&m);
    let mut a = CodeAssembler::new(64).unwrap();
    let mut labels = body(&mut a);
    a.hlt().unwrap();
    let res = a
        .assemble_options(
            CODE,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    load(&m, CODE, res.inner.code_buffer.as_slice());
    let addrs = labels
        .iter_mut()
        .map(|l| res.label_ip(l).unwrap())
        .collect();
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    let hits = outs(&p, 0xe1).into_iter().zip(outs(&p, 0xe2)).collect();
    (hits, addrs)
}

#[test]
fn single_step_traps_after_each_instruction_once_tf_is_set() {
    let (hits, at) = run_debug_case(|a| {
        let mut l = [a.create_label(), a.create_label(), a.create_label()];
        a.pushfq().unwrap();
        a.or(qword_ptr(rsp), 0x100).unwrap();
        a.popfq().unwrap(); // TF takes effect after this instruction
        a.nop().unwrap();
        a.set_label(&mut l[0]).unwrap();
        a.pushfq().unwrap();
        a.set_label(&mut l[1]).unwrap();
        a.and(qword_ptr(rsp), !0x100).unwrap();
        a.popfq().unwrap(); // still traps: TF was set when it started
        a.set_label(&mut l[2]).unwrap();
        l.to_vec()
    });
    let bs = 0xffff_4ff0;
    let popf2 = at[1] + 8; // `and qword [rsp], imm32` is 8 bytes
    let want: Vec<(u32, u32)> = [at[0], at[1], popf2, at[2]]
        .iter()
        .map(|&rip| (rip as u32, bs))
        .collect();
    assert_eq!(hits, want);
}

#[test]
fn data_and_instruction_breakpoints_report_their_dr6_bits() {
    let (hits, at) = run_debug_case(|a| {
        let mut l = [a.create_label(), a.create_label()];
        // DR0: 4-byte write watchpoint on DATA; DR1: instruction breakpoint on `target`.
        a.mov(rax, DATA).unwrap();
        a.mov(dr0, rax).unwrap();
        a.lea(rax, ptr(l[1])).unwrap();
        a.mov(dr1, rax).unwrap();
        a.mov(rax, 0x000d_0001u64 | (1 << 3)).unwrap(); // L0, RW0=write, LEN0=4; G1 exec
        a.mov(dr7, rax).unwrap();
        a.mov(rax, DATA).unwrap();
        a.mov(dword_ptr(rax), 1).unwrap(); // trap after this store
        a.set_label(&mut l[0]).unwrap();
        a.mov(ecx, dword_ptr(rax)).unwrap(); // a read does not hit a write watchpoint
        a.set_label(&mut l[1]).unwrap();
        a.nop().unwrap(); // fault before this instruction, then RF steps over it
        l.to_vec()
    });
    assert_eq!(
        hits,
        vec![(at[0] as u32, 0xffff_0ff1), (at[1] as u32, 0xffff_0ff2)]
    );
}
