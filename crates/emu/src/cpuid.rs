//! CPUID: advertises exactly what the engine implements — an x86-64 baseline CPU (FPU,
//! TSC, MSR, PAE, PSE, CX8, APIC, MTRR, PGE, CMOV, PAT, CLFLUSH, MMX bit, FXSR, SSE, SSE2;
//! CX16, POPCNT; SYSCALL, NX, 1G pages, RDTSCP, LM, LAHF; invariant TSC; hypervisor bit)
//! and no XSAVE/AVX/BMI/SMEP. Leaf 0x4000_0000 carries the "wirtwirtwirt" signature.
//!
//! The identity (AuthenticAMD, family 15, model 107, stepping 1) is QEMU's `qemu64`: the
//! model the guest instruction profile was measured with, whose Linux code paths are
//! known to work on a software CPU (no Meltdown/MDS mitigations, no Intel-only MSRs).

fn regs(s: &[u8; 12]) -> (u32, u32, u32) {
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    (w(0), w(4), w(8))
}

/// Returns (eax, ebx, ecx, edx) for leaf `leaf`, subleaf `sub`, on the vCPU `apic_id`.
pub fn cpuid_for(apic_id: u32, leaf: u32, _sub: u32) -> (u32, u32, u32, u32) {
    match leaf {
        0 => {
            let (b, d, c) = regs(b"AuthenticAMD");
            (7, b, c, d)
        }
        1 => {
            // Family 15, model 107 (ext. model 6, model 0xb), stepping 1.
            let eax = 0x0006_0fb1;
            let ebx = (apic_id << 24) | (1 << 16) | (8 << 8);
            let ecx = (1 << 13) | (1 << 23) | (1 << 31); // CX16, POPCNT, hypervisor
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
        0x4000_0000 => {
            let (b, c, d) = regs(b"wirtwirtwirt");
            (0x4000_0000, b, c, d)
        }
        0x8000_0000 => {
            let (b, d, c) = regs(b"AuthenticAMD");
            (0x8000_0008, b, c, d)
        }
        0x8000_0001 => {
            let ecx = 1; // LAHF/SAHF in 64-bit mode
                         // AMD mirrors the leaf-1 basics here; plus SYSCALL, NX, 1G pages, RDTSCP, LM.
            let (_, _, _, base) = cpuid_for(apic_id, 1, 0);
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
        0x8000_0008 => (0x3028, 0, 0, 0), // 40 physical, 48 linear address bits
        _ => (0, 0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertises_baseline_without_xsave() {
        let (_, ebx, ecx, edx) = cpuid_for(3, 1, 0);
        assert_eq!(ebx >> 24, 3, "initial APIC ID");
        assert_ne!(ecx & (1 << 31), 0, "hypervisor bit");
        assert_eq!(ecx & (1 << 26), 0, "no XSAVE");
        assert_eq!(ecx & (1 << 28), 0, "no AVX");
        for bit in [0, 4, 5, 6, 8, 9, 13, 15, 24, 25, 26] {
            assert_ne!(edx & (1 << bit), 0, "leaf 1 EDX bit {bit}");
        }
        let (_, _, _, edx) = cpuid_for(0, 0x8000_0001, 0);
        assert_ne!(edx & (1 << 29), 0, "long mode");
        assert_ne!(edx & (1 << 20), 0, "NX");
        let (max, b, c, d) = cpuid_for(0, 0x4000_0000, 0);
        assert_eq!(max, 0x4000_0000);
        let mut sig = Vec::new();
        for r in [b, c, d] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"wirtwirtwirt");
        assert_eq!(cpuid_for(0, 7, 0), (0, 0, 0, 0), "no leaf-7 features");
    }
}
