//! The general-purpose instructions of x86-64-v3: BMI1 (ANDN, BEXTR, BLSI, BLSMSK, BLSR),
//! BMI2 (BZHI, MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX) and MOVBE. (LZCNT and TZCNT are
//! with the other bit scans in `bits.rs`.)
//!
//! BMI1/BMI2 are VEX-encoded: iced decodes the VEX.vvvv register as an ordinary operand,
//! so operand `i` is read the same way as for legacy instructions (and VEX is #UD in real
//! and virtual-8086 mode, where iced would decode it too). Where a flag is
//! architecturally undefined (AF and PF everywhere, SF for BEXTR), it is cleared.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::{Cpu, CR0_PE};
use crate::exceptions::{ud, R};
use crate::flags::{mask, sign, CF, SF, VM, ZF};
use crate::platform::Platform;

/// Byte order reversal of the low `size` bytes of `v`.
fn swap_bytes(v: u64, size: usize) -> u64 {
    match size {
        2 => (v as u16).swap_bytes() as u64,
        4 => (v as u32).swap_bytes() as u64,
        _ => v.swap_bytes(),
    }
}

/// PDEP: the low bits of `src` deposited, in order, at the set bits of `m`.
fn deposit(src: u64, m: u64) -> u64 {
    let mut out = 0;
    let mut rest = m;
    let mut k = 0;
    while rest != 0 {
        let bit = rest & rest.wrapping_neg();
        if src >> k & 1 != 0 {
            out |= bit;
        }
        rest &= rest - 1;
        k += 1;
    }
    out
}

/// PEXT: the bits of `src` at the set bits of `m`, packed into the low bits.
fn extract(src: u64, m: u64) -> u64 {
    let mut out = 0;
    let mut rest = m;
    let mut k = 0;
    while rest != 0 {
        let bit = rest & rest.wrapping_neg();
        if src & bit != 0 {
            out |= 1 << k;
        }
        rest &= rest - 1;
        k += 1;
    }
    out
}

/// ZF and SF of a `size`-byte result.
fn zs(res: u64, size: usize) -> u64 {
    let mut f = 0;
    if res & mask(size) == 0 {
        f |= ZF;
    }
    if res & sign(size) != 0 {
        f |= SF;
    }
    f
}

impl Cpu {
    pub(super) fn movbe(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        if ins.op0_kind() == OpKind::Memory {
            let r = ins.op1_register();
            let size = r.size();
            let v = swap_bytes(self.reg_read(r), size);
            return self.wr(io, ins, 0, size, v);
        }
        let d = ins.op0_register();
        let size = d.size();
        let v = swap_bytes(self.rd(io, ins, 1, size)?, size);
        // r16 merges, r32 zero-extends.
        self.reg_write(d, v);
        Ok(())
    }

    pub(super) fn bmi(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        // VEX prefixes are #UD in real and virtual-8086 mode.
        if self.cr0 & CR0_PE == 0 || self.flags.bits & VM != 0 {
            return Err(ud());
        }
        let m = ins.mnemonic();
        let d = ins.op0_register();
        let size = d.size();
        let bits = size as u32 * 8;
        let mk = mask(size);
        // (result, flags to set, or None if flags are unaffected)
        let (res, flags) = match m {
            M::Andn => {
                let a = self.reg_read(ins.op1_register());
                let b = self.rd(io, ins, 2, size)?;
                let r = !a & b & mk;
                (r, Some(zs(r, size)))
            }
            M::Bextr => {
                let src = self.rd(io, ins, 1, size)? & mk;
                let ctl = self.reg_read(ins.op2_register());
                let (start, len) = ((ctl & 0xff) as u32, ((ctl >> 8) & 0xff) as u32);
                let shifted = if start >= bits { 0 } else { src >> start };
                let r = if len >= 64 {
                    shifted
                } else {
                    shifted & ((1u64 << len) - 1)
                };
                (r, Some(if r == 0 { ZF } else { 0 }))
            }
            M::Blsi | M::Blsmsk | M::Blsr => {
                let src = self.rd(io, ins, 1, size)? & mk;
                let r = match m {
                    M::Blsi => src.wrapping_neg() & src,
                    M::Blsmsk => src.wrapping_sub(1) ^ src,
                    _ => src.wrapping_sub(1) & src,
                } & mk;
                let cf = match m {
                    M::Blsi => src != 0,
                    _ => src == 0,
                };
                let mut f = zs(r, size) | if cf { CF } else { 0 };
                if m == M::Blsmsk {
                    f &= !ZF; // never zero; the SDM says ZF is cleared
                }
                (r, Some(f))
            }
            M::Bzhi => {
                let src = self.rd(io, ins, 1, size)? & mk;
                let n = (self.reg_read(ins.op2_register()) & 0xff) as u32;
                let (r, cf) = if n < bits {
                    (src & ((1u64 << n) - 1), 0)
                } else {
                    (src, CF)
                };
                (r, Some(zs(r, size) | cf))
            }
            M::Mulx => {
                let src = self.rd(io, ins, 2, size)? & mk;
                let rdx = self.gpr[2] & mk;
                let p = rdx as u128 * src as u128;
                let (lo, hi) = if size == 8 {
                    (p as u64, (p >> 64) as u64)
                } else {
                    (p as u64 & mk, (p >> 32) as u64 & mk)
                };
                // Low half to the second operand first: if both name the same register,
                // it ends up with the high half.
                self.reg_write(ins.op1_register(), lo);
                (hi, None)
            }
            M::Pdep | M::Pext => {
                let src = self.reg_read(ins.op1_register()) & mk;
                let sel = self.rd(io, ins, 2, size)? & mk;
                let r = if m == M::Pdep {
                    deposit(src, sel)
                } else {
                    extract(src, sel)
                };
                (r, None)
            }
            M::Rorx => {
                let src = self.rd(io, ins, 1, size)? & mk;
                let c = ins.immediate8() as u32 & (bits - 1);
                let r = if c == 0 {
                    src
                } else {
                    ((src >> c) | (src << (bits - c))) & mk
                };
                (r, None)
            }
            _ => {
                // SARX, SHLX, SHRX
                let src = self.rd(io, ins, 1, size)? & mk;
                let c = self.reg_read(ins.op2_register()) as u32 & (bits - 1);
                let r = match m {
                    M::Shlx => src << c,
                    M::Shrx => src >> c,
                    _ => (((src << (64 - bits)) as i64) >> (64 - bits + c)) as u64,
                } & mk;
                (r, None)
            }
        };
        self.reg_write(d, res);
        if let Some(f) = flags {
            self.flags.set_arith(f);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{deposit, extract};

    #[test]
    fn pdep_and_pext_are_inverse_on_the_mask() {
        assert_eq!(deposit(0b101, 0b1011_0000), 0b1001_0000);
        assert_eq!(deposit(0b111, 0b1011_0000), 0b1011_0000);
        assert_eq!(extract(0b1001_0000, 0b1011_0000), 0b101);
        assert_eq!(extract(u64::MAX, 1 << 63), 1);
        assert_eq!(deposit(1, 1 << 63), 1 << 63);
        for (v, m) in [
            (0x1234_5678u64, 0xff00_ff00u64),
            (u64::MAX, 0x8000_0000_0000_0001),
        ] {
            assert_eq!(deposit(extract(v, m), m), v & m);
        }
    }
}
