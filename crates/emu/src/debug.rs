//! Debug registers and debug exceptions (#DB): DR0–DR3 breakpoints (instruction, data
//! write, data read/write, I/O with CR4.DE), DR6/DR7 as the SDM defines them, single-step
//! (TF), general detect (DR7.GD), ICEBP, RF, DR4/DR5 aliasing, and MOV SS / POP SS
//! blocking.
//!
//! The block loop stays as it is while nothing here is armed; [`Cpu::debug_armed`] says
//! when `Cpu::run` must step one instruction at a time through [`Cpu::step_debug`]
//! instead (TF or RF set, a breakpoint enabled in DR7, or a trap deferred by MOV SS).
//!
//! Rules implemented (Intel SDM vol. 3 ch. 18; AMD APM vol. 2 ch. 13):
//! - Instruction breakpoints are faults, checked before an instruction when RFLAGS.RF is
//!   clear; the frame's RF is 0, so a handler sets it to step over.
//! - Data and I/O breakpoints and single-step are traps, delivered after the instruction
//!   with DR6.B0–B3 = the breakpoints that matched (the others cleared), DR6.BS added for
//!   single-step, and every other DR6 bit left as it was.
//! - A software interrupt (INT n, INT3, INTO) or ICEBP takes no single-step trap; ICEBP
//!   raises #DB itself (no gate DPL check) and leaves DR6 alone.
//! - MOV SS / POP SS: the single-step trap of that instruction is dropped and its data
//!   breakpoint traps are held until after the next instruction (merged into an ICEBP's
//!   #DB, or delivered after an INT n/INT3 has entered its handler).
//! - General detect: any MOV to or from a debug register while DR7.GD=1 is a #DB fault with
//!   DR6.BD; delivery clears DR7.GD. MOV SS blocking does not hold it.
//! - RF is cleared after every instruction that completes, except the IRET that loads it.
//! - SYSCALL and SYSRET single-step on TF as they leave it (SYSCALL masks it through
//!   SFMASK, SYSRET loads it from R11), so a SYSRET to code with TF set traps at once.

use crate::cpu::{Cpu, CS};
use crate::exceptions::{gp0, ud, Fault, DB, R};
use crate::flags::{RF, TF};
use crate::platform::Platform;

/// DR6 bits that read as 1 (AMD and Intel without RTM).
pub const DR6_FIXED_1: u64 = 0xffff_0ff0;
/// DR6 breakpoint-condition bits B0–B3.
pub const DR6_B: u64 = 0xf;
/// DR6.BD: the #DB is a general-detect fault.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: the #DB is a single-step trap.
pub const DR6_BS: u64 = 1 << 14;
/// DR7 bits that read as 1, and that must be zero.
pub const DR7_FIXED_1: u64 = 0x400;
const DR7_RESERVED: u64 = (1 << 11) | (1 << 12) | (1 << 14) | (1 << 15);
/// DR7.GD: general detect enable.
pub const DR7_GD: u64 = 1 << 13;
const CR4_DE: u64 = 1 << 3;

/// What DR7 arms, recomputed on every DR7 write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DebugState {
    /// Some DRn is enabled as an instruction breakpoint.
    pub exec: bool,
    /// Some DRn is enabled as a data or I/O breakpoint.
    pub data: bool,
    /// Data-breakpoint matches (B0–B3) seen during the current instruction.
    pub hits: u64,
    /// Traps held back by MOV SS / POP SS until after the next instruction.
    pub deferred: u64,
    /// The instruction just executed loaded SS (MOV SS blocking for the next one).
    pub movss: bool,
    /// The instruction just executed was INT n, INT3, INTO or ICEBP.
    pub soft_int: bool,
    /// The instruction just executed was ICEBP (its #DB already delivered).
    pub icebp: bool,
    /// The instruction just executed was an IRET (it loads RF itself).
    pub iret: bool,
    /// The instruction just executed was SYSCALL or SYSRET: single-step traps when TF is
    /// set at its end (it loads RFLAGS), whatever TF was before.
    pub tf_at_end: bool,
}

