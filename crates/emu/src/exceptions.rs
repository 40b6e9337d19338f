//! Architectural exceptions as Rust errors: every instruction returns `R<()>`, and a fault
//! unwinds to the block loop, which delivers it through the IDT (see `interrupts.rs`).

pub const DE: u8 = 0;
pub const DB: u8 = 1;
pub const BP: u8 = 3;
pub const OF: u8 = 4;
pub const UD: u8 = 6;
pub const NM: u8 = 7;
pub const DF: u8 = 8;
pub const TS: u8 = 10;
pub const NP: u8 = 11;
pub const SS: u8 = 12;
pub const GP: u8 = 13;
pub const PF: u8 = 14;
pub const MF: u8 = 16;

/// A pending exception: vector and optional error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error: Option<u32>,
}

pub type R<T> = Result<T, Fault>;

impl Fault {
    pub const fn new(vector: u8) -> Self {
        Fault {
            vector,
            error: None,
        }
    }
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Fault {
            vector,
            error: Some(code),
        }
    }
}

pub fn gp(code: u32) -> Fault {
    Fault::with_code(GP, code)
}
pub fn gp0() -> Fault {
    Fault::with_code(GP, 0)
}
pub fn ud() -> Fault {
    Fault::new(UD)
}
pub fn de() -> Fault {
    Fault::new(DE)
}
pub fn np(code: u32) -> Fault {
    Fault::with_code(NP, code)
}
pub fn ss(code: u32) -> Fault {
    Fault::with_code(SS, code)
}
pub fn ts(code: u32) -> Fault {
    Fault::with_code(TS, code)
}

/// Page-fault error code bits.
pub mod pfec {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const I: u32 = 1 << 4;
}
