//! Bit instructions: bt/bts/btr/btc (with bit-string addressing for memory operands),
//! bsf/bsr, popcnt, lzcnt (ABM) and tzcnt (BMI1), and SSE4.2's crc32 (CRC-32C).
//! lzcnt/tzcnt leave OF, SF, AF and PF (undefined) cleared.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{mask, ARITH, CF, ZF};
use crate::platform::Platform;

impl Cpu {
    pub(super) fn bit_test(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let size = self.op_size(ins, 0);
        let bits = (size * 8) as u64;
        let off = self.rd(io, ins, 1, size)?;
        let user = self.user();
        let (bit, lin) = if ins.op0_kind() == OpKind::Memory {
            if ins.op1_kind() == OpKind::Register {
                // Bit-string addressing: the signed offset may reach outside the operand.
                let sh = 64 - bits;
                let soff = ((off << sh) as i64) >> sh;
                let delta = (soff >> bits.trailing_zeros()) * size as i64;
                let ea = self.ea(ins).wrapping_add(delta as u64);
                let seg =
                    (ins.memory_segment() as usize).saturating_sub(iced_x86::Register::ES as usize);
                (off & (bits - 1), Some(self.seg_lin(seg.min(5), ea)))
            } else {
                (off & (bits - 1), Some(self.mem_lin(ins)))
            }
        } else {
            (off & (bits - 1), None)
        };
        let f = move |v: u64| -> u64 {
            match m {
                M::Bts => v | 1 << bit,
                M::Btr => v & !(1 << bit),
                M::Btc => v ^ 1 << bit,
                _ => v,
            }
        };
        let old = match lin {
            None => {
                let r = ins.op0_register();
                let v = self.reg_read(r);
                if m != M::Bt {
                    self.reg_write(r, f(v));
                }
                v
            }
            Some(lin) => {
                if m == M::Bt {
                    self.read_lin(io, lin, size, user)?
                } else {
                    self.rmw_lin(io, lin, size, user, ins.has_lock_prefix(), |v| Some(f(v)))?
                }
            }
        };
        self.flags.set_masked(CF, (old >> bit) & 1);
        Ok(())
    }

    pub(super) fn bit_scan(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let m = ins.mnemonic();
        let d = ins.op0_register();
        let size = d.size();
        let v = self.rd(io, ins, 1, size)? & mask(size);
        match m {
            M::Popcnt => {
                self.reg_write(d, v.count_ones() as u64);
                self.flags.set_arith(if v == 0 { ZF } else { 0 });
            }
            M::Tzcnt | M::Lzcnt => {
                let bits = size as u32 * 8;
                let n = if m == M::Tzcnt {
                    v.trailing_zeros().min(bits)
                } else {
                    v.leading_zeros() - (64 - bits)
                };
                self.reg_write(d, n as u64);
                let cf = if v == 0 { CF } else { 0 };
                let zf = if n == 0 { ZF } else { 0 };
                self.flags.set_arith(cf | zf);
            }
            M::Bsf | M::Bsr => {
                let old = self.flags.get();
                if v == 0 {
                    self.flags.set_arith((old & ARITH & !ZF) | ZF);
                } else {
                    let idx = if m == M::Bsf {
                        v.trailing_zeros()
                    } else {
                        63 - v.leading_zeros()
                    };
                    self.reg_write(d, idx as u64);
                    self.flags.set_arith(old & ARITH & !ZF);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The reflected CRC-32C (Castagnoli) polynomial CRC32 uses.
const CRC32C_POLY: u32 = 0x82f6_3b78;

/// CRC-32C of each byte value, for a byte-at-a-time update.
const CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32C_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The CRC32 instruction's update: CRC-32C of the low `bytes` bytes of `data` (little
/// endian, bit-reflected) continuing from `crc`, without initial or final inversion.
pub(crate) fn crc32c(crc: u32, data: u64, bytes: usize) -> u32 {
    (0..bytes).fold(crc, |c, i| {
        let b = (data >> (8 * i)) as u8;
        (c >> 8) ^ CRC32C_TABLE[((c as u8) ^ b) as usize]
    })
}

impl Cpu {
    /// crc32 r32/r64, r/m8/16/32/64: the destination's low 32 bits are the running CRC;
    /// the result is zero-extended. Flags are not affected.
    pub(super) fn crc32(&mut self, io: &mut dyn Platform, ins: &Instruction) -> R<()> {
        let d = ins.op0_register();
        let size = self.op_size(ins, 1);
        let v = self.rd(io, ins, 1, size)? & mask(size);
        let crc = crc32c(self.reg_read(d) as u32, v, size);
        self.reg_write(d, crc as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn crc32c_check_value_and_widths_agree() {
        // The CRC-32C check value: "123456789" with initial and final inversion.
        let text = b"123456789";
        let crc = text.iter().fold(!0, |c, &b| crc32c(c, b as u64, 1));
        assert_eq!(!crc, 0xe306_9283);
        // Wider operands are their bytes, low first.
        let word = u64::from_le_bytes(*b"12345678");
        let by_bytes = text[..8].iter().fold(!0, |c, &b| crc32c(c, b as u64, 1));
        assert_eq!(crc32c(!0, word, 8), by_bytes);
        assert_eq!(
            crc32c(crc32c(!0, word & 0xffff_ffff, 4), word >> 32, 4),
            by_bytes
        );
        assert_eq!(crc32c(!0, 0x3231, 2), crc32c(crc32c(!0, 0x31, 1), 0x32, 1));
        // RFC 3720 (iSCSI) B.4: 32 bytes of zeros.
        let zeros = (0..4).fold(!0, |c, _| crc32c(c, 0, 8));
        assert_eq!(!zeros, 0x8a91_36aa);
    }
}
