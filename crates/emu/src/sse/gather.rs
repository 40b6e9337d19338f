//! AVX2 gathers (VGATHERDPS/DPD/QPS/QPD, VPGATHERDD/DQ/QD/QQ): element `i` is loaded
//! from base + index[i] × scale + displacement when the sign bit of mask element `i` is
//! set. Elements complete in order, each clearing its mask element; a fault leaves the
//! completed elements in the destination and mask (so the restarted instruction goes on
//! from there) and is delivered. At the end the mask is all zeros; VEX.128 forms zero bits
//! 255:128 of destination and mask, and the forms with fewer elements than the
//! destination holds (QPS/QD) zero the rest. Destination, index and mask registers must
//! differ (#UD otherwise).

use iced_x86::{Instruction, Mnemonic as M, Register};

use super::avx::Ymm;
use crate::cpu::Cpu;
use crate::exceptions::{ud, R};
use crate::flags::mask;
use crate::platform::Platform;

fn get(v: Ymm, size: usize, i: usize) -> u64 {
    let bits = 8 * size;
    let (lane, at) = (i * bits / 128, (i * bits) % 128);
    let m = if size == 8 { u64::MAX } else { u32::MAX as u64 };
    (v[lane] >> at) as u64 & m
}

fn set(v: &mut Ymm, size: usize, i: usize, x: u64) {
    let bits = 8 * size;
    let (lane, at) = (i * bits / 128, (i * bits) % 128);
    let m: u128 = if size == 8 {
        u64::MAX as u128
    } else {
        u32::MAX as u128
    };
    v[lane] = (v[lane] & !(m << at)) | ((x as u128 & m) << at);
}

impl Cpu {
    pub(super) fn gather(&mut self, io: &mut dyn Platform, ins: &Instruction, m: M) -> R<()> {
        use M::*;
        let data = if matches!(m, Vgatherdpd | Vgatherqpd | Vpgatherdq | Vpgatherqq) {
            8
        } else {
            4
        };
        let isize = if matches!(m, Vgatherqps | Vgatherqpd | Vpgatherqd | Vpgatherqq) {
            8
        } else {
            4
        };
        let (d, x, k) = (ins.op0_register(), ins.memory_index(), ins.op2_register());
        let (Some(dn), Some(xn), Some(kn)) = (Self::vreg(d), Self::vreg(x), Self::vreg(k)) else {
            return Err(self.unimplemented(ins));
        };
        if dn == xn || dn == kn || xn == kn {
            return Err(ud());
        }
        let width = |r: Register| if r.is_ymm() { 32 } else { 16 };
        let count = (width(d) / data).min(width(x) / isize);
        let index = self.ymm(xn);
        let mut dst = self.ymm(dn);
        let mut msk = self.ymm(kn);
        let base = match ins.memory_base() {
            Register::None => 0,
            r => self.reg_read(r),
        };
        let asize = if ins.memory_base() == Register::None {
            8
        } else {
            ins.memory_base().size()
        };
        let seg = (ins.memory_segment() as usize).saturating_sub(Register::ES as usize);
        let scale = ins.memory_index_scale() as u64;
        let user = self.user();
        let mut fault = None;
        for i in 0..count {
            if get(msk, data, i) >> (8 * data - 1) == 0 {
                continue;
            }
            let raw = get(index, isize, i);
            let idx = if isize == 4 {
                raw as u32 as i32 as i64 as u64
            } else {
                raw
            };
            let ea = base
                .wrapping_add(idx.wrapping_mul(scale))
                .wrapping_add(ins.memory_displacement64())
                & mask(asize);
            let lin = self.seg_lin(seg.min(5), ea);
            match self.read_lin(io, lin, data, user) {
                Ok(v) => {
                    set(&mut dst, data, i, v);
                    set(&mut msk, data, i, 0);
                }
                Err(e) => {
                    fault = Some(e);
                    break;
                }
            }
        }
        if fault.is_none() {
            msk = [0, 0];
        }
        // Elements past `count` and, for VEX.128, bits 255:128 read as zero.
        for i in count..32 / data {
            set(&mut dst, data, i, 0);
            set(&mut msk, data, i, 0);
        }
        if !d.is_ymm() {
            dst[1] = 0;
        }
        if !k.is_ymm() {
            msk[1] = 0;
        }
        self.set_ymm(dn, dst);
        self.set_ymm(kn, msk);
        fault.map_or(Ok(()), Err)
    }
}
