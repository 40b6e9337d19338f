//! The XSAVE feature set as guest programs see it: CR4.OSXSAVE and the dynamic CPUID
//! bits, XCR0 (XGETBV/XSETBV and its #GP rules), XSAVE/XSAVEOPT/XRSTOR of the x87, SSE
//! and AVX components (layout, XSTATE_BV, the init optimization, partial masks) and the
//! #UD/#NM/#GP conditions.

mod common;

use common::*;
use emu::{Cpu, CpuRegs, Exit};
use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress};

const CR4_OSXSAVE: u64 = 1 << 18;
/// Where the tests keep their XSAVE area (64-byte aligned).
const AREA: u64 = DATA;

/// Long mode with CR4.OSXSAVE set and XCR0 = `xcr0`.
fn regs(xcr0: u64) -> CpuRegs {
    let mut r = long_mode_regs(CODE);
    r.cr4 |= CR4_OSXSAVE;
    r.fpu.xcr0 = xcr0;
    r
}

/// Runs `code` (then HLT) from `r`; returns the vCPU and the exception vectors raised.
fn run(m: &vm_memory::GuestMemoryMmap, r: &CpuRegs, code: Vec<u8>) -> (Cpu, Vec<u32>) {
    let mut prog = code;
    prog.push(0xf4);
    load(m, CODE, &prog);
    let mut cpu = Cpu::new(m);
    cpu.set_regs(r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    (cpu, vectors(&p))
}

fn setup() -> vm_memory::GuestMemoryMmap {
    let m = memory();
    setup_long_mode(&m);
    m.write_slice(&[0u8; 1024], GuestAddress(AREA)).unwrap();
    m
}

fn rd128(m: &vm_memory::GuestMemoryMmap, a: u64) -> u128 {
    r64(m, a) as u128 | (r64(m, a + 8) as u128) << 64
}

fn wr128(m: &vm_memory::GuestMemoryMmap, a: u64, v: u128) {
    w64(m, a, v as u64);
    w64(m, a + 8, (v >> 64) as u64);
}

/// A state with every component in use.
fn busy(r: &mut CpuRegs) {
    for i in 0..16 {
        r.fpu.xmm[i] = 0x1111_0000_0000_0000_0000_0000_0000_0000 * (i as u128 + 1) + i as u128;
        r.fpu.ymm_hi[i] = 0xabcd_0000_0000_0000_0000_0000_0000_0000 ^ (i as u128) << 8;
    }
    r.fpu.mxcsr = 0x3f80;
    r.fpu.fcw = 0x27f;
    r.fpu.st[3][0] = 0x42;
}

#[test]
fn cpuid_osxsave_and_area_size_follow_cr4_and_xcr0() {
    let m = setup();
    let code = asm64(CODE, |a| {
        a.mov(eax, 1).unwrap();
        a.cpuid().unwrap();
        a.mov(r8d, ecx).unwrap();
        a.mov(eax, 0xd).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(r9d, ebx).unwrap();
        a.mov(eax, 7).unwrap();
        a.xor(edx, edx).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.xsetbv().unwrap();
        a.mov(eax, 0xd).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.cpuid().unwrap();
        a.mov(r10d, ebx).unwrap();
        a.xor(ecx, ecx).unwrap();
        a.xgetbv().unwrap();
        a.mov(r11d, eax).unwrap();
    });
    let (cpu, v) = run(&m, &regs(1), code.clone());
    assert!(v.is_empty(), "{v:?}");
    let g = cpu.regs().gpr;
    assert_ne!(g[8] & (1 << 27), 0, "OSXSAVE = CR4.OSXSAVE");
    assert_ne!(g[8] & (1 << 26), 0, "XSAVE");
    assert_eq!(g[9], 576, "size for XCR0 = x87");
    assert_eq!(g[10], 832, "size for XCR0 = x87|SSE|AVX");
    assert_eq!(g[11], 7, "XGETBV reads XCR0");
    assert_eq!(cpu.regs().fpu.xcr0, 7);
    // Without CR4.OSXSAVE the bit is clear.
    let code = asm64(CODE, |a| {
        a.mov(eax, 1).unwrap();
        a.cpuid().unwrap();
    });
    let (cpu, _) = run(&m, &long_mode_regs(CODE), code);
    assert_eq!(cpu.regs().gpr[1] & (1 << 27), 0);
}

#[test]
fn cr4_osxsave_is_writable_only_when_cpuid_offers_xsave() {
    let m = setup();
    let code = asm64(CODE, |a| {
        a.mov(rax, cr4).unwrap();
        a.or(eax, CR4_OSXSAVE as i32).unwrap();
        a.mov(cr4, rax).unwrap();
    });
    let (cpu, v) = run(&m, &long_mode_regs(CODE), code.clone());
    assert!(v.is_empty());
    assert_ne!(cpu.regs().cr4 & CR4_OSXSAVE, 0);
    // A table without XSAVE: #GP.
    let mut table = emu::cpuid::supported();
    for e in table.iter_mut().filter(|e| e.function == 1) {
        e.ecx &= !(1 << 26);
    }
    let mut prog = code;
    prog.push(0xf4);
    load(&m, CODE, &prog);
    let mut cpu = Cpu::new(&m);
    cpu.set_cpuid(table);
    cpu.set_regs(&long_mode_regs(CODE));
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    assert_eq!(vectors(&p), vec![13]);
}

#[test]
fn xsave_writes_the_standard_layout_and_xrstor_brings_it_back() {
    let m = setup();
    let mut r = regs(7);
    busy(&mut r);
    // Bytes XSAVE must not touch: 416..512 (available) and the rest of the header.
    m.write_slice(&[0x5a; 96], GuestAddress(AREA + 416))
        .unwrap();
    w64(&m, AREA + 512 + 40, 0x77);
    let save = asm64(CODE, |a| {
        a.mov(eax, u32::MAX).unwrap();
        a.mov(edx, u32::MAX).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xsave64(ptr(rdi)).unwrap();
    });
    let (cpu, v) = run(&m, &r, save);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(cpu.regs().fpu, r.fpu, "XSAVE changes no register");
    assert_eq!(r64(&m, AREA) & 0xffff, 0x27f, "FCW");
    assert_eq!(r64(&m, AREA + 24) as u32, 0x3f80, "MXCSR");
    assert_eq!(r64(&m, AREA + 32 + 48) & 0xff, 0x42, "ST3");
    for i in 0..16 {
        assert_eq!(rd128(&m, AREA + 160 + 16 * i), r.fpu.xmm[i as usize]);
        assert_eq!(rd128(&m, AREA + 576 + 16 * i), r.fpu.ymm_hi[i as usize]);
    }
    assert_eq!(r64(&m, AREA + 512), 7, "XSTATE_BV");
    assert_eq!(r64(&m, AREA + 520), 0, "XCOMP_BV");
    assert_eq!(r64(&m, AREA + 512 + 40), 0x77);
    let mut tail = [0u8; 96];
    m.read_slice(&mut tail, GuestAddress(AREA + 416)).unwrap();
    assert_eq!(tail, [0x5a; 96]);

    // Clobber everything, restore, compare.
    let restore = asm64(CODE, |a| {
        a.mov(eax, 7).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    });
    let clobbered = regs(7);
    let (cpu, v) = run(&m, &clobbered, restore);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(cpu.regs().fpu, r.fpu);
}

#[test]
fn xrstor_initializes_components_missing_from_xstate_bv() {
    let m = setup();
    let mut r = regs(7);
    busy(&mut r);
    // The area holds only x87 state (XSTATE_BV = 1) and an MXCSR.
    w64(&m, AREA, 0x037f);
    w64(&m, AREA + 24, 0x1f81);
    wr128(&m, AREA + 160, 0xdead);
    wr128(&m, AREA + 576, 0xbeef);
    w64(&m, AREA + 512, 1);
    let restore = asm64(CODE, |a| {
        a.mov(eax, 7).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    });
    let (cpu, v) = run(&m, &r, restore);
    assert!(v.is_empty(), "{v:?}");
    let f = cpu.regs().fpu;
    assert_eq!(f.xmm, [0; 16], "SSE initialized");
    assert_eq!(f.ymm_hi, [0; 16], "AVX initialized");
    assert_eq!(
        f.mxcsr, 0x1f81,
        "MXCSR is loaded whenever RFBM has SSE or AVX"
    );
    assert_eq!(f.fcw, 0x37f);
    assert_eq!(f.st, [[0; 16]; 8], "x87 loaded from the area");
}

#[test]
fn xrstor_leaves_components_outside_the_mask() {
    let m = setup();
    let mut r = regs(7);
    busy(&mut r);
    w64(&m, AREA + 512, 7);
    w64(&m, AREA, 0x037f);
    w64(&m, AREA + 24, 0x1f80);
    wr128(&m, AREA + 160, 0x1234);
    wr128(&m, AREA + 576, 0x5678);
    // EDX:EAX = SSE only.
    let restore = asm64(CODE, |a| {
        a.mov(eax, 2).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    });
    let (cpu, v) = run(&m, &r, restore);
    assert!(v.is_empty(), "{v:?}");
    let f = cpu.regs().fpu;
    assert_eq!(f.xmm[0], 0x1234);
    assert_eq!(f.xmm[1], 0, "from the (zero) area");
    assert_eq!(f.mxcsr, 0x1f80);
    assert_eq!(f.ymm_hi, r.fpu.ymm_hi, "AVX not in RFBM");
    assert_eq!(f.fcw, 0x27f, "x87 not in RFBM");
    assert_eq!(f.st, r.fpu.st);
    // XCR0 limits RFBM too: with XCR0 = x87|SSE, EDX:EAX = all leaves AVX alone.
    let restore = asm64(CODE, |a| {
        a.mov(eax, u32::MAX).unwrap();
        a.mov(edx, u32::MAX).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    });
    w64(&m, AREA + 512, 3);
    let mut r3 = r.clone();
    r3.fpu.xcr0 = 3;
    let (cpu, v) = run(&m, &r3, restore);
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(cpu.regs().fpu.ymm_hi, r.fpu.ymm_hi);
    assert_eq!(cpu.regs().fpu.fcw, 0x37f);
}

#[test]
fn xsave_updates_only_the_requested_xstate_bv_bits_and_xsaveopt_skips_init_state() {
    let m = setup();
    // x87 in use, SSE and AVX in their initial configuration.
    let mut r = regs(7);
    r.fpu.fcw = 0x27f;
    w64(&m, AREA + 512, 0x4);
    wr128(&m, AREA + 160, 0xaaaa);
    let save = |op: fn(&mut CodeAssembler) -> Result<(), IcedError>| {
        asm64(CODE, |a| {
            a.mov(eax, 3).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(rdi, AREA).unwrap();
            op(a).unwrap();
        })
    };
    let (_, v) = run(&m, &r, save(|a| a.xsaveopt64(ptr(rdi))));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(r64(&m, AREA + 512), 0x5, "AVX bit kept, x87 set, SSE clear");
    assert_eq!(
        rd128(&m, AREA + 160),
        0xaaaa,
        "XSAVEOPT skips the init SSE state"
    );
    assert_eq!(r64(&m, AREA + 24) as u32, 0x1f80, "MXCSR written");
    let (_, v) = run(&m, &r, save(|a| a.xsave64(ptr(rdi))));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(r64(&m, AREA + 512), 0x5);
    assert_eq!(
        rd128(&m, AREA + 160),
        0,
        "XSAVE writes requested components"
    );
}

/// A fault case: what, initial state, program, expected vector, and the area's
/// XSTATE_BV, XCOMP_BV and MXCSR.
struct Case(&'static str, CpuRegs, Vec<u8>, u32, (u64, u64, u64));

/// Each program ends in one exception; the vector is compared.
#[test]
fn faults() {
    let m = setup();
    let mut ts = regs(7);
    ts.cr0 |= 1 << 3;
    let mut user = regs(7);
    user.cs = seg(UCODE | 3, 0xb, 3, true, false);
    let ud = seg(UDATA | 3, 3, 3, false, true);
    user.ss = ud;
    user.ds = ud;
    user.gpr[4] = USTACK_TOP;
    let xsetbv = |lo: u32, index: u32| {
        asm64(CODE, move |a| {
            a.mov(eax, lo).unwrap();
            a.mov(ecx, index).unwrap();
            a.xor(edx, edx).unwrap();
            a.xsetbv().unwrap();
        })
    };
    let mem_op = |at: u64, op: fn(&mut CodeAssembler) -> Result<(), IcedError>| {
        asm64(CODE, move |a| {
            a.mov(eax, 7).unwrap();
            a.xor(edx, edx).unwrap();
            a.mov(rdi, at).unwrap();
            op(a).unwrap();
        })
    };
    let header = |bv: u64, comp: u64, mxcsr: u64| {
        w64(&m, AREA + 24, mxcsr);
        w64(&m, AREA + 512, bv);
        w64(&m, AREA + 520, comp);
    };
    let cases: Vec<Case> = vec![
        Case(
            "xgetbv without OSXSAVE",
            long_mode_regs(CODE),
            asm64(CODE, |a| {
                a.xor(ecx, ecx).unwrap();
                a.xgetbv().unwrap();
            }),
            6,
            (0, 0, 0x1f80),
        ),
        Case(
            "xsave without OSXSAVE",
            long_mode_regs(CODE),
            mem_op(AREA, |a| a.xsave64(ptr(rdi))),
            6,
            (0, 0, 0x1f80),
        ),
        Case(
            "xgetbv ecx=1",
            regs(7),
            asm64(CODE, |a| {
                a.mov(ecx, 1).unwrap();
                a.xgetbv().unwrap();
            }),
            13,
            (0, 0, 0x1f80),
        ),
        Case(
            "xsetbv x87 clear",
            regs(1),
            xsetbv(6, 0),
            13,
            (0, 0, 0x1f80),
        ),
        Case(
            "xsetbv AVX without SSE",
            regs(1),
            xsetbv(5, 0),
            13,
            (0, 0, 0x1f80),
        ),
        Case(
            "xsetbv unsupported bit",
            regs(1),
            xsetbv(0xf, 0),
            13,
            (0, 0, 0x1f80),
        ),
        Case("xsetbv ecx=1", regs(1), xsetbv(1, 1), 13, (0, 0, 0x1f80)),
        Case("xsetbv at CPL 3", user, xsetbv(3, 0), 13, (0, 0, 0x1f80)),
        Case(
            "xsave misaligned",
            regs(7),
            mem_op(AREA + 32, |a| a.xsave64(ptr(rdi))),
            13,
            (0, 0, 0x1f80),
        ),
        Case(
            "xrstor misaligned",
            regs(7),
            mem_op(AREA + 16, |a| a.xrstor64(ptr(rdi))),
            13,
            (0, 0, 0x1f80),
        ),
        Case(
            "xsave with CR0.TS",
            ts.clone(),
            mem_op(AREA, |a| a.xsave64(ptr(rdi))),
            7,
            (0, 0, 0x1f80),
        ),
        Case(
            "xrstor with CR0.TS",
            ts,
            mem_op(AREA, |a| a.xrstor64(ptr(rdi))),
            7,
            (0, 0, 0x1f80),
        ),
        Case(
            "xrstor XSTATE_BV outside XCR0",
            regs(3),
            mem_op(AREA, |a| a.xrstor64(ptr(rdi))),
            13,
            (4, 0, 0x1f80),
        ),
        Case(
            "xrstor compacted",
            regs(7),
            mem_op(AREA, |a| a.xrstor64(ptr(rdi))),
            13,
            (3, 1 << 63 | 3, 0x1f80),
        ),
        Case(
            "xrstor bad MXCSR",
            regs(7),
            mem_op(AREA, |a| a.xrstor64(ptr(rdi))),
            13,
            (3, 0, 0x1_0000),
        ),
    ];
    for Case(what, r, code, vector, (bv, comp, mxcsr)) in cases {
        header(bv, comp, mxcsr);
        let before = r.fpu.clone();
        let (cpu, v) = run(&m, &r, code);
        assert_eq!(v, vec![vector], "{what}");
        assert_eq!(cpu.regs().fpu, before, "{what}: no state change");
    }
    // A bad MXCSR with neither SSE nor AVX requested is not loaded, so no fault.
    header(1, 0, 0x1_0000);
    let code = asm64(CODE, |a| {
        a.mov(eax, 1).unwrap();
        a.xor(edx, edx).unwrap();
        a.mov(rdi, AREA).unwrap();
        a.xrstor64(ptr(rdi)).unwrap();
    });
    let (_, v) = run(&m, &regs(7), code);
    assert!(v.is_empty(), "{v:?}");
}
