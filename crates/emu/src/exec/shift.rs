//! Shifts and rotates (shl/sal/shr/sar/rol/ror/rcl/rcr, shld/shrd) with exact flags.
//! Flags are computed eagerly: these are rare enough that laziness does not pay.

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{mask, sign, szp, AF, CF, OF};
use crate::platform::Platform;

/// Result and new arithmetic flags (given the old ones) of a shift/rotate by `count != 0`.
#[inline(always)]
pub fn shift_op(m: M, size: usize, a: u64, count: u32, old: u64) -> (u64, u64) {
    let bits = (size * 8) as u32;
    let mk = mask(size);
    let sb = sign(size);
    let a = a & mk;
    let c = count as u64;
    match m {
        M::Shl | M::Sal => {
            let res = if c >= 64 { 0 } else { (a << c) & mk };
            let cf = if c > bits as u64 {
                0
            } else {
                (a >> (bits as u64 - c)) & 1
            };
            let mut f = szp(res, size) | cf;
            if ((res & sb != 0) as u64) ^ cf != 0 {
                f |= OF;
            }
            (res, f)
        }
        M::Shr => {
            let res = if c >= 64 { 0 } else { a >> c };
            let cf = if c > 64 { 0 } else { (a >> (c - 1)) & 1 };
            let mut f = szp(res, size) | cf;
            if c == 1 && a & sb != 0 {
                f |= OF;
            }
            (res, f)
        }
        M::Sar => {
            let sh = 64 - bits;
            let sa = ((a << sh) as i64) >> sh;
            let c2 = c.min(63);
            let res = ((sa >> c2) as u64) & mk;
            let cf = ((sa >> (c2 - 1).min(63)) as u64) & 1;
            (res, szp(res, size) | cf)
        }
        M::Rol => {
            let r = (c % bits as u64) as u32;
            let res = if r == 0 {
                a
            } else {
                ((a << r) | (a >> (bits - r))) & mk
            };
            let cf = res & 1;
            let of = ((res & sb != 0) as u64) ^ cf;
            (res, (old & !(CF | OF)) | cf | if of != 0 { OF } else { 0 })
        }
        M::Ror => {
            let r = (c % bits as u64) as u32;
            let res = if r == 0 {
                a
            } else {
                ((a >> r) | (a << (bits - r))) & mk
            };
            let cf = (res & sb != 0) as u64;
            let of = ((res >> (bits - 1)) ^ (res >> (bits - 2))) & 1;
            (res, (old & !(CF | OF)) | cf | if of != 0 { OF } else { 0 })
        }
        M::Rcl | M::Rcr => {
            let r = if bits < 32 { c % (bits as u64 + 1) } else { c };
            let mut v = a;
            let mut cf = old & CF;
            for _ in 0..r {
                if m == M::Rcl {
                    let out = (v & sb != 0) as u64;
                    v = ((v << 1) | cf) & mk;
                    cf = out;
                } else {
                    let out = v & 1;
                    v = (v >> 1) | if cf != 0 { sb } else { 0 };
                    cf = out;
                }
            }
            let of = if m == M::Rcl {
                ((v & sb != 0) as u64) ^ cf
            } else {
                ((v >> (bits - 1)) ^ (v >> (bits - 2))) & 1
            };
            if r == 0 {
                return (a, old);
            }
            (v, (old & !(CF | OF)) | cf | if of != 0 { OF } else { 0 })
        }
        _ => (a, old),
    }
}

/// SHLD/SHRD of `a` with bits from `b` by `count` (already masked, nonzero).
pub fn shift_double(shl: bool, size: usize, a: u64, b: u64, count: u32) -> (u64, u64) {
    let bits = (size * 8) as u32;
    let mk = mask(size);
    let sb = sign(size);
    let (a, b) = (a & mk, b & mk);
    let c = count;
    let (res, cf) = if shl {
        let wide = ((a as u128) << bits | b as u128) << c;
        let cf = (a >> (bits - c.min(bits))) & 1;
        (((wide >> bits) as u64) & mk, cf)
    } else {
        let wide = (b as u128) << bits | a as u128;
        (((wide >> c) as u64) & mk, ((wide >> (c - 1)) & 1) as u64)
    };
    let mut f = szp(res, size) | cf;
    if (res ^ a) & sb != 0 {
        f |= OF;
    }
    (res, f)
}

impl Cpu {
    pub(super) fn shift(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = self.op_size(ins, 0);
        let raw = if ins.op_count() > 1 {
            self.rd(io, ins, 1, 1)? as u32
        } else {
            1
        };
        let count = raw & if size == 8 { 0x3f } else { 0x1f };
        if count == 0 {
            // Still touches memory (and can fault) like hardware; a 32-bit register
            // destination is still written (zero-extended).
            let v = self.rd(io, ins, 0, size)?;
            if ins.op0_kind() == iced_x86::OpKind::Register {
                self.reg_write(ins.op0_register(), v);
            }
            return Ok(());
        }
        let old = self.flags.get();
        let a = self.rmw0(io, ins, size, |a| shift_op(m, size, a, count, old).0)?;
        let (_, f) = shift_op(m, size, a, count, old);
        // Shifts leave AF undefined (hardware clears it); rotates keep it.
        let keep_af = if matches!(m, M::Shl | M::Sal | M::Shr | M::Sar) {
            0
        } else {
            old & AF
        };
        self.flags.set_arith((f & !AF) | keep_af);
        Ok(())
    }

    pub(super) fn shift_double(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let shl = ins.mnemonic() == M::Shld;
        let size = self.op_size(ins, 0);
        let b = self.reg_read(ins.op1_register());
        let count = self.rd(io, ins, 2, 1)? as u32 & if size == 8 { 0x3f } else { 0x1f };
        if count == 0 {
            let v = self.rd(io, ins, 0, size)?;
            if ins.op0_kind() == iced_x86::OpKind::Register {
                self.reg_write(ins.op0_register(), v);
            }
            return Ok(());
        }
        let a = self.rmw0(io, ins, size, |a| shift_double(shl, size, a, b, count).0)?;
        let (_, f) = shift_double(shl, size, a, b, count);
        self.flags.set_arith(f);
        Ok(())
    }
}
