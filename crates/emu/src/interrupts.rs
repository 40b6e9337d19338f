//! Event delivery through the IVT/IDT (real mode, 32-bit and 64-bit gates, with stack
//! switches through the TSS and IST) and the return from it (IRET), and NMI blocking.
//!
//! NMIs ([`NmiState`]) are taken at block boundaries outside an interrupt shadow, whatever
//! RFLAGS.IF, before maskable interrupts:
//!
//! ```text
//!            NMI delivered (vector 2)
//!   Ready ──────────────────────────▶ Blocked ── any IRET ──▶ Ready
//!                                       │ an NMI arrives: latched (further ones merge
//!                                       ▼ into it); delivered after the IRET
//! ```
//!
//! Delivery computes everything, writes the new stack frame, and only then commits the new
//! CS/SS/RSP/RIP/RFLAGS, so a fault during delivery leaves the old state intact for the
//! double-fault escalation in `Cpu::handle_fault`.

use crate::cpu::{Cpu, CS, DS, ES, FS, GS, SS};
use crate::exceptions::{gp, gp0, np, ts, Fault, R};
use crate::flags::*;
use crate::platform::Platform;
use crate::segments::{parse_descriptor, real_mode_segment};
use crate::state::SegmentState;

/// A CPU's NMI state (the diagram in the module documentation).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NmiState {
    /// An NMI handler runs: no NMI until the next IRET.
    blocked: bool,
    /// One NMI taken from the platform and not delivered yet.
    latched: bool,
}

/// The NMI's vector.
const NMI_VECTOR: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Hardware interrupt (EXT bit set in error codes).
    External,
    /// Exception raised by an instruction: a trap, or the instruction-breakpoint #DB.
    Exception,
    /// Fault-class exception: the pushed RFLAGS has RF set.
    Fault,
    /// INT n / INT3 / INTO: gate DPL is checked.
    Software,
}

impl Cpu {
    /// At a block boundary outside an interrupt shadow: collect NMIs from the platform
    /// and deliver one unless blocked. Returns whether one was delivered.
    pub(crate) fn take_nmi(&mut self, io: &mut dyn Platform) -> bool {
        if io.nmi_pending() {
            if !self.nmi.latched {
                self.nmi.latched = io.take_nmi();
            } else if self.nmi.blocked {
                // Only one NMI waits behind a running handler; the others merge into it.
                while io.take_nmi() {}
            }
        }
        if !self.nmi.latched || self.nmi.blocked {
            return false;
        }
        self.nmi = NmiState {
            blocked: true,
            latched: false,
        };
        self.halted = false;
        if let Err(f) = self.deliver_external(io, NMI_VECTOR) {
            self.handle_fault(io, f);
        }
        true
    }

    pub(crate) fn deliver_external(&mut self, io: &mut dyn Platform, vector: u8) -> R<()> {
        let rip = self.rip;
        self.deliver(io, vector, None, Source::External, rip)
    }

    pub(crate) fn deliver_exception(&mut self, io: &mut dyn Platform, f: Fault, rip: u64) -> R<()> {
        // Real mode pushes no error codes.
        let err = if self.real_mode() { None } else { f.error };
        // Fault-class exceptions push RF=1 so the handler's IRET does not hit an
        // instruction breakpoint on the faulting instruction again (#DB is a trap, or an
        // instruction-breakpoint fault whose handler sets RF itself; #DF and #MC abort).
        let src = if matches!(f.vector, 0 | 5 | 6 | 7 | 10..=14 | 16 | 17 | 19..=21) {
            Source::Fault
        } else {
            Source::Exception
        };
        self.deliver(io, f.vector, err, src, rip)
    }

    /// INT n, INT3, INTO: returns to `next_rip`.
    pub(crate) fn deliver_software(
        &mut self,
        io: &mut dyn Platform,
        vector: u8,
        next_rip: u64,
    ) -> R<()> {
        self.deliver(io, vector, None, Source::Software, next_rip)?;
        self.next_rip = self.rip;
        Ok(())
    }

