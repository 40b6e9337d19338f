//! Converting wirt's engine-neutral [`CpuState`] to and from KVM's register structures.
//!
//! Pure functions, so the mapping is unit-tested without `/dev/kvm`. Field mapping:
//!
//! | `CpuState`                 | KVM                                                     |
//! |----------------------------|---------------------------------------------------------|
//! | `gpr[0..16]` (encoding order rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15) | `kvm_regs.{rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15}` |
//! | `rip`, `rflags`            | `kvm_regs.rip`, `kvm_regs.rflags`                       |
//! | `cs ds es fs gs ss tr ldt` | `kvm_sregs.*` as `kvm_segment`: `limit` is in bytes on both sides, `g` is only the granularity bit; `type_` is the 4-bit type, `s` the S bit; bools become 0/1 |
//! | `gdt`, `idt`               | `kvm_sregs.gdt/idt` (`kvm_dtable`)                      |
//! | `cr0 cr2 cr3 cr4 cr8 efer` | `kvm_sregs.*` (KVM's `cr8` is the TPR)                  |
//! | `msrs`                     | `KVM_SET_MSRS` / `KVM_GET_MSRS` entries                 |
//! | (none)                     | `kvm_sregs.apic_base`, `interrupt_bitmap`: kept as KVM has them |
//! | (none)                     | FPU/SSE: reset to the power-on values by `set_state` ([`default_fpu`]) |

use arch::regs::{CpuState, DescriptorTable, Segment};
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};

use crate::Error;

/// The FPU state after reset/FNINIT: control word 0x37f, all exceptions masked in MXCSR.
pub fn default_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// A `CpuState` segment as KVM's segment cache entry.
///
/// Fails on a limit the descriptor cache cannot hold: with `g` set the low 12 bits must all
/// be ones, and a limit above 1 MiB needs `g` (VM entry rejects both on VMX).
pub fn segment_to_kvm(name: &str, seg: &Segment) -> Result<kvm_segment, Error> {
    if !seg.unusable && seg.present {
        if seg.g && seg.limit & 0xfff != 0xfff {
            return Err(Error::InvalidState(format!(
                "{name}: limit {:#x} with G set must end in 0xfff (limit is in bytes)",
                seg.limit
            )));
        }
        if !seg.g && seg.limit > 0xf_ffff {
            return Err(Error::InvalidState(format!(
                "{name}: limit {:#x} above 1 MiB needs G set",
                seg.limit
            )));
        }
    }
    if seg.type_ > 0xf || seg.dpl > 3 {
        return Err(Error::InvalidState(format!(
            "{name}: type {:#x} / dpl {} out of range",
            seg.type_, seg.dpl
        )));
    }
    Ok(kvm_segment {
        base: seg.base,
        limit: seg.limit,
        selector: seg.selector,
        type_: seg.type_,
        present: seg.present.into(),
        dpl: seg.dpl,
        db: seg.db.into(),
        s: seg.s.into(),
        l: seg.l.into(),
        g: seg.g.into(),
        avl: seg.avl.into(),
        unusable: seg.unusable.into(),
        padding: 0,
    })
}

/// KVM's segment cache entry as a `CpuState` segment.
pub fn segment_from_kvm(seg: &kvm_segment) -> Segment {
    Segment {
        selector: seg.selector,
        base: seg.base,
        limit: seg.limit,
        type_: seg.type_ & 0xf,
        present: seg.present != 0,
        dpl: seg.dpl & 3,
        db: seg.db != 0,
        s: seg.s != 0,
        l: seg.l != 0,
        g: seg.g != 0,
        avl: seg.avl != 0,
        unusable: seg.unusable != 0,
    }
}

fn dtable_to_kvm(t: &DescriptorTable) -> kvm_dtable {
    kvm_dtable {
        base: t.base,
        limit: t.limit,
        padding: [0; 3],
    }
}

fn dtable_from_kvm(t: &kvm_dtable) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        limit: t.limit,
    }
}

