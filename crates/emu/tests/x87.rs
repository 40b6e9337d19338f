//! x87 behaviour that the differential test cannot show (it runs one instruction with all
//! exceptions deferred): #MF at the next waiting instruction and its CR0.NE dependence,
//! stack overflow/underflow, FXAM's classes, an FPREM loop over partial remainders, and
//! the tag word FNSTENV and FXSAVE store.

mod common;

use common::*;
use emu::{Cpu, Exit};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const OUT: u16 = 0xe3;

fn outs(p: &TestPlatform, port: u16) -> Vec<u32> {
    p.outs
        .iter()
        .filter(|(q, _)| *q == port)
        .map(|(_, v)| *v)
        .collect()
}

/// Runs `f`'s program at CODE (with DATA free for operands) in long mode; `cr0_ne` picks
/// native (#MF) or legacy x87 error reporting.
fn run(m: &GuestMemoryMmap, cr0_ne: bool, f: impl FnOnce(&mut CodeAssembler)) -> TestPlatform {
    setup_long_mode(m);
    load(
        m,
        CODE,
        &asm64(CODE, |a| {
            f(a);
            a.hlt().unwrap();
        }),
    );
    let mut cpu = Cpu::new(m);
    let mut regs = long_mode_regs(CODE);
    if !cr0_ne {
        regs.cr0 &= !0x20;
    }
    cpu.set_regs(&regs);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    p
}

fn fsw_out(a: &mut CodeAssembler) {
    a.fnstsw(ax).unwrap();
    a.out(OUT as i32, eax).unwrap();
}

const IE: u32 = 1;
const DE: u32 = 2;
const ZE: u32 = 4;
const SF: u32 = 0x40;
const ES: u32 = 0x80;
const C0: u32 = 0x100;
const C1: u32 = 0x200;
const C2: u32 = 0x400;
const C3: u32 = 0x4000;
const B: u32 = 0x8000;

#[test]
fn unmasked_exception_faults_at_the_next_waiting_instruction() {
    let m = memory();
    m.write_obj(0x37bu16, GuestAddress(DATA)).unwrap(); // ZE unmasked
    let prog = |a: &mut CodeAssembler| {
        a.fninit().unwrap();
        a.fldcw(word_ptr(DATA as i32)).unwrap();
        a.fld1().unwrap();
        a.fldz().unwrap();
        a.fdivp(st1, st0).unwrap(); // 1/0: ZE, result and pop suppressed
        fsw_out(a); // no-wait: runs
        a.wait().unwrap(); // #MF with CR0.NE = 1
        a.mov(eax, 0x99).unwrap();
        a.out(OUT as i32, eax).unwrap();
    };
    let p = run(&m, true, prog);
    let top6 = 6 << 11;
    assert_eq!(outs(&p, OUT), vec![ZE | ES | B | top6]);
    assert_eq!(vectors(&p), vec![16], "#MF");
    // CR0.NE = 0: the exception stays pending and FWAIT goes on.
    let p = run(&m, false, prog);
    assert_eq!(outs(&p, OUT), vec![ZE | ES | B | top6, 0x99]);
    assert!(vectors(&p).is_empty());
}

#[test]
fn stack_overflow_and_underflow() {
    let m = memory();
    let p = run(&m, true, |a| {
        a.fninit().unwrap();
        for _ in 0..9 {
            a.fld1().unwrap();
        }
        fsw_out(a); // overflow: IE, SF, C1 = 1
        a.fstp(tword_ptr(DATA as i32)).unwrap(); // the QNaN indefinite
        a.fninit().unwrap();
        a.fadd_2(st0, st1).unwrap(); // both empty: underflow, C1 = 0
        fsw_out(a);
    });
    let top7 = 7 << 11;
    assert_eq!(outs(&p, OUT), vec![IE | SF | C1 | top7, IE | SF]);
    let mut b = [0u8; 10];
    m.read_slice(&mut b, GuestAddress(DATA)).unwrap();
    assert_eq!(b, [0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff]);
    assert!(vectors(&p).is_empty());
}

