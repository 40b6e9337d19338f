//! The conditions under which VEX instructions fault (#UD without CR4.OSXSAVE, without
//! SSE|AVX in XCR0, without AVX in CPUID, in real mode; #NM with CR0.TS; #GP for a
//! misaligned aligned move) and the state a VEX.128 write leaves in bits 255:128. The
//! results themselves are compared with the host CPU in `diff.rs`.

mod common;

use common::*;
use emu::{Cpu, CpuRegs, Exit};
use iced_x86::code_asm::*;

const CR4_OSXSAVE: u64 = 1 << 18;

fn avx_regs() -> CpuRegs {
    let mut r = long_mode_regs(CODE);
    r.cr4 |= CR4_OSXSAVE;
    r.fpu.xcr0 = 7;
    r.gpr[3] = DATA;
    r
}

fn run(r: &CpuRegs, table: Option<Vec<emu::CpuidLeaf>>, code: Vec<u8>) -> (CpuRegs, Vec<u32>) {
    let m = memory();
    setup_long_mode(&m);
    let mut prog = code;
    prog.push(0xf4);
    load(&m, CODE, &prog);
    let mut cpu = Cpu::new(&m);
    if let Some(t) = table {
        cpu.set_cpuid(t);
    }
    cpu.set_regs(r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    (cpu.regs(), vectors(&p))
}

fn vaddps() -> Vec<u8> {
    asm64(CODE, |a| a.vaddps(ymm1, ymm2, ymm3).unwrap())
}

#[test]
fn vex_faults() {
    let mut no_osxsave = avx_regs();
    no_osxsave.cr4 &= !CR4_OSXSAVE;
    let mut sse_only = avx_regs();
    sse_only.fpu.xcr0 = 3;
    let mut ts = avx_regs();
    ts.cr0 |= 1 << 3;
    let mut no_avx = emu::cpuid::supported();
    for e in no_avx.iter_mut().filter(|e| e.function == 1) {
        e.ecx &= !(1 << 28);
    }
    let cases = [
        ("CR4.OSXSAVE clear", no_osxsave, None, vaddps(), 6),
        ("XCR0 without AVX", sse_only, None, vaddps(), 6),
        ("CPUID without AVX", avx_regs(), Some(no_avx), vaddps(), 6),
        ("CR0.TS", ts, None, vaddps(), 7),
        (
            "misaligned vmovaps ymm",
            avx_regs(),
            None,
            asm64(CODE, |a| a.vmovaps(ymm0, ptr(rbx + 16)).unwrap()),
            13,
        ),
        (
            "misaligned vmovdqa xmm",
            avx_regs(),
            None,
            asm64(CODE, |a| a.vmovdqa(ptr(rbx + 8), xmm0).unwrap()),
            13,
        ),
    ];
    for (what, r, table, code, vector) in cases {
        let (after, v) = run(&r, table, code);
        assert_eq!(v, vec![vector], "{what}");
        assert_eq!(after.fpu, r.fpu, "{what}: no state change");
    }
    // Unaligned operands are fine for everything else.
    let (_, v) = run(
        &avx_regs(),
        None,
        asm64(CODE, |a| {
            a.vmovups(ymm0, ptr(rbx + 8)).unwrap();
            a.vaddps(ymm1, ymm0, ptr(rbx + 4)).unwrap();
        }),
    );
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn vex_128_zeroes_the_upper_half_and_legacy_sse_keeps_it() {
    let mut r = avx_regs();
    r.fpu.ymm_hi = [u128::MAX; 16];
    let code = asm64(CODE, |a| {
        a.vaddps(xmm1, xmm2, xmm3).unwrap();
        a.addps(xmm4, xmm5).unwrap();
        a.vzeroupper().unwrap();
    });
    let (after, v) = run(&r, None, code.clone());
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(after.fpu.ymm_hi, [0; 16], "vzeroupper");
    let code = asm64(CODE, |a| {
        a.vaddps(xmm1, xmm2, xmm3).unwrap();
        a.addps(xmm4, xmm5).unwrap();
    });
    let (after, _) = run(&r, None, code);
    assert_eq!(after.fpu.ymm_hi[1], 0, "VEX.128 zeroes bits 255:128");
    assert_eq!(after.fpu.ymm_hi[4], u128::MAX, "legacy SSE keeps them");
}

#[test]
fn masked_loads_do_not_touch_masked_off_elements() {
    // The load starts 8 bytes below an unmapped page (4 GiB: past the test's page
    // tables' 1 GiB pages is nothing): only the first two elements are selected.
    let mut r = avx_regs();
    r.gpr[3] = (4u64 << 30) - 8;
    r.fpu.xmm[1] = 0x8000_0000_8000_0000;
    r.fpu.ymm_hi[1] = 0;
    let (after, v) = run(
        &r,
        None,
        asm64(CODE, |a| a.vmaskmovps(ymm0, ymm1, ptr(rbx)).unwrap()),
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(after.fpu.ymm_hi[0], 0);
    // With an element on the unmapped page selected: #PF.
    r.fpu.xmm[1] = 0x8000_0000_0000_0000_0000_0000_0000_0000;
    let (_, v) = run(
        &r,
        None,
        asm64(CODE, |a| a.vmaskmovps(ymm0, ymm1, ptr(rbx)).unwrap()),
    );
    assert_eq!(v, vec![14]);
}
