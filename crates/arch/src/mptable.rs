//! The Intel MultiProcessor Specification 1.4 table.
//!
//! Kernels without ACPI (or with `acpi=off`) find CPUs, the IOAPIC and the ISA interrupt
//! wiring here. It describes the same machine as the MADT: vCPU i has local APIC ID i,
//! one IOAPIC (ID = number of vCPUs) at [`IOAPIC_BASE`], one ISA bus, ISA IRQ 0 on IOAPIC
//! pin 2 and IRQ n on pin n otherwise (the SCI level-triggered, active high), the 8259 on
//! pin 0 as ExtINT, and LINT0/LINT1 as ExtINT/NMI. The floating pointer sits at
//! [`MPTABLE_START`] (0xF0000, inside the BIOS area Linux scans).

use crate::layout::{ACPI_SCI_IRQ, IOAPIC_BASE, LAPIC_BASE, MPTABLE_SIZE, MPTABLE_START};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Largest vCPU count: APIC IDs 0..n-1 plus the IOAPIC's ID n must stay below 0xff.
pub const MAX_CPUS: u8 = 254;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_SIGNATURE: u32 = 0x600;
/// FPU and APIC present.
const CPU_FEATURES: u32 = 0x201;
const ISA_BUS_ID: u8 = 0;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MpTableError {
    #[error("{0} vCPUs: the MP table supports 1 to {MAX_CPUS}")]
    CpuCount(u8),
    #[error("the MP table ({0} bytes) does not fit its area")]
    TooLarge(usize),
    #[error("writing the MP table to guest memory: {0}")]
    GuestWrite(String),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

fn io_interrupt(int_type: u8, flags: u16, src_irq: u8, ioapic_id: u8, pin: u8) -> [u8; 8] {
    let f = flags.to_le_bytes();
    [3, int_type, f[0], f[1], ISA_BUS_ID, src_irq, ioapic_id, pin]
}

fn local_interrupt(int_type: u8, lint: u8) -> [u8; 8] {
    [4, int_type, 0, 0, ISA_BUS_ID, 0, 0xff, lint]
}

/// The configuration table (header and entries) for `cpus` vCPUs, built for `table_addr`.
pub fn build(cpus: u8) -> Result<Vec<u8>, MpTableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MpTableError::CpuCount(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        let flags = 1 | if id == 0 { 2 } else { 0 }; // enabled, BSP
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, ISA_BUS_ID, b'I', b'S', b'A', b' ', b' ', b' ']);
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_BASE as u32).to_le_bytes());
    count += 2;
    // 8259 output on pin 0.
    entries.extend_from_slice(&io_interrupt(3, 0, 0, ioapic_id, 0));
    count += 1;
    for irq in 0u8..16 {
        if irq == 2 {
            continue; // the cascade; IRQ 0 takes pin 2
        }
        let pin = if irq == 0 { 2 } else { irq };
        // SCI: active high (01), level triggered (11 << 2).
        let flags = if irq == ACPI_SCI_IRQ { 0x0d } else { 0 };
        entries.extend_from_slice(&io_interrupt(0, flags, irq, ioapic_id, pin));
        count += 1;
    }
    entries.extend_from_slice(&local_interrupt(3, 0));
    entries.extend_from_slice(&local_interrupt(1, 1));
    count += 2;

    let len = 44 + entries.len();
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&(len as u16).to_le_bytes());
    t.push(4); // spec revision 1.4
    t.push(0); // checksum
    t.extend_from_slice(b"WIRT    ");
    t.extend_from_slice(b"WIRT VM     ");
    t.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    t.extend_from_slice(&0u16.to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&(LAPIC_BASE as u32).to_le_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // extended table length, checksum, reserved
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    Ok(t)
}

/// The 16-byte floating pointer structure pointing at `table_addr`.
pub fn floating_pointer(table_addr: u32) -> [u8; 16] {
    let mut f = [0u8; 16];
    f[0..4].copy_from_slice(b"_MP_");
    f[4..8].copy_from_slice(&table_addr.to_le_bytes());
    f[8] = 1; // length in 16-byte units
    f[9] = 4; // spec revision
    f[10] = checksum(&f);
    f
}

/// Writes the floating pointer and table at [`MPTABLE_START`]; returns the pointer's
/// address.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<u64, MpTableError> {
    let table = build(cpus)?;
    if 16 + table.len() as u64 > MPTABLE_SIZE {
        return Err(MpTableError::TooLarge(table.len()));
    }
    let table_addr = MPTABLE_START + 16;
    let err = |e: vm_memory::GuestMemoryError| MpTableError::GuestWrite(e.to_string());
    mem.write_slice(
        &floating_pointer(table_addr as u32),
        GuestAddress(MPTABLE_START),
    )
    .map_err(err)?;
    mem.write_slice(&table, GuestAddress(table_addr))
        .map_err(err)?;
    Ok(MPTABLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn table_for_four_cpus() {
        let t = build(4).unwrap();
        assert_eq!(&t[0..4], b"PCMP");
        assert_eq!(u16::from_le_bytes([t[4], t[5]]) as usize, t.len());
        assert_eq!(sum(&t), 0);
        let count = u16::from_le_bytes([t[34], t[35]]);
        // 4 CPUs, bus, IOAPIC, ExtINT, 15 ISA IRQs, 2 local interrupts.
        assert_eq!(count, 4 + 2 + 1 + 15 + 2);
        assert_eq!(t.len(), 44 + 4 * 20 + 20 * 8);
        assert_eq!(
            u32::from_le_bytes([t[36], t[37], t[38], t[39]]),
            0xfee0_0000
        );
        // CPU entries: APIC IDs 0..3, only the first is BSP.
        for id in 0..4usize {
            let e = &t[44 + id * 20..];
            assert_eq!((e[0], e[1] as usize), (0, id));
            assert_eq!(e[3], if id == 0 { 3 } else { 1 });
        }
        // The IOAPIC entry.
        let io = &t[44 + 80 + 8..];
        assert_eq!((io[0], io[1]), (2, 4));
        assert_eq!(
            u32::from_le_bytes([io[4], io[5], io[6], io[7]]),
            0xfec0_0000
        );
        // IRQ 0 goes to pin 2; IRQ 9 is level/high.
        let ints = &t[44 + 80 + 16..];
        let irq0 = &ints[8..16];
        assert_eq!((irq0[0], irq0[5], irq0[7]), (3, 0, 2));
        let irq9 = ints
            .chunks(8)
            .find(|e| e[0] == 3 && e[1] == 0 && e[5] == 9)
            .unwrap();
        assert_eq!((irq9[2], irq9[7]), (0x0d, 9));
    }

    #[test]
    fn floating_pointer_checksums() {
        let f = floating_pointer(0xf0010);
        assert_eq!(&f[0..4], b"_MP_");
        assert_eq!(sum(&f), 0);
    }

    #[test]
    fn cpu_count_limits() {
        assert_eq!(build(0), Err(MpTableError::CpuCount(0)));
        assert_eq!(build(255), Err(MpTableError::CpuCount(255)));
        assert!(build(254).is_ok());
    }

    #[test]
    fn written_to_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert_eq!(write(&mem, 2).unwrap(), 0xf0000);
        let mut f = [0u8; 16];
        mem.read_slice(&mut f, GuestAddress(0xf0000)).unwrap();
        assert_eq!(u32::from_le_bytes([f[4], f[5], f[6], f[7]]), 0xf0010);
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(0xf0010)).unwrap();
        assert_eq!(&sig, b"PCMP");
    }
}