    fn deliver(
        &mut self,
        io: &mut dyn Platform,
        vector: u8,
        error: Option<u32>,
        src: Source,
        ret_rip: u64,
    ) -> R<()> {
        self.halted = false;
        self.block_end = true;
        if self.real_mode() {
            return self.deliver_real(io, vector, ret_rip);
        }
        let ext = (src == Source::External) as u32;
        let gate_err = (vector as u32) * 8 + 2 + ext;
        let long = self.efer & crate::cpu::EFER_LMA != 0;
        let gsize = if long { 16 } else { 8 };
        if (vector as u64) * gsize + gsize - 1 > self.idtr.limit as u64 {
            return Err(gp(gate_err));
        }
        let ga = self.idtr.base.wrapping_add(vector as u64 * gsize);
        let lo = self.read_sys(io, ga, 8)?;
        let hi = if long {
            self.read_sys(io, ga.wrapping_add(8), 8)?
        } else {
            0
        };
        let gtype = ((lo >> 40) & 0x1f) as u8;
        let gdpl = ((lo >> 45) & 3) as u8;
        let present = (lo >> 47) & 1 != 0;
        let (is_trap, gate32) = match (long, gtype) {
            (true, 0x0e) => (false, true),
            (true, 0x0f) => (true, true),
            (false, 0x0e) => (false, true),
            (false, 0x0f) => (true, true),
            (false, 0x06) => (false, false),
            (false, 0x07) => (true, false),
            _ => return Err(gp(gate_err)),
        };
        if src == Source::Software && gdpl < self.cpl {
            return Err(gp(gate_err));
        }
        if !present {
            return Err(np(gate_err));
        }
        let sel = ((lo >> 16) & 0xffff) as u16;
        let mut target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000);
        if long {
            target |= hi << 32;
        } else if !gate32 {
            target &= 0xffff;
        }
        if sel & 0xfffc == 0 {
            return Err(gp(ext));
        }
        let cd = self.read_descriptor(io, sel)?;
        let cs = parse_descriptor(sel, cd);
        let serr = (sel & 0xfffc) as u32 + ext;
        if !cs.s || cs.type_ & 8 == 0 || cs.dpl > self.cpl {
            return Err(gp(serr));
        }
        if !cs.present {
            return Err(np(serr));
        }
        if long && (!cs.l || cs.db) {
            return Err(gp(serr));
        }
        let conforming = cs.type_ & 4 != 0;
        let new_cpl = if conforming { self.cpl } else { cs.dpl };
        let old_flags = self.flags.get() | if src == Source::Fault { RF } else { 0 };
        let old_cs = self.seg[CS].selector as u64;
        let old_ss = self.seg[SS].selector as u64;
        let old_rsp = self.gpr[4];

