//! SSE4.2 packed string comparison: PCMPESTRI, PCMPESTRM, PCMPISTRI, PCMPISTRM (and the
//! REX.W forms taking 64-bit lengths), with every imm8 mode: element format (bits 1:0,
//! unsigned/signed bytes/words), aggregation (bits 3:2: equal any, ranges, equal each,
//! equal ordered), polarity (bits 5:4) and output selection (bit 6).

use crate::flags::{CF, OF, SF, ZF};

use super::lanes::{b16, w8};

/// The element format and aggregation selected by an imm8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mode {
    /// 16-bit elements (8 per register) instead of bytes (16).
    pub words: bool,
    pub signed: bool,
    pub agg: Aggregation,
    pub polarity: Polarity,
    /// Index output: the most significant set bit (else the least significant).
    /// Mask output: a byte/word mask in XMM0 (else a bit mask).
    pub msb: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Aggregation {
    EqualAny,
    Ranges,
    EqualEach,
    EqualOrdered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Polarity {
    Positive,
    Negative,
    MaskedPositive,
    /// Negate only the elements inside the second string.
    MaskedNegative,
}

impl Mode {
    pub fn new(imm: u8) -> Mode {
        Mode {
            words: imm & 1 != 0,
            signed: imm & 2 != 0,
            agg: match (imm >> 2) & 3 {
                0 => Aggregation::EqualAny,
                1 => Aggregation::Ranges,
                2 => Aggregation::EqualEach,
                _ => Aggregation::EqualOrdered,
            },
            polarity: match (imm >> 4) & 3 {
                0 => Polarity::Positive,
                1 => Polarity::Negative,
                2 => Polarity::MaskedPositive,
                _ => Polarity::MaskedNegative,
            },
            msb: imm & 0x40 != 0,
        }
    }

    /// Elements per register.
    pub fn n(self) -> usize {
        if self.words {
            8
        } else {
            16
        }
    }

    fn elements(self, v: u128) -> [i32; 16] {
        let mut e = [0i32; 16];
        if self.words {
            for (d, x) in e.iter_mut().zip(w8(v)) {
                *d = if self.signed {
                    x as i16 as i32
                } else {
                    x as i32
                };
            }
        } else {
            for (d, x) in e.iter_mut().zip(b16(v)) {
                *d = if self.signed {
                    x as i8 as i32
                } else {
                    x as i32
                };
            }
        }
        e
    }

    /// Length of an implicit (NUL-terminated) string: the index of the first zero element.
    pub fn implicit_len(self, v: u128) -> usize {
        let e = self.elements(v);
        e[..self.n()]
            .iter()
            .position(|&x| x == 0)
            .unwrap_or(self.n())
    }

    /// Length of an explicit string: the absolute value of the length register,
    /// saturated to the element count.
    pub fn explicit_len(self, len: i64) -> usize {
        len.unsigned_abs().min(self.n() as u64) as usize
    }
}

/// The outcome of a comparison: IntRes2 (one bit per element) and the arithmetic flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub res: u16,
    pub flags: u64,
}

/// Compares string `a` (length `la`, the first operand) with `b` (length `lb`).
pub(super) fn compare(mode: Mode, a: u128, la: usize, b: u128, lb: usize) -> Outcome {
    let n = mode.n();
    let (x, y) = (mode.elements(a), mode.elements(b));
    // One comparison with the validity overrides of the aggregation.
    let eq = |i: usize, j: usize, both_invalid: bool, a_invalid: bool| -> bool {
        match (i < la, j < lb) {
            (true, true) => x[i] == y[j],
            (false, false) => both_invalid,
            (false, true) => a_invalid,
            (true, false) => false,
        }
    };
    // Ranges: b[j] within [a[i], a[i + 1]], both ends valid.
    let within = |i: usize, j: usize| j < lb && i + 1 < la && x[i] <= y[j] && y[j] <= x[i + 1];
    let bit = |j: usize| match mode.agg {
        Aggregation::EqualAny => (0..n).any(|i| eq(i, j, false, false)),
        Aggregation::Ranges => (0..n).step_by(2).any(|i| within(i, j)),
        Aggregation::EqualEach => eq(j, j, true, false),
        Aggregation::EqualOrdered => (0..n - j).all(|i| eq(i, j + i, true, true)),
    };
    let int1 = (0..n).filter(|&j| bit(j)).fold(0u16, |acc, j| acc | 1 << j);
    let all = if n == 16 { u16::MAX } else { 0xff };
    let valid_b = ((1u32 << lb) - 1) as u16;
    let res = match mode.polarity {
        Polarity::Positive | Polarity::MaskedPositive => int1,
        Polarity::Negative => !int1 & all,
        Polarity::MaskedNegative => int1 ^ valid_b,
    };
    let mut flags = 0;
    if res != 0 {
        flags |= CF;
    }
    if lb < n {
        flags |= ZF;
    }
    if la < n {
        flags |= SF;
    }
    if res & 1 != 0 {
        flags |= OF;
    }
    Outcome { res, flags }
}

