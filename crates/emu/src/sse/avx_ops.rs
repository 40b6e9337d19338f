//! The VEX instructions that have no legacy SSE counterpart: broadcasts, 128-bit lane
//! inserts/extracts/permutes, VPERMILPS/PD, VPERMD/Q/PS/PD, masked loads and stores
//! (VMASKMOV*, VPMASKMOV*: masked-off elements are not accessed, so cannot fault),
//! VTESTPS/PD, the 256-bit VPTEST/VMOVMSK*/VPMOVMSKB, per-element shifts (VPSLLV* ...),
//! VPBLENDD and VZEROUPPER/VZEROALL.

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use super::avx::Ymm;
use crate::cpu::Cpu;
use crate::exceptions::R;
use crate::flags::{CF, ZF};
use crate::platform::Platform;

/// `v` as `n`-byte elements (n = 1, 2, 4, 8), low element first.
fn elems(v: Ymm, n: usize) -> Vec<u64> {
    let b = super::avx::ymm_bytes(v);
    b.chunks(n)
        .map(|c| c.iter().rev().fold(0u64, |acc, &x| acc << 8 | x as u64))
        .collect()
}

/// The inverse of [`elems`] (missing elements are zero).
fn from_elems(e: &[u64], n: usize) -> Ymm {
    let mut b = [0u8; 32];
    for (i, x) in e.iter().enumerate().take(32 / n) {
        b[i * n..i * n + n].copy_from_slice(&x.to_le_bytes()[..n]);
    }
    super::avx::ymm_from_bytes(&b)
}

/// The sign bit of each `n`-byte element.
fn signs(v: Ymm, n: usize) -> Vec<bool> {
    elems(v, n)
        .iter()
        .map(|&x| x >> (8 * n - 1) & 1 != 0)
        .collect()
}

fn width(ins: &Instruction, i: u32) -> usize {
    if ins.op_kind(i) == OpKind::Register && ins.op_register(i).is_ymm() {
        32
    } else {
        16
    }
}

