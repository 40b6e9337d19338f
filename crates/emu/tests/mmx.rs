//! MMX state that the differential test does not reach: the aliasing of MM0–7 onto the
//! x87 physical registers seen from x87 instructions and across a nonzero TOP, EMMS, and
//! the exceptions (#UD for CR0.EM or, with an XMM operand, CR4.OSFXSR = 0; #NM for CR0.TS;
//! #MF for a pending unmasked x87 exception with CR0.NE = 1).

mod common;

use common::*;
use emu::{Cpu, CpuRegs, Exit};
use iced_x86::code_asm::*;

const UD: u32 = 6;
const NM: u32 = 7;
const MF: u32 = 16;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;

/// Runs `f`'s program in long mode with the registers `setup` adjusts; returns the final
/// registers and the exception vectors reported.
fn run(
    setup: impl FnOnce(&mut CpuRegs),
    f: impl FnOnce(&mut CodeAssembler),
) -> (CpuRegs, Vec<u32>) {
    let m = memory();
    setup_long_mode(&m);
    load(
        &m,
        CODE,
        &asm64(CODE, |a| {
            f(a);
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(&m);
    let mut regs = long_mode_regs(CODE);
    setup(&mut regs);
    cpu.set_regs(&regs);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    (cpu.regs(), vectors(&p))
}

fn top(r: &CpuRegs) -> u16 {
    (r.fpu.fsw >> 11) & 7
}

/// The 80-bit ST(i) as (sign and exponent, significand).
fn st(r: &CpuRegs, i: usize) -> (u16, u64) {
    let b = r.fpu.st[i];
    (
        u16::from_le_bytes([b[8], b[9]]),
        u64::from_le_bytes(b[..8].try_into().unwrap()),
    )
}

#[test]
fn mmx_write_sets_top_tags_and_exponent() {
    let (r, v) = run(
        |_| {},
        |a| {
            a.fninit().unwrap();
            a.fld1().unwrap(); // physical register 7
            a.fldz().unwrap(); // physical register 6, TOP = 6
            a.mov(rax, 0x0123_4567_89ab_cdefu64).unwrap();
            a.movq(mm2, rax).unwrap();
            a.movq(rcx, mm7).unwrap(); // the significand of 1.0
        },
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(top(&r), 0);
    assert_eq!(r.fpu.ftw, 0xff, "all tags valid");
    // TOP = 0: ST(i) is physical register i.
    assert_eq!(st(&r, 2), (0xffff, 0x0123_4567_89ab_cdef));
    assert_eq!(st(&r, 7), (0x3fff, 1 << 63), "1.0 stays in its register");
    assert_eq!(st(&r, 6), (0, 0), "0.0 stays in its register");
    assert_eq!(r.gpr[1], 1 << 63);
}

#[test]
fn mmx_registers_are_physical_whatever_top() {
    let (r, v) = run(
        |r| {
            r.fpu.fsw = 3 << 11;
            r.fpu.ftw = 0x0f;
            for (i, x) in r.fpu.st.iter_mut().enumerate() {
                x[..8].copy_from_slice(&(0x1111 * (i as u64 + 1)).to_le_bytes());
                x[8..10].copy_from_slice(&(0x4000 + i as u16).to_le_bytes());
            }
        },
        |a| {
            // MM0 is physical register 0, ST(5) with TOP = 3; a read leaves its exponent.
            a.movq(rax, mm0).unwrap();
        },
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(r.gpr[0], 0x1111 * 6);
    assert_eq!(top(&r), 0);
    assert_eq!(r.fpu.ftw, 0xff);
    assert_eq!(st(&r, 0), (0x4005, 0x1111 * 6));
    assert_eq!(st(&r, 3), (0x4000, 0x1111));
}

#[test]
fn emms_empties_every_register() {
    let (r, v) = run(
        |_| {},
        |a| {
            a.fninit().unwrap();
            a.fld1().unwrap();
            a.pxor(mm1, mm1).unwrap();
            a.emms().unwrap();
            // Everything is empty again: the x87 stack is usable.
            a.fld1().unwrap();
            a.fld1().unwrap();
            a.faddp(st1, st0).unwrap();
        },
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(r.fpu.ftw, 1 << 7, "only 2.0 in physical register 7");
    assert_eq!(top(&r), 7);
    assert_eq!(st(&r, 0), (0x4000, 1 << 63));
    assert_eq!(st(&r, 2), (0xffff, 0), "MM1 keeps its value, now empty");
    assert_eq!(r.fpu.fsw & 0x7f, 0, "no stack fault");
}

#[test]
fn cr0_em_and_ts() {
    for ins in [
        (|a: &mut CodeAssembler| a.paddb(mm0, mm1).unwrap()) as fn(&mut CodeAssembler),
        |a| a.emms().unwrap(),
        |a| a.cvtpi2ps(xmm0, mm1).unwrap(),
    ] {
        let (_, v) = run(|r| r.cr0 |= CR0_EM, ins);
        assert_eq!(v, [UD], "CR0.EM");
        let (_, v) = run(|r| r.cr0 |= CR0_TS, ins);
        assert_eq!(v, [NM], "CR0.TS");
    }
}

#[test]
fn osfxsr_only_for_xmm_forms() {
    let (r, v) = run(
        |r| r.cr4 &= !CR4_OSFXSR,
        |a| {
            a.mov(rax, 0x0102_0304_0506_0708u64).unwrap();
            a.movq(mm0, rax).unwrap();
            a.paddb(mm0, mm0).unwrap();
            a.pshufw(mm1, mm0, 0x1b).unwrap();
            a.movq(rcx, mm1).unwrap();
        },
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(r.gpr[1], 0x0e10_0a0c_0608_0204);
    let (_, v) = run(|r| r.cr4 &= !CR4_OSFXSR, |a| a.movq2dq(xmm0, mm0).unwrap());
    assert_eq!(v, [UD]);
}

/// An unmasked zero divide left pending: the MMX instruction (EMMS too) raises #MF with
/// CR0.NE = 1, and goes ahead with CR0.NE = 0.
#[test]
fn pending_x87_exception() {
    let program = |a: &mut CodeAssembler, mmx: fn(&mut CodeAssembler)| {
        a.fninit().unwrap();
        a.mov(dword_ptr(DATA), 0x37b).unwrap(); // ZE unmasked
        a.fldcw(word_ptr(DATA)).unwrap();
        a.fld1().unwrap();
        a.fldz().unwrap();
        a.fdivp(st1, st0).unwrap();
        mmx(a);
    };
    for mmx in [
        (|a: &mut CodeAssembler| a.movq(mm0, rax).unwrap()) as fn(&mut CodeAssembler),
        |a| a.emms().unwrap(),
    ] {
        let (r, v) = run(|_| {}, |a| program(a, mmx));
        assert_eq!(v, [MF]);
        assert_eq!(
            top(&r),
            6,
            "the x87 state is untouched (the divide was suppressed)"
        );
        let (r, v) = run(|r| r.cr0 &= !CR0_NE, |a| program(a, mmx));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(top(&r), 0);
        assert_ne!(r.fpu.fsw & 0x80, 0, "still pending");
    }
}
