//! CPUID: what the software engine implements — an x86-64-v3 CPU: FPU, TSC, MSR, PAE,
//! PSE, CX8, APIC, MTRR, PGE, CMOV, PAT, CLFLUSH, MMX, FXSR, SSE, SSE2; SSE3,
//! PCLMULQDQ, SSSE3, CX16, PCID, SSE4.1, SSE4.2, MOVBE, POPCNT, AES, FMA, XSAVE, AVX,
//! F16C (leaf 1); BMI1, AVX2, SMEP, BMI2, INVPCID, SMAP, UMIP, PKU, PKS (leaf 7; the
//! paging features are in `protect.rs`, OSPKE follows CR4.PKE); XSAVE state components
//! x87, SSE and AVX with XSAVEOPT (leaf 0xD subleaves 0-2, standard format only); SYSCALL, NX, 1G pages,
//! RDTSCP, LM, LAHF, ABM/LZCNT (leaf 0x8000_0001); invariant TSC; hypervisor bit; the
//! x2APIC and TSC-deadline MSRs, which the local APIC behind `Platform` backs or
//! refuses. Leaf 1 ECX bit 27 (OSXSAVE) and leaf 0xD subleaf 0 EBX are left to the
//! CPUID instruction, which computes them from CR4 and XCR0 (`Cpu::cpuid_dynamic`). Not
//! offered: MONITOR/MWAIT, XSAVEC/XSAVES. With AVX, AVX2, BMI1/2, F16C, FMA,
//! LZCNT, MOVBE and XSAVE this is x86-64-v3. Leaf 0x4000_0000 carries the
//! "wirtwirtwirt" signature.
//!
//! [`supported`] is the engine's offer; the VMM passes it through the platform policy
//! (`arch::cpuid`: APIC IDs, topology, the irqchip's capabilities, the user's feature
//! edits) and gives each vCPU its table with [`Cpu::set_cpuid`](crate::Cpu::set_cpuid).
//! The CPUID instruction looks that table up (leaves it lacks read as zeros, as on AMD
//! CPUs) and adds the state-dependent bits named above.
//!
//! The identity (AuthenticAMD, family 15, model 107, stepping 1) is QEMU's `qemu64`: the
//! model the guest instruction profile was measured with, whose Linux code paths are
//! known to work on a software CPU (no Meltdown/MDS mitigations, no Intel-only MSRs).

/// One CPUID leaf/subleaf of a vCPU's table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidLeaf {
    pub function: u32,
    pub index: u32,
    /// The result depends on ECX (`index`); otherwise ECX is ignored.
    pub significant_index: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Leaves with subleaves (ECX significant).
fn indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1d | 0x1f | 0x8000_001d
    )
}

/// The subleaves the engine lists for `leaf` (those it reports something for; others of an
/// indexed leaf read as zeros).
fn subleaves(leaf: u32) -> std::ops::RangeInclusive<u32> {
    match leaf {
        0xd => 0..=2,
        _ => 0..=0,
    }
}

/// The leaves the engine implements (for indexed leaves, the subleaves of [`subleaves`]).
pub fn supported() -> Vec<CpuidLeaf> {
    let (max_basic, ..) = base(0, 0);
    let (max_ext, ..) = base(0x8000_0000, 0);
    (0..=max_basic)
        .chain(0x4000_0000..=0x4000_0000)
        .chain(0x8000_0000..=max_ext)
        .flat_map(|function| subleaves(function).map(move |index| (function, index)))
        .map(|(function, index)| {
            let (eax, ebx, ecx, edx) = base(function, index);
            CpuidLeaf {
                function,
                index,
                significant_index: indexed(function),
                eax,
                ebx,
                ecx,
                edx,
            }
        })
        .collect()
}

/// Looks `leaf`/`sub` up in a vCPU's table; absent leaves read as zeros.
pub fn lookup(table: &[CpuidLeaf], leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    table
        .iter()
        .find(|e| e.function == leaf && (!e.significant_index || e.index == sub))
        .map_or((0, 0, 0, 0), |e| (e.eax, e.ebx, e.ecx, e.edx))
}

