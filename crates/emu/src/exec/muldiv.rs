//! mul/imul (one, two and three operands) and div/idiv with #DE.

use iced_x86::{Instruction, Mnemonic as M};

use crate::cpu::Cpu;
use crate::exceptions::{de, R};
use crate::flags::{mask, szp, CF, OF};
use crate::platform::Platform;

fn sx(v: u64, size: usize) -> i128 {
    let sh = 64 - size * 8;
    (((v << sh) as i64) >> sh) as i128
}

impl Cpu {
    pub(super) fn muldiv(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        if m == M::Imul && ins.op_count() > 1 {
            let d = ins.op0_register();
            let size = d.size();
            let (a, b) = if ins.op_count() == 2 {
                (self.reg_read(d), self.rd(io, ins, 1, size)?)
            } else {
                (self.rd(io, ins, 1, size)?, ins.immediate(2) & mask(size))
            };
            let full = sx(a, size) * sx(b, size);
            let res = (full as u64) & mask(size);
            let of = sx(res, size) != full;
            self.reg_write(d, res);
            let f = szp(res, size) | if of { CF | OF } else { 0 };
            self.flags.set_arith(f);
            return Ok(());
        }
        let size = self.op_size(ins, 0);
        let src = self.rd(io, ins, 0, size)? & mask(size);
        let bits = size * 8;
        // Dividend / multiplicand registers.
        let (lo, hi) = if size == 1 {
            (self.gpr[0] & 0xff, (self.gpr[0] >> 8) & 0xff)
        } else {
            (self.gpr[0] & mask(size), self.gpr[2] & mask(size))
        };
        let put = |cpu: &mut Cpu, l: u64, h: u64| {
            if size == 1 {
                cpu.set_gpr_sized(0, 2, (h & 0xff) << 8 | (l & 0xff));
            } else {
                cpu.set_gpr_sized(0, size, l);
                cpu.set_gpr_sized(2, size, h);
            }
        };
        match m {
            M::Mul => {
                let full = (lo as u128) * (src as u128);
                let l = (full as u64) & mask(size);
                let h = ((full >> bits) as u64) & mask(size);
                put(self, l, h);
                let f = szp(l, size) | if h != 0 { CF | OF } else { 0 };
                self.flags.set_arith(f);
            }
            M::Imul => {
                let full = sx(lo, size) * sx(src, size);
                let l = (full as u64) & mask(size);
                let h = ((full >> bits) as u64) & mask(size);
                put(self, l, h);
                let of = sx(l, size) != full;
                let f = szp(l, size) | if of { CF | OF } else { 0 };
                self.flags.set_arith(f);
            }
            M::Div => {
                if src == 0 {
                    return Err(de());
                }
                let n = ((hi as u128) << bits) | lo as u128;
                let q = n / src as u128;
                let r = n % src as u128;
                if q > mask(size) as u128 {
                    return Err(de());
                }
                put(self, q as u64, r as u64);
            }
            _ => {
                if src == 0 {
                    return Err(de());
                }
                let n = (((hi as u128) << bits) | lo as u128) as i128;
                // Sign-extend the 2*bits-wide dividend.
                let n = if bits == 64 {
                    n
                } else {
                    (n << (128 - 2 * bits)) >> (128 - 2 * bits)
                };
                let d = sx(src, size);
                let q = n.checked_div(d).ok_or_else(de)?;
                let r = n - q * d;
                let min = -(1i128 << (bits - 1));
                let max = (1i128 << (bits - 1)) - 1;
                if q < min || q > max {
                    return Err(de());
                }
                put(self, q as u64 & mask(size), r as u64 & mask(size));
            }
        }
        Ok(())
    }
}
