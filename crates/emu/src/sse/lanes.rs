//! Views of a 128-bit XMM value as lanes (bytes, words, dwords, qwords, floats) and
//! back, plus the saturating narrowings the pack and horizontal instructions share.

pub(super) fn b16(v: u128) -> [u8; 16] {
    v.to_le_bytes()
}
pub(super) fn w8(v: u128) -> [u16; 8] {
    let b = v.to_le_bytes();
    std::array::from_fn(|i| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
}
pub(super) fn d4(v: u128) -> [u32; 4] {
    std::array::from_fn(|i| (v >> (32 * i)) as u32)
}
pub(super) fn q2(v: u128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}
pub(super) fn from_b(a: [u8; 16]) -> u128 {
    u128::from_le_bytes(a)
}
pub(super) fn from_w(a: [u16; 8]) -> u128 {
    a.iter()
        .enumerate()
        .fold(0, |acc, (i, x)| acc | (*x as u128) << (16 * i))
}
pub(super) fn from_d(a: [u32; 4]) -> u128 {
    a.iter()
        .enumerate()
        .fold(0, |acc, (i, x)| acc | (*x as u128) << (32 * i))
}
pub(super) fn from_q(a: [u64; 2]) -> u128 {
    a[0] as u128 | (a[1] as u128) << 64
}
pub(super) fn f32s(v: u128) -> [f32; 4] {
    d4(v).map(f32::from_bits)
}
pub(super) fn f64s(v: u128) -> [f64; 2] {
    q2(v).map(f64::from_bits)
}
pub(super) fn from_f32(a: [f32; 4]) -> u128 {
    from_d(a.map(f32::to_bits))
}
pub(super) fn from_f64(a: [f64; 2]) -> u128 {
    from_q(a.map(f64::to_bits))
}

pub(super) fn sat_i8(v: i32) -> u8 {
    v.clamp(-128, 127) as i8 as u8
}
pub(super) fn sat_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}
pub(super) fn sat_i16(v: i32) -> u16 {
    v.clamp(-32768, 32767) as i16 as u16
}
pub(super) fn sat_u16(v: i64) -> u16 {
    v.clamp(0, 65535) as u16
}

/// An all-ones lane mask for `true`, zero for `false`.
pub(super) fn lane_mask<T: From<u8> + std::ops::Not<Output = T>>(t: bool) -> T {
    if t {
        !T::from(0)
    } else {
        T::from(0)
    }
}

/// The sign bits of the 16 bytes (PMOVMSKB).
pub(super) fn byte_signs(v: u128) -> u64 {
    (0..16).map(|i| ((v >> (8 * i + 7)) & 1) << i).sum::<u128>() as u64
}
