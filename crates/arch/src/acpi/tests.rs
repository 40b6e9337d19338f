use super::*;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}
fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn table(tables: &[(u64, Vec<u8>)], addr: u64) -> &[u8] {
    &tables.iter().find(|(a, _)| *a == addr).unwrap().1
}

#[test]
fn every_table_checksums_and_has_its_length() {
    let tables = build(2, &[]).unwrap();
    let rsdp = &tables[0].1;
    assert_eq!(tables[0].0, ACPI_START);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[0..20]), 0);
    assert_eq!(sum(rsdp), 0);
    assert_eq!(rsdp[15], 2);
    for (addr, t) in &tables[1..] {
        assert_eq!(addr % 64, 0);
        assert_eq!(u32_at(t, 4) as usize, t.len(), "{:?}", &t[0..4]);
        if &t[0..4] != b"FACS" {
            assert_eq!(sum(t), 0, "{:?}", &t[0..4]);
        }
    }
    // Tables do not overlap and stay in the ACPI area.
    let mut spans: Vec<(u64, u64)> = tables
        .iter()
        .map(|(a, t)| (*a, a + t.len() as u64))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0);
    }
    assert!(spans.last().unwrap().1 <= ACPI_START + ACPI_SIZE);
}

#[test]
fn rsdp_xsdt_fadt_madt_dsdt_chain() {
    let tables = build(3, &[]).unwrap();
    let rsdp = &tables[0].1;
    let xsdt = table(&tables, u64_at(rsdp, 24));
    assert_eq!(&xsdt[0..4], b"XSDT");
    assert_eq!(xsdt.len(), 36 + 16);
    let fadt = table(&tables, u64_at(xsdt, 36));
    let madt = table(&tables, u64_at(xsdt, 44));
    assert_eq!(&fadt[0..4], b"FACP");
    assert_eq!(&madt[0..4], b"APIC");
    let dsdt = table(&tables, u64_at(fadt, 140));
    assert_eq!(&dsdt[0..4], b"DSDT");
    let facs = table(&tables, u64::from(u32_at(fadt, 36)));
    assert_eq!(&facs[0..4], b"FACS");
}

#[test]
fn fadt_describes_the_legacy_pm_devices() {
    let f = bytes_of(&fadt(0x1000, 0x2000));
    assert_eq!(f.len(), 276);
    assert_eq!(sum(&f), 0);
    assert_eq!(u16_at(&f, 46), u16::from(ACPI_SCI_IRQ));
    assert_eq!(u32_at(&f, 48), 0, "no SMI command port");
    assert_eq!(u32_at(&f, 56), u32::from(ACPI_PM1A_EVT));
    assert_eq!(u32_at(&f, 64), u32::from(ACPI_PM1A_CNT));
    assert_eq!(u32_at(&f, 76), u32::from(ACPI_PM_TMR));
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
    assert_eq!(u16_at(&f, 109), IAPC_BOOT_ARCH);
    let flags = u32_at(&f, 112);
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    assert_ne!(flags & (1 << 10), 0, "reset register supported");
    assert_ne!(flags & (1 << 8), 0, "32-bit PM timer");
    assert_eq!(
        flags & (1 << 4),
        0,
        "a fixed-feature power button is present"
    );
    // RESET_REG: system I/O, 8 bits, port 0xcf9; value 6.
    assert_eq!((f[116], f[117]), (1, 8));
    assert_eq!(u64_at(&f, 120), u64::from(RESET_CONTROL));
    assert_eq!(f[128], RESET_VALUE);
    assert_eq!(
        u32_at(&f, 36),
        0x2000,
        "FIRMWARE_CTRL: the FACS below 4 GiB"
    );
    assert_eq!(u64_at(&f, 132), 0, "X_FIRMWARE_CTRL unused");
    assert_eq!(u64_at(&f, 140), 0x1000);
    // X_PM1a_EVT_BLK mirrors the 32-bit field.
    assert_eq!(f[148], 1);
    assert_eq!(u64_at(&f, 152), u64::from(ACPI_PM1A_EVT));
}

#[test]
fn madt_lists_cpus_ioapic_and_overrides() {
    let m = madt(4).unwrap();
    let m = m.as_slice();
    assert_eq!(u32_at(m, 36), LAPIC_BASE as u32);
    assert_eq!(u32_at(m, 40), 1);
    let mut off = 44;
    let mut lapics = Vec::new();
    let mut ioapic = None;
    let mut overrides = Vec::new();
    let mut nmi = false;
    while off < m.len() {
        let (ty, len) = (m[off], m[off + 1] as usize);
        let e = &m[off..off + len];
        match ty {
            0 => lapics.push((e[2], e[3], u32_at(e, 4))),
            1 => ioapic = Some((e[2], u32_at(e, 4), u32_at(e, 8))),
            2 => overrides.push((e[3], u32_at(e, 4), u16_at(e, 8))),
            4 => nmi = e[5] == 1,
            _ => panic!("unexpected MADT entry {ty}"),
        }
        off += len;
    }
    assert_eq!(off, m.len());
    assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
    assert_eq!(ioapic, Some((4, IOAPIC_BASE as u32, 0)));
    assert_eq!(overrides, vec![(0, 2, 0), (9, 9, 0x0d)]);
    assert!(nmi);
    assert!(madt(0).is_err());
}