impl Cpu {
    /// Runs `m` if it is one of this module's instructions.
    pub(super) fn avx_op(
        &mut self,
        io: &mut dyn Platform,
        ins: &Instruction,
        m: M,
    ) -> Option<R<()>> {
        use M::*;
        Some(match m {
            Vzeroupper | Vzeroall => {
                let regs = if self.long64() { 16 } else { 8 };
                for n in 0..regs {
                    self.fpu.ymm_hi[n] = 0;
                    if m == Vzeroall {
                        self.fpu.xmm[n] = 0;
                    }
                }
                Ok(())
            }
            Vbroadcastss | Vbroadcastsd | Vbroadcastf128 | Vbroadcasti128 | Vpbroadcastb
            | Vpbroadcastw | Vpbroadcastd | Vpbroadcastq => self.broadcast(io, ins, m),
            Vinsertf128 | Vinserti128 | Vextractf128 | Vextracti128 | Vperm2f128 | Vperm2i128
            | Vpermilps | Vpermilpd | Vpermd | Vpermps | Vpermq | Vpermpd | Vpblendd | Vpsllvd
            | Vpsllvq | Vpsrlvd | Vpsrlvq | Vpsravd => self.permute(io, ins, m),
            Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq => self.masked_move(io, ins, m),
            Vgatherdps | Vgatherdpd | Vgatherqps | Vgatherqpd | Vpgatherdd | Vpgatherdq
            | Vpgatherqd | Vpgatherqq => self.gather(io, ins, m),
            Vtestps | Vtestpd | Vptest => {
                let (a, b) = match (self.vsrc(io, ins, 0), self.vsrc(io, ins, 1)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return Some(Err(e)),
                };
                let n = width(ins, 0);
                let keep = |v: Ymm| -> Ymm {
                    let v = if n == 16 { [v[0], 0] } else { v };
                    // VTESTPS/PD look at the sign bits only.
                    let s: u128 = match m {
                        Vtestps => (0..4).fold(0, |acc, i| acc | 1 << (32 * i + 31)),
                        Vtestpd => 1 << 63 | 1 << 127,
                        _ => u128::MAX,
                    };
                    [v[0] & s, v[1] & s]
                };
                let (a, b) = (keep(a), keep(b));
                let zf = if a[0] & b[0] | a[1] & b[1] == 0 {
                    ZF
                } else {
                    0
                };
                let cf = if !a[0] & b[0] | !a[1] & b[1] == 0 {
                    CF
                } else {
                    0
                };
                self.flags.set_arith(zf | cf);
                Ok(())
            }
            Vmovmskps | Vmovmskpd | Vpmovmskb if width(ins, 1) == 32 => {
                let v = match self.vsrc(io, ins, 1) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(e)),
                };
                let n = match m {
                    Vmovmskps => 4,
                    Vmovmskpd => 8,
                    _ => 1,
                };
                let bits = signs(v, n)
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (i, &s)| acc | (s as u64) << i);
                self.reg_write(ins.op0_register(), bits);
                Ok(())
            }
            Vcvtph2ps | Vcvtps2ph => self.f16c(io, ins, m),
            _ if super::fma::handles(m) => self.fma(io, ins),
            _ => return None,
        })
    }

    /// VBROADCASTSS/SD/F128/I128 and VPBROADCASTB/W/D/Q: the low element of the source
    /// (register or memory) in every element of the destination.
    fn broadcast(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let n = match m {
            Vpbroadcastb => 1,
            Vpbroadcastw => 2,
            Vbroadcastss | Vpbroadcastd => 4,
            Vbroadcastsd | Vpbroadcastq => 8,
            _ => 16,
        };
        let s = self.vsrc(io, ins, 1)?;
        let v = if n == 16 {
            [s[0], s[0]]
        } else {
            let x = elems(s, n)[0];
            from_elems(&vec![x; 32 / n], n)
        };
        self.vdst(io, ins, v)
    }

    /// Lane and element permutes, VPBLENDD and the per-element shifts.
    fn permute(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let imm = ins.immediate8();
        let n = ins.op_count();
        let imm_form = ins.op_kind(n - 1) == OpKind::Immediate8;
        let wide = width(ins, 0) == 32 || width(ins, 1) == 32;
        let v: Ymm = match m {
            Vinsertf128 | Vinserti128 => {
                let mut a = self.vsrc(io, ins, 1)?;
                a[(imm & 1) as usize] = self.vsrc(io, ins, 2)?[0];
                a
            }
            Vextractf128 | Vextracti128 => [self.vsrc(io, ins, 1)?[(imm & 1) as usize], 0],
            Vperm2f128 | Vperm2i128 => {
                let a = self.vsrc(io, ins, 1)?;
                let b = self.vsrc(io, ins, 2)?;
                let pick = |sel: u8| {
                    if sel & 8 != 0 {
                        0
                    } else {
                        [a[0], a[1], b[0], b[1]][(sel & 3) as usize]
                    }
                };
                [pick(imm), pick(imm >> 4)]
            }
            Vpermilps | Vpermilpd => {
                let (src, ctl) = if imm_form {
                    (self.vsrc(io, ins, 1)?, None)
                } else {
                    (self.vsrc(io, ins, 1)?, Some(self.vsrc(io, ins, 2)?))
                };
                let size = if m == Vpermilps { 4 } else { 8 };
                let per_lane = 16 / size;
                let s = elems(src, size);
                let c = ctl.map(|c| elems(c, size));
                let e: Vec<u64> = (0..32 / size)
                    .map(|i| {
                        let lane = i / per_lane * per_lane;
                        let sel = match (&c, m) {
                            (Some(c), Vpermilps) => c[i] as usize & 3,
                            (Some(c), _) => (c[i] as usize >> 1) & 1,
                            (None, Vpermilps) => (imm as usize >> (2 * (i % 4))) & 3,
                            (None, _) => (imm as usize >> i) & 1,
                        };
                        s[lane + sel]
                    })
                    .collect();
                from_elems(&e, size)
            }
            Vpermd | Vpermps => {
                let idx = elems(self.vsrc(io, ins, 1)?, 4);
                let s = elems(self.vsrc(io, ins, 2)?, 4);
                let e: Vec<u64> = idx.iter().map(|&i| s[i as usize & 7]).collect();
                from_elems(&e, 4)
            }
            Vpermq | Vpermpd => {
                let s = elems(self.vsrc(io, ins, 1)?, 8);
                let e: Vec<u64> = (0..4).map(|i| s[(imm as usize >> (2 * i)) & 3]).collect();
                from_elems(&e, 8)
            }
            Vpblendd => {
                let a = elems(self.vsrc(io, ins, 1)?, 4);
                let b = elems(self.vsrc(io, ins, 2)?, 4);
                let e: Vec<u64> = (0..8)
                    .map(|i| if imm >> i & 1 != 0 { b[i] } else { a[i] })
                    .collect();
                from_elems(&e, 4)
            }
            _ => {
                // VPSLLVD/Q, VPSRLVD/Q, VPSRAVD: each element by its own count.
                let size = if matches!(m, Vpsllvq | Vpsrlvq) { 8 } else { 4 };
                let bits = 8 * size as u64;
                let a = elems(self.vsrc(io, ins, 1)?, size);
                let c = elems(self.vsrc(io, ins, 2)?, size);
                let e: Vec<u64> = a
                    .iter()
                    .zip(&c)
                    .map(|(&x, &c)| match m {
                        Vpsllvd | Vpsllvq if c < bits => x << c & (u64::MAX >> (64 - bits)),
                        Vpsrlvd | Vpsrlvq if c < bits => x >> c,
                        Vpsravd => ((x as u32 as i32) >> c.min(31)) as u32 as u64,
                        _ => 0,
                    })
                    .collect();
                from_elems(&e, size)
            }
        };
        let v = if wide || matches!(m, Vextractf128 | Vextracti128) {
            v
        } else {
            [v[0], 0]
        };
        self.vdst(io, ins, v)
    }

    /// VMASKMOVPS/PD and VPMASKMOVD/Q: loads (masked-off elements read as zero) and stores
    /// (masked-off elements left alone); only the selected elements are accessed.
    fn masked_move(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        let size = if matches!(m, M::Vmaskmovpd | M::Vpmaskmovq) {
            8
        } else {
            4
        };
        let store = ins.op0_kind() == OpKind::Memory;
        // Load: (destination, mask, memory); store: (memory, mask, data).
        let (mask_op, data_op) = (1, 2);
        let len = width(ins, mask_op);
        let mask = signs(self.vsrc(io, ins, mask_op)?, size);
        let base = self.mem_lin(ins);
        let user = self.user();
        let count = len / size;
        if store {
            let data = elems(self.vsrc(io, ins, data_op)?, size);
            for i in (0..count).filter(|&i| mask[i]) {
                let lin = base.wrapping_add((i * size) as u64);
                self.write_lin(io, lin, size, data[i], user)?;
            }
            return Ok(());
        }
        let mut e = vec![0u64; 32 / size];
        for i in (0..count).filter(|&i| mask[i]) {
            let lin = base.wrapping_add((i * size) as u64);
            e[i] = self.read_lin(io, lin, size, user)?;
        }
        self.vdst(io, ins, from_elems(&e, size))
    }
}
