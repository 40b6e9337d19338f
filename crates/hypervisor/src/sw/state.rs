//! `arch::regs::CpuState` ⇄ the emulator's `emu::CpuRegs`: the same architectural fields,
//! one engine-neutral and one engine-specific (which adds x87/SSE, debug registers, halt).

use arch::regs::{CpuState, DescriptorTable, Segment};
use emu::{CpuRegs, SegmentState, TableState};

fn seg_to_emu(s: &Segment) -> SegmentState {
    SegmentState {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        type_: s.type_,
        s: s.s,
        dpl: s.dpl,
        present: s.present,
        avl: s.avl,
        l: s.l,
        db: s.db,
        g: s.g,
        unusable: s.unusable,
    }
}

fn seg_from_emu(s: &SegmentState) -> Segment {
    Segment {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        type_: s.type_,
        present: s.present,
        dpl: s.dpl,
        db: s.db,
        s: s.s,
        l: s.l,
        g: s.g,
        avl: s.avl,
        unusable: s.unusable,
    }
}

fn table_to_emu(t: &DescriptorTable) -> TableState {
    TableState {
        base: t.base,
        limit: t.limit,
    }
}

fn table_from_emu(t: &TableState) -> DescriptorTable {
    DescriptorTable {
        base: t.base,
        limit: t.limit,
    }
}

/// Applies `s` on top of `base` (which supplies the engine-only parts: FPU, DRs).
pub fn to_emu(s: &CpuState, base: CpuRegs) -> CpuRegs {
    let mut msrs = base.msrs;
    for &(i, v) in &s.msrs {
        match msrs.iter_mut().find(|(j, _)| *j == i) {
            Some(m) => m.1 = v,
            None => msrs.push((i, v)),
        }
    }
    CpuRegs {
        gpr: s.gpr,
        rip: s.rip,
        rflags: s.rflags,
        es: seg_to_emu(&s.es),
        cs: seg_to_emu(&s.cs),
        ss: seg_to_emu(&s.ss),
        ds: seg_to_emu(&s.ds),
        fs: seg_to_emu(&s.fs),
        gs: seg_to_emu(&s.gs),
        ldt: seg_to_emu(&s.ldt),
        tr: seg_to_emu(&s.tr),
        gdt: table_to_emu(&s.gdt),
        idt: table_to_emu(&s.idt),
        cr0: s.cr0,
        cr2: s.cr2,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
        msrs,
        halted: false,
        ..base
    }
}

pub fn from_emu(r: &CpuRegs) -> CpuState {
    CpuState {
        gpr: r.gpr,
        rip: r.rip,
        rflags: r.rflags,
        cs: seg_from_emu(&r.cs),
        ds: seg_from_emu(&r.ds),
        es: seg_from_emu(&r.es),
        fs: seg_from_emu(&r.fs),
        gs: seg_from_emu(&r.gs),
        ss: seg_from_emu(&r.ss),
        tr: seg_from_emu(&r.tr),
        ldt: seg_from_emu(&r.ldt),
        gdt: table_from_emu(&r.gdt),
        idt: table_from_emu(&r.idt),
        cr0: r.cr0,
        cr2: r.cr2,
        cr3: r.cr3,
        cr4: r.cr4,
        // CR8 is the local APIC's TPR: the vCPU fills it in from the irqchip.
        cr8: 0,
        efer: r.efer,
        msrs: r.msrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field() {
        let mut s = CpuState::reset();
        s.gpr = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        s.rip = 0x1000;
        s.cr0 = 0x8000_0011;
        s.cr3 = 0x9000;
        s.efer = 0x500;
        s.cs.l = true;
        s.cs.selector = 0x10;
        s.gdt = DescriptorTable {
            base: 0x500,
            limit: 0x27,
        };
        s.msrs = vec![(0xc000_0080, 0x500), (0x277, 0x0007_0406_0007_0406)];
        let back = from_emu(&to_emu(&s, CpuRegs::reset()));
        let mut want = s.clone();
        // The engine may keep more MSRs than were given; the given ones must be there.
        for m in &want.msrs {
            assert!(back.msrs.contains(m), "{m:x?} missing");
        }
        want.msrs = back.msrs.clone();
        assert_eq!(back, want);
    }
}