        if long {
            let ist = (lo >> 32) & 7;
            let mut rsp = if ist != 0 {
                self.read_sys(io, self.tr.base.wrapping_add(0x24 + (ist - 1) * 8), 8)?
            } else if new_cpl < self.cpl {
                self.read_sys(io, self.tr.base.wrapping_add(4 + new_cpl as u64 * 8), 8)?
            } else {
                old_rsp
            };
            rsp &= !0xf;
            let user = new_cpl == 3;
            let mut frame = vec![old_ss, old_rsp, old_flags, old_cs, ret_rip];
            if let Some(e) = error {
                frame.push(e as u64);
            }
            for v in frame {
                rsp = rsp.wrapping_sub(8);
                self.write_lin(io, rsp, 8, v, user)?;
            }
            if new_cpl < self.cpl {
                self.seg[SS] = SegmentState {
                    selector: new_cpl as u16,
                    unusable: true,
                    dpl: new_cpl,
                    ..SegmentState::default()
                };
            }
            self.gpr[4] = rsp;
            self.set_cs_desc(sel, cd, new_cpl);
        } else {
            // 32-bit (or 16-bit) gate in protected mode.
            let psize: u64 = if gate32 { 4 } else { 2 };
            let (mut sp, ss_seg, switched) = if new_cpl < self.cpl {
                if self.tr.type_ & 8 == 0 {
                    return Err(ts((self.tr.selector & 0xfffc) as u32));
                }
                let esp =
                    self.read_sys(io, self.tr.base.wrapping_add(4 + new_cpl as u64 * 8), 4)?;
                let ssel =
                    self.read_sys(io, self.tr.base.wrapping_add(8 + new_cpl as u64 * 8), 2)? as u16;
                if ssel & 0xfffc == 0 {
                    return Err(ts(ext));
                }
                let sd = self.read_descriptor(io, ssel)?;
                let s = parse_descriptor(ssel, sd);
                if !s.present {
                    return Err(Fault::with_code(
                        crate::exceptions::SS,
                        (ssel & 0xfffc) as u32,
                    ));
                }
                (esp, s, true)
            } else {
                (old_rsp, self.seg[SS], false)
            };
            let spmask: u64 = if ss_seg.db { 0xffff_ffff } else { 0xffff };
            let mut frame = Vec::with_capacity(6);
            if switched {
                frame.push(old_ss);
                frame.push(old_rsp);
            }
            frame.extend_from_slice(&[old_flags, old_cs, ret_rip]);
            if let Some(e) = error {
                frame.push(e as u64);
            }
            let user = new_cpl == 3;
            for v in frame {
                sp = sp.wrapping_sub(psize) & spmask;
                let lin = ss_seg.base.wrapping_add(sp) & 0xffff_ffff;
                self.write_lin(io, lin, psize as usize, v, user)?;
            }
            if switched {
                self.seg[SS] = ss_seg;
            }
            self.gpr[4] = if spmask == 0xffff {
                (self.gpr[4] & !0xffff) | sp
            } else {
                sp
            };
            self.set_cs_desc(sel, cd, new_cpl);
        }
        let mut f = old_flags & !(TF | NT | RF | VM);
        if !is_trap {
            f &= !IF;
        }
        self.flags.set(f);
        self.rip = target;
        Ok(())
    }

    fn deliver_real(&mut self, io: &mut dyn Platform, vector: u8, ret_rip: u64) -> R<()> {
        let off = vector as u64 * 4;
        if off + 3 > self.idtr.limit as u64 {
            return Err(gp0());
        }
        let v = self.read_lin(io, self.idtr.base.wrapping_add(off), 4, false)?;
        let fl = self.flags.get();
        let mut sp = self.gpr[4] & 0xffff;
        for x in [fl, self.seg[CS].selector as u64, ret_rip] {
            sp = sp.wrapping_sub(2) & 0xffff;
            let lin = self.seg[SS].base.wrapping_add(sp) & 0xffff_ffff;
            self.write_lin(io, lin, 2, x, false)?;
        }
        self.gpr[4] = (self.gpr[4] & !0xffff) | sp;
        self.flags.set(fl & !(IF | TF | AC | RF));
        self.seg[CS] = real_mode_segment(&self.seg[CS], (v >> 16) as u16);
        self.update_mode();
        self.rip = v & 0xffff;
        Ok(())
    }

    /// Applies a popped RFLAGS image with the privilege rules of POPF/IRET.
    pub(crate) fn write_flags_checked(&mut self, v: u64, size: usize, iret: bool) {
        let old = self.flags.get();
        let mut ch = CF | PF | AF | ZF | SF | TF | DF | OF | NT;
        if size > 2 {
            ch |= AC | ID;
        }
        let iopl = ((old & IOPL) >> 12) as u8;
        if self.cpl == 0 {
            ch |= IOPL | IF;
        } else if self.cpl <= iopl {
            ch |= IF;
        }
        if iret {
            ch |= RF;
            self.dbg.iret = true;
        }
        if size == 2 {
            ch &= 0xffff;
        }
        let new = (old & !ch) | (v & ch);
        self.flags.set(new);
        if (old ^ new) & TF != 0 {
            // Single-stepping starts or stops with the next instruction.
            self.block_end = true;
        }
    }

    /// IRET/IRETD/IRETQ with operand size `size`.
    pub(crate) fn iret(&mut self, io: &mut dyn Platform, size: usize) -> R<()> {
        self.block_end = true;
        if self.real_mode() {
            let ip = self.pop(io, size)?;
            let cs = self.pop(io, size)? as u16;
            let fl = self.pop(io, size)?;
            self.seg[CS] = real_mode_segment(&self.seg[CS], cs);
            self.update_mode();
            self.write_flags_checked(fl, size, true);
            self.nmi.blocked = false;
            self.next_rip = ip & if size == 2 { 0xffff } else { 0xffff_ffff };
            return Ok(());
        }
        if self.flags.bits & NT != 0 && self.efer & crate::cpu::EFER_LMA == 0 {
            return Err(self.unimplemented_msg("IRET task return"));
        }
        let long = self.efer & crate::cpu::EFER_LMA != 0;
        // Read the frame without committing RSP yet.
        let sp0 = self.gpr[4];
        let ssz = self.stack_addr_size();
        let rd = |cpu: &mut Cpu, io: &mut dyn Platform, i: u64| -> R<u64> {
            let off = sp0.wrapping_add(i * size as u64) & crate::flags::mask(ssz);
            let lin = cpu.seg_lin(SS, off);
            cpu.read_lin(io, lin, size, cpu.user())
        };
        let ip = rd(self, io, 0)?;
        let cs_sel = rd(self, io, 1)? as u16;
        let fl = rd(self, io, 2)?;
        let rpl = (cs_sel & 3) as u8;
        let outer = rpl > self.cpl;
        let pop_ss = long && self.long64() || outer;
        let (new_sp, ss_sel) = if pop_ss {
            (rd(self, io, 3)?, Some(rd(self, io, 4)? as u16))
        } else {
            (sp0.wrapping_add(3 * size as u64), None)
        };
        if rpl < self.cpl {
            return Err(gp((cs_sel & 0xfffc) as u32));
        }
        if cs_sel & 0xfffc == 0 {
            return Err(gp0());
        }
        let cd = self.read_descriptor(io, cs_sel)?;
        let cs = parse_descriptor(cs_sel, cd);
        let cerr = (cs_sel & 0xfffc) as u32;
        if !cs.s || cs.type_ & 8 == 0 {
            return Err(gp(cerr));
        }
        let conforming = cs.type_ & 4 != 0;
        if conforming && cs.dpl > rpl || !conforming && cs.dpl != rpl {
            return Err(gp(cerr));
        }
        if !cs.present {
            return Err(np(cerr));
        }
        // SS for the target.
        let mut new_ss = None;
        if let Some(ssel) = ss_sel {
            if ssel & 0xfffc == 0 {
                if !(long && cs.l && rpl != 3) {
                    return Err(gp0());
                }
                new_ss = Some(SegmentState {
                    selector: ssel,
                    unusable: true,
                    dpl: rpl,
                    ..SegmentState::default()
                });
            } else {
                let sd = self.read_descriptor(io, ssel)?;
                let s = parse_descriptor(ssel, sd);
                let serr = (ssel & 0xfffc) as u32;
                if (ssel & 3) as u8 != rpl
                    || s.dpl != rpl
                    || !s.s
                    || s.type_ & 8 != 0
                    || s.type_ & 2 == 0
                {
                    return Err(gp(serr));
                }
                if !s.present {
                    return Err(Fault::with_code(crate::exceptions::SS, serr));
                }
                new_ss = Some(s);
            }
        }
        // Commit.
        self.nmi.blocked = false;
        let old_cpl = self.cpl;
        self.write_flags_checked(fl, size, true);
        self.set_cs_desc(cs_sel, cd, rpl);
        if let Some(s) = new_ss {
            self.seg[SS] = s;
        }
        if pop_ss {
            self.gpr[4] = if size == 2 {
                (self.gpr[4] & !0xffff) | (new_sp & 0xffff)
            } else if size == 4 && !self.long64() {
                new_sp & 0xffff_ffff
            } else {
                new_sp
            };
        } else {
            self.set_sp(new_sp);
        }
        if rpl > old_cpl {
            for idx in [ES, DS, FS, GS] {
                let s = self.seg[idx];
                let conforming_code = s.type_ & 0xc == 0xc;
                if !s.unusable && s.dpl < rpl && !conforming_code {
                    let keep = if idx >= FS { s.base } else { 0 };
                    self.seg[idx] = SegmentState {
                        selector: 0,
                        base: keep,
                        unusable: true,
                        ..SegmentState::default()
                    };
                }
            }
        }
        self.next_rip = match self.bitness {
            64 => ip,
            32 => ip & 0xffff_ffff,
            _ => ip & 0xffff,
        };
        let _ = old_cpl;
        Ok(())
    }

    pub(crate) fn unimplemented_msg(&mut self, what: &str) -> Fault {
        let lin = self.seg[CS].base.wrapping_add(self.rip);
        if self.logged_ud.len() < 4096 && self.logged_ud.insert(lin ^ 0x8000_0000_0000_0000) {
            tracing::warn!(
                "emu: unsupported {what} at rip {:#x}; raising #UD",
                self.rip
            );
        }
        crate::exceptions::ud()
    }
}
