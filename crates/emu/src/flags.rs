//! RFLAGS with lazily computed arithmetic flags.
//!
//! Most instructions set CF/PF/AF/ZF/SF/OF but almost none of those values are ever read.
//! So the common ALU operations only record (operation, size, operands, result) and the
//! flags are computed when something reads them (jcc, setcc, pushf, ...). Rarer operations
//! (shifts, multiplies, bit ops) compute their flags eagerly with `set_arith`.

use iced_x86::ConditionCode;

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const ID: u64 = 1 << 21;
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
/// Bit 1 always reads as 1.
pub const FIXED: u64 = 1 << 1;

/// Which operation produced the pending arithmetic flags.
///
/// 32 bits wide, like `Flags::size`: the compiler reads these fields with 32-bit loads,
/// and a 32-bit load right after a narrower store to the same place cannot be forwarded
/// from the store buffer (a stall of a dozen cycles on every flag read after a write,
/// measured at ~20 % of a register loop).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LazyOp {
    /// The arithmetic flags in `bits` are current.
    None,
    Add,
    /// Add with carry-in 1 (adc with CF=1); adc with CF=0 is recorded as `Add`.
    Adc1,
    Sub,
    /// Subtract with borrow-in 1.
    Sbb1,
    Logic,
    /// inc/dec: CF in `bits` is current and preserved.
    Inc,
    Dec,
}

#[derive(Clone, Copy, Debug)]
pub struct Flags {
    /// Non-arithmetic flags always; arithmetic flags only when `op == None` (and CF also
    /// for Inc/Dec).
    pub bits: u64,
    pub op: LazyOp,
    /// Operand size in bytes (u32: see `LazyOp`).
    pub size: u32,
    pub a: u64,
    pub b: u64,
    pub res: u64,
}

#[inline(always)]
pub fn mask(size: usize) -> u64 {
    // A table lookup: this is on nearly every instruction's path, and the shift form
    // (min, shift, test, cmov) measured at several per cent of a guest profile.
    // Size 0 gives 0, 8 and more give all ones.
    const MASKS: [u64; 16] = [
        0,
        0xff,
        0xffff,
        0xff_ffff,
        0xffff_ffff,
        0xff_ffff_ffff,
        0xffff_ffff_ffff,
        0xff_ffff_ffff_ffff,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
        u64::MAX,
    ];
    if size < 16 {
        MASKS[size]
    } else {
        u64::MAX
    }
}

#[inline(always)]
pub fn sign(size: usize) -> u64 {
    1u64 << (size * 8 - 1)
}

#[inline(always)]
pub fn parity(v: u64) -> u64 {
    if (v as u8).count_ones() & 1 == 0 {
        PF
    } else {
        0
    }
}

/// ZF, SF and PF of a result.
#[inline(always)]
pub fn szp(res: u64, size: usize) -> u64 {
    let r = res & mask(size);
    let mut f = parity(r);
    if r == 0 {
        f |= ZF;
    }
    if r & sign(size) != 0 {
        f |= SF;
    }
    f
}

impl Default for Flags {
    fn default() -> Self {
        Flags::new(FIXED)
    }
}

impl Flags {
    pub fn new(v: u64) -> Self {
        Flags {
            bits: v | FIXED,
            op: LazyOp::None,
            size: 8,
            a: 0,
            b: 0,
            res: 0,
        }
    }

    /// Records an arithmetic result whose flags are computed later.
    #[inline(always)]
    pub fn set_lazy(&mut self, op: LazyOp, size: usize, a: u64, b: u64, res: u64) {
        if matches!(op, LazyOp::Inc | LazyOp::Dec) {
            let cf = self.cf();
            self.bits = (self.bits & !CF) | cf;
        }
        self.op = op;
        self.size = size as u32;
        self.a = a;
        self.b = b;
        self.res = res;
    }

    /// Replaces all six arithmetic flags.
    #[inline(always)]
    pub fn set_arith(&mut self, arith: u64) {
        self.bits = (self.bits & !ARITH) | (arith & ARITH);
        self.op = LazyOp::None;
    }

    /// Replaces the flags in `m` only, keeping the others.
    #[inline]
    pub fn set_masked(&mut self, m: u64, v: u64) {
        let cur = self.get();
        self.bits = (cur & !m) | (v & m) | FIXED;
        self.op = LazyOp::None;
    }

    /// The full RFLAGS value.
    #[inline]
    pub fn get(&self) -> u64 {
        if self.op == LazyOp::None {
            return self.bits;
        }
        (self.bits & !ARITH) | self.compute()
    }

    /// Replaces RFLAGS entirely.
    #[inline]
    pub fn set(&mut self, v: u64) {
        self.bits = v | FIXED;
        self.op = LazyOp::None;
    }

