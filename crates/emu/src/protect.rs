//! Paging-related protection features and the per-vCPU state they need: SMEP, SMAP,
//! protection keys (PKU with PKRU, PKS with IA32_PKRS), UMIP, PCID/INVPCID and the
//! reserved physical-address bits of page-table entries.
//!
//! [`Features`] is derived from the vCPU's CPUID table (so `--cpu-features -smap` takes a
//! feature away completely: its CR4 bit becomes reserved and its instructions #UD). The
//! page walk (`mmu.rs`) consults it and [`Keys`] when it fills a TLB entry, folding the
//! outcome into the entry's permission bits, so the fast path stays one AND.

use crate::cpuid::{lookup, CpuidLeaf};

pub const CR4_UMIP: u64 = 1 << 11;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const CR4_PKE: u64 = 1 << 22;
pub const CR4_PKS: u64 = 1 << 24;

/// CR4 bits every model here has: VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE, OSFXSR,
/// OSXMMEXCPT.
const CR4_BASE: u64 = 0x7ff;

/// Page-fault error-code bit: the protection key denied the access.
pub const PFEC_PK: u32 = 1 << 5;

/// IA32_PKRS: the supervisor protection-key rights (same layout as PKRU).
pub const MSR_PKRS: u32 = 0x6e1;

/// What the vCPU's CPUID table offers of the features this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    pub smep: bool,
    pub smap: bool,
    pub pku: bool,
    pub pks: bool,
    pub umip: bool,
    pub pcid: bool,
    pub invpcid: bool,
    pub gbpages: bool,
    /// Physical-address width (MAXPHYADDR) from leaf 0x8000_0008.
    pub phys_bits: u8,
}

impl Features {
    /// Reads the offer from a CPUID table.
    pub fn from_cpuid(table: &[CpuidLeaf]) -> Self {
        let (max, ..) = lookup(table, 0, 0);
        let (_, b7, c7, _) = if max >= 7 {
            lookup(table, 7, 0)
        } else {
            (0, 0, 0, 0)
        };
        let (_, _, c1, _) = lookup(table, 1, 0);
        let (_, _, _, d81) = lookup(table, 0x8000_0001, 0);
        let (a88, ..) = lookup(table, 0x8000_0008, 0);
        let bit = |r: u32, n: u32| r & (1 << n) != 0;
        let phys_bits = match a88 & 0xff {
            0 => 36,
            n => n.clamp(32, 52) as u8,
        };
        Features {
            smep: bit(b7, 7),
            smap: bit(b7, 20),
            invpcid: bit(b7, 10),
            umip: bit(c7, 2),
            pku: bit(c7, 3),
            pks: bit(c7, 31),
            pcid: bit(c1, 17),
            gbpages: bit(d81, 26),
            phys_bits,
        }
    }

    /// The CR4 bits a MOV to CR4 may set; any other bit is reserved (#GP).
    pub fn cr4_writable(&self) -> u64 {
        let mut m = CR4_BASE;
        for (on, b) in [
            (self.umip, CR4_UMIP),
            (self.pcid, CR4_PCIDE),
            (self.smep, CR4_SMEP),
            (self.smap, CR4_SMAP),
            (self.pku, CR4_PKE),
            (self.pks, CR4_PKS),
        ] {
            if on {
                m |= b;
            }
        }
        m
    }

    /// Bits 51..MAXPHYADDR of a page-table entry (reserved at every level).
    pub fn phys_reserved(&self) -> u64 {
        let lo = u32::from(self.phys_bits);
        ((1u64 << 52) - 1) & !((1u64 << lo) - 1)
    }
}

/// Protection-key rights registers: PKRU (user pages, RDPKRU/WRPKRU) and IA32_PKRS
/// (supervisor pages). Two bits per key: access-disable (2k), write-disable (2k+1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    pub pkru: u32,
    pub pkrs: u32,
}

/// What a key's rights allow for data accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRights {
    pub access_disabled: bool,
    pub write_disabled: bool,
}

impl KeyRights {
    pub const ALL: KeyRights = KeyRights {
        access_disabled: false,
        write_disabled: false,
    };

    /// The rights of `key` (0..=15) in a PKRU/PKRS value.
    pub fn of(reg: u32, key: u32) -> Self {
        let k = (key & 15) * 2;
        KeyRights {
            access_disabled: reg >> k & 1 != 0,
            write_disabled: reg >> (k + 1) & 1 != 0,
        }
    }
}

/// The protection key of a 4-level leaf entry (bits 62:59).
pub fn pte_key(pte: u64) -> u32 {
    ((pte >> 59) & 15) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr4_bits_follow_the_offer() {
        let f = Features::from_cpuid(&crate::cpuid::supported());
        let w = f.cr4_writable();
        assert_eq!(w & CR4_SMEP != 0, f.smep);
        assert_eq!(w & CR4_PKE != 0, f.pku);
        let none = Features {
            smep: false,
            smap: false,
            pku: false,
            pks: false,
            umip: false,
            pcid: false,
            invpcid: false,
            gbpages: false,
            phys_bits: 40,
        };
        assert_eq!(none.cr4_writable(), CR4_BASE);
        assert_eq!(none.phys_reserved(), 0x000f_ff00_0000_0000);
    }

    #[test]
    fn key_rights() {
        let r = KeyRights::of(0b1100, 1);
        assert!(r.access_disabled && r.write_disabled);
        assert_eq!(KeyRights::of(0b1100, 0), KeyRights::ALL);
    }
}
