//! PCLMULQDQ (carry-less multiplication) and AES-NI (AESENC, AESENCLAST, AESDEC,
//! AESDECLAST, AESIMC, AESKEYGENASSIST) as pure functions of the destination `a`, the
//! source `b` and the immediate. The XMM byte `i` is AES state byte `i` (column `i / 4`,
//! row `i % 4`), as on hardware.

use iced_x86::Mnemonic as M;

use super::lanes::{d4, from_d, q2};

/// Multiplication in GF(2^8) modulo the AES polynomial x^8 + x^4 + x^3 + x + 1.
const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

/// The AES S-box: multiplicative inverse in GF(2^8), then the affine transform.
const SBOX: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        // x^254 is the inverse (and maps 0 to 0).
        let mut inv = 1u8;
        let mut k = 0;
        while k < 254 {
            inv = gmul(inv, x as u8);
            k += 1;
        }
        if x == 0 {
            inv = 0;
        }
        t[x] = inv
            ^ inv.rotate_left(1)
            ^ inv.rotate_left(2)
            ^ inv.rotate_left(3)
            ^ inv.rotate_left(4)
            ^ 0x63;
        x += 1;
    }
    t
};

const INV_SBOX: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        t[SBOX[x] as usize] = x as u8;
        x += 1;
    }
    t
};

fn shift_rows(s: [u8; 16], inverse: bool) -> [u8; 16] {
    std::array::from_fn(|i| {
        let (c, r) = (i / 4, i % 4);
        let from = if inverse {
            (c + 4 - r) % 4
        } else {
            (c + r) % 4
        };
        s[4 * from + r]
    })
}

fn mix_columns(s: [u8; 16], inverse: bool) -> [u8; 16] {
    let m: [u8; 4] = if inverse {
        [14, 11, 13, 9]
    } else {
        [2, 3, 1, 1]
    };
    std::array::from_fn(|i| {
        let (c, r) = (i / 4, i % 4);
        (0..4).fold(0, |acc, k| acc ^ gmul(m[(k + 4 - r) % 4], s[4 * c + k]))
    })
}

fn sub_bytes(s: [u8; 16], table: &[u8; 256]) -> [u8; 16] {
    s.map(|x| table[x as usize])
}

fn sub_word(w: u32) -> u32 {
    u32::from_le_bytes(w.to_le_bytes().map(|x| SBOX[x as usize]))
}

/// Carry-less product of two 64-bit polynomials.
fn clmul(a: u64, b: u64) -> u128 {
    (0..64)
        .filter(|i| b >> i & 1 != 0)
        .fold(0u128, |acc, i| acc ^ (a as u128) << i)
}

pub(super) fn handles(m: M) -> bool {
    use M::*;
    matches!(
        m,
        Pclmulqdq | Aesenc | Aesenclast | Aesdec | Aesdeclast | Aesimc | Aeskeygenassist
    )
}

/// The result of `m` (one of `handles`).
pub(super) fn compute(m: M, a: u128, b: u128, imm: u8) -> Option<u128> {
    use M::*;
    let state = a.to_le_bytes();
    let out = |s: [u8; 16]| u128::from_le_bytes(s);
    Some(match m {
        Pclmulqdq => clmul(q2(a)[imm as usize & 1], q2(b)[(imm as usize >> 4) & 1]),
        Aesenc => {
            out(mix_columns(
                sub_bytes(shift_rows(state, false), &SBOX),
                false,
            )) ^ b
        }
        Aesenclast => out(sub_bytes(shift_rows(state, false), &SBOX)) ^ b,
        Aesdec => {
            out(mix_columns(
                sub_bytes(shift_rows(state, true), &INV_SBOX),
                true,
            )) ^ b
        }
        Aesdeclast => out(sub_bytes(shift_rows(state, true), &INV_SBOX)) ^ b,
        Aesimc => out(mix_columns(b.to_le_bytes(), true)),
        Aeskeygenassist => {
            let x = d4(b);
            let rcon = imm as u32;
            let (s1, s3) = (sub_word(x[1]), sub_word(x[3]));
            from_d([s1, s1.rotate_right(8) ^ rcon, s3, s3.rotate_right(8) ^ rcon])
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> u128 {
        let b: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        u128::from_le_bytes(b.try_into().unwrap())
    }

    /// AES-128 key expansion the way software does it with AESKEYGENASSIST.
    fn expand(key: u128) -> [u128; 11] {
        const RCON: [u8; 10] = [1, 2, 4, 8, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];
        let mut k = [key; 11];
        for r in 0..10 {
            let assist = compute(M::Aeskeygenassist, 0, k[r], RCON[r]).unwrap();
            let t = d4(assist)[3];
            let mut n = k[r];
            n ^= n << 32;
            n ^= n << 64;
            k[r + 1] = n ^ from_d([t; 4]);
        }
        k
    }

    #[test]
    fn fips197_aes128_round_trip() {
        let key = hex("000102030405060708090a0b0c0d0e0f");
        let pt = hex("00112233445566778899aabbccddeeff");
        let ct = hex("69c4e0d86a7b0430d8cdb78070b4c55a");
        let k = expand(key);
        assert_eq!(k[10], hex("13111d7fe3944a17f307a78b4d2b30c5"));
        let mut s = pt ^ k[0];
        for rk in &k[1..10] {
            s = compute(M::Aesenc, s, *rk, 0).unwrap();
        }
        s = compute(M::Aesenclast, s, k[10], 0).unwrap();
        assert_eq!(s, ct);
        let mut s = ct ^ k[10];
        for rk in k[1..10].iter().rev() {
            let imc = compute(M::Aesimc, 0, *rk, 0).unwrap();
            s = compute(M::Aesdec, s, imc, 0).unwrap();
        }
        s = compute(M::Aesdeclast, s, k[0], 0).unwrap();
        assert_eq!(s, pt);
    }

    #[test]
    fn clmul_of_polynomials() {
        // (x + 1)^2 = x^2 + 1 over GF(2).
        assert_eq!(clmul(0b11, 0b11), 0b101);
        assert_eq!(clmul(u64::MAX, 1 << 63), (u64::MAX as u128) << 63);
        let a = 0x0123_4567_89ab_cdefu128 | 0xdead_beef << 64;
        let r = compute(M::Pclmulqdq, a, 2 << 64, 0x11).unwrap();
        assert_eq!(r, (0xdead_beefu128) << 1);
    }
}
