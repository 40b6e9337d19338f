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

/// Dwords at DATA: 1000 + i.
fn table(m: &vm_memory::GuestMemoryMmap) {
    for i in 0..256u64 {
        w64(m, DATA + 8 * i, (1000 + 2 * i) | (1001 + 2 * i) << 32);
    }
}

fn run_gather(r: &CpuRegs, code: Vec<u8>) -> (CpuRegs, Vec<u32>) {
    let m = memory();
    setup_long_mode(&m);
    table(&m);
    let mut prog = code;
    prog.push(0xf4);
    load(&m, CODE, &prog);
    let mut cpu = Cpu::new(&m);
    cpu.set_regs(r);
    let mut p = TestPlatform::default();
    assert_eq!(run_to_halt(&mut cpu, &mut p), Exit::Halted);
    (cpu.regs(), vectors(&p))
}

fn dwords(lo: u128, hi: u128) -> Vec<u32> {
    (0..8)
        .map(|i| {
            if i < 4 {
                (lo >> (32 * i)) as u32
            } else {
                (hi >> (32 * (i - 4))) as u32
            }
        })
        .collect()
}

fn from_dwords(d: &[u32]) -> (u128, u128) {
    let mut v = [0u128; 2];
    for (i, x) in d.iter().enumerate() {
        v[i / 4] |= (*x as u128) << (32 * (i % 4));
    }
    (v[0], v[1])
}

#[test]
fn gathers_load_the_selected_elements_and_clear_the_mask() {
    let mut r = avx_regs();
    let idx = [5u32, 0, 61, (-2i32) as u32, 7, 100, 3, 9];
    (r.fpu.xmm[1], r.fpu.ymm_hi[1]) = from_dwords(&idx);
    let sel = [true, false, true, true, false, true, true, false];
    let mask: Vec<u32> = sel
        .iter()
        .map(|&s| if s { 0x8000_0000 } else { 1 })
        .collect();
    (r.fpu.xmm[2], r.fpu.ymm_hi[2]) = from_dwords(&mask);
    (r.fpu.xmm[0], r.fpu.ymm_hi[0]) = from_dwords(&[7; 8]);
    r.gpr[3] = DATA + 16;
    let (after, v) = run_gather(
        &r,
        asm64(CODE, |a| {
            a.vpgatherdd_3(ymm0, ptr(rbx + ymm1 * 4 + 8), ymm2).unwrap()
        }),
    );
    assert!(v.is_empty(), "{v:?}");
    let want: Vec<u32> = idx
        .iter()
        .zip(sel)
        .map(|(&i, s)| {
            if s {
                1000u32.wrapping_add(6).wrapping_add(i)
            } else {
                7
            }
        })
        .collect();
    assert_eq!(dwords(after.fpu.xmm[0], after.fpu.ymm_hi[0]), want);
    assert_eq!(
        (after.fpu.xmm[2], after.fpu.ymm_hi[2]),
        (0, 0),
        "mask cleared"
    );

    // Quadword indices, dword data: 4 elements into an XMM destination.
    let mut r = avx_regs();
    r.fpu.xmm[1] = 2 | 4u128 << 64;
    r.fpu.ymm_hi[1] = 6 | 8u128 << 64;
    r.fpu.xmm[2] = u128::MAX;
    r.fpu.ymm_hi[0] = u128::MAX;
    r.gpr[3] = DATA;
    let (after, v) = run_gather(
        &r,
        asm64(CODE, |a| {
            a.vpgatherqd_3(xmm0, ptr(rbx + ymm1 * 4), xmm2).unwrap()
        }),
    );
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(dwords(after.fpu.xmm[0], 0)[..4], [1002, 1004, 1006, 1008]);
    assert_eq!(after.fpu.ymm_hi[0], 0, "VEX.128 destination");

    // Doubles with dword indices: xmm index, ymm destination.
    let mut r = avx_regs();
    r.fpu.xmm[1] = from_dwords(&[1, 3, 5, 7]).0;
    r.fpu.xmm[2] = u128::MAX;
    r.fpu.ymm_hi[2] = u128::MAX;
    r.gpr[3] = DATA;
    let (after, v) = run_gather(
        &r,
        asm64(CODE, |a| {
            a.vgatherdpd_3(ymm0, ptr(rbx + xmm1 * 8), ymm2).unwrap()
        }),
    );
    assert!(v.is_empty(), "{v:?}");
    let q = |i: u64| ((1001 + 2 * i) << 32 | (1000 + 2 * i)) as u128;
    assert_eq!(after.fpu.xmm[0], q(1) | q(3) << 64);
    assert_eq!(after.fpu.ymm_hi[0], q(5) | q(7) << 64);
}

#[test]
fn gather_faults_keep_the_completed_elements() {
    let mut r = avx_regs();
    // Element 2's address is past 4 GiB: not mapped.
    r.fpu.xmm[1] = from_dwords(&[1, 2, 0x2000_0000, 4]).0;
    r.fpu.xmm[2] = u128::MAX;
    r.gpr[3] = DATA;
    let (after, v) = run_gather(
        &r,
        asm64(CODE, |a| {
            a.vpgatherdd_3(xmm0, ptr(rbx + xmm1 * 8), xmm2).unwrap()
        }),
    );
    assert_eq!(v, vec![14]);
    let d = dwords(after.fpu.xmm[2], 0);
    assert_eq!(
        &d[..4],
        &[0, 0, u32::MAX, u32::MAX],
        "completed elements cleared"
    );
    let d = dwords(after.fpu.xmm[0], 0);
    assert_eq!(&d[..2], &[1002, 1004], "completed elements loaded");
    // Same destination and index register: #UD.
    let (_, v) = run_gather(
        &r,
        asm64(CODE, |a| {
            a.vpgatherdd_3(xmm1, ptr(rbx + xmm1 * 4), xmm2).unwrap()
        }),
    );
    assert_eq!(v, vec![6]);
}