    fn compute(&self) -> u64 {
        let size = self.size as usize;
        let m = mask(size);
        let s = sign(size);
        let (a, b, r) = (self.a & m, self.b & m, self.res & m);
        let mut f = szp(r, size);
        match self.op {
            LazyOp::None => return self.bits & ARITH,
            LazyOp::Add | LazyOp::Adc1 => {
                let carry = if self.op == LazyOp::Add {
                    r < a
                } else {
                    r <= a
                };
                if carry {
                    f |= CF;
                }
                if (a ^ r) & (b ^ r) & s != 0 {
                    f |= OF;
                }
                f |= (a ^ b ^ r) & AF;
            }
            LazyOp::Sub | LazyOp::Sbb1 => {
                let borrow = if self.op == LazyOp::Sub {
                    a < b
                } else {
                    a <= b
                };
                if borrow {
                    f |= CF;
                }
                if (a ^ b) & (a ^ r) & s != 0 {
                    f |= OF;
                }
                f |= (a ^ b ^ r) & AF;
            }
            LazyOp::Logic => {}
            LazyOp::Inc => {
                f |= self.bits & CF;
                if r == s {
                    f |= OF;
                }
                if r & 0xf == 0 {
                    f |= AF;
                }
            }
            LazyOp::Dec => {
                f |= self.bits & CF;
                if r == s - 1 {
                    f |= OF;
                }
                if r & 0xf == 0xf {
                    f |= AF;
                }
            }
        }
        f
    }

    #[inline(always)]
    pub fn cf(&self) -> u64 {
        let m = mask(self.size as usize);
        match self.op {
            LazyOp::None | LazyOp::Inc | LazyOp::Dec => self.bits & CF,
            LazyOp::Add => ((self.res & m) < (self.a & m)) as u64,
            LazyOp::Adc1 => ((self.res & m) <= (self.a & m)) as u64,
            LazyOp::Sub => ((self.a & m) < (self.b & m)) as u64,
            LazyOp::Sbb1 => ((self.a & m) <= (self.b & m)) as u64,
            LazyOp::Logic => 0,
        }
    }

    #[inline(always)]
    pub fn zf(&self) -> bool {
        if self.op == LazyOp::None {
            return self.bits & ZF != 0;
        }
        self.res & mask(self.size as usize) == 0
    }

    #[inline(always)]
    pub fn sf(&self) -> bool {
        if self.op == LazyOp::None {
            return self.bits & SF != 0;
        }
        self.res & sign(self.size as usize) != 0
    }

    #[inline(always)]
    pub fn of(&self) -> bool {
        if self.op == LazyOp::Logic {
            return false;
        }
        self.get() & OF != 0
    }

    #[inline(always)]
    pub fn pf(&self) -> bool {
        self.get() & PF != 0
    }

    /// Evaluates a condition code (jcc/setcc/cmovcc).
    #[inline(always)]
    pub fn cond(&self, cc: ConditionCode) -> bool {
        if self.op == LazyOp::Sub {
            let size = self.size as usize;
            let m = mask(size);
            let (a, b) = (self.a & m, self.b & m);
            let sh = 64 - size * 8;
            let (sa, sb) = (((a << sh) as i64) >> sh, ((b << sh) as i64) >> sh);
            match cc {
                ConditionCode::e => return a == b,
                ConditionCode::ne => return a != b,
                ConditionCode::b => return a < b,
                ConditionCode::ae => return a >= b,
                ConditionCode::be => return a <= b,
                ConditionCode::a => return a > b,
                ConditionCode::l => return sa < sb,
                ConditionCode::ge => return sa >= sb,
                ConditionCode::le => return sa <= sb,
                ConditionCode::g => return sa > sb,
                _ => {}
            }
        }
        match cc {
            ConditionCode::None => true,
            ConditionCode::o => self.of(),
            ConditionCode::no => !self.of(),
            ConditionCode::b => self.cf() != 0,
            ConditionCode::ae => self.cf() == 0,
            ConditionCode::e => self.zf(),
            ConditionCode::ne => !self.zf(),
            ConditionCode::be => self.cf() != 0 || self.zf(),
            ConditionCode::a => self.cf() == 0 && !self.zf(),
            ConditionCode::s => self.sf(),
            ConditionCode::ns => !self.sf(),
            ConditionCode::p => self.pf(),
            ConditionCode::np => !self.pf(),
            ConditionCode::l => self.sf() != self.of(),
            ConditionCode::ge => self.sf() == self.of(),
            ConditionCode::le => self.zf() || self.sf() != self.of(),
            ConditionCode::g => !self.zf() && self.sf() == self.of(),
        }
    }
}