fn regs(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

/// What the engine reports for leaf `leaf`, subleaf `sub`, before the platform policy.
fn base(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    match leaf {
        0 => {
            let (b, d, c) = regs(b"AuthenticAMD");
            // Up to the XSAVE leaf 0xD (through the extended topology leaf 0xB, which the
            // policy fills with x2APIC IDs).
            (0xd, b, c, d)
        }
        1 => {
            // Family 15, model 107 (ext. model 6, model 0xb), stepping 1.
            let eax = 0x0006_0fb1;
            // CLFLUSH line size 8 × 8 bytes; one logical CPU, APIC ID 0 (the platform
            // policy writes each vCPU's own).
            let ebx = (1 << 16) | (8 << 8);
            let ecx = (1 << 0) // SSE3
                | (1 << 1) // PCLMULQDQ
                | (1 << 9) // SSSE3
                | (1 << 12) // FMA
                | (1 << 13) // CX16
                | (1 << 17) // PCID
                | (1 << 19) // SSE4.1
                | (1 << 20) // SSE4.2
                | (1 << 21) // x2APIC
                | (1 << 22) // MOVBE
                | (1 << 23) // POPCNT
                | (1 << 24) // TSC-deadline
                | (1 << 25) // AES
                | (1 << 26) // XSAVE
                | (1 << 28) // AVX
                | (1 << 29) // F16C
                | (1 << 31); // hypervisor
            let edx = (1 << 0) // FPU
                | (1 << 3) // PSE
                | (1 << 4) // TSC
                | (1 << 5) // MSR
                | (1 << 6) // PAE
                | (1 << 8) // CX8
                | (1 << 9) // APIC
                | (1 << 12) // MTRR
                | (1 << 13) // PGE
                | (1 << 15) // CMOV
                | (1 << 16) // PAT
                | (1 << 19) // CLFSH
                | (1 << 23) // MMX
                | (1 << 24) // FXSR
                | (1 << 25) // SSE
                | (1 << 26); // SSE2
            (eax, ebx, ecx, edx)
        }
        7 if sub == 0 => {
            // Max subleaf 0. EBX: BMI1, AVX2, SMEP, BMI2, INVPCID, SMAP; ECX: UMIP, PKU,
            // PKS. OSPKE (ECX bit 4) follows CR4.PKE where CPUID executes.
            let ebx = (1 << 3) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 20);
            let ecx = (1 << 2) | (1 << 3) | (1 << 31);
            (0, ebx, ecx, 0)
        }
        0xd => crate::xsave::cpuid_leaf(sub),
        0x4000_0000 => {
            let (b, c, d) = regs(b"wirtwirtwirt");
            (0x4000_0000, b, c, d)
        }
        0x8000_0000 => {
            let (b, d, c) = regs(b"AuthenticAMD");
            (0x8000_0021, b, c, d)
        }
        0x8000_0001 => {
            // ECX: LAHF/SAHF in 64-bit mode (bit 0), ABM: LZCNT (bit 5).
            let ecx = 1 | (1 << 5);
            // AMD mirrors the leaf-1 basics here; plus SYSCALL, NX, 1G pages, RDTSCP, LM.
            let (_, _, _, base) = base(1, 0);
            let edx =
                (base & 0x0183_f3ff) | (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);
            (0x0006_0fb1, 0, ecx, edx)
        }
        0x8000_0002..=0x8000_0004 => {
            let mut s = [0u8; 48];
            let name = b"wirt software x86-64 CPU";
            s[..name.len()].copy_from_slice(name);
            let o = ((leaf - 0x8000_0002) * 16) as usize;
            let w =
                |i: usize| u32::from_le_bytes([s[o + i], s[o + i + 1], s[o + i + 2], s[o + i + 3]]);
            (w(0), w(4), w(8), w(12))
        }
        0x8000_0007 => (0, 0, 0, 1 << 8), // invariant TSC
        // Extended topology: a placeholder the platform policy rebuilds per vCPU.
        0xb => (0, 1, 0x100, 0),
        0x8000_0008 => (0x3028, 0, 0, 0), // 40 physical, 48 linear address bits
        // Extended features 2: a null selector loaded into FS/GS clears the base.
        0x8000_0021 => (1 << 6, 0, 0, 0),
        _ => (0, 0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_baseline() {
        let t = supported();
        let (_, ebx, ecx, edx) = lookup(&t, 1, 0);
        assert_eq!(ebx >> 24, 0, "the policy, not the engine, sets the APIC ID");
        assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(ecx & (1 << 3), 0, "no MONITOR/MWAIT");
        assert_ne!(ecx & (1 << 12), 0, "FMA");
        assert_ne!(ecx & (1 << 26), 0, "XSAVE");
        assert_eq!(ecx & (1 << 27), 0, "OSXSAVE is CR4's, not the table's");
        assert_ne!(ecx & (1 << 28), 0, "AVX");
        assert_ne!(ecx & (1 << 29), 0, "F16C");
        for bit in [0, 4, 5, 6, 8, 9, 13, 15, 24, 25, 26] {
            assert_ne!(edx & (1 << bit), 0, "leaf 1 EDX bit {bit}");
        }
        let (_, _, _, edx) = lookup(&t, 0x8000_0001, 0);
        assert_ne!(edx & (1 << 29), 0, "long mode");
        assert_ne!(edx & (1 << 20), 0, "NX");
        let (max, b, c, d) = lookup(&t, 0x4000_0000, 0);
        assert_eq!(max, 0x4000_0000);
        let mut sig = Vec::new();
        for r in [b, c, d] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"wirtwirtwirt");
        let (_, b7, c7, _) = lookup(&t, 7, 0);
        for bit in [7, 10, 20] {
            assert_ne!(
                b7 & (1 << bit),
                0,
                "leaf 7 EBX bit {bit} (SMEP, INVPCID, SMAP)"
            );
        }
        assert_eq!(c7, (1 << 2) | (1 << 3) | (1 << 31), "UMIP, PKU, PKS");
        assert_ne!(ecx & (1 << 17), 0, "PCID");
    }

    #[test]
    fn every_leaf_up_to_the_maxima_is_listed_and_others_read_zero() {
        let t = supported();
        let (max, ..) = lookup(&t, 0, 0);
        let (max_ext, ..) = lookup(&t, 0x8000_0000, 0);
        for leaf in (0..=max).chain(0x8000_0000..=max_ext) {
            assert!(t.iter().any(|e| e.function == leaf), "leaf {leaf:#x}");
        }
        assert_eq!(lookup(&t, max_ext + 1, 0), (0, 0, 0, 0));
        assert_eq!(lookup(&t, 7, 1), (0, 0, 0, 0), "leaf 7 is indexed");
    }

    #[test]
    fn advertises_x86_64_v2_and_the_integer_part_of_v3() {
        let t = supported();
        let (max, ..) = lookup(&t, 0, 0);
        assert!(max >= 0xd, "leaves 7 and 0xD reachable");
        let (_, _, ecx, _) = lookup(&t, 1, 0);
        // SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT, AES.
        for bit in [0, 1, 9, 13, 19, 20, 22, 23, 25] {
            assert_ne!(ecx & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        let (_, _, ecx, _) = lookup(&t, 0x8000_0001, 0);
        assert_ne!(ecx & 1, 0, "LAHF/SAHF");
        assert_ne!(ecx & (1 << 5), 0, "ABM/LZCNT");
        let (max_sub, ebx, ecx, edx) = lookup(&t, 7, 0);
        assert_eq!(max_sub, 0);
        assert_eq!(
            ebx,
            (1 << 3) | (1 << 5) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 20),
            "BMI1, AVX2, SMEP, BMI2, INVPCID, SMAP only"
        );
        assert_eq!(ecx, (1 << 2) | (1 << 3) | (1 << 31), "UMIP, PKU, PKS");
        assert_eq!(edx, 0);
        assert_eq!(base(7, 1), (0, 0, 0, 0), "no leaf-7 subleaf 1");
    }

    #[test]
    fn xsave_leaf_lists_x87_sse_avx_in_the_standard_format() {
        let t = supported();
        assert!(t.iter().all(|e| e.function != 0xd || e.significant_index));
        let (eax, ebx, ecx, edx) = lookup(&t, 0xd, 0);
        assert_eq!((eax, edx), (7, 0), "x87, SSE, AVX");
        assert_eq!(ebx, 576, "size for XCR0 = x87 (at reset)");
        assert_eq!(ecx, 832, "size for every supported component");
        assert_eq!(lookup(&t, 0xd, 1), (1, 0, 0, 0), "XSAVEOPT only");
        assert_eq!(
            lookup(&t, 0xd, 2),
            (256, 576, 0, 0),
            "AVX: 256 bytes at 576"
        );
        assert_eq!(lookup(&t, 0xd, 3), (0, 0, 0, 0));
    }
}