#[test]
fn fxam_classes() {
    let m = memory();
    let values: [(u16, u64); 7] = [
        (0x0000, 0),                     // +0
        (0xbfff, 1 << 63),               // -1.0
        (0x7fff, 1 << 63),               // +inf
        (0xffff, 0xc000_0000_0000_0000), // NaN, negative
        (0x0000, 1),                     // denormal
        (0x4000, 1),                     // unnormal (unsupported)
        (0x8000, 0),                     // -0
    ];
    for (i, (se, man)) in values.iter().enumerate() {
        let a = DATA + 16 * i as u64;
        m.write_obj(*man, GuestAddress(a)).unwrap();
        m.write_obj(*se, GuestAddress(a + 8)).unwrap();
    }
    let p = run(&m, true, |a| {
        a.fninit().unwrap();
        for i in 0..7 {
            a.fld(tword_ptr(DATA as i32 + 16 * i)).unwrap();
            a.fxam().unwrap();
            fsw_out(a);
            a.fstp(st0).unwrap();
        }
        a.fxam().unwrap(); // empty
        fsw_out(a);
    });
    let cc: Vec<u32> = outs(&p, OUT)
        .iter()
        .map(|v| v & (C0 | C1 | C2 | C3))
        .collect();
    assert_eq!(
        cc,
        vec![
            C3,      // zero
            C2 | C1, // normal, negative
            C2 | C0, // infinity
            C0 | C1, // NaN, negative
            C3 | C2, // denormal
            0,       // unsupported
            C3 | C1, // zero, negative
            C3 | C0, // empty (C1: the sign of the stale content, +0 here)
        ]
    );
    // The denormal load reports nothing (m80 loads are raw).
    assert_eq!(outs(&p, OUT)[4] & DE, 0);
}

#[test]
fn fprem_loop_over_partial_remainders() {
    let m = memory();
    // 2^200 mod 3 = 1: exponent difference 199 needs several partial steps (C2 = 1).
    m.write_obj(1u64 << 63, GuestAddress(DATA)).unwrap();
    m.write_obj(0x3fffu16 + 200, GuestAddress(DATA + 8))
        .unwrap();
    m.write_obj(3u32, GuestAddress(DATA + 16)).unwrap();
    let p = run(&m, true, |a| {
        let mut again = a.create_label();
        a.fninit().unwrap();
        a.fild(dword_ptr(DATA as i32 + 16)).unwrap();
        a.fld(tword_ptr(DATA as i32)).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.set_label(&mut again).unwrap();
        a.inc(ecx).unwrap();
        a.fprem().unwrap();
        a.fnstsw(ax).unwrap();
        a.test(ah, 4).unwrap(); // C2
        a.jnz(again).unwrap();
        a.out(OUT as i32, eax).unwrap();
        a.mov(eax, ecx).unwrap();
        a.out(OUT as i32, eax).unwrap();
        a.fistp(dword_ptr(DATA as i32 + 32)).unwrap();
    });
    let o = outs(&p, OUT);
    // Quotient (2^200 - 1) / 3 = 0x5555...5: Q2 Q1 Q0 = 101 -> C0 = 1, C3 = 0, C1 = 1.
    assert_eq!(o[0] & (C0 | C1 | C2 | C3), C0 | C1);
    assert!(o[1] > 1, "partial steps: {}", o[1]);
    let r: u32 = m.read_obj(GuestAddress(DATA + 32)).unwrap();
    assert_eq!(r, 1);
}

#[test]
fn tag_word_in_fnstenv_and_fxsave() {
    let m = memory();
    let p = run(&m, true, |a| {
        a.fninit().unwrap();
        a.fld1().unwrap(); // physical 7: valid
        a.fldz().unwrap(); // physical 6: zero
        a.fldpi().unwrap(); // physical 5: valid
        a.fdiv_2(st0, st1).unwrap(); // pi / 0 = inf (masked ZE): special
        a.fnstenv(ptr(DATA as i32)).unwrap();
        a.mov(eax, (DATA + 0x100) as u32).unwrap();
        a.fxsave64(ptr(rax)).unwrap();
        fsw_out(a);
    });
    let tag: u16 = m.read_obj(GuestAddress(DATA + 8)).unwrap();
    // Physical 7..0: valid (00), zero (01), special (10), then five empty (11).
    assert_eq!(tag, 0b0001_1011_1111_1111);
    let fcw: u16 = m.read_obj(GuestAddress(DATA)).unwrap();
    assert_eq!(fcw, 0x37f);
    let abridged: u8 = m.read_obj(GuestAddress(DATA + 0x104)).unwrap();
    assert_eq!(abridged, 0xe0);
    assert_eq!(outs(&p, OUT)[0] & 0x3f, ZE);
}