/// The general-purpose registers, RIP and RFLAGS of `state`.
pub fn regs_to_kvm(state: &CpuState) -> kvm_regs {
    let g = &state.gpr;
    kvm_regs {
        rax: g[0],
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rsp: g[4],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
        rip: state.rip,
        rflags: state.rflags,
    }
}

/// Copy KVM's general-purpose registers, RIP and RFLAGS into `state`.
pub fn regs_from_kvm(regs: &kvm_regs, state: &mut CpuState) {
    state.gpr = [
        regs.rax, regs.rcx, regs.rdx, regs.rbx, regs.rsp, regs.rbp, regs.rsi, regs.rdi, regs.r8,
        regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
    ];
    state.rip = regs.rip;
    state.rflags = regs.rflags;
}

/// `base` (KVM's current system registers) with everything `state` holds replaced; the APIC
/// base and the pending-interrupt bitmap stay as they are.
pub fn sregs_to_kvm(state: &CpuState, base: &kvm_sregs) -> Result<kvm_sregs, Error> {
    Ok(kvm_sregs {
        cs: segment_to_kvm("cs", &state.cs)?,
        ds: segment_to_kvm("ds", &state.ds)?,
        es: segment_to_kvm("es", &state.es)?,
        fs: segment_to_kvm("fs", &state.fs)?,
        gs: segment_to_kvm("gs", &state.gs)?,
        ss: segment_to_kvm("ss", &state.ss)?,
        tr: segment_to_kvm("tr", &state.tr)?,
        ldt: segment_to_kvm("ldt", &state.ldt)?,
        gdt: dtable_to_kvm(&state.gdt),
        idt: dtable_to_kvm(&state.idt),
        cr0: state.cr0,
        cr2: state.cr2,
        cr3: state.cr3,
        cr4: state.cr4,
        cr8: state.cr8,
        efer: state.efer,
        apic_base: base.apic_base,
        interrupt_bitmap: base.interrupt_bitmap,
    })
}

/// Copy KVM's system registers into `state`.
pub fn sregs_from_kvm(sregs: &kvm_sregs, state: &mut CpuState) {
    state.cs = segment_from_kvm(&sregs.cs);
    state.ds = segment_from_kvm(&sregs.ds);
    state.es = segment_from_kvm(&sregs.es);
    state.fs = segment_from_kvm(&sregs.fs);
    state.gs = segment_from_kvm(&sregs.gs);
    state.ss = segment_from_kvm(&sregs.ss);
    state.tr = segment_from_kvm(&sregs.tr);
    state.ldt = segment_from_kvm(&sregs.ldt);
    state.gdt = dtable_from_kvm(&sregs.gdt);
    state.idt = dtable_from_kvm(&sregs.idt);
    state.cr0 = sregs.cr0;
    state.cr2 = sregs.cr2;
    state.cr3 = sregs.cr3;
    state.cr4 = sregs.cr4;
    state.cr8 = sregs.cr8;
    state.efer = sregs.efer;
}