/// PCMPxSTRI's ECX: the least or most significant set bit of IntRes2, or the element
/// count when none is set.
pub(super) fn index(mode: Mode, res: u16) -> u64 {
    if res == 0 {
        mode.n() as u64
    } else if mode.msb {
        15 - res.leading_zeros() as u64
    } else {
        res.trailing_zeros() as u64
    }
}

/// PCMPxSTRM's XMM0: IntRes2 as a bit mask, or expanded to a byte/word mask.
pub(super) fn mask(mode: Mode, res: u16) -> u128 {
    if !mode.msb {
        return res as u128;
    }
    let w = if mode.words { 16 } else { 8 };
    (0..mode.n())
        .filter(|i| res >> i & 1 != 0)
        .fold(0u128, |acc, i| acc | (u128::MAX >> (128 - w)) << (w * i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        b[..text.len()].copy_from_slice(text);
        u128::from_le_bytes(b)
    }

    fn run(imm: u8, a: &[u8], b: &[u8]) -> Outcome {
        let m = Mode::new(imm);
        let (x, y) = (s(a), s(b));
        compare(m, x, m.implicit_len(x), y, m.implicit_len(y))
    }

    #[test]
    fn equal_any_finds_characters_of_a_set() {
        // Which bytes of "hello, world" are vowels?
        let o = run(0x00, b"aeiou", b"hello, world");
        assert_eq!(o.res, 0b0001_0001_0010);
        assert_eq!(index(Mode::new(0x00), o.res), 1);
        assert_eq!(index(Mode::new(0x40), o.res), 8);
        assert_eq!(o.flags, CF | ZF | SF);
        // Negative polarity flips all 16 bits; masked negative only the 12 inside b.
        assert_eq!(run(0x10, b"aeiou", b"hello, world").res, !0b0001_0001_0010);
        assert_eq!(run(0x30, b"aeiou", b"hello, world").res, 0b1110_1110_1101);
    }

    #[test]
    fn ranges_classify_letters() {
        let o = run(0x04, b"azAZ", b"aZ09_x");
        assert_eq!(o.res, 0b10_0011);
        // Signed bytes: 0x80.. are negative and fall outside 0..'z'.
        let m = Mode::new(0x06);
        let o = compare(m, s(b"\x00z"), 2, s(&[0x80, b'a']), 2);
        assert_eq!(o.res, 0b10);
    }

    #[test]
    fn equal_each_is_strcmp() {
        let o = run(0x18, b"abcdef", b"abcxef");
        // Negative polarity: set where they differ, including past both ends
        // (both invalid compares true, so negated: false).
        assert_eq!(o.res, 0b1000);
        assert_eq!(index(Mode::new(0x18), o.res), 3);
        let o = run(0x18, b"same", b"same");
        assert_eq!(o.res, 0);
        assert_eq!(o.flags, ZF | SF);
    }

    #[test]
    fn equal_ordered_is_strstr() {
        let o = run(0x0c, b"lo", b"hello, lollipop");
        // "lo" starts at 3 and 7; a match of a prefix at the end would count too.
        assert_eq!(o.res, 0b1000_1000);
        assert_eq!(o.flags, CF | ZF | SF);
        // The empty needle matches everywhere.
        assert_eq!(run(0x0c, b"", b"abc").res, u16::MAX);
    }

    #[test]
    fn words_and_explicit_lengths_and_masks() {
        let m = Mode::new(0x01 | 0x40); // unsigned words, equal any, byte/word mask
        let a = 0x0002_0001u128;
        let b = 0x0003_0002_0001_0000u128;
        let o = compare(m, a, m.explicit_len(-2), b, m.explicit_len(100));
        assert_eq!(o.res, 0b0110);
        assert_eq!(o.flags, CF | SF);
        assert_eq!(mask(m, o.res), 0xffff_ffff_0000);
        assert_eq!(mask(Mode::new(0x01), o.res), 0b0110);
        assert_eq!(index(m, 0), 8);
    }
}