#[test]
fn dsdt_has_s5_and_com1() {
    let d = dsdt(&[]).unwrap();
    let d = d.as_slice();
    // NameOp "_S5_" PackageOp PkgLength NumElements(4) BytePrefix 5 ...
    let s5 = find(d, b"_S5_").unwrap();
    assert_eq!(d[s5 - 1], 0x08);
    assert_eq!(d[s5 + 4], 0x12);
    assert_eq!(d[s5 + 6], 4);
    assert_eq!(
        &d[s5 + 7..s5 + 11],
        &[0x0a, ACPI_S5_SLP_TYP, 0x0a, ACPI_S5_SLP_TYP]
    );
    assert!(find(d, b"COM1").is_some());
    // EISAID("PNP0501") = 0x0105d041.
    assert!(find(d, &[0x0c, 0x41, 0xd0, 0x05, 0x01]).is_some());
    // IO(Decode16, 0x3f8, 0x3f8, 1, 8).
    assert!(find(d, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]).is_some());
    // Extended interrupt 4, edge, active high, consumer.
    assert!(find(d, &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]).is_some());
}

#[test]
fn extra_devices_appear_in_the_dsdt() {
    let v = DsdtDevice::virtio_mmio(2, 0xd000_1000, 0x1000, 12);
    assert_eq!(v.name, "V002");
    let big = DsdtDevice {
        name: "HIGH".into(),
        hid: "ACPI0004".into(),
        uid: 1,
        resources: vec![
            DsdtResource::Mmio {
                base: 0x1_0000_0000,
                len: 0x1000,
            },
            DsdtResource::Irq {
                gsi: 20,
                level: true,
                active_low: true,
            },
        ],
    };
    let d = dsdt(&[v, big]).unwrap();
    let d = d.as_slice();
    assert!(find(d, b"V002").is_some());
    assert!(find(d, b"LNRO0005\0").is_some());
    // Memory32Fixed(ReadWrite, 0xd0001000, 0x1000).
    let mut m32 = vec![0x86, 0x09, 0x00, 0x01];
    m32.extend_from_slice(&0xd000_1000u32.to_le_bytes());
    m32.extend_from_slice(&0x1000u32.to_le_bytes());
    assert!(find(d, &m32).is_some());
    // Level-triggered, active-high, consumer: flags 0x01.
    assert!(find(d, &[0x89, 0x06, 0x00, 0x01, 0x01, 12, 0, 0, 0]).is_some());
    // QWord memory descriptor for the range above 4 GiB, level/low interrupt.
    assert!(find(d, &[0x8a, 0x2b, 0x00, 0x00]).is_some());
    assert!(find(d, &[0x89, 0x06, 0x00, 0x05, 0x01, 20, 0, 0, 0]).is_some());
    assert_eq!(sum(d), 0);
}

#[test]
fn bad_devices_are_errors_not_panics() {
    let mut d = DsdtDevice::virtio_mmio(0, 0xd000_0000, 0x200, 5);
    d.name = "toolong".into();
    assert!(matches!(dsdt(&[d.clone()]), Err(AcpiError::DeviceName(_))));
    d.name = "1ABC".into();
    assert!(matches!(dsdt(&[d.clone()]), Err(AcpiError::DeviceName(_))));
    d.name = "VIRT".into();
    d.hid = String::new();
    assert!(matches!(dsdt(&[d.clone()]), Err(AcpiError::HardwareId(_))));
    d.hid = "LNRO0005".into();
    d.resources = vec![DsdtResource::Mmio { base: 0, len: 0 }];
    assert!(matches!(
        dsdt(&[d.clone()]),
        Err(AcpiError::Resource { .. })
    ));
    d.resources = vec![DsdtResource::Io {
        base: 0xffff,
        len: 2,
    }];
    assert!(matches!(dsdt(&[d]), Err(AcpiError::Resource { .. })));
}

#[test]
fn tables_land_in_guest_memory() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let rsdp = write(&mem, 1, &[]).unwrap();
    let mut sig = [0u8; 8];
    mem.read_slice(&mut sig, GuestAddress(rsdp)).unwrap();
    assert_eq!(&sig, b"RSD PTR ");
}