/// The linear address of the instruction at RIP: CS base + RIP, truncated to 32 bits outside
/// 64-bit mode.
pub fn linear_rip(regs: &kvm_regs, sregs: &kvm_sregs) -> u64 {
    const EFER_LMA: u64 = 1 << 10;
    if sregs.efer & EFER_LMA != 0 && sregs.cs.l != 0 {
        regs.rip
    } else {
        sregs.cs.base.wrapping_add(regs.rip) & 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arch::regs::{cr0, cr4, efer, RFLAGS_RESERVED};

    fn long_mode_state() -> CpuState {
        let code = Segment {
            selector: 0x10,
            base: 0,
            limit: 0xffff_ffff,
            type_: 0xb,
            present: true,
            dpl: 0,
            db: false,
            s: true,
            l: true,
            g: true,
            avl: false,
            unusable: false,
        };
        let data = Segment {
            selector: 0x18,
            type_: 0x3,
            l: false,
            db: true,
            ..code
        };
        let mut gpr = [0u64; 16];
        for (i, r) in gpr.iter_mut().enumerate() {
            *r = 0x1111_0000_0000_0000 * (i as u64 % 15 + 1) + i as u64;
        }
        CpuState {
            gpr,
            rip: 0x10_0000,
            rflags: RFLAGS_RESERVED | 0x200,
            cs: code,
            ds: data,
            es: data,
            fs: Segment {
                base: 0xffff_8000_1234_0000,
                ..data
            },
            gs: data,
            ss: data,
            tr: Segment {
                selector: 0x20,
                base: 0x1000,
                limit: 0x67,
                type_: 0xb,
                s: false,
                db: false,
                g: false,
                ..data
            },
            ldt: Segment {
                type_: 2,
                s: false,
                present: false,
                unusable: true,
                limit: 0,
                g: false,
                db: false,
                ..data
            },
            gdt: DescriptorTable {
                base: 0x500,
                limit: 0x27,
            },
            idt: DescriptorTable {
                base: 0x520,
                limit: 0,
            },
            cr0: cr0::PE | cr0::PG | cr0::ET | cr0::NE,
            cr2: 0xdead_b000,
            cr3: 0x9000,
            cr4: cr4::PAE,
            cr8: 3,
            efer: efer::LME | efer::LMA,
            msrs: vec![],
        }
    }

    #[test]
    fn cpu_state_round_trips_through_kvm_structures() {
        let state = long_mode_state();
        let base = kvm_sregs {
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let sregs = sregs_to_kvm(&state, &base).unwrap();
        let regs = regs_to_kvm(&state);
        assert_eq!(sregs.apic_base, 0xfee0_0900, "APIC base kept");
        assert_eq!(regs.rbx, state.gpr[3], "gpr[3] is rbx");
        assert_eq!(regs.rsp, state.gpr[4], "gpr[4] is rsp");
        assert_eq!(regs.r15, state.gpr[15]);
        assert_eq!(sregs.cs.limit, 0xffff_ffff, "limit stays in bytes");
        assert_eq!((sregs.cs.g, sregs.cs.l, sregs.cs.type_), (1, 1, 0xb));

        let mut back = CpuState::default();
        regs_from_kvm(&regs, &mut back);
        sregs_from_kvm(&sregs, &mut back);
        assert_eq!(back, state);
    }

    #[test]
    fn reset_state_round_trips() {
        let state = CpuState::reset();
        let sregs = sregs_to_kvm(&state, &kvm_sregs::default()).unwrap();
        let mut back = CpuState::default();
        regs_from_kvm(&regs_to_kvm(&state), &mut back);
        sregs_from_kvm(&sregs, &mut back);
        assert_eq!(back, state);
        assert_eq!(sregs.cs.base, 0xffff_0000);
    }

    #[test]
    fn inconsistent_limits_are_rejected() {
        let mut s = long_mode_state();
        s.ds.limit = 0xffff_f000;
        let err = sregs_to_kvm(&s, &kvm_sregs::default()).unwrap_err();
        assert!(err.to_string().contains("ds"), "{err}");
        let mut s = long_mode_state();
        s.ss.g = false;
        assert!(sregs_to_kvm(&s, &kvm_sregs::default()).is_err());
        let mut s = long_mode_state();
        s.cs.dpl = 4;
        assert!(sregs_to_kvm(&s, &kvm_sregs::default()).is_err());
        let mut s = long_mode_state();
        s.cs.type_ = 0x1b; // type plus S: S belongs in `s`
        assert!(sregs_to_kvm(&s, &kvm_sregs::default()).is_err());
    }

    #[test]
    fn linear_rip_uses_cs_base_outside_long_mode() {
        let state = CpuState::reset();
        let sregs = sregs_to_kvm(&state, &kvm_sregs::default()).unwrap();
        assert_eq!(linear_rip(&regs_to_kvm(&state), &sregs), 0xffff_fff0);
        let lm = long_mode_state();
        let sregs = sregs_to_kvm(&lm, &kvm_sregs::default()).unwrap();
        assert_eq!(linear_rip(&regs_to_kvm(&lm), &sregs), 0x10_0000);
    }

    #[test]
    fn default_fpu_is_power_on_state() {
        let f = default_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
    }
}