/// Breakpoint `n`'s kind in DR7: 0 execute, 1 write, 2 I/O, 3 read/write.
fn rw(dr7: u64, n: usize) -> u64 {
    (dr7 >> (16 + 4 * n)) & 3
}

/// Breakpoint `n`'s length in bytes.
fn len(dr7: u64, n: usize) -> u64 {
    match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

fn enabled(dr7: u64, n: usize) -> bool {
    dr7 & (3 << (2 * n)) != 0
}

impl Cpu {
    /// Whether the next instruction needs the debug path.
    #[inline(always)]
    pub(crate) fn debug_armed(&self) -> bool {
        self.flags.bits & (TF | RF) != 0 || self.dbg.exec || self.dbg.data || self.dbg.deferred != 0
    }

    fn recompute_debug(&mut self) {
        let dr7 = self.dr[7];
        self.dbg.exec = (0..4).any(|n| enabled(dr7, n) && rw(dr7, n) == 0);
        self.dbg.data = (0..4).any(|n| enabled(dr7, n) && rw(dr7, n) != 0);
    }

    /// Instruction breakpoints matching linear address `lin`.
    fn exec_hits(&self, lin: u64) -> u64 {
        let dr7 = self.dr[7];
        (0..4)
            .filter(|&n| enabled(dr7, n) && rw(dr7, n) == 0 && self.dr[n] == lin)
            .fold(0, |m, n| m | 1 << n)
    }

    /// Records data breakpoints hit by an access of `size` bytes at `lin`.
    #[cold]
    pub(crate) fn note_data_access(&mut self, lin: u64, size: usize, write: bool) {
        let dr7 = self.dr[7];
        for n in 0..4 {
            let kind = rw(dr7, n);
            if !enabled(dr7, n) || !(kind == 3 || (kind == 1 && write)) {
                continue;
            }
            let l = len(dr7, n);
            let start = self.dr[n] & !(l - 1);
            if lin < start.wrapping_add(l) && start < lin.wrapping_add(size as u64) {
                self.dbg.hits |= 1 << n;
            }
        }
    }

    /// Records I/O breakpoints (CR4.DE=1) hit by an access of `size` bytes at `port`.
    #[cold]
    pub(crate) fn note_io_access(&mut self, port: u16, size: usize) {
        if self.cr4 & CR4_DE == 0 {
            return;
        }
        let dr7 = self.dr[7];
        let port = u64::from(port);
        for n in 0..4 {
            if !enabled(dr7, n) || rw(dr7, n) != 2 {
                continue;
            }
            let l = len(dr7, n);
            let start = (self.dr[n] & 0xffff) & !(l - 1);
            if port < start + l && start < port + size as u64 {
                self.dbg.hits |= 1 << n;
            }
        }
    }

    /// MOV from DRn. General detect and the DR4/DR5 aliases apply.
    pub(crate) fn read_dr(&mut self, n: usize) -> R<u64> {
        self.general_detect()?;
        Ok(match self.dr_index(n)? {
            6 => self.dr[6] | DR6_FIXED_1,
            7 => self.dr[7] | DR7_FIXED_1,
            i => self.dr[i],
        })
    }

    /// MOV to DRn.
    pub(crate) fn write_dr(&mut self, n: usize, v: u64) -> R<()> {
        self.general_detect()?;
        match self.dr_index(n)? {
            6 => {
                if v >> 32 != 0 {
                    return Err(gp0());
                }
                self.dr[6] = (v | DR6_FIXED_1) & !(1 << 12);
            }
            7 => {
                if v >> 32 != 0 {
                    return Err(gp0());
                }
                self.dr[7] = (v | DR7_FIXED_1) & !DR7_RESERVED;
                self.recompute_debug();
            }
            i => {
                self.dr[i] = if self.long64() { v } else { v & 0xffff_ffff };
            }
        }
        Ok(())
    }

    /// DR4/DR5 alias DR6/DR7 unless CR4.DE makes them reserved (#UD).
    fn dr_index(&self, n: usize) -> R<usize> {
        match n {
            0..=3 | 6 | 7 => Ok(n),
            4 | 5 if self.cr4 & CR4_DE == 0 => Ok(n + 2),
            _ => Err(ud()),
        }
    }

    fn general_detect(&mut self) -> R<()> {
        if self.dr[7] & DR7_GD != 0 {
            self.dr[6] |= DR6_BD;
            self.dr[7] &= !DR7_GD;
            self.recompute_debug();
            return Err(Fault::new(DB));
        }
        Ok(())
    }

    /// Reloads the derived debug state after a state load.
    pub(crate) fn reset_debug_state(&mut self) {
        self.dbg = DebugState::default();
        self.recompute_debug();
    }

    /// Runs one instruction with every debug rule applied. Returns after the instruction
    /// and any #DB it caused have been delivered.
    pub(crate) fn step_debug(&mut self, io: &mut dyn Platform) {
        let rf = self.flags.bits & RF != 0;
        if self.dbg.exec && !rf {
            let lin = self.seg[CS].base.wrapping_add(self.rip);
            let hits = self.exec_hits(lin);
            if hits != 0 {
                self.dr[6] = (self.dr[6] & !DR6_B) | hits | DR6_FIXED_1;
                let rip = self.rip;
                if let Err(f) = self.deliver_debug_fault(io, rip) {
                    self.handle_fault(io, f);
                }
                return;
            }
        }
        let tf = self.flags.bits & TF != 0;
        self.dbg.hits = 0;
        self.dbg.movss = false;
        self.dbg.soft_int = false;
        self.dbg.icebp = false;
        self.dbg.iret = false;
        self.dbg.tf_at_end = false;
        let completed = self.run_one(io);
        if !completed {
            self.dbg.hits = 0;
            return;
        }
        if rf && !self.dbg.iret {
            self.flags.bits &= !RF;
        }
        let mut traps = std::mem::take(&mut self.dbg.hits);
        let stepping = if std::mem::take(&mut self.dbg.tf_at_end) {
            self.flags.bits & TF != 0
        } else {
            tf
        };
        if stepping && !self.dbg.soft_int {
            traps |= DR6_BS;
        }
        if self.dbg.movss {
            // MOV SS blocking: drop the single-step trap, hold the data breakpoints.
            self.dbg.deferred |= traps & DR6_B;
            return;
        }
        traps |= std::mem::take(&mut self.dbg.deferred);
        if traps == 0 {
            return;
        }
        self.dr[6] = (self.dr[6] & !DR6_B) | traps | DR6_FIXED_1;
        if self.dbg.icebp {
            // ICEBP's own #DB reports the held breakpoints.
            return;
        }
        let rip = self.rip;
        if let Err(f) = self.deliver_exception(io, Fault::new(DB), rip) {
            self.handle_fault(io, f);
        }
    }

    /// After a block on the fast path: a SYSCALL/SYSRET that left TF set traps now.
    pub(crate) fn sysret_single_step(&mut self, io: &mut dyn Platform) {
        if std::mem::take(&mut self.dbg.tf_at_end) && self.flags.bits & TF != 0 {
            self.dr[6] = (self.dr[6] & !DR6_B) | DR6_BS | DR6_FIXED_1;
            let rip = self.rip;
            if let Err(f) = self.deliver_exception(io, Fault::new(DB), rip) {
                self.handle_fault(io, f);
            }
        }
    }

    /// An instruction-breakpoint #DB: a fault whose frame keeps RF as it is (0).
    fn deliver_debug_fault(&mut self, io: &mut dyn Platform, rip: u64) -> R<()> {
        self.block_end = true;
        self.deliver_exception(io, Fault::new(DB), rip)
    }
}
